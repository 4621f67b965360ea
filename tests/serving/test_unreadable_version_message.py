"""A version folder the model server may not read fails its load with a message that says so
(``Permission denied: <folder>``), not TensorFlow's "SavedModel file does not exist", with the
status code it had. The server runs in a process that permissions bind (tests/unprivileged.py)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import grpc
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

from harness.procs import Process, free_port, grpc_ready, wait_for
from harness.tfs import model_config
from tests.unprivileged import unprivileged

State = get_model_status_pb2.ModelVersionStatus.State
POLLING = [
    "--file_system_poll_wait_seconds=1",
    "--model_config_file_poll_wait_seconds=1",
    "--max_num_load_retries=0",
]


def _status(
    channel: grpc.Channel, model: str
) -> dict[int, get_model_status_pb2.ModelVersionStatus]:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = model
    try:
        response = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
            request, timeout=10
        )
    except grpc.RpcError:
        return {}
    return {status.version: status for status in response.model_version_status}


def test_a_version_it_may_not_read_fails_saying_permission_denied(
    model_stock, tmp_path: Path, logs_dir: Path
) -> None:
    prefix = unprivileged()
    base = tmp_path / "models" / "closed"
    base.mkdir(parents=True)
    shutil.copytree(model_stock.versions["a"], base / "1")
    staged = tmp_path / "staged"
    shutil.copytree(model_stock.versions["b"], staged)
    config = tmp_path / "models.config"
    config.write_text(model_config({"closed": base}))
    port = free_port()
    argv = [*prefix, sys.executable, "-m", "serving", f"--port={port}"]
    process = Process(
        "unreadable-message", [*argv, f"--model_config_file={config}", *POLLING], logs_dir
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        wait_for(lambda: grpc_ready(channel), 90, "model server", check=process.ensure_alive)

        def served(version: int) -> bool:
            status = _status(channel, "closed").get(version)
            return status is not None and status.state == State.AVAILABLE

        wait_for(lambda: served(1), 60, "version 1 served", check=process.ensure_alive)
        staged.chmod(0)  # closed before it appears: never read by the server
        staged.rename(base / "2")

        def failed() -> bool:
            status = _status(channel, "closed").get(2)
            return (
                status is not None
                and status.state == State.END
                and bool(status.status.error_message)
            )

        wait_for(failed, 60, "version 2 reported as failed", check=process.ensure_alive)
        status = _status(channel, "closed")[2].status
        assert status.error_message.startswith(f"Permission denied: {base / '2'}"), status
        assert "the model server cannot read it" in status.error_message
        assert status.error_code == grpc.StatusCode.UNKNOWN.value[0]  # as before: unchanged
        assert served(1)
    finally:
        channel.close()
        process.stop()
        if (base / "2").exists():
            (base / "2").chmod(0o755)
