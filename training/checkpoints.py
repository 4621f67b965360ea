"""A checkpoint of a job after each epoch, from which a run of it that was handed back (its worker
stopping, :mod:`training.worker_stop`) or lost (SIGKILL, the out-of-memory killer: the reaper or
:mod:`training.lost_process` queues it again) resumes instead of starting over.

Keras's ``BackupAndRestore`` is the base (it sets ``model._initial_epoch``, where ``fit`` starts),
made to fit the job's guarantees:

- each checkpoint is a folder written whole, then renamed in (:mod:`training.checkpoint_files`):
  a run killed mid-write leaves nothing that is taken as complete;
- it holds the model's weights with the optimizer's variables (``iterations`` too, so a
  learning-rate schedule goes on where it was), and ``state.json``: the epochs done, the run
  (worker name) that wrote it, a fingerprint of the job's spec and data (a checkpoint of another
  is ignored), the Keras version and precision policy, the per-epoch history that
  :class:`training.callbacks.JobCallback` keeps and the early-stopping state, with its best
  weights (``best.npz``), so that a resumed run stops and restores the same epoch as a run never
  interrupted would, and the job's training seconds up to its epoch, from which a resumed run's
  time limit and ``train_seconds`` go on (:meth:`training.time_limit.Deadline.resumed`);
- only a run that still owns its job writes (an epoch it ran whole and reported to a record that
  still shows it); a write that fails (a full disk) turns checkpoints off for the rest of the run,
  with one note in the job's events, and training goes on;
- a checkpoint that cannot be used (damaged, another Keras, another precision policy, optimizer
  variables that differ) is logged and noted, the model's variables are put back as they were,
  and the run starts from its first epoch: never a failed job because of a checkpoint.

A resumed run is not bit-identical to one never interrupted: the input pipeline's shuffle order
starts again from its first epoch's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import keras
import numpy as np

from fdl.files import read_small_file
from training.callbacks import JobCallback
from training.checkpoint_files import job_folder, newest, remove_temps, write

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
WEIGHTS_FILE = "weights.weights.h5"  # Keras's save_weights wants this ending
BEST_FILE = "best.npz"
FORMAT = 1
STATE_LIMIT = 16 << 20  # a 500-epoch history is some 100 KB


def _major(version: object) -> str | None:
    return version.split(".")[0] if isinstance(version, str) else None


class Unusable(Exception):
    """A checkpoint that this run cannot resume from; the words say why."""


def fingerprint(spec: dict[str, Any], train_examples: int, classes: int, steps: int) -> str:
    """What a checkpoint must have been written for to be resumed from: the job's spec, and the
    training examples, classes and steps per epoch its data gave."""
    text = json.dumps([spec, train_examples, classes, steps], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


class JobCheckpoints(keras.callbacks.BackupAndRestore):  # type: ignore[misc]
    """Writes a checkpoint after each epoch and resumes from the job's newest one. Comes after
    ``progress`` and ``stopper`` in ``fit``'s callbacks: it restores their state after their own
    ``on_train_begin`` reset it, and writes theirs after they took the epoch's end."""

    def __init__(
        self,
        root: Path,
        job_id: str,
        progress: JobCallback,
        stopper: keras.callbacks.EarlyStopping | None,
        fingerprint: str,
        policy: str,
    ) -> None:
        folder = job_folder(root, job_id)
        if folder is None:
            raise ValueError(f"no checkpoint folder for job id {job_id!r}")
        super().__init__(str(folder), save_freq="epoch", delete_checkpoint=False)
        self.root, self.folder, self.job_id = root, folder, job_id
        self.progress, self.stopper = progress, stopper
        self.fingerprint, self.policy = fingerprint, policy
        self.resumed: list[int] = []  # the epochs after which the job's runs resumed, in order
        self.failed: str | None = None

    # --- resuming ----------------------------------------------------------------------------

    def on_train_begin(self, logs: Any = None) -> None:
        remove_temps(self.folder)  # writes that died: this run owns the job now
        found = newest(self.root, self.job_id)
        if found is None:
            return
        epoch, path = found
        variables = self._variables()
        before = [v.numpy() for v in variables]
        try:
            state = self._state(path, epoch)
            best = self._load(path, state)
        except Exception as error:
            for variable, value in zip(variables, before, strict=True):
                variable.assign(value)  # as they were: the run starts from its first epoch
            log.warning("job %s: checkpoint %s unusable", self.job_id, path, exc_info=True)
            # Removed: kept, it shadowed this run's own checkpoints (the newest is taken), and a
            # later run would start over again.
            shutil.rmtree(path, ignore_errors=True)
            why = " ".join(str(error).split())[:300]  # Keras's run over several lines
            self.progress.note(
                f"its checkpoint after epoch {epoch} cannot be used ({type(error).__name__}"
                f"{': ' + why if why else ''}); it is removed, and training starts from its "
                "first epoch"
            )
            return
        self.progress.resume(state["history"], state["train_seconds"])
        stopped = False
        if self.stopper is not None:
            es = state["early_stopping"]
            self.stopper.wait, self.stopper.best = es["wait"], es["best"]
            self.stopper.best_epoch, self.stopper.stopped_epoch = es["best_epoch"], es["stopped"]
            self.stopper.best_weights = best
            stopped = es["stopped"] > 0
        # Stopped early: fit runs no epoch, and early stopping puts its best weights back.
        self.model._initial_epoch = self.progress.epochs if stopped else epoch
        self.resumed = [*state["resumed"], epoch]
        self.progress.note(
            f"resumed after epoch {epoch} from the checkpoint written by {state['run']}"
        )

    def _variables(self) -> list[Any]:
        """The model's and its optimizer's variables, the optimizer built first (as Keras's
        ``BackupAndRestore`` does) so that its variables are there to be loaded."""
        optimizer = self.model.optimizer
        if optimizer is not None and not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        return list(self.model.weights) + (list(optimizer.variables) if optimizer else [])

    def _state(self, path: Path, epoch: int) -> dict[str, Any]:
        raw = read_small_file(path / STATE_FILE, STATE_LIMIT)
        if raw is None:
            raise Unusable(f"{STATE_FILE} is missing or unreadable")
        state: dict[str, Any] = json.loads(raw)
        wrong = {
            "format": (state.get("format"), FORMAT),
            "fingerprint (the job's spec and data)": (state.get("fingerprint"), self.fingerprint),
            # another major Keras may lay weights out otherwise; within one, a worker image's
            # upgrade (a rollout: the very case of a hand-back) must not start jobs over, and
            # the load itself checks every variable's shape and the optimizer's step count
            "Keras major version": (_major(state.get("keras_version")), _major(keras.__version__)),
            "precision policy": (state.get("precision_policy"), self.policy),
            "epoch": (state.get("epoch"), epoch),
        }
        for what, (found, wanted) in wrong.items():
            if found != wanted:
                raise Unusable(f"it was written with {what} {found}, this run has {wanted}")
        history = state.get("history")
        if not isinstance(history, list) or not all(isinstance(e, dict) for e in history):
            raise Unusable("its history is not a list of epochs")
        if not 0 < epoch <= self.progress.epochs or len(history) != epoch:
            raise Unusable(f"its history has {len(history)} epochs, not {epoch}")
        es = state.get("early_stopping")
        if (self.stopper is None) != (es is None):
            raise Unusable("its early-stopping state does not match the job's")
        if es is not None:  # checked here: what is restored after the load cannot fail
            best = None if es["best"] is None else float(es["best"])
            keys = ("wait", "best_epoch", "stopped")
            state["early_stopping"] = {**{k: int(es[k]) for k in keys}, "best": best}
            state["early_stopping"]["best_weights"] = bool(es["best_weights"])
        state["run"], state["resumed"] = str(state["run"]), [int(k) for k in state["resumed"]]
        # One written before checkpoints kept it: its seconds are unknown, counted as none.
        seconds = float(state.get("train_seconds") or 0.0)
        if not math.isfinite(seconds) or seconds < 0:
            raise Unusable(f"its train_seconds is {seconds}")
        state["train_seconds"] = seconds
        return state

    def _load(self, path: Path, state: dict[str, Any]) -> list[np.ndarray] | None:
        """Load the weights and optimizer variables (an optimizer whose variables differ is an
        error, not Keras's warning); the early-stopping best weights, if any."""
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message="Skipping variable loading")
            self.model.load_weights(path / WEIGHTS_FILE)
        optimizer = self.model.optimizer
        if optimizer is not None and int(optimizer.iterations) != state["iterations"]:
            found = int(optimizer.iterations)
            raise Unusable(f"the optimizer loaded {found} steps, not {state['iterations']}")
        es = state.get("early_stopping")
        if not es or not es["best_weights"]:
            return None
        with np.load(path / BEST_FILE) as stored:
            best = [stored[f"arr_{i}"] for i in range(len(stored.files))]
        shapes = [tuple(w.shape) for w in self.model.get_weights()]
        if [tuple(w.shape) for w in best] != shapes:
            raise Unusable(f"its {BEST_FILE} does not fit the model")
        return best

    # --- writing -----------------------------------------------------------------------------

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        if self.failed is not None or not self.progress.owns_epoch(epoch):
            return
        try:
            write(self.root, self.job_id, epoch + 1, self._fill)
        except Exception as error:
            self.failed = str(error).strip().splitlines()[0] if str(error) else type(error).__name__
            log.warning("job %s: writing a checkpoint failed", self.job_id, exc_info=True)
            self.progress.note(f"checkpoints are off for the rest of this run: {self.failed}")

    def _fill(self, folder: Path) -> None:
        self.model.save_weights(folder / WEIGHTS_FILE)
        es = None
        if self.stopper is not None:
            best = self.stopper.best_weights
            if best is not None:
                np.savez(folder / BEST_FILE, *best)
            es = {
                "wait": self.stopper.wait,
                "best": None if self.stopper.best is None else float(self.stopper.best),
                "best_epoch": int(self.stopper.best_epoch),
                "stopped": int(self.stopper.stopped_epoch),
                "best_weights": best is not None,
            }
        optimizer = self.model.optimizer
        state = {
            "format": FORMAT,
            "epoch": len(self.progress.history),
            "epochs": self.progress.epochs,
            "run": self.progress.run or "an unnamed run",
            "fingerprint": self.fingerprint,
            "keras_version": keras.__version__,
            "precision_policy": self.policy,
            "iterations": int(optimizer.iterations) if optimizer is not None else 0,
            "history": self.progress.history,
            # the job's training seconds up to this epoch, its earlier runs' included: a resumed
            # run's time limit and train_seconds go on from them
            "train_seconds": round(self.progress.train_seconds(), 3),
            "early_stopping": es,
            "resumed": self.resumed,
            "written_at": time.time(),
        }
        (folder / STATE_FILE).write_text(json.dumps(state))

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        pass  # after each epoch only

    def on_train_end(self, logs: Any = None) -> None:
        pass  # kept until the job ends: its worker removes them (training.run_end)
