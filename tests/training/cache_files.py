"""What the dataset-cache tests share (test_data_leftovers.py, test_data_fill_lock.py): the
folder their child processes run in, and the temporaries a cache folder holds."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def hidden(folder: Path) -> list[str]:
    """The temporaries in a cache folder and the trees below it (the fill lock aside)."""
    found = [*folder.glob(".*"), *folder.glob("*/.*")]
    return sorted(str(p.relative_to(folder)) for p in found if p.name != ".fill.lock")
