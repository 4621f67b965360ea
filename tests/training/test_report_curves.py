"""training_curves.png: whole epochs on the x-axis, and a one-epoch run still says something."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from training.report import CURVES_PNG, curves_figure, evaluation, write_report


def epoch(n: int, loss: float, accuracy: float) -> dict[str, float | int]:
    return {"epoch": n, "loss": loss, "accuracy": accuracy, "val_loss": loss + 0.1,
            "val_accuracy": accuracy - 0.02}  # fmt: skip


def test_one_epoch_is_drawn_on_a_whole_epoch_axis_with_its_values() -> None:
    import matplotlib.pyplot as plt

    fig = curves_figure([epoch(1, 0.3512, 0.9123)], "mnist_logreg")
    try:
        for ax in fig.axes:
            low, high = ax.get_xlim()
            assert low <= 0.5 and high >= 1.5, (low, high)  # not 0.96 to 1.04
            ticks = [t for t in ax.get_xticks() if low <= t <= high]
            assert ticks == [1.0], ticks
        texts = {t.get_text() for ax in fig.axes for t in ax.texts}
        assert {"0.3512", "0.9123", "0.4512", "0.8923"} <= texts
        assert "1 epoch" in fig._suptitle.get_text()
    finally:
        plt.close(fig)


def test_many_epochs_have_integer_ticks_and_no_labels() -> None:
    import matplotlib.pyplot as plt

    fig = curves_figure([epoch(n, 1 / n, 1 - 1 / (n + 1)) for n in range(1, 13)], "cnn")
    try:
        for ax in fig.axes:
            assert all(float(t).is_integer() for t in ax.get_xticks())
            assert not ax.texts
            assert ax.get_xlim() == pytest.approx((0.5, 12.5))
    finally:
        plt.close(fig)


def test_write_report_writes_the_curves(tmp_path: Path) -> None:
    import numpy as np

    y = np.array([0, 1, 1, 0])
    report = evaluation(y, y, ["a", "b"], {"test_accuracy": 1.0, "test_loss": 0.01})
    files = write_report(tmp_path, report, [epoch(1, 0.2, 0.95)], "tiny")
    assert CURVES_PNG in files
    assert Image.open(tmp_path / CURVES_PNG).size == (1000, 400)
