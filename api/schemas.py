"""Response models and path parameters: what the OpenAPI document shows, with examples."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import Path
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from fdl.job_records import JOB_ID_PATTERN
from fdl.jobspec import NAME_PATTERN, check_label, check_name

_DIGITS = re.compile(r"[0-9]+")


def is_decimal(text: str, max_digits: int | None = None) -> bool:
    """Whether ``text`` is plain decimal: ASCII digits only (leading zeros allowed), at most
    ``max_digits`` of them. ``int()`` and pydantic's lax mode would also take " 5 ", "+5", "5_0"
    (as 50), "5.0" and other scripts' digits."""
    return bool(_DIGITS.fullmatch(text)) and (max_digits is None or len(text) <= max_digits)


def _plain_decimal(value: object) -> object:
    if isinstance(value, str) and not is_decimal(value):
        raise PydanticCustomError(
            "int_decimal", "Input should be a whole number in ASCII digits (0-9)"
        )
    return value


# For every integer in a path or query string: ASCII digits only, then pydantic's own checks (the
# range, its refusal of more than 4300 digits). Placed after Path() or Query(), as in
# ``Annotated[int | None, Query(ge=1), DECIMAL_ONLY]``: before them, the OpenAPI document would
# show the range as "ge"/"le" where JSON Schema says "minimum"/"maximum".
DECIMAL_ONLY = BeforeValidator(_plain_decimal)

# The pattern documents the rule in OpenAPI; the validators apply it in full (fullmatch, and no
# all-digit labels), whatever regex engine reads the pattern.
ModelName = Annotated[
    str,
    Path(pattern=NAME_PATTERN, description="Model name (a folder of the repository)"),
    AfterValidator(check_name),
]
LabelName = Annotated[
    str,
    Path(
        pattern=NAME_PATTERN,
        description="Version label, e.g. stable or canary (not all digits)",
    ),
    AfterValidator(check_label),
]
JobId = Annotated[
    str, Path(pattern=f"^{JOB_ID_PATTERN}$", description="Job id as returned on submit")
]


class ErrorDetail(BaseModel):
    code: str = Field(examples=["model_not_found"])
    message: str = Field(examples=["model digits is not served"])
    details: Any = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    text = {
        400: "Malformed request",
        401: "No or invalid API key",
        403: "The key's role does not allow this",
        404: "Not found",
        409: "Conflict with the current state",
        412: "Precondition failed (`precondition_failed`): the label is not as If-Match / "
        "If-None-Match expected (moved or removed meanwhile, or already there); nothing was "
        "changed. `ETag` gives the version it points at now, when it exists",
        413: "Body or image too large",
        415: "Unsupported media type or image format",
        422: "Invalid input (the message names the field)",
        429: "Rate limit exceeded (see Retry-After)",
        503: "Model server or job store (Redis) unavailable (see Retry-After)",
        504: "Model server deadline exceeded",
    }
    return {s: {"model": ErrorResponse, "description": text.get(s, "Error")} for s in statuses}


class ClassScore(BaseModel):
    label: str = Field(examples=["7"])
    class_id: int = Field(examples=[7])
    score: float = Field(examples=[0.981])


class Prediction(ClassScore):
    top_k: list[ClassScore]


class ClassifyResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "model": "mnist_cnn",
                "version": 3,
                "predictions": [
                    {
                        "label": "7",
                        "class_id": 7,
                        "score": 0.98,
                        "top_k": [
                            {"label": "7", "class_id": 7, "score": 0.98},
                            {"label": "1", "class_id": 1, "score": 0.01},
                        ],
                    }
                ],
            }
        }
    )
    model: str
    version: int
    predictions: list[Prediction]


CLASSIFY_RESPONSES = errors(401, 403, 404, 413, 415, 422, 429, 503, 504)


class Job(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "id": "4f1c0e...",
                "status": "running",
                "spec": {"model": "mnist_cnn", "epochs": 2},
                "progress": {"epoch": 1, "epochs": 2, "accuracy": 0.95},
                "result": None,
                "error": None,
                "created_at": 1764345600.0,
                "started_at": 1764345601.0,
                "finished_at": None,
                "attempts": 1,
                "handed_back": 0,
            }
        }
    )
    id: str
    status: str
    spec: dict[str, Any] | None = None
    progress: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    created_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int | None = Field(
        default=None,
        description="runs counted toward FDL_MAX_ATTEMPTS (a lost run counts; one handed back "
        "by a stopping worker does not, up to FDL_MAX_HAND_BACKS hand-backs)",
    )
    handed_back: int | None = Field(
        default=None,
        description="runs handed back by a stopping worker (a rollout, a restart); each started "
        "the job over from its first epoch (null for a job that an older gateway created)",
    )


class JobList(BaseModel):
    jobs: list[Job]
    total: int
    limit: int
    offset: int


class VersionInfo(BaseModel):
    version: int = Field(examples=[2])
    state: str = Field(
        description="AVAILABLE, LOADING, ... from the model server; NOT_LOADED when it does "
        "not serve this version; UNREADABLE when it does not and the gateway cannot read the "
        "version's folder either (its permissions: error says why)",
        examples=["AVAILABLE"],
    )
    error: str | None = None
    pending: bool = Field(
        default=False,
        description="True for the newest version on disk while the model server reports no "
        "state for it (state NOT_LOADED): published a moment ago, it is loaded at the server's "
        "next poll of the file system or the config. A NOT_LOADED version that is not pending "
        "is retired: kept on disk, not served",
        examples=[False],
    )
    labels: list[str] = Field(default_factory=list, examples=[["stable"]])
    job_id: str | None = None
    metrics: dict[str, Any] | None = None
    class_names: list[str] | None = None
    metadata: dict[str, Any] | None = None


class ModelSummary(BaseModel):
    name: str = Field(examples=["mnist_cnn"])
    labels: dict[str, int] = Field(examples=[{"stable": 1, "canary": 2}])
    versions: list[VersionInfo]
    server_error: str | None = None
    repository_error: str | None = Field(
        default=None,
        description="Why the gateway cannot list the model's folder (e.g. \"Permission denied: "
        "the folder of model 'm' cannot be listed\"): versions then shows only those the model "
        "server reports",
    )


class InputSpecOut(BaseModel):
    version: int
    input_key: str = Field(examples=["images"])
    dtype: str = Field(examples=["DT_UINT8"])
    shape: list[int] = Field(examples=[[-1, 28, 28, 1]])
    profile: str = Field(examples=["digit"])


class ModelDetail(ModelSummary):
    input: InputSpecOut | None = None


class ModelList(BaseModel):
    models: list[ModelSummary]


class LabelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {"version": 2}})
    # Strict: JSON true or "2" is not a version (422).
    version: int = Field(
        ge=1, le=2**62, strict=True, description="The version the label should point at"
    )


class LabelResponse(BaseModel):
    model: str
    label: str
    version: int
    previous: int | None = None
    labels: dict[str, int]
