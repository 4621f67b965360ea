"""POST /v1/jobs takes a spec's values only in their JSON types: an integer as a JSON integer, a
float as a JSON number (an integer too), a boolean as JSON true or false. Before, pydantic's lax
mode queued "2_0" epochs as 20, " 4_2 " as seed 42, "yes" as true, true as a batch size of 1 and
2.0 as 2 epochs. The example caps (max_train_examples, max_test_examples) are bounded at
10**9: a 4000-digit cap was queued, run, and stored in the record, metadata.json and listings.

A refused spec answers the project's 422 (``invalid_request``) naming the field and saying what
it got; nothing is queued. What the web UI's job form and `fdl train` send, and what the worker
reads back, still passes."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from typer.testing import CliRunner

from fdl.cli import app
from fdl.cli_client import ExitCode
from fdl.jobs import JobStore
from fdl.jobspec import MAX_EXAMPLES, JobSpec
from harness.gateway import ADMIN_KEY, Gateway, gateway_running

QUEUE = "strict-types"
HUGE = int("9" * 4000)

# A spec's fields (beside "model"), the field the 422 names, and what its message says.
REFUSED: list[tuple[dict, str, str]] = [
    ({"epochs": "2_0"}, "epochs", "expected a JSON integer, got the string '2_0'"),
    ({"seed": " 4_2 "}, "seed", "expected a JSON integer, got the string ' 4_2 '"),
    ({"early_stopping": {"patience": "0_3"}}, "early_stopping.patience", "the string '0_3'"),
    ({"max_duration_s": "3_600.0"}, "max_duration_s", "the string '3_600.0'"),
    ({"publish": {"only_if_better": "yes"}}, "publish.only_if_better", "JSON true or false"),
    ({"publish": {"min_accuracy": "9e-1"}}, "publish.min_accuracy", "a JSON number, got the"),
    ({"batch_size": True}, "batch_size", "expected a JSON integer, got true"),
    ({"epochs": 2.0}, "epochs", "expected a JSON integer, got the number 2.0"),
    ({"validation_split": 1000.0}, "validation_split", "got the number 1000.0"),
    ({"max_train_examples": "100"}, "max_train_examples", "got the string '100'"),
    ({"augment": 1, "model": "cifar10_cnn"}, "augment", "JSON true or false, got the integer 1"),
    ({"publish": {"only_if_better": 0}}, "publish.only_if_better", "got the integer 0"),
    ({"optimizer": {"learning_rate": "0.01"}}, "optimizer.learning_rate", "a JSON number"),
    ({"optimizer": {"momentum": False}}, "optimizer.momentum", "a JSON number, got false"),
    ({"regularization": {"dropout": "0.5"}}, "regularization.dropout", "the string '0.5'"),
    ({"max_train_examples": HUGE}, "max_train_examples", f"less than or equal to {MAX_EXAMPLES}"),
    ({"max_test_examples": MAX_EXAMPLES + 1}, "max_test_examples", f"{MAX_EXAMPLES}"),
]

# Each value in its JSON type, integers for floats among them; the job's spec as stored.
ACCEPTED: list[tuple[dict, dict]] = [
    (
        {"epochs": 2, "seed": 0, "batch_size": 64, "max_duration_s": 3600},
        {"epochs": 2, "seed": 0, "batch_size": 64, "max_duration_s": 3600},
    ),
    (
        {"publish": {"min_accuracy": 1, "only_if_better": True}, "augment": False},
        {"publish": {"min_accuracy": 1.0, "only_if_better": True}, "augment": False},
    ),
    (
        {"optimizer": {"name": "sgd", "learning_rate": 1}, "regularization": {"l2": 0}},
        {"optimizer": {"learning_rate": 1.0}, "regularization": {"l2": 0.0}},
    ),
    (
        {"early_stopping": {"patience": 3}, "max_train_examples": MAX_EXAMPLES},
        {"early_stopping": {"patience": 3, "monitor": "val_loss"}, "max_train_examples": 10**9},
    ),
    ({"max_test_examples": 1, "validation_split": 0}, {"max_test_examples": 1}),
    # What the web UI's job form sends (api/static/js/jobs.js: specFromForm, Number() of each
    # field, booleans from its checkboxes), with every field filled in.
    (
        {
            "model": "cifar10_cnn",
            "epochs": 3,
            "batch_size": 128,
            "validation_split": 5000,
            "seed": 42,
            "regularization": {"l2": 0.0005, "dropout": 0.25},
            "publish": {"min_accuracy": 0.5, "only_if_better": False},
            "recipe": "book",
            "optimizer": {"name": "adam", "learning_rate": 0.001},
            "early_stopping": {"patience": 2},
            "max_train_examples": 1200,
            "max_test_examples": 300,
            "publish_as": "ui-job",
            "augment": True,
        },
        {"epochs": 3, "regularization": {"l2": 0.0005, "dropout": 0.25}, "augment": True},
    ),
]


@pytest.fixture(scope="module")
def jobs_gateway(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory, logs_dir: Path
) -> Iterator[Gateway]:
    path = tmp_path_factory.mktemp("strict-types")
    with gateway_running(
        "gateway-strict-types",
        logs_dir,
        redis_url,
        None,
        path / "models",
        path / "secrets",
        FDL_TRAINING_QUEUE=QUEUE,
    ) as running:
        yield running


def submit(gateway: Gateway, spec: dict) -> httpx.Response:
    return httpx.post(f"{gateway.url}/v1/jobs", json=spec, headers=gateway.admin(), timeout=10)


def subset(expected: dict, actual: dict) -> bool:
    """Whether ``actual`` holds each of ``expected``'s values, of the same JSON type."""
    for key, value in expected.items():
        if isinstance(value, dict):
            if not (isinstance(actual.get(key), dict) and subset(value, actual[key])):
                return False
        elif type(actual.get(key)) is not type(value) or actual.get(key) != value:
            return False
    return True


