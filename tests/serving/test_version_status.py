"""GetModelStatus and REST status for versions that are gone, as TF Serving reports them.

TF Serving answers from its ServableStateMonitor (tensorflow/serving @ 9d981c5c,
``core/servable_state_monitor.cc``): ``HandleEvent`` (:273-284) stores the last state of every
version it ever saw in ``states_`` and nothing erases it (``ForgetUnloadedServableStates``,
:184-200, has no caller outside its test). ``model_servers/get_model_status_impl.cc`` (:80-107)
reads that map: a version is NOT_FOUND only if it was never seen ("Could not find version N of
model M"; "Could not find any versions of model M" without a version). A version whose folder is
deleted or that the policy drops is unloaded and stays ``END``; a model removed from the config
is un-aspired (``file_system_storage_path_source.cc:394`` and :468-475) and its versions stay
``END`` too. Ours keeps the last few of each model only (``serving/records.py``), checked
in-process at the end.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import grpc
import pytest
from tensorflow_serving.apis import get_model_status_pb2

from harness.procs import wait_for
from harness.tfs import model_config, rest_json, rpc_code, rpc_error, served_version, statuses

State = get_model_status_pb2.ModelVersionStatus.State
ALL = "    model_version_policy { all {} }\n"
LATEST = "    model_version_policy { latest { num_versions: 1 } }\n"


def _write_config(path: Path, models: dict[str, Path], extra: dict[str, str]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(model_config(models, extra))
    tmp.replace(path)  # the server polls the file: it must never see half of it


@pytest.fixture(scope="module")
def churned(impl, server_factory, model_stock, tmp_path_factory):
    """``churn`` (all versions) with versions 1 and 2; the config and base path polled."""
    root = tmp_path_factory.mktemp("churn")
    base = root / "churn"
    model_stock.install("a", base, 1)
    model_stock.install("b", base, 2)
    config = root / "models.config"
    _write_config(config, {"churn": base}, {"churn": ALL})
    flags = [
        f"--model_config_file={config}",
        "--model_config_file_poll_wait_seconds=1",
        "--file_system_poll_wait_seconds=1",
    ]
    return server_factory(impl, "version-status", flags), config, base


def _status(server, name: str, version: int | None = None):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    return server.models().GetModelStatus(request, timeout=10)


def _rows(response) -> list[tuple[int, int, int, str]]:
    return [
        (s.version, s.state, s.status.error_code, s.status.error_message)
        for s in response.model_version_status
    ]


def _rest_status(server, path: str) -> tuple[int, object]:
    return rest_json(f"{server.rest}/v1/models/{path}")


def _rest_rows(states: list[tuple[int, str]]) -> dict[str, object]:
    ok = {"error_code": "OK", "error_message": ""}
    return {
        "model_version_status": [
            {"version": str(v), "state": state, "status": ok} for v, state in states
        ]
    }


def _wait_state(server, name: str, wanted: dict[int, int]) -> None:
    def reached() -> bool:
        return {v: s for v, (s, _) in statuses(server, name).items()} == wanted

    wait_for(reached, 60, f"{name} at {wanted}", check=server.process.ensure_alive)


def test_never_seen_is_not_found(churned) -> None:
    server, _, _ = churned
    _wait_state(server, "churn", {1: State.AVAILABLE, 2: State.AVAILABLE})
    for name, version, message in [
        ("churn", 7, "Could not find version 7 of model churn"),
        ("nosuch", 1, "Could not find version 1 of model nosuch"),  # was "any versions"
        ("nosuch", None, "Could not find any versions of model nosuch"),
    ]:
        code, details = rpc_error(lambda: _status(server, name, version))  # noqa: B023
        assert (code, details) == (grpc.StatusCode.NOT_FOUND, message)
        path = name if version is None else f"{name}/versions/{version}"
        assert _rest_status(server, path) == (404, {"error": message})


def test_removed_versions_and_models_stay_end(churned, model_stock) -> None:
    server, config, base = churned
    _wait_state(server, "churn", {1: State.AVAILABLE, 2: State.AVAILABLE})

    # Folder deleted: version 1 is unloaded and reported END with an OK status.
    shutil.rmtree(base / "1")
    _wait_state(server, "churn", {1: State.END, 2: State.AVAILABLE})
    assert _rows(_status(server, "churn", 1)) == [(1, State.END, 0, "")]
    assert _rest_status(server, "churn/versions/1") == (200, _rest_rows([(1, "END")]))

    # Dropped by the version policy: version 3 arrives, the policy keeps the latest only.
    model_stock.install("c", base, 3)
    _write_config(config, {"churn": base}, {"churn": LATEST})
    _wait_state(server, "churn", {1: State.END, 2: State.END, 3: State.AVAILABLE})
    assert _rows(_status(server, "churn", 2)) == [(2, State.END, 0, "")]
    expected = [(3, "AVAILABLE"), (2, "END"), (1, "END")]  # newest first, as TF's VersionMap
    assert _rest_status(server, "churn") == (200, _rest_rows(expected))

    # Removed from the config: no longer served, every version reported END (was NOT_FOUND).
    _write_config(config, {}, {})
    wait_for(
        lambda: rpc_code(lambda: served_version(server, "churn")) == grpc.StatusCode.NOT_FOUND,
        60,
        "churn removed",
    )
    _wait_state(server, "churn", {1: State.END, 2: State.END, 3: State.END})
    assert _rows(_status(server, "churn", 3)) == [(3, State.END, 0, "")]
    expected = [(3, "END"), (2, "END"), (1, "END")]
    assert _rest_status(server, "churn") == (200, _rest_rows(expected))
    code, details = rpc_error(lambda: _status(server, "churn", 9))
    assert (code, details) == (grpc.StatusCode.NOT_FOUND, "Could not find version 9 of model churn")

    # Added again: its versions load anew; the ones it no longer has stay END.
    _write_config(config, {"churn": base}, {"churn": LATEST})
    _wait_state(server, "churn", {1: State.END, 2: State.END, 3: State.AVAILABLE})


def test_retired_versions_are_bounded(model_stock, tmp_path, monkeypatch) -> None:
    """Ours keeps the last RETIRED_PER_MODEL ended versions of each model and the versions of
    the last RETIRED_MODELS removed models (TF Serving keeps all): a repository that churns
    versions, or a config that churns names, cannot grow the server's memory without bound."""
    from tensorflow_serving.config import model_server_config_pb2 as config_pb2

    from serving import records
    from serving.errors import ServingError
    from serving.manager import ManagerOptions, ModelManager

    monkeypatch.setattr(records, "RETIRED_PER_MODEL", 2, raising=False)
    monkeypatch.setattr(records, "RETIRED_MODELS", 1, raising=False)
    manager = ModelManager(ManagerOptions(enable_warmup=False, max_num_load_retries=0))

    def configure(*names: str) -> None:
        config = config_pb2.ModelServerConfig()
        for name in names:
            config.model_config_list.config.add(
                name=name, base_path=str(tmp_path / name), model_platform="tensorflow"
            )
        manager.apply_config(config)

    def states(name: str) -> dict[int, int]:
        return {v: state for v, state, _, _ in manager.status(name, None)}

    def settled(name: str, wanted: dict[int, int]) -> bool:
        manager.poll()  # hands ended versions over to the retired records
        return states(name) == wanted

    try:
        model_stock.install("a", tmp_path / "spin", 1)
        configure("spin")
        for version in range(2, 6):  # the latest version only: each new one retires the last
            model_stock.install("a", tmp_path / "spin", version)
            ended = {v: State.END for v in range(max(1, version - 2), version)}
            wanted = {version: State.AVAILABLE, **ended}
            wait_for(lambda: settled("spin", wanted), 60, f"spin version {version}")  # noqa: B023
        assert states("spin") == {5: State.AVAILABLE, 4: State.END, 3: State.END}

        for name in ("gone1", "gone2"):  # removed one after the other
            model_stock.install("a", tmp_path / name, 1)
            configure("spin", name)
            wait_for(lambda: states(name) == {1: State.AVAILABLE}, 60, name)  # noqa: B023
            configure("spin")
            wait_for(lambda: states(name) == {1: State.END}, 60, f"{name} unloaded")  # noqa: B023
        with pytest.raises(ServingError, match="Could not find any versions of model gone1"):
            states("gone1")  # only the last removed model is remembered
        assert states("spin") == {5: State.AVAILABLE, 4: State.END, 3: State.END}
    finally:
        manager.stop()
