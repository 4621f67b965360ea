"""A failed job's error as its record keeps it (``GET /v1/jobs/{id}``, the UI, ``fdl job``): the
worker's folders named by their settings, not by where they lie on the worker.

A loader's or a writer's message names the file at fault (``/home/ana/fdl/var/data/mnist/
train-labels-idx1-ubyte.gz is not a complete gzip file ...``): useful, but the absolute path tells
every reader of the job (any admin key, a shared UI) the worker's user name and its layout. The
record shows it as ``$FDL_DATA_DIR/mnist/train-labels-idx1-ubyte.gz``: the file relative to the
folder the user set, which says as much about what to fix. The worker's log keeps the whole path.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from training.settings import WorkerSettings

# A folder's path, as a whole path or the start of one: not inside a longer name (``/data`` of
# ``/database``, ``/srv/data`` of ``/srv/data2``), nor the end of another path.
_BEFORE = r"(?<![\w.~/-])"
_AFTER = r"(?![\w-]|\.[\w-])"
# ``FDL_DATA_DIR=$FDL_DATA_DIR``, which a message naming its setting's value becomes.
_SELF_NAMED = re.compile(r"\b(FDL_[A-Z_]+)=\$\1(?![\w/])")


def _forms(folder: Path) -> set[str]:
    """The absolute spellings a message may use for ``folder``: as given (made absolute) and
    with its links resolved. The root and relative spellings are left alone."""
    forms = {os.path.abspath(folder), os.path.realpath(folder)}
    return {form for form in forms if form.rstrip(os.sep)}


def folder_names(settings: WorkerSettings) -> dict[str, str]:
    """Each absolute spelling of the worker's folders, and what the record shows instead: its
    setting (``$FDL_DATA_DIR``), or ``~`` for the worker's home folder."""
    folders = {
        "$FDL_VAR_DIR": settings.var_dir,
        "$FDL_DATA_DIR": settings.data_dir,
        "$FDL_MODEL_DIR": settings.model_dir,
    }
    if settings.checkpoint_dir is not None:  # else a folder of FDL_VAR_DIR's
        folders["$FDL_CHECKPOINT_DIR"] = settings.checkpoint_dir
    names: dict[str, str] = {}
    with contextlib.suppress(RuntimeError):  # no home folder known: nothing to show as ~
        names.update(dict.fromkeys(_forms(Path.home()), "~"))
    for name, folder in folders.items():
        names.update(dict.fromkeys(_forms(folder), name))
    return names


def shown_error(message: str, settings: WorkerSettings) -> str:
    """``message`` with the worker's folders (:func:`folder_names`) shown by name: the longest
    spelling first, so a folder inside another one (the models in ``var/``) keeps its own."""
    names = folder_names(settings)
    if not names:
        return message
    spellings = sorted(names, key=len, reverse=True)
    pattern = re.compile(_BEFORE + "(" + "|".join(map(re.escape, spellings)) + ")" + _AFTER)
    shown = pattern.sub(lambda match: names[match.group(1)], message)
    return _SELF_NAMED.sub(r"\1", shown)
