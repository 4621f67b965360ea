"""The command line: TF Serving's flags, clear start-up errors, clean shutdown on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from tests.serving.conftest import images, predict_request, start_server
from tests.serving.test_lifecycle import served_version

SERVER = [sys.executable, "-m", "serving"]


def _run(*flags: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SERVER, *flags], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--model_base_path=/m", "--bogus_flag=1"], "unknown flag '--bogus_flag=1'"),
        (["--model_base_path=/m", "--ssl_config_file=x"], "--ssl_config_file is a "),
        (["--port=9000"], "give --model_config_file"),
        (["--model_base_path=/m", "--port=1", "--rest_api_port=1"], "must differ"),
        (["--model_base_path=/m", "--enable_batching=maybe"], "expected true or false"),
    ],
    ids=["unknown", "unsupported", "no-model", "same-ports", "bad-bool"],
)
def test_bad_flags_fail_at_start(flags: list[str], needle: str) -> None:
    result = _run(*flags)
    assert result.returncode == 2
    assert needle in result.stderr


def test_unparsable_config_file_fails_at_start(tmp_path) -> None:
    config = tmp_path / "models.config"
    config.write_text("model_config_list { config { nme: 'x' } }\n")
    result = _run(f"--model_config_file={config}", "--port=0", "--rest_api_port=1")
    assert result.returncode == 1
    assert "cannot parse model config file" in result.stderr


def test_label_on_unloaded_version_fails_at_start(tmp_path, model_stock) -> None:
    model_stock.install("a", tmp_path / "m", 1)
    config = tmp_path / "models.config"
    config.write_text(
        f'model_config_list {{ config {{ name: "m" base_path: "{tmp_path / "m"}" '
        'version_labels { key: "stable" value: 1 } } }\n'
    )
    result = _run(f"--model_config_file={config}", "--port=0", "--rest_api_port=1")
    assert result.returncode == 1
    assert "which is not currently available for inference" in result.stderr


def test_labels_at_start_with_allow_flag_then_sigterm(tmp_path, model_stock, logs_dir) -> None:
    """What the stack passes: labels kept in labels.json survive a restart. SIGTERM stops fast."""
    model_stock.install("a", tmp_path / "m", 1)
    model_stock.install("b", tmp_path / "m", 2)
    config = tmp_path / "models.config"
    config.write_text(
        f'model_config_list {{ config {{ name: "m" base_path: "{tmp_path / "m"}" '
        "model_version_policy { specific { versions: 1 versions: 2 } } "
        'version_labels { key: "stable" value: 1 } } }\n'
    )
    server = start_server(
        "fdl",
        "labels",
        logs_dir,
        [f"--model_config_file={config}", "--allow_version_labels_for_unavailable_models=true"],
    )
    try:
        request = predict_request("m", images(1), label="stable")
        assert server.prediction().Predict(request, timeout=30).model_spec.version.value == 1
        assert served_version(server, "m") == 2
        started = time.monotonic()
        server.process.popen.send_signal(signal.SIGTERM)
        assert server.process.popen.wait(15) == 0
        assert time.monotonic() - started < 10
    finally:
        server.stop()
