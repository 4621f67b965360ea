"""What a damaged data file raises: :class:`DataUnreadableError`, naming the file, what is wrong
with it and what to do."""

from __future__ import annotations

import gzip
import pickle
import tarfile
import zlib

import numpy as np

from training.data import DataMissingError


class DataUnreadableError(DataMissingError, ValueError):
    """A data file is there but unusable (cut short, not what its name says, at odds with its
    companion files); the message names the file, what is wrong and what to do. Jobs report it
    as a DataMissingError (one attempt, its message as the job's error); a ValueError, as
    :func:`training.data.mnist.read_idx` raised for a truncated file before."""


# What to do about a damaged data file: the loaders find it again if it is copied again, and
# download it (where they may) if it is deleted.
FIX = "copy it again or delete it to download"
# What reading a damaged gzip, tarball or pickle raises.
READ_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error, tarfile.TarError, pickle.UnpicklingError)


def unreadable(path: object, error: BaseException, kind: str = "gzip") -> DataUnreadableError:
    """The clear error for ``path`` (a ``kind`` file) that raised ``error`` (one of
    :data:`READ_ERRORS`) when read."""
    if isinstance(error, EOFError) or "truncated" in str(error) or "unexpected end" in str(error):
        what = f"is not a complete {kind} file (it ends early)"
    elif isinstance(error, gzip.BadGzipFile) and "Not a gzipped file" in str(error):
        what = f"is not a gzip file ({error})"
    else:
        what = f"is a damaged {kind} file ({type(error).__name__}: {error})"
    return DataUnreadableError(f"{path} {what}: {FIX}")


def check_labels(path: object, labels: np.ndarray, classes: int) -> None:
    """Every label of ``path`` names one of ``classes`` classes (0 to classes - 1)."""
    bad = np.flatnonzero((labels < 0) | (labels >= classes))
    if bad.size:
        raise DataUnreadableError(
            f"{path} has {bad.size} labels outside 0-{classes - 1} (label {labels[bad[0]]} at "
            f"index {bad[0]}): {FIX}"
        )
