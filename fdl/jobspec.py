"""The training-job specification: validated by the gateway, executed by the training worker.

TensorFlow-free so that the gateway can validate specs (422 naming the field) without it.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from fdl.architectures import ARCHITECTURES, BUILTIN_DATASETS, ArchitectureName
from fdl.jobspec_precision import check_dropout, check_float32
from fdl.json_types import JSON_BOOL, JSON_FLOAT, JSON_INT

RecipeName = Literal["book", "fast"]
# What a recipe gives the fields a spec leaves unset (training/recipes.py has the rest of each
# recipe: schedule, label smoothing, weight decay, augmentation). Keyed by recipe, then
# by model; "*" is every other model. The resolved values are stored in the job's spec.
RECIPE_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "book": {"*": {}},
    "fast": {
        # Twice the book's batch, Adam's rate scaled with it (linear scaling rule).
        "*": {"batch_size": 256, "optimizer": {"name": "adam", "learning_rate": 0.002}},
        # Twice that rate with BatchNorm: 80.36% against 79.47% in 15 epochs (docs/training.md).
        "cifar10_cnn_bn": {
            "batch_size": 256,
            "optimizer": {"name": "adam", "learning_rate": 0.004},
        },
        "cifar10_airnet": {
            "batch_size": 512,
            "optimizer": {"name": "nesterov", "learning_rate": 0.8, "momentum": 0.9},
        },
    },
}
# Served model names, labels and folder dataset names: a path segment, never a path. Matched
# with fullmatch: with re.match, "$" also matches before a trailing newline ("evil\n").
NAME_PATTERN = r"^[a-z0-9][a-z0-9_\-]{0,63}$"
_NAME_RE = re.compile(NAME_PATTERN)
NAME_RULE = "lower-case letters, digits, _ and -, starting with a letter or digit, at most 64"

# The most a spec's max_duration_s may ask for (30 days); a worker's own limit may be lower.
MAX_DURATION_S = 30 * 86400
# The most max_train_examples / max_test_examples may be: more than any data set a worker trains
# on holds (ImageNet: 1.3 million), and a number that records and listings show whole.
MAX_EXAMPLES = 10**9

OptimizerName = Literal["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adadelta"]


# The most of the training examples that validation_split holds out: one in this many
# (training/pipeline.py:split_validation), so that small capped runs still train.
VALIDATION_ONE_IN = 5


def valid_name(name: str) -> bool:
    return isinstance(name, str) and _NAME_RE.fullmatch(name) is not None


def valid_label(label: str) -> bool:
    """A version label: a name that is not all digits (those read as version numbers)."""
    return valid_name(label) and not label.isdigit()


def check_name(value: str) -> str:
    """A pydantic validator: the name itself, or ValueError saying the rule."""
    if not valid_name(value):
        raise ValueError(f"must be a name: {NAME_RULE}")
    return value


def check_label(value: str) -> str:
    check_name(value)
    if value.isdigit():
        raise ValueError("must not be all digits (that reads as a version number)")
    return value


class _Strict(BaseModel):
    # Values only in their JSON types (fdl/json_types.py): lax mode read "2_0" as 20, "yes" as
    # true. Strict for any field without a JSON_INT, JSON_FLOAT or JSON_BOOL too.
    model_config = ConfigDict(extra="forbid", strict=True)


class OptimizerSpec(_Strict):
    name: OptimizerName = "adam"
    learning_rate: Annotated[float, Field(gt=0, le=10), JSON_FLOAT] = 0.001
    momentum: Annotated[float, Field(ge=0, lt=1), JSON_FLOAT] = 0.9
    beta_1: Annotated[float, Field(gt=0, lt=1), JSON_FLOAT] = 0.9
    beta_2: Annotated[float, Field(gt=0, lt=1), JSON_FLOAT] = 0.999
    rho: Annotated[float, Field(gt=0, lt=1), JSON_FLOAT] = 0.95
    epsilon: Annotated[float, Field(gt=0, le=1), JSON_FLOAT] = 1e-7

    _float32 = field_validator("learning_rate", "momentum", "beta_1", "beta_2", "rho", "epsilon")(
        check_float32
    )


class RegularizationSpec(_Strict):
    l1: Annotated[float, Field(ge=0, le=1), JSON_FLOAT] = 0.0
    l2: Annotated[float, Field(ge=0, le=1), JSON_FLOAT] = 0.0
    max_norm: Annotated[float, Field(gt=0, le=100), JSON_FLOAT] | None = None
    # None means the architecture's own default (the book's 0.5 for the CNNs, none otherwise).
    dropout: Annotated[float, Field(ge=0, lt=1), JSON_FLOAT] | None = None

    _float32 = field_validator("max_norm")(check_float32)

    _dropout_keeps_units = field_validator("dropout")(check_dropout)


class EarlyStoppingSpec(_Strict):
    patience: Annotated[int, Field(ge=1, le=100), JSON_INT] = 3
    monitor: Literal["val_loss", "val_accuracy"] = "val_loss"


class PublishSpec(_Strict):
    min_accuracy: Annotated[float, Field(ge=0, le=1), JSON_FLOAT] = 0.0
    only_if_better: Annotated[bool, JSON_BOOL] = False


class JobSpec(_Strict):
    model: ArchitectureName
    recipe: RecipeName | None = Field(
        default=None,
        description="training recipe: book (default) or fast (default for cifar10_airnet)",
    )
    dataset: str | None = Field(
        default=None,
        description="mnist, cifar10, or the name of an image-folder dataset under FDL_DATA_DIR",
    )
    epochs: Annotated[int, Field(ge=1, le=500), JSON_INT] = 1
    batch_size: Annotated[int, Field(ge=1, le=4096), JSON_INT] = 128
    optimizer: OptimizerSpec = OptimizerSpec()
    regularization: RegularizationSpec = RegularizationSpec()
    validation_split: Annotated[int, Field(ge=0, le=50_000), JSON_INT] = 5_000
    early_stopping: EarlyStoppingSpec | None = None
    augment: Annotated[bool, JSON_BOOL] | None = Field(
        default=None, description="CIFAR augmentation; default on for CIFAR"
    )
    seed: Annotated[int, Field(ge=0, le=2**31 - 1), JSON_INT] = 42
    publish_as: str | None = None
    publish: PublishSpec = PublishSpec()
    # Caps the training / test examples used; for smoke runs and tests.
    max_train_examples: Annotated[int, Field(ge=1, le=MAX_EXAMPLES), JSON_INT] | None = None
    max_test_examples: Annotated[int, Field(ge=1, le=MAX_EXAMPLES), JSON_INT] | None = None
    max_duration_s: Annotated[int, Field(ge=1, le=MAX_DURATION_S), JSON_INT] | None = Field(
        default=None,
        description="seconds a run of the job may take before it ends failed; the worker's "
        "FDL_MAX_JOB_DURATION_S (24 h by default) applies when it is lower or this is unset",
    )

    @field_validator("publish_as", "dataset")
    @classmethod
    def _safe_name(cls, value: str | None) -> str | None:
        return None if value is None else check_name(value)

    # Checks across fields run on the later field, so that a 422 names it (fields are validated
    # in declaration order: info.data holds the earlier ones that passed).
    @field_validator("dataset")
    @classmethod
    def _dataset_fits(cls, value: str | None, info: ValidationInfo) -> str | None:
        arch = ARCHITECTURES.get(info.data.get("model", ""))
        if arch and value in BUILTIN_DATASETS and value != arch.dataset:
            raise ValueError(
                f"dataset {value!r} does not fit model {info.data['model']!r} "
                f"(its images are shaped for {arch.dataset})"
            )
        return value

    @field_validator("batch_size")
    @classmethod
    def _batch_norm_needs_two(cls, value: int, info: ValidationInfo) -> int:
        arch = ARCHITECTURES.get(info.data.get("model", ""))
        if arch and arch.batch_norm and value < 2:
            raise ValueError(
                f"model {info.data['model']!r} normalizes by batch (batch normalization): a "
                f"batch of {value} image has no variance, and the moving variance that the "
                "published model normalizes with collapses to 0 (it answers one class for "
                "every image); use at least 2"
            )
        return value

    @field_validator("early_stopping")
    @classmethod
    def _needs_validation(cls, value: EarlyStoppingSpec | None, info: ValidationInfo) -> Any:
        if value is not None and info.data.get("validation_split") == 0:
            raise ValueError("early_stopping needs a validation set (validation_split > 0)")
        return value

    @field_validator("max_train_examples")
    @classmethod
    def _leaves_validation(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and info.data.get("early_stopping") and value < VALIDATION_ONE_IN:
            raise ValueError(
                f"early_stopping needs validation examples, and {value} training examples leave "
                f"none (validation_split holds out at most one in {VALIDATION_ONE_IN}); use at "
                f"least {VALIDATION_ONE_IN}"
            )
        return value

    @field_validator("augment")
    @classmethod
    def _augment_cifar_only(cls, value: bool | None, info: ValidationInfo) -> bool | None:
        arch = ARCHITECTURES.get(info.data.get("model", ""))
        if value and arch and arch.dataset != "cifar10":
            raise ValueError("augment applies to the CIFAR-10 architectures only")
        return value

    @model_validator(mode="after")
    def _fill_defaults(self) -> JobSpec:
        if self.dataset is None:
            self.dataset = ARCHITECTURES[self.model].dataset
        if self.publish_as is None:
            self.publish_as = self.model
        self._apply_recipe()
        if self.augment is None:
            self.augment = ARCHITECTURES[self.model].dataset == "cifar10"
        return self

    def _apply_recipe(self) -> None:
        """Fills the fields the caller left unset from the recipe's defaults."""
        if self.recipe is None:
            self.recipe = "fast" if self.model == "cifar10_airnet" else "book"
        table = RECIPE_DEFAULTS[self.recipe]
        defaults = table.get(self.model, table["*"])
        unset = set(defaults) - self.model_fields_set
        if "batch_size" in unset:
            self.batch_size = defaults["batch_size"]
        if "optimizer" in unset:
            self.optimizer = OptimizerSpec(**defaults["optimizer"])
        elif "optimizer" in defaults:
            # Field by field: {"learning_rate": 0.4} keeps the recipe's optimizer and its other
            # settings; naming another optimizer takes none of the recipe's values.
            given = self.optimizer.model_dump(include=self.optimizer.model_fields_set)
            if given.get("name", defaults["optimizer"]["name"]) == defaults["optimizer"]["name"]:
                self.optimizer = OptimizerSpec(**(defaults["optimizer"] | given))