@pytest.mark.parametrize(("fields", "field", "says"), REFUSED, ids=[r[1] for r in REFUSED])
def test_a_value_not_in_its_json_type_is_refused_with_422(
    jobs_gateway: Gateway, redis_url: str, fields: dict, field: str, says: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    before = client.llen(QUEUE)
    response = submit(jobs_gateway, {"model": "mnist_mlp", **fields})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request", error
    assert says in error["message"], error
    assert error["message"].startswith(f"{field}: "), error
    assert [d["field"] for d in error["details"]] == [field], error
    assert client.llen(QUEUE) == before  # nothing queued


def test_a_huge_cap_is_refused_in_a_short_answer(jobs_gateway: Gateway) -> None:
    """The 4000-digit cap is not repeated back: the message names the bound."""
    response = submit(jobs_gateway, {"model": "mnist_mlp", "max_train_examples": HUGE})
    assert response.status_code == 422, response.text
    assert len(response.text) < 1000, response.text


@pytest.mark.parametrize(("fields", "stored"), ACCEPTED, ids=range(len(ACCEPTED)))
def test_values_in_their_json_types_are_accepted_and_read_back_by_the_worker(
    jobs_gateway: Gateway, redis_url: str, fields: dict, stored: dict
) -> None:
    response = submit(jobs_gateway, {"model": "mnist_mlp", **fields})
    assert response.status_code == 202, response.text
    job = response.json()
    assert subset(stored, job["spec"]), job["spec"]
    # The worker validates the stored spec again (training/job.py:run_job): as Redis holds it.
    record = JobStore.from_url(redis_url).get(job["id"])
    assert record is not None and record["spec"] == job["spec"]
    assert JobSpec.model_validate(record["spec"]).model_dump(mode="json") == job["spec"]


def test_the_cli_sends_its_flags_as_json_types(
    jobs_gateway: Gateway, redis_url: str, tmp_path: Path
) -> None:
    """`fdl train` parses its flags itself and sends JSON numbers and booleans; a --spec file
    with a number in a string is refused before anything is sent, as the gateway would."""
    flags = ["--epochs", "3", "--learning-rate", "0.01", "--min-accuracy", "1"]
    flags += ["--only-if-better", "--max-train-examples", "100", "--no-augment"]
    code, output = fdl("train", "mnist_mlp", *flags, "--detach", "--url", jobs_gateway.url)
    assert code == 0, output
    job_id = output.split("Job ", 1)[1].split()[0]
    record = JobStore.from_url(redis_url).get(job_id)
    assert record is not None, output
    expected = {"epochs": 3, "max_train_examples": 100, "augment": False}
    expected |= {"publish": {"min_accuracy": 1.0, "only_if_better": True}}
    assert subset(expected, record["spec"]), record["spec"]
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps({"model": "mnist_mlp", "epochs": "3"}))
    code, output = fdl("train", "--spec", str(spec_file), "--detach", "--url", jobs_gateway.url)
    assert code == ExitCode.USAGE, output
    assert "epochs: expected a JSON integer, got the string '3'" in output, output


def fdl(*args: str) -> tuple[int, str]:
    """`fdl ARGS` with the admin key: its exit code and its output on one line."""
    env = {name: None for name in os.environ if name.startswith("FDL_")}
    result = CliRunner().invoke(app, list(args), env={**env, "FDL_API_KEY": ADMIN_KEY})
    assert result.exception is None or isinstance(result.exception, SystemExit), result
    return result.exit_code, " ".join(result.output.split())
