"""Writing into the model repository so that it survives crashes and power losses, readable by
other users (the model server may run as another user): files replaced atomically, version
folders flushed to the disk before they are renamed in, and the renames flushed too; and reading
its small files (metadata) bounded, whatever someone put in their place.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path


def _read_umask() -> int:
    """The process's umask, read without changing it where Linux shows it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_read_umask()


def atomic_write(path: Path, text: str) -> None:
    """Replace ``path`` by a complete new file, readable by others (``0666 & ~umask``). An
    OSError that names no file (a write to a full disk: ``[Errno 28] No space left on device``)
    is raised again naming ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)  # mkstemp creates 0600, unreadable by a model server user
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:
        Path(tmp).unlink(missing_ok=True)
        if error.filename is not None:
            raise
        raise OSError(error.errno, error.strerror or str(error), str(path)) from error
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_path(path.parent)  # the rename itself survives a power loss only once its folder is


def fsync_path(path: Path | str) -> None:
    """Flush a file's or a folder's contents (a folder's: its entries) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise  # those two: a file system that cannot flush a folder (some network mounts)
    finally:
        os.close(fd)


def seal_version(folder: Path) -> None:
    """Make a staged version folder readable by other users (TensorFlow may write files 0600 on
    some systems) and durable: every file and folder in it is flushed to the disk before it is
    renamed in, so a power loss after the publish was acknowledged cannot leave a version whose
    files are empty or missing (the model server would fail to load it)."""
    for root, dirs, files in os.walk(folder, topdown=False):
        for name in files:
            path = os.path.join(root, name)
            os.chmod(path, os.stat(path).st_mode | 0o444 & FILE_MODE)
            fsync_path(path)
        for name in dirs:
            path = os.path.join(root, name)
            os.chmod(path, os.stat(path).st_mode | 0o555 & (FILE_MODE | 0o111))
            fsync_path(path)
    os.chmod(folder, os.stat(folder).st_mode | 0o555 & (FILE_MODE | 0o111))
    fsync_path(folder)


def read_small_file(path: Path, limit: int) -> bytes | None:
    """The bytes of a regular file of at most ``limit`` bytes, else None (also when it cannot
    be read). Anything else is checked before it is opened, and again on what was opened
    (non-blocking, so a FIFO swapped in meanwhile is never waited on)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except (OSError, ValueError):  # ValueError: a NUL in the path
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        chunks: list[bytes] = []
        size = 0
        while size <= limit:  # the file may grow after fstat: never more than limit + 1
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            size += len(chunk)
        return None
    except (OSError, MemoryError):
        return None
    finally:
        os.close(fd)
