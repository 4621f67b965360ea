"""What a published version was trained on, tested on and answers for, as its ``metadata.json``
records it (dataset, class names, the contract's input, the test set): the quality gate's
``only_if_better`` compares the test accuracies of versions of one kind only
(:func:`training.publish.quality_gate`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from fdl import contract
from fdl.architectures import BUILTIN_DATASETS
from training.data import IDX, IMAGE_FOLDER, LAYOUTS, PYTHON_BATCHES, ImageData

# The folders that CIFAR-10's python batches are read from, by name: the batches' own, and the
# cache's unpacked copy of the official tarball (cifar-10-python.tar.gz, which the worker
# downloads), for versions published before metadata.json recorded the layout.
PYTHON_BATCH_FOLDERS = ("cifar-10-batches-py", "cifar-10-python")


@dataclass(frozen=True)
class ModelKind:
    """What a job's model was trained on, tested on and answers for, as its ``metadata.json``
    records it: ``only_if_better`` compares test accuracies of versions of one kind only
    (another dataset's test set, other classes, another input, or another test set of the same
    dataset, smaller (``max_test_examples``), stored otherwise (CIFAR-10's lossy JPEG export
    against its python batches) or holding other images (two image-folder exports, by the test
    set's fingerprint), say nothing of which model is better)."""

    dataset: str
    class_names: tuple[str, ...]
    input_dtype: str
    input_shape: tuple[int, ...]
    test_examples: int  # the test set's size, after max_test_examples (the first ones)
    layout: str  # how the dataset's images were stored (training.data.LAYOUTS)
    source: str  # where they were read from
    test_sha256: str  # the test set's fingerprint (ImageData.test_sha256)

    @classmethod
    def of(cls, data: ImageData, image_shape: tuple[int, int, int]) -> ModelKind:
        """The kind of a job's (capped) data."""
        return cls(
            data.name,
            tuple(data.class_names),
            "uint8",
            (-1, *image_shape),
            len(data.x_test),
            data.layout,
            data.source,
            data.test_sha256,
        )

    def input(self) -> dict[str, Any]:
        """The ``input`` entry of ``metadata.json`` (the contract's tensor)."""
        return {"key": contract.INPUT_KEY, "dtype": self.input_dtype, "shape": [*self.input_shape]}

    def differences(self, metadata: dict[str, Any]) -> list[str]:
        """How a served version, by its metadata, differs from this kind. A dataset name, class
        names or input that its metadata lacks is not compared; its test set must be known to
        be this job's (its size recorded, its layout recorded or inferred: :meth:`_layout`)."""
        found = []
        dataset = metadata.get("dataset")
        dataset = dataset if isinstance(dataset, dict) else {}
        served = dataset.get("name")
        if served is not None and served != self.dataset:
            found.append(f"it was trained on dataset {served!r}, this job on {self.dataset!r}")
        names = metadata.get("class_names")
        if isinstance(names, list) and names != list(self.class_names):
            found.append(
                f"its classes are {_classes(names)}, this job's {_classes(self.class_names)}"
            )
        put = metadata.get("input")
        if isinstance(put, dict) and "dtype" in put and "shape" in put:
            dtype, shape, mine = put["dtype"], put["shape"], [*self.input_shape]
            if dtype != self.input_dtype or shape != mine:
                found.append(f"its input is {dtype} {shape}, this job's {self.input_dtype} {mine}")
        if served is None or served == self.dataset:  # another dataset's test set is another
            found += self._test_set_differences(dataset)
        return found

    def _test_set_differences(self, dataset: dict[str, Any]) -> list[str]:
        found = []
        size = dataset.get("test")
        if not isinstance(size, int) or isinstance(size, bool):
            found.append("its metadata does not record the size of its test set")
        elif size != self.test_examples:
            found.append(
                f"it was tested on {size} images, this job on {self.test_examples} "
                "(max_test_examples, or the dataset's test images, differ)"
            )
        layout = self._layout(dataset)
        if layout is None:
            found.append(
                "its metadata does not say how its test images were stored (it was published "
                "before versions recorded it, from a copy of the dataset that this one may not be)"
            )
        elif layout != self.layout:
            found.append(
                f"its test images were read from {LAYOUTS.get(layout, repr(layout))}, this "
                f"job's from {LAYOUTS.get(self.layout, repr(self.layout))}"
            )
        recorded = dataset.get("test_sha256")  # absent from versions published before it was
        if not found and isinstance(recorded, str) and recorded != self.test_sha256:
            found.append(
                f"its {size} test images are not this job's (the same number, stored the same "
                "way, but other pixels, labels or order: another copy or export of the dataset; "
                "dataset.test_sha256 differs)"
            )
        return found

    def _layout(self, dataset: dict[str, Any]) -> str | None:
        """The layout that the served version's metadata records or, from before it did, the one
        its source implies: the files this job read, the one layout of MNIST and of a user's
        folder dataset, or CIFAR-10's python batches by their folder's name. None: unknown."""
        recorded = dataset.get("layout")
        if isinstance(recorded, str):
            return recorded
        source = dataset.get("source")
        if source == self.source:
            return self.layout
        if self.dataset == "mnist":
            return IDX
        if self.dataset not in BUILTIN_DATASETS:
            return IMAGE_FOLDER
        if isinstance(source, str) and PurePath(source).name in PYTHON_BATCH_FOLDERS:
            return PYTHON_BATCHES
        return None


def _classes(names: Any) -> str:
    names = [str(name) for name in names]
    shown = ", ".join(names[:12]) + (", …" if len(names) > 12 else "")
    return f"{len(names)} ({shown})"
