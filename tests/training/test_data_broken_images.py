"""An image-folder file Pillow cannot read fails the job with a message naming it, whatever Pillow
raises for it: also the TypeError of a broken TIFF tag and the MemoryError of a chunk length it
cannot allocate (the gateway answers both with 4xx). Before, those escaped the loader as they
came, so the job failed with a bare ``TypeError`` or ``MemoryError`` and no file named."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from training.data import DataMissingError
from training.data.folder import load_image_folder

ROOT = Path(__file__).resolve().parents[2]
SHAPE = (28, 28, 1)


def _tiff_with_text_offsets() -> bytes:
    """A TIFF whose StripOffsets tag is typed as text: Pillow raises TypeError decoding it."""
    buffer = io.BytesIO()
    Image.new("L", (20, 24), 128).save(buffer, format="TIFF")
    data = bytearray(buffer.getvalue())
    ifd = struct.unpack_from("<I", data, 4)[0]
    for entry in range(ifd + 2, ifd + 2 + 12 * struct.unpack_from("<H", data, ifd)[0], 12):
        if struct.unpack_from("<H", data, entry)[0] == 273:  # StripOffsets
            struct.pack_into("<H", data, entry + 2, 2)  # type ASCII
    return bytes(data)


def _png_with_huge_idat() -> bytes:
    """A PNG whose IDAT chunk claims 2 GiB: Pillow reads what is left of it in one read."""
    buffer = io.BytesIO()
    Image.new("L", (20, 24), 128).save(buffer, format="PNG")
    data = buffer.getvalue()
    at = data.index(b"IDAT")
    return data[: at - 4] + struct.pack(">I", 0x7FFFFFF0) + data[at:]


def _folder(root: Path, broken: bytes) -> Path:
    for split in ("train", "test"):
        for name in ("a", "b"):
            folder = root / split / name
            folder.mkdir(parents=True)
            Image.new("L", (28, 28), 200 if name == "a" else 20).save(folder / "ok.png")
    (root / "train" / "b" / "broken.png").write_bytes(broken)
    return root


def test_a_type_error_names_the_file(tmp_path: Path) -> None:
    root = _folder(tmp_path, _tiff_with_text_offsets())
    with pytest.raises(DataMissingError, match=r"cannot read image .*broken\.png"):
        load_image_folder(root, "broken", SHAPE)


_LOAD_UNDER_LIMIT = """
import resource, sys
from pathlib import Path
from training.data import DataMissingError
from training.data.folder import load_image_folder
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
try:
    load_image_folder(Path(sys.argv[1]), "broken", (28, 28, 1))
except DataMissingError as error:
    print("DataMissingError:", error)
except MemoryError:
    print("MemoryError escaped")
"""


def test_a_memory_error_names_the_file(tmp_path: Path) -> None:
    """In a process limited to 1 GiB of address space, so that the allocation fails here as it
    does on a worker short of memory (without a limit, the kernel may promise the 2 GiB)."""
    root = _folder(tmp_path, _png_with_huge_idat())
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", _LOAD_UNDER_LIMIT, str(root)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "DataMissingError: cannot read image" in result.stdout, result.stdout
    assert "broken.png" in result.stdout
