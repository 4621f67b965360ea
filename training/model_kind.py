"""What a published version was trained on and answers for, as its ``metadata.json`` records it
(dataset, class names, the contract's input): the quality gate's ``only_if_better`` compares the
test accuracies of versions of one kind only (:func:`training.publish.quality_gate`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fdl import contract
from training.data import ImageData


@dataclass(frozen=True)
class ModelKind:
    """What a job's model was trained on and answers for, as its ``metadata.json`` records it:
    ``only_if_better`` compares test accuracies of versions of one kind only (another dataset's
    test set, other classes or another input say nothing of which model is better)."""

    dataset: str
    class_names: tuple[str, ...]
    input_dtype: str
    input_shape: tuple[int, ...]

    @classmethod
    def of(cls, data: ImageData, image_shape: tuple[int, int, int]) -> ModelKind:
        return cls(data.name, tuple(data.class_names), "uint8", (-1, *image_shape))

    def input(self) -> dict[str, Any]:
        """The ``input`` entry of ``metadata.json`` (the contract's tensor)."""
        return {"key": contract.INPUT_KEY, "dtype": self.input_dtype, "shape": [*self.input_shape]}

    def differences(self, metadata: dict[str, Any]) -> list[str]:
        """How a served version, by its metadata, differs from this kind (an entry that its
        metadata lacks is not compared)."""
        found = []
        dataset = metadata.get("dataset")
        served = dataset.get("name") if isinstance(dataset, dict) else None
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
        return found


def _classes(names: Any) -> str:
    names = [str(name) for name in names]
    shown = ", ".join(names[:12]) + (", …" if len(names) > 12 else "")
    return f"{len(names)} ({shown})"
