"""What the model routes say of a model that is not served and of a version not picked up yet,
over a real gateway and model server (``python -m serving``) of this module's own.

* A label of a model the model server does not serve: TF Serving (and ``serving/``) read the
  label before the model, so the answer is "Unrecognized servable version label"; the gateway
  then asks the model's status and answers 404 ``model_not_found``, as the version routes do. The
  label routes that change labels say the same of a model the repository does not hold.
* A version just published (copied into the repository) is NOT_LOADED until the model server's
  next poll: it is ``pending`` (``fdl models`` shows ``pending``), not retired; an older version
  the server does not serve is retired.

The model server polls the file system once only (``--file_system_poll_wait_seconds=0``), so a
copied-in version stays unloaded until a config reload (a promotion) makes it poll.
"""

from __future__ import annotations

import base64
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from fdl.cli import app
from fdl.cli_client import ExitCode
from harness.gateway import ADMIN_KEY, Gateway, classify, gateway_running, set_label
from harness.mnist import png_bytes
from harness.model_server import ModelServer, model_server_running, versions_available
from harness.procs import wait_for
from harness.repository import SERVED, copy_repository

NO_MODEL = "nosuchmodel"


@pytest.fixture(scope="module")
def repository(pristine_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_repository(pristine_repository, tmp_path_factory.mktemp("pending") / "models")


@pytest.fixture(scope="module")
def server(repository: Path, logs_dir: Path) -> Iterator[ModelServer]:
    flags = ["--file_system_poll_wait_seconds=0"]  # one scan at start-up, then on reloads only
    with model_server_running("model-server-pending", repository, logs_dir, SERVED, flags) as up:
        yield up


@pytest.fixture(scope="module")
def gateway(
    server: ModelServer,
    repository: Path,
    redis_url: str,
    logs_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    secrets = tmp_path_factory.mktemp("secrets-pending")
    name = "gateway-pending"
    with gateway_running(name, logs_dir, redis_url, server.port, repository, secrets) as up:
        yield up


PNG = png_bytes(np.zeros((28, 28), np.uint8))


def error_of(response: httpx.Response) -> tuple[int, str, str]:
    error = response.json()["error"]
    return response.status_code, error["code"], error["message"]


def test_a_label_of_a_model_that_is_not_served(gateway: Gateway, tmp_path: Path) -> None:
    url = f"{gateway.url}/v1/models/{NO_MODEL}/labels/stable:classify"
    status, code, message = error_of(classify(url, gateway.classifier(), PNG))
    assert (status, code) == (404, "model_not_found"), message
    assert NO_MODEL in message
    # As the version route says it; a served model's unknown label is still label_not_found.
    url = f"{gateway.url}/v1/models/{NO_MODEL}/versions/1:classify"
    assert error_of(classify(url, gateway.classifier(), PNG))[:2] == (404, "model_not_found")
    url = f"{gateway.url}/v1/models/digits/labels/nosuchlabel:classify"
    status, code, message = error_of(classify(url, gateway.classifier(), PNG))
    assert (status, code) == (404, "label_not_found"), message
    # JSON bodies take the same path (the fast path and FastAPI's route alike).
    body = {"instances": [{"b64": base64.b64encode(PNG).decode()}]}
    sent = httpx.post(
        f"{gateway.url}/v1/models/{NO_MODEL}/labels/canary:classify",
        json=body,
        headers=gateway.classifier(),
        timeout=10,
    )
    assert error_of(sent)[:2] == (404, "model_not_found"), sent.text
    # The preprocessing preview by label too.
    shown = classify(
        f"{gateway.url}/v1/models/{NO_MODEL}:preprocess?label=stable", gateway.classifier(), PNG
    )
    assert error_of(shown)[:2] == (404, "model_not_found"), shown.text

    # `fdl classify nosuchmodel x.png --label stable` says so.
    picture = tmp_path / "x.png"
    picture.write_bytes(PNG)
    args = ["classify", NO_MODEL, str(picture), "--label", "stable", "--url", gateway.url]
    result = CliRunner().invoke(app, args, env={"FDL_API_KEY": ADMIN_KEY})
    assert result.exit_code == ExitCode.API_ERROR, result.output
    text = " ".join(result.output.split())
    assert "model_not_found" in text and f"{NO_MODEL} is not served" in text, text


def test_changing_a_label_of_a_model_the_repository_does_not_hold(gateway: Gateway) -> None:
    base = f"{gateway.url}/v1/models/{NO_MODEL}/labels/stable"
    answers = {
        "promote": set_label(gateway, NO_MODEL, "stable", {"version": 1}),
        "roll back": httpx.post(f"{base}:rollback", headers=gateway.admin(), timeout=60),
        "remove": httpx.delete(base, headers=gateway.admin(), timeout=60),
    }
    for what, answer in answers.items():
        status, code, message = error_of(answer)
        assert (status, code) == (404, "model_not_found"), (what, message)
        assert NO_MODEL in message
    # A model that is there keeps its own answers.
    missing = httpx.delete(
        f"{gateway.url}/v1/models/promo/labels/nolabel", headers=gateway.admin(), timeout=60
    )
    assert error_of(missing)[:2] == (404, "label_not_found")
    gone = set_label(gateway, "promo", "stable", {"version": 99})
    assert error_of(gone)[:2] == (404, "version_not_found")


def versions_of(gateway: Gateway, model: str) -> dict[int, dict[str, Any]]:
    response = httpx.get(f"{gateway.url}/v1/models/{model}", headers=gateway.admin(), timeout=10)
    assert response.status_code == 200, response.text
    return {v["version"]: v for v in response.json()["versions"]}


def shown_states(gateway: Gateway) -> tuple[dict[tuple[str, int], str], str]:
    """`fdl models`: the state column by (model, version), and the whole output."""
    args = ["models", "--url", gateway.url]
    result = CliRunner().invoke(app, args, env={"FDL_API_KEY": ADMIN_KEY, "COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    states, model = {}, ""
    for line in result.output.splitlines():
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if len(cells) == 6 and cells[1].isdigit():
            model = cells[0] or model
            states[(model, int(cells[1]))] = cells[2]
    return states, result.output


def publish(source: Path, target: Path) -> None:
    """A version folder put in whole, as a worker publishes it (copied aside, then renamed)."""
    aside = target.parent / f".incoming-{target.name}"
    shutil.copytree(source, aside)
    aside.rename(target)


def test_a_version_published_a_moment_ago_is_pending_not_retired(
    gateway: Gateway, server: ModelServer, repository: Path
) -> None:
    publish(repository / "digits" / "2", repository / "digits" / "3")
    (repository / "fresh").mkdir()
    publish(repository / "digits" / "1", repository / "fresh" / "1")  # a new model, too

    digits = versions_of(gateway, "digits")
    assert digits[3]["state"] == "NOT_LOADED" and digits[3]["pending"] is True
    # A newer folder with no graph in it (being copied, or not a model) is nothing the server
    # will load: it is no version (not listed), and version 1 is not pending because of it.
    (repository / "photos" / "7").mkdir()
    photos = versions_of(gateway, "photos")
    assert list(photos) == [1] and photos[1]["pending"] is False
    shutil.rmtree(repository / "photos" / "7")
    assert digits[2]["state"] == "AVAILABLE" and digits[2]["pending"] is False
    assert digits[1]["state"] == "NOT_LOADED" and digits[1]["pending"] is False  # retired
    fresh = versions_of(gateway, "fresh")
    assert fresh[1]["state"] == "NOT_LOADED" and fresh[1]["pending"] is True
    # The listing says the same (one rule, in the gateway).
    listing = httpx.get(f"{gateway.url}/v1/models", headers=gateway.admin(), timeout=10).json()
    listed = {m["name"]: {v["version"]: v for v in m["versions"]} for m in listing["models"]}
    assert listed["digits"] == digits and listed["fresh"] == fresh

    states, output = shown_states(gateway)
    assert states[("digits", 3)] == "pending", output
    assert states[("fresh", 1)] == "pending", output
    assert states[("digits", 1)] == "retired", output
    assert states[("digits", 2)] == "available", output
    assert "next poll" in output, output

    # A promotion reloads the config: the model server scans the repository and loads them.
    assert set_label(gateway, "photos", "stable", {"version": 1}).status_code == 200
    wait_for(
        lambda: (
            3 in versions_available(server.target, "digits")
            and 1 in versions_available(server.target, "fresh")
        ),
        120,
        "digits 3 and fresh 1 to be loaded",
        interval=0.2,
        check=server.process.ensure_alive,
    )
    digits = versions_of(gateway, "digits")
    assert digits[3]["state"] == "AVAILABLE"
    assert not any(v["pending"] for v in digits.values()), digits
    assert versions_of(gateway, "fresh")[1]["pending"] is False

    def version_2_retired() -> bool:
        return versions_of(gateway, "digits")[2]["state"] in ("END", "NOT_LOADED")

    wait_for(version_2_retired, 60, "digits 2 to be unloaded", interval=0.2)
    states, output = shown_states(gateway)
    assert states[("digits", 3)] == "available", output
    assert states[("digits", 2)] == states[("digits", 1)] == "retired", output
    assert "pending" not in output, output
