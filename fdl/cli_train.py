"""`fdl train`: a job spec from a JSON file and the options given, submitted and followed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.text import Text

from fdl import cli_format as fmt
from fdl import cli_shapes as shapes
from fdl.architectures import ARCHITECTURES
from fdl.cli_client import ExitCode, Gateway, KeyOption, UrlOption, console, fail
from fdl.cli_follow import detached, follow_to_end, job_epochs, job_path
from fdl.cli_retry import submit_once
from fdl.cli_served import SERVE_TIMEOUT_S, ServeTimeoutOption, wait_until_served
from fdl.jobspec import JobSpec

_ARCHITECTURES_HELP = "; ".join(f"{k} ({a.description})" for k, a in ARCHITECTURES.items())


def build_spec(
    model: str | None, spec_file: Path | None, options: dict[str, Any]
) -> dict[str, Any]:
    """The job spec: the JSON file (if any), overridden by the model argument and the options
    given; validated here. The model comes from the argument, else from the file's "model"."""
    spec: dict[str, Any] = {}
    if spec_file is not None:
        try:
            spec = json.loads(spec_file.read_text())
        except (OSError, ValueError) as error:
            fail(f"cannot read the spec file {spec_file}: {error}", ExitCode.USAGE)
        if not isinstance(spec, dict):
            fail(f"the spec file {spec_file} holds no JSON object", ExitCode.USAGE)
    if model is not None:
        spec["model"] = model
    elif "model" not in spec:
        where = f"the spec file {spec_file} names none" if spec_file is not None else "none given"
        fail(
            f"which model? ({where}): give it as the argument (`fdl train mnist_cnn`) or as "
            '"model" in the --spec file',
            ExitCode.USAGE,
        )
    nested = {"optimizer": "optimizer", "learning_rate": "optimizer", "dropout": "regularization"}
    nested |= {"l2": "regularization", "min_accuracy": "publish", "only_if_better": "publish"}
    for key, value in options.items():
        if value is None:
            continue
        if key == "optimizer":
            spec.setdefault("optimizer", {})["name"] = value
        elif key == "patience":
            spec.setdefault("early_stopping", {})["patience"] = value
        elif key in nested:
            spec.setdefault(nested[key], {})[key] = value
        else:
            spec[key] = value
    try:
        JobSpec.model_validate(spec)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}" for e in error.errors()
        )
        fail(f"invalid job: {problems}", ExitCode.USAGE)
    return spec


def train(
    model: Annotated[
        str | None,
        typer.Argument(
            help=f"Architecture: {_ARCHITECTURES_HELP}. Optional when the --spec file names "
            'it ("model"); given, it overrides the file.',
            show_default=False,
        ),
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs to train.")] = None,
    recipe: Annotated[
        str | None,
        typer.Option(help="book or fast (default: book; fast for cifar10_airnet)."),
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Minibatch size.")] = None,
    optimizer: Annotated[
        str | None, typer.Option(help="sgd, momentum, nesterov, adagrad, rmsprop, adam, adadelta.")
    ] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
    validation_split: Annotated[
        int | None, typer.Option(help="Training examples held out for validation.")
    ] = None,
    dropout: Annotated[float | None, typer.Option(help="Dropout rate.")] = None,
    l2: Annotated[float | None, typer.Option(help="L2 weight penalty.")] = None,
    patience: Annotated[int | None, typer.Option(help="Early stopping after N bad epochs.")] = None,
    augment: Annotated[
        bool | None, typer.Option("--augment/--no-augment", help="CIFAR augmentation.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    max_train_examples: Annotated[
        int | None, typer.Option(help="Cap on training examples.")
    ] = None,
    max_test_examples: Annotated[int | None, typer.Option(help="Cap on test examples.")] = None,
    publish_as: Annotated[str | None, typer.Option(help="Served model name.")] = None,
    min_accuracy: Annotated[
        float | None, typer.Option(help="Publish only at this test accuracy or better.")
    ] = None,
    only_if_better: Annotated[
        bool | None, typer.Option("--only-if-better", help="Publish only if better than latest.")
    ] = None,
    spec_file: Annotated[
        Path | None, typer.Option("--spec", help="A JSON job spec; options override it.")
    ] = None,
    detach: Annotated[bool, typer.Option("--detach", help="Submit and exit at once.")] = False,
    cancel_on_exit: Annotated[
        bool, typer.Option("--cancel-on-exit", help="Ctrl-C cancels the job (default: detach).")
    ] = False,
    serve_timeout: ServeTimeoutOption = SERVE_TIMEOUT_S,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """Submit a training job and follow it live until it ends (Ctrl-C detaches); when it
    published a version, wait until the model server serves it."""
    options = {k: v for k, v in locals().items() if k not in _NOT_SPEC}
    spec = build_spec(model, spec_file, options)
    with Gateway(url, api_key) as gateway:
        job = submit_once(gateway, "/v1/jobs", json=spec, expect=shapes.Job)
        job_id = job["id"]
        shown = fmt.safe(job_id)
        try:
            submitted = f" submitted ({fmt.safe(spec['model'])})."
            console.print(
                Text.assemble("Job ", (shown, "bold"), submitted), soft_wrap=not console.is_terminal
            )
            if detach:
                console.print(
                    f"Follow it with: fdl job {shown} --follow",
                    highlight=False,
                    markup=False,
                    soft_wrap=not console.is_terminal,
                )
                return
            ended = follow_to_end(gateway, job_id, job_epochs(job))
        except KeyboardInterrupt:
            if cancel_on_exit:
                gateway.delete(job_path(job_id), expect=shapes.Job)
                console.print(
                    f"Cancelled job {shown}.",
                    highlight=False,
                    markup=False,
                    soft_wrap=not console.is_terminal,
                )
                raise typer.Exit(130) from None
            detached(job_id)
            return
        # The job has ended: Ctrl-C from here on stops only the wait.
        wait_until_served(gateway, ended, serve_timeout)


_NOT_SPEC = {"model", "spec_file", "detach", "cancel_on_exit", "serve_timeout", "url", "api_key"}
