"""`fdl` where no gateway is needed: usage errors, an unreachable gateway, job specs, the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fdl.cli import app
from fdl.cli_client import ExitCode, stored_key
from fdl.cli_train import build_spec
from fdl.stack import record_gateway
from harness.procs import free_port

runner = CliRunner()


def invoke(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, list(args), env={"FDL_API_KEY": "k", **(env or {})})


def test_help_lists_every_command_and_the_exit_codes() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("up", "train", "jobs", "job", "cancel", "models", "classify", "promote"):
        assert command in result.output
    assert "3 gateway" in " ".join(result.output.split())


def test_cancel_help_says_what_docs_training_md_says() -> None:
    """A running job checks its cancel flag once per call into the compiled graph."""
    text = " ".join(invoke("cancel", "--help").output.split())
    assert "within 16 batches" in text and "next batch" not in text
    docs = (Path(__file__).resolve().parents[2] / "docs" / "training.md").read_text()
    assert "within 16 batches" in " ".join(docs.split())


@pytest.mark.parametrize(
    "args",
    [
        ("jobs",),
        ("job", "abc"),
        ("models",),
        ("cancel", "0" * 32),
        ("promote", "mnist_cnn", "2"),
        ("train", "mnist_logreg", "--epochs", "1"),
    ],
)
def test_an_unreachable_gateway_exits_3_with_a_hint(args: tuple[str, ...]) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = invoke(*args, "--url", url)
    assert result.exit_code == ExitCode.UNREACHABLE, result.output
    assert "cannot reach the gateway" in result.output and "fdl up" in result.output


def test_fdl_url_is_read_from_the_environment() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = invoke("models", env={"FDL_URL": url})
    assert result.exit_code == ExitCode.UNREACHABLE
    assert url in " ".join(result.output.split())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("train", "mnist_logreg", "--epochs", "0"), "epochs"),
        (("train", "resnet50"), "model"),
        (("train", "mnist_cnn", "--optimizer", "lbfgs"), "optimizer"),
        (("train", "mnist_cnn", "--publish-as", "../evil"), "publish_as"),
        (("classify", "mnist_cnn", "no-such-file.png"), "no-such-file.png"),
        (("classify", "mnist_cnn", "nothing-matches-*.png"), "no file matches"),
        (("jobs", "--no-such-option"), "No such option"),
    ],
)
def test_usage_errors_exit_2_before_any_request(args: tuple[str, ...], message: str) -> None:
    # The URL is unreachable: exit 2 (not 3) proves the error came before any connection.
    result = invoke(*args, "--url", f"http://127.0.0.1:{free_port()}")
    assert result.exit_code == ExitCode.USAGE, result.output
    assert message in result.output


def test_version_and_label_together_is_a_usage_error(tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(b"\x89PNG")
    result = invoke("classify", "m", str(image), "--version", "1", "--label", "stable")
    assert result.exit_code == ExitCode.USAGE and "not both" in result.output


def test_spec_file_with_options_on_top(tmp_path: Path) -> None:
    path = tmp_path / "job.json"
    path.write_text(json.dumps({"epochs": 9, "optimizer": {"name": "sgd", "learning_rate": 0.5}}))
    options = {"epochs": 2, "learning_rate": 0.1, "dropout": 0.25, "patience": 3, "l2": None}
    spec = build_spec("mnist_cnn", path, options)
    assert spec == {
        "model": "mnist_cnn",
        "epochs": 2,
        "optimizer": {"name": "sgd", "learning_rate": 0.1},
        "regularization": {"dropout": 0.25},
        "early_stopping": {"patience": 3},
    }


def test_the_stored_key_is_only_sent_to_a_local_gateway(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only to the gateway `fdl up` recorded beside the key (var/gateway_url): never to another
    local port, nor to another machine."""
    (tmp_path / "api_key").write_text("local-key\n")
    record_gateway(tmp_path, "127.0.0.1", 8000)
    monkeypatch.setenv("FDL_VAR_DIR", str(tmp_path))
    assert stored_key("http://127.0.0.1:8000") == "local-key"
    assert stored_key("http://127.0.0.1:8000/") == "local-key"
    assert stored_key("http://127.0.0.1:9000") is None
    assert stored_key("http://localhost:9000/") is None
    assert stored_key("https://fdl.example.com") is None
