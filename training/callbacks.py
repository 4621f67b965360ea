"""Keras callbacks that connect a training run to its job record: progress, cancellation, and
stopping a run whose loss diverged (:mod:`training.divergence` says when, and whether its
weights are kept); and TensorBoard logging that a run can do without."""

from __future__ import annotations

import contextlib
import logging
import math
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf
from tensorflow.python.ops import summary_ops_v2

from fdl.jobs import JobStore, NotThisRun
from training import worker_stop
from training.divergence import TrainingDiverged as TrainingDiverged  # where it was raised from
from training.divergence import divergence
from training.time_limit import Deadline

log = logging.getLogger(__name__)
MID_EPOCH_REPORT_S = 5.0


def _num(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else round(value, 6)


class JobCallback(keras.callbacks.Callback):
    """Reports per-epoch progress (and, every few seconds, mid-epoch progress) to the job record,
    and stops training at the next batch when the job's cancellation flag is set (or its record
    is gone: pruned, or lost with Redis's data) or a reported loss is NaN or infinite (read only
    where it is reported anyway, so that no batch waits for the device to hand its loss over):
    a stop for divergence is kept in ``diverged``. Whether the weights are lost is decided
    afterwards (:func:`training.divergence.judge_run`, then the test set's outputs and loss,
    :func:`training.divergence.judge_test_loss`): early stopping may have restored its best
    epoch, and a mixed-precision step that overflowed was skipped. Training also stops at the
    next batch once ``deadline`` has passed; ``timed_out`` then says where (the trainer raises).
    With ``run`` (the worker name the run claimed the job under), a report that the record
    refuses, the job no longer being this run's, sets ``lost`` (shared with the heartbeat
    thread, whose refused beat sets it too) and training stops at the next batch (the trainer
    raises :class:`NotThisRun`). Once the worker is stopping (:mod:`training.worker_stop`),
    training stops at the next batch too, after the checks above; ``handed_back`` then says
    where (the trainer raises :class:`training.worker_stop.HandBack`). A report of an epoch whose
    end the record had seen reported when the run began (an earlier run reported it and was lost
    before its checkpoint, or the job started over) says ``redone``, after one note."""

    def __init__(
        self,
        store: JobStore,
        job_id: str,
        epochs: int,
        train_examples: int,
        steps: int,
        deadline: Deadline | None = None,
        run: str | None = None,
        lost: threading.Event | None = None,
    ) -> None:
        super().__init__()
        self.store, self.job_id, self.run = store, job_id, run
        self.lost = lost or threading.Event()
        self.epochs, self.train_examples, self.steps = epochs, train_examples, steps
        self.deadline = deadline
        self.cancelled = False
        self.timed_out: str | None = None
        self.handed_back: str | None = None
        self.diverged: str | None = None
        self.history: list[dict[str, Any]] = []
        self.resumed_after = 0  # epochs done before this run, restored from a checkpoint
        self.earlier_s = 0.0  # the training seconds of those epochs, the checkpoint's
        # The epochs whose end the job's record had seen reported when this run began (by a run
        # lost after its report, before its checkpoint; or by runs of a job started over): this
        # run's reports of them say ``redone``.
        self.reported = 0
        self._redone_noted = False
        self._train_start = self._epoch_start = self._last_report = 0.0

    def resume(self, history: list[dict[str, Any]], seconds: float = 0.0) -> None:
        """Take the per-epoch history of the runs before this one (a checkpoint's,
        :mod:`training.checkpoints`) and their training seconds up to its last epoch: this run
        goes on after that epoch, and its time limit and ``train_seconds`` count those seconds
        (:meth:`training.time_limit.Deadline.resumed`)."""
        self.history = list(history)
        self.resumed_after, self.earlier_s = len(history), seconds
        if self.deadline is not None:
            self.deadline.resumed(seconds, len(history))

    def train_seconds(self) -> float:
        """The job's training seconds so far: its earlier runs' up to the checkpoint this run
        resumed from, and this run's."""
        return self.earlier_s + (time.monotonic() - self._train_start)

    def owns_epoch(self, epoch: int) -> bool:
        """Whether epoch ``epoch`` (from 0) ran whole, in this run, and was reported to a record
        that still shows this run: not cancelled, timed out, handed back, lost or diverged."""
        stopped = self.cancelled or self.timed_out or self.handed_back or self.diverged
        return not stopped and not self.lost.is_set() and len(self.history) == epoch + 1

    def on_train_begin(self, logs=None) -> None:
        self._train_start = time.monotonic()
        self.reported = reported_epochs((self.store.get(self.job_id) or {}).get("progress"))
        self._redone_noted = False

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self._epoch_start = self._last_report = time.monotonic()
        if epoch < self.reported and not self._redone_noted:  # once, at this run's first epoch
            self._redone_noted = True
            first, last = epoch + 1, self.reported
            which = f"epoch {first}" if first == last else f"epochs {first} to {last}"
            since = f"resumed after epoch {epoch}, its last checkpoint" if epoch else "starts over"
            are, them = ("is", "it") if first == last else ("are", "them")
            self.note(
                f"{which}, which an earlier run of the job reported, {are} run again (this run "
                f"{since}): its reports of {them} say redone and replace the earlier ones"
            )

    def on_train_batch_end(self, batch, logs=None) -> None:
        if self.lost.is_set():  # before the cancel flag: another run's, not this run's to end
            self.model.stop_training = True
            return
        if self.store.stop_requested(self.job_id):  # cancelled, or its record is gone
            self.cancelled = True
            self.model.stop_training = True
            return
        if self.deadline is not None and self.deadline.passed():
            self.timed_out = f"in epoch {len(self.history) + 1} of {self.epochs}"
            self.model.stop_training = True
            return
        if worker_stop.requested():
            self.handed_back = f"in epoch {len(self.history) + 1} of {self.epochs}"
            self.model.stop_training = True
            return
        now = time.monotonic()
        # Keras passes the last batch index of a call into the compiled graph (16 batches,
        # FDL_STEPS_PER_EXECUTION) without cutting it to the epoch's batches: an epoch of 4
        # steps ends at "batch" 15. A call that ran the epoch's last batch is no mid-epoch
        # report (one with step == steps looked like the epoch's end to its readers, and 16 of 4
        # steps gave a negative ETA): the epoch's end is on_epoch_end's report, after validation.
        step = min(batch + 1, self.steps)
        if step < self.steps and now - self._last_report >= MID_EPOCH_REPORT_S:
            self._last_report = now
            logs = logs or {}
            where = f"at step {step} of epoch {len(self.history) + 1}"
            if self._diverged(logs.get("loss"), where):
                return
            done = step / self.steps
            epochs_done = len(self.history) + done
            rate = self._images_per_second(now - self._epoch_start, done)
            elapsed = now - self._train_start
            run_done = epochs_done - self.resumed_after  # this run's: its time is elapsed
            self._report(
                {
                    "epoch": len(self.history) + 1,
                    "epochs": self.epochs,
                    "step": step,
                    "steps": self.steps,
                    "loss": _num(logs.get("loss")),
                    "accuracy": _num(logs.get("accuracy")),
                    "val_loss": None,
                    "val_accuracy": None,
                    "images_per_second": rate,
                    "eta_seconds": round(elapsed / run_done * (self.epochs - epochs_done), 1),
                }
            )

    def note(self, message: str) -> None:
        """Tell the worker's log (a warning) and the job's followers (a ``log`` event)
        ``message``, from inside training."""
        log.warning("job %s: %s", self.job_id, message)
        try:
            self.store.append_event(self.job_id, "log", {"message": message}, run=self.run)
        except NotThisRun:
            self.lost.set()
            self.model.stop_training = True

    def _report(self, progress: dict[str, Any]) -> None:
        if progress["epoch"] <= self.reported:  # an earlier run reported it: this one redoes it
            progress = {**progress, "redone": True}  # the report's, not the history's
        try:
            self.store.update_progress(self.job_id, progress, self.run)
        except NotThisRun:
            self.lost.set()
            self.model.stop_training = True

    def _diverged(self, loss: Any, where: str) -> bool:
        message = divergence(loss, where)
        if message is not None:
            self.diverged = self.diverged or message
            self.model.stop_training = True
        return message is not None

    def _images_per_second(self, seconds: float, fraction: float) -> float | None:
        if seconds <= 0:
            return None
        return round(self.train_examples * fraction / seconds, 1)

    def on_epoch_end(self, epoch, logs=None) -> None:
        if self.cancelled or self.timed_out or self.handed_back or self.lost.is_set():
            return
        logs = logs or {}
        self._diverged(logs.get("loss"), f"after epoch {epoch + 1}")
        now = time.monotonic()
        entry = {
            "epoch": epoch + 1,
            "epochs": self.epochs,
            "loss": _num(logs.get("loss")),
            "accuracy": _num(logs.get("accuracy")),
            "val_loss": _num(logs.get("val_loss")),
            "val_accuracy": _num(logs.get("val_accuracy")),
            "images_per_second": self._images_per_second(now - self._epoch_start, 1.0),
            "eta_seconds": round(
                (now - self._train_start)
                / max(epoch + 1 - self.resumed_after, 1)
                * (self.epochs - epoch - 1),
                1,
            ),
        }
        self.history.append(entry)
        self._report(entry)


def reported_epochs(progress: object) -> int:
    """The epochs whose end a job's record ``progress`` (its last report) says were reported: a
    mid-epoch report (it has a ``step``) is of the epoch after them."""
    if not isinstance(progress, dict) or not isinstance(progress.get("epoch"), int):
        return 0
    return int(progress["epoch"]) - (1 if progress.get("step") is not None else 0)


def _guarded(hook: str) -> Callable[..., None]:
    """Keras TensorBoard's ``hook``, run until TensorBoard logging failed once."""

    def run(self: BestEffortTensorBoard, *args: Any, **kwargs: Any) -> None:
        if self.failed is None:
            try:
                getattr(keras.callbacks.TensorBoard, hook)(self, *args, **kwargs)
            except (tf.errors.OpError, OSError) as error:
                self._give_up(error)

    return run


class BestEffortTensorBoard(keras.callbacks.TensorBoard):
    """Keras's TensorBoard logging, which training does without: the first failure to create,
    write or flush its event files (``No space left on device`` in a full ``FDL_VAR_DIR``) turns
    it off for the rest of the run and is told to ``on_failure`` once, and training goes on."""

    def __init__(self, log_dir: str, on_failure: Callable[[str], None], **kwargs: Any) -> None:
        super().__init__(log_dir, **kwargs)
        self.on_failure = on_failure
        self.failed: str | None = None
        # The thread's default summary writer and step outside this run's logging (none).
        self._outside = (summary_ops_v2._summary_state.writer, summary_ops_v2._summary_state.step)

    on_train_begin = _guarded("on_train_begin")
    on_train_end = _guarded("on_train_end")
    on_epoch_begin = _guarded("on_epoch_begin")
    on_epoch_end = _guarded("on_epoch_end")
    on_train_batch_begin = _guarded("on_train_batch_begin")
    on_train_batch_end = _guarded("on_train_batch_end")
    on_test_begin = _guarded("on_test_begin")
    on_test_end = _guarded("on_test_end")
    on_test_batch_begin = _guarded("on_test_batch_begin")

    def _give_up(self, error: Exception) -> None:
        # TensorFlow's message starts with the op's function node ({{function_node …}}); its
        # first line then names the file and the cause, and the lines after repeat them.
        text = re.sub(r"\{\{.*?\}\}", "", getattr(error, "message", None) or str(error))
        self.failed = (text.strip().splitlines() or [type(error).__name__])[0]
        # Leaving a writer flushes it, which fails as the write did; the file is left as it is.
        with contextlib.suppress(tf.errors.OpError, OSError):
            while self._prev_summary_state:  # a writer made default per batch (update_freq)
                for context in reversed(self._prev_summary_state.pop()):
                    context.__exit__(None, None, None)
        for writer in self._writers.values():
            with contextlib.suppress(tf.errors.OpError, OSError):
                writer.close()
        self._writers = {}
        # TensorFlow's writer.as_default() flushes before it puts the previous default writer
        # back: a failed flush leaves the failed writer the thread's default, and the summaries
        # Keras writes each batch, of this run or of the next job in this pool process, would
        # go to it (and fail that job).
        summary_ops_v2._summary_state.writer, summary_ops_v2._summary_state.step = self._outside
        self.on_failure(f"TensorBoard logging is off for the rest of this run: {self.failed}")
