"""The model repository: the one owner of ``MODEL_DIR`` and everything written into it.

Layout: ``<model>/<version>/`` (integer-named SavedModel folders), ``labels.json`` (version
labels, so a restart keeps them), ``models.config`` (rendered by :mod:`fdl.model_config`, polled
by the model server), ``.versions.json`` (each model's highest version number ever published,
so a deleted version's number is never given to another model) and ``.repository.lock``.
The reads that need no lock are in :mod:`fdl.repository_reads`, the labels such a reader sees
while a change is under way in :mod:`fdl.repository_settled`, the config's text for what the
repository holds in :mod:`fdl.repository_render`.

Every writer (a worker publishing a version, any gateway replica promoting one, ``fdl up`` and
``python -m fdl.repository`` syncing the config) takes the same cross-process file lock and
does its read-modify-write of ``labels.json`` and ``models.config`` under it, so two writers never
overwrite each other's change. Files are written atomically (temporary file, then rename),
flushed to the disk with the folders that hold them (:mod:`fdl.files`), and readable by other
users (``0666 & ~umask``), since the model server may run as another user.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from fdl.files import atomic_write, fsync_path, seal_version
from fdl.model_config import valid_name
from fdl.repository_files import Labels, UndoPoint, roll_back
from fdl.repository_reads import (
    LABELS_FILE,
    NUMBERS_FILE,
    discover_models,
    find_job_version,
    list_versions,
    numbered_names,
    read_labels,
    read_numbers,
)
from fdl.repository_render import render_repository
from fdl.repository_settled import settled_labels
from fdl.settings import SETTINGS_ERRORS, get_settings, prepare_model_dir, settings_problem

log = logging.getLogger(__name__)

CONFIG_FILE = "models.config"
LOCK_FILE = ".repository.lock"


class Repository:
    """Reads and writes of one model repository; writes hold :meth:`locked`."""

    def __init__(
        self, model_dir: Path, base_path_root: str | None = None, lock_timeout_s: float = 120.0
    ) -> None:
        self.model_dir = Path(model_dir)
        self.base_path_root = base_path_root
        self.lock_timeout_s = lock_timeout_s

    @property
    def config_path(self) -> Path:
        return self.model_dir / CONFIG_FILE

    def file_lock(self, timeout_s: float | None = None) -> FileLock:
        """The repository's cross-process lock (``flock`` on ``.repository.lock``): released by
        the kernel when its holder dies, kept by a stopped one (every other writer waits).

        ``thread_local=False``: the gateway acquires it in a worker thread and releases it from
        the event loop's thread. The model folder is made if missing, but never its parent: a
        volume not mounted stays missing (FileNotFoundError) instead of taking the models.
        """
        self.model_dir.mkdir(exist_ok=True)
        timeout = self.lock_timeout_s if timeout_s is None else timeout_s
        return FileLock(self.model_dir / LOCK_FILE, timeout=timeout, thread_local=False)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """The lock, with a change its last holder died in the middle of rolled back first."""
        with self.file_lock():
            self.recover()
            yield

    def recover(self) -> bool:
        """Roll back a change of labels (or the config of a publish) whose process died holding
        the lock; call with the lock held, before anything else. Whether there was one."""
        return roll_back(self.model_dir, LABELS_FILE, CONFIG_FILE, self.render)

    # --- reads ----------------------------------------------------------------------------
    def models(self) -> list[str]:
        return discover_models(self.model_dir)

    def versions(self, model: str) -> list[int]:
        return list_versions(self.model_dir / model)

    def labels(self) -> Labels:
        return read_labels(self.model_dir)

    def settled_labels(self) -> Labels:
        """The labels as they stand for a reader without the lock: never those of a change that
        is not acknowledged (its undo record of ``labels.json`` is still there); such a change
        is rolled back when the lock is free (its writer died). See
        :func:`fdl.repository_settled.settled_labels`. Raises as :meth:`labels`."""
        return settled_labels(self.model_dir, self.recover_if_free)

    def recover_if_free(self) -> bool:
        """:meth:`recover` if the lock is free at once; a busy lock's holder recovers itself.
        Whether a change was rolled back. Never raises for a repository it cannot change (a
        read-only one is only logged)."""
        try:
            with self.file_lock(timeout_s=0):
                try:
                    return self.recover()
                except (OSError, ValueError):
                    log.exception(
                        "could not roll back the change left half made in %s", self.model_dir
                    )
                    return False
        except Timeout:
            pass
        except OSError as error:
            # The lock file cannot be made (a read-only mount, another owner): nothing was half
            # made, but every publish and promotion here will fail the same way.
            log.warning(
                "cannot take the repository lock in %s (%s): publishes and promotions will fail",
                self.model_dir,
                error,
            )
        return False

    def render(self, labels: Labels | None = None, keep: dict[str, set[int]] | None = None) -> str:
        """The config for what is on disk now, with ``labels`` (default: ``labels.json``); a
        model whose folder cannot be listed keeps its entry of the current ``models.config``
        (:func:`fdl.repository_render.render_repository`)."""
        labels = self.labels() if labels is None else labels
        root = self.base_path_root or str(self.model_dir.resolve())
        return render_repository(self.model_dir, root, labels, self.config_path, keep)

    # --- writes (call with the lock held) ---------------------------------------------------
    def write_labels(self, labels: Labels) -> None:
        atomic_write(
            self.model_dir / LABELS_FILE, json.dumps(labels, indent=2, sort_keys=True) + "\n"
        )

    def write_config(self, text: str) -> Path:
        path = self.config_path
        if not path.exists() or path.read_text() != text:
            atomic_write(path, text)
        return path

    def undo_point(self) -> UndoPoint:
        """``labels.json`` and ``models.config`` as they are now, to put back if a change fails."""
        return UndoPoint(self.model_dir, (LABELS_FILE, CONFIG_FILE))

    # --- whole operations (take the lock themselves) ----------------------------------------
    def sync(self) -> Path:
        """(Re)write ``models.config`` for what the repository holds; returns its path."""
        with self.locked():
            return self.write_config(self.render())

    def publish(
        self,
        staged: Path,
        model: str,
        job_id: str,
        check: Callable[[Path], None] | None = None,
    ) -> tuple[int, bool]:
        """Move ``staged`` in as the model's next version and render the config.

        Idempotent on ``job_id``: when a version of this model already carries the job's id (a
        re-run after the first run published and then lost its record), that version is returned
        and ``staged`` is left alone. Otherwise ``check(model_path)`` may raise to publish nothing
        (the job's record, a quality gate): it runs under the lock after ``staged`` is sealed,
        and the lock is held from it through the rename and the config's write, so a reaper that
        ends the job under the lock is never followed by its version. The model's folder is
        created here, under the lock, so a new model never shows up without a version. All or
        nothing: when the config cannot be written after the rename (a full disk), the version
        is moved back to ``staged`` and the error raised. The number is :meth:`next_version`.
        Returns ``(version, published_now)``.
        """
        if not valid_name(model):
            raise ValueError(f"model name {model!r} is not a valid name")
        model_path = self.model_dir / model
        seal_version(staged)  # every file flushed: slow, and the run's own folder
        with self.locked():
            existing = find_job_version(model_path, job_id)
            if existing is not None:
                log.info("job %s already published %s version %d", job_id, model, existing)
                self.write_config(self.render())
                return existing, False
            numbers = read_numbers(self.model_dir)
            version = self.next_version(model, numbers)
            if check is not None:
                check(model_path)
            atomic_write(
                self.model_dir / NUMBERS_FILE,
                json.dumps({**numbers, model: version}, indent=2, sort_keys=True) + "\n",
            )
            new_model = not model_path.is_dir()
            model_path.mkdir(parents=True, exist_ok=True)
            target = model_path / str(version)
            config = UndoPoint(self.model_dir, (CONFIG_FILE,))
            os.rename(staged, target)
            try:
                fsync_path(model_path)  # the rename, and a new model's folder in the repository
                fsync_path(self.model_dir)
                self.write_config(self.render())
                config.discard()
            except BaseException:
                # All or nothing: a version whose config could not be written (a full disk, or
                # a flush that failed after the new config was renamed in) is taken back out,
                # and the config put back, so a job that fails never leaves a version behind.
                self._take_back(target, staged, model_path if new_model else None)
                config.restore()
                raise
            return version, True

    def next_version(self, model: str, numbers: dict[str, int]) -> int:
        """One more than any number the model's versions ever had: on disk, named by a label,
        or published before and deleted since (``numbers``: ``.versions.json``), so a number is
        never given twice (a label or a model server's cache could take the new model for the
        old one). A numbered folder that is no version (empty, half copied) takes its number
        too: the new version's rename onto it would fail."""
        model_path = self.model_dir / model
        on_disk = [*self.versions(model), *numbered_names(model_path)]
        taken = [*on_disk, *self.labels().get(model, {}).values()]
        return max([*taken, numbers.get(model, 0)], default=0) + 1

    def _take_back(self, version_dir: Path, staged: Path, new_model: Path | None) -> None:
        """Undo a publish that failed after its rename: the version goes back to ``staged``
        (which its caller removes), a model folder made for it goes too."""
        log.error("publishing %s failed after its rename; taking it back out", version_dir)
        try:
            os.rename(version_dir, staged)
            if new_model is not None:
                new_model.rmdir()
            for folder in (version_dir.parent, self.model_dir):
                if folder.is_dir():
                    fsync_path(folder)
        except OSError:
            log.exception("could not take %s back out of the repository", version_dir)


def sync_config(model_dir: Path, base_path_root: str | None = None) -> Path:
    """(Re)write the config file beside the models, under the repository lock."""
    return Repository(model_dir, base_path_root).sync()


def render_config(
    model_dir: Path,
    labels: dict[str, dict[str, int]] | None = None,
    base_path_root: str | None = None,
) -> str:
    """The config for what ``model_dir`` holds now (:meth:`Repository.render`)."""
    return Repository(model_dir, base_path_root).render(labels)


def main(argv: list[str] | None = None) -> int:
    """``python -m fdl.repository [--model-dir DIR]``: write ``models.config`` for the model dir.

    Deployments run it once before TF Serving starts (which refuses a missing config file).
    """
    parser = argparse.ArgumentParser(prog="python -m fdl.repository", description=main.__doc__)
    parser.add_argument("--model-dir", type=Path, default=None, help="default: FDL_MODEL_DIR")
    args = parser.parse_args(argv)
    try:
        settings = get_settings()  # FDL_SERVING_MODEL_BASE_PATH too, as the gateway and workers
    except SETTINGS_ERRORS as error:
        parser.exit(1, f"{parser.prog}: {settings_problem(error)}\n")
    explicit = args.model_dir is not None or "model_dir" in settings.model_fields_set
    model_dir = args.model_dir or settings.model_dir
    if problem := prepare_model_dir(model_dir, explicit):
        parser.exit(1, f"{parser.prog}: {problem}\n")
    try:
        path = sync_config(model_dir, settings.serving_model_base_path)
    except (OSError, Timeout) as error:  # a read-only or full disk, a lock never freed
        parser.exit(1, f"{parser.prog}: {model_dir}: {error}\n")
    print(f"model config: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
