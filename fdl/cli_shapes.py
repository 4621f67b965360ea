"""What the CLI expects of the gateway's JSON answers, checked in one place before any command
reads them (``Gateway.request``'s ``expect``, and the job events `fdl train` follows).

Only the fields the CLI reads are declared, strictly typed (a number is not a string), and every
other field is allowed: a newer gateway that adds fields still passes. An answer of another shape
(a proxy's or another service's ``[]``, ``{"foo": 1}`` or ``"text"`` with 200) is reported with
the URL and what was expected, never a traceback (docs/ui.md, "CLI").
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError


class Shape(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    # What an answer of this shape is, for the error message.
    expected: ClassVar[str] = ""


class Optimizer(Shape):
    name: str | None = None
    learning_rate: float | None = None


class Spec(Shape):
    model: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    publish_as: str | None = None
    optimizer: Optimizer | None = None


class Progress(Shape):
    """A job's progress: its record's ``progress`` and the data of a ``progress`` event."""

    expected = "a progress event (an object with the epoch)"
    epoch: int | None = None
    epochs: int | None = None
    step: int | None = None
    steps: int | None = None
    loss: float | None = None
    accuracy: float | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None
    images_per_second: float | None = None
    eta_seconds: float | None = None


class Metrics(Shape):
    test_accuracy: float | None = None


class Result(Shape):
    model: str | None = None
    version: int | None = None
    published: bool | None = None
    reason: str | None = None
    metrics: Metrics | None = None


class Job(Shape):
    expected = "a job (an object with an id and a status)"
    id: str
    status: str
    spec: Spec | None = None
    progress: Progress | None = None
    result: Result | None = None
    error: str | None = None
    created_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int | None = None
    handed_back: int | None = None


class JobPage(Shape):
    expected = 'a page of jobs (an object with "jobs" and "total")'
    jobs: list[Job]
    total: int


class StatusEvent(Shape):
    expected = "a status event (an object with the job's status)"
    status: str


class Version(Shape):
    version: int
    state: str | None = None
    labels: list[str] | None = None
    metrics: Metrics | None = None
    job_id: str | None = None
    pending: bool | None = None


class Model(Shape):
    name: str
    versions: list[Version]


class ModelDetail(Model):
    expected = 'a model (an object with "name" and "versions")'
    server_error: str | None = None


class Models(Shape):
    expected = 'the list of models (an object with "models")'
    models: list[Model]


class Score(Shape):
    label: str
    score: float


class Prediction(Score):
    top_k: list[Score]


class Classification(Shape):
    expected = 'predictions (an object with "version" and "predictions")'
    version: int
    predictions: list[Prediction]


class Label(Shape):
    expected = "a label (an object with its version)"
    version: int
    previous: int | None = None


def _kind(data: Any) -> str:
    if data is None:
        return "null or an empty body"
    if isinstance(data, int | float) and not isinstance(data, bool):
        return "a JSON number"
    kinds = {dict: "object", list: "array", str: "string", bool: "boolean"}
    return f"a JSON {kinds.get(type(data), type(data).__name__)}"


def problem(shape: type[Shape], data: Any) -> str | None:
    """None when ``data`` has ``shape``; else what is wrong with it, in a few words."""
    try:
        shape.model_validate(data)
    except ValidationError as error:
        if not isinstance(data, dict):
            return f"expected {shape.expected}, got {_kind(data)}"
        found = [
            f"{'.'.join(str(part) for part in e['loc'])}: {e['msg'].lower()}"
            for e in error.errors()[:3]
        ]
        return f"expected {shape.expected}; {'; '.join(found)}"
    return None
