"""Evaluation report written beside a published model in ``assets.extra/``: per-class accuracy,
confusion matrix (JSON and PNG) and training curves (PNG)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from fdl.json_finite import finite_dumps

CONFUSION_PNG = "confusion_matrix.png"
CURVES_PNG = "training_curves.png"


def strict_json(value: Any) -> str:
    """``value`` as standard JSON (indented, a newline at the end), NaN and infinities written as
    null (:mod:`fdl.json_finite`)."""
    return finite_dumps(value, indent=2) + "\n"


@contextmanager
def naming(path: Path) -> Iterator[Path]:
    """Writes ``path`` inside; an OSError that does not say which file it is about (a write to a
    full disk: ``[Errno 28] No space left on device``) is raised again naming ``path``."""
    try:
        yield path
    except OSError as error:
        if error.filename is not None:
            raise
        raise OSError(error.errno, error.strerror or str(error), str(path)) from error


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (y_true.astype(np.int64), y_pred.astype(np.int64)), 1)
    return matrix


def evaluation(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    class_names: Sequence[str],
    metrics: dict[str, float],
) -> dict[str, Any]:
    matrix = confusion_matrix(y_true, y_pred, len(class_names))
    support = matrix.sum(axis=1)
    per_class = {
        name: (round(float(matrix[i, i] / support[i]), 6) if support[i] else None)
        for i, name in enumerate(class_names)
    }
    return {
        "test_examples": len(y_true),
        "test_accuracy": metrics["test_accuracy"],
        "test_loss": metrics["test_loss"],
        "per_class_accuracy": per_class,
        "class_names": list(class_names),
        "confusion_matrix": matrix.tolist(),
        "confusion_matrix_axes": "rows: true class, columns: predicted class",
    }


def write_report(
    folder: Path, report: dict[str, Any], history: list[dict[str, Any]], title: str
) -> list[str]:
    """Write evaluation.json and the two plots into ``folder``; returns the file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    with naming(folder / "evaluation.json") as path:
        path.write_text(strict_json(report))

    names = report["class_names"]
    matrix = np.asarray(report["confusion_matrix"])
    size = max(4.0, 0.5 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title}: test accuracy {report['test_accuracy']:.4f}")
    if len(names) <= 20:
        limit = matrix.max() / 2 if matrix.size else 0
        for (i, j), value in np.ndenumerate(matrix):
            color = "white" if value > limit else "black"
            ax.text(j, i, str(value), ha="center", va="center", fontsize=7, color=color)
    fig.tight_layout()
    save_png(fig, folder / CONFUSION_PNG)
    save_png(curves_figure(history, title), folder / CURVES_PNG)
    return ["evaluation.json", CONFUSION_PNG, CURVES_PNG]


def save_png(fig: Any, path: Path) -> None:
    """Writes the figure to ``path`` (naming it in an OSError) and closes it, also on failure."""
    import matplotlib.pyplot as plt

    try:
        with naming(path):
            fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)


def curves_figure(history: list[dict[str, Any]], title: str) -> Any:
    """Loss and accuracy per epoch (train and validation). The x-axis shows whole epochs only,
    half an epoch beyond each end; a run of one or two epochs has no curve to speak of, so each
    point is labelled with its value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = [h["epoch"] for h in history]
    for key, ax in (("loss", loss_ax), ("accuracy", acc_ax)):
        for prefix, label in (("", "train"), ("val_", "validation")):
            values = [h.get(prefix + key) for h in history]
            if any(v is not None for v in values):
                ax.plot(epochs, values, marker="o", label=label)
                if len(epochs) <= 2:
                    for x, y in zip(epochs, values, strict=True):
                        if y is not None:
                            ax.annotate(
                                f"{y:.4g}",
                                (x, y),
                                textcoords="offset points",
                                xytext=(8, 4),
                                fontsize=9,
                            )
        if epochs:
            ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        if len(epochs) <= 12:
            ax.set_xticks(epochs)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.legend()
    count = len(epochs)
    fig.suptitle(title if count != 1 else f"{title}: 1 epoch, one value per series")
    fig.tight_layout()
    return fig
