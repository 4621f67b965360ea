"""The checks TF Serving's ``ServerCore::ReloadConfig`` makes before applying a config
(``server_core.cc`` @ 9d981c5c: ``ValidateModelConfigList``, ``ValidateNoModelsChangePlatforms``,
``GetPlatform``, ``CreateStoragePathRoutes``), with its status codes and texts: over
``HandleReloadConfigRequest``, at start-up and for a polled config file. Before, a relative
``base_path`` was served relative to the server's directory, a missing platform was taken as
``tensorflow``, and the other errors had our own texts."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from google.protobuf import text_format
from tensorflow_serving.apis import model_management_pb2
from tensorflow_serving.config import model_server_config_pb2

from harness.procs import free_port, wait_for
from harness.tfs import model_config, served_version, server_argv, start_server
from serving.config_rules import uri_is_relative_path

RELATIVE = "Expected model {} to have an absolute path or URI; got base_path()={}"
NO_PLATFORM = (
    "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
    "ModelServerConfig::model_platform, model name is {}"
)


@pytest.fixture(scope="module")
def served(impl, server_factory, model_stock, tmp_path_factory):
    root = tmp_path_factory.mktemp("rules")
    model_stock.install("a", root / "m", 1)
    model_stock.install("b", root / "other", 1)
    config = root / "models.config"
    config.write_text(model_config({"m": root / "m"}))
    server = server_factory(impl, "rules", [f"--model_config_file={config}"])
    return server, root


def _reload(server, text: str) -> tuple[grpc.StatusCode, str]:
    request = model_management_pb2.ReloadConfigRequest()
    text_format.Parse(text, request.config)
    try:
        server.models().HandleReloadConfigRequest(request, timeout=120)
    except grpc.RpcError as error:
        return error.code(), error.details()
    return grpc.StatusCode.OK, ""


def _config(root, **models: str) -> str:
    """``m`` as served, and each other model as the text inside its ``config { }`` block."""
    blocks = [f'config {{ name: "m" base_path: "{root / "m"}" model_platform: "tensorflow" }}']
    blocks += [f'config {{ name: "{name}" {text} }}' for name, text in models.items()]
    return "model_config_list { " + " ".join(blocks) + " }"


def test_reload_refuses_what_tf_serving_refuses(served) -> None:
    """Each refused reload changes nothing: ``m`` keeps serving. The order matters for TF
    Serving, which records a config refused by its label or platform check as its own
    (``config_`` is set before those checks): no later case reuses a refused model's name, and a
    model whose platform ``GetPlatform`` cannot read comes last (every later reload would fail on
    it there; start-up covers the other such cases)."""
    server, root = served
    other = root / "other"
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    cases = [
        (_config(root, rel='base_path: "models/rel" model_platform: "tensorflow"'),
         invalid, RELATIVE.format("rel", "models/rel")),
        (_config(root, empty='model_platform: "tensorflow"'),
         invalid, RELATIVE.format("empty", "")),
        (_config(root, m=f'base_path: "{other}" model_platform: "tensorflow"'),
         invalid, "Illegal to list model m multiple times in config list"),
        # ValidateNoModelsChangePlatforms, for the model already served.
        (_config(root).replace('"tensorflow"', '"tflite"'), invalid,
         "Illegal to change a model's platform. For model m platform was tensorflow and new "
         "platform requested is tflite"),
        (_config(root).replace('model_platform: "tensorflow"', ""), invalid,
         NO_PLATFORM.format("m")),
        # The labels before the platforms (UpdateModelVersionLabelMap, then the routes).
        (_config(root, lab=f'base_path: "{other}" model_platform: "tflite" '
                 'version_labels { key: "x" value: 9 }'), grpc.StatusCode.FAILED_PRECONDITION,
         "Request to assign label to version 9 of model lab, which is not currently available "
         "for inference"),
        # CreateStoragePathRoutes: a platform this server does not serve.
        (_config(root, new1=f'base_path: "{other}" model_platform: "tflite"'), invalid,
         "Model new1 requests unsupported platform tflite"),
    ]  # fmt: skip
    for text, code, message in cases:
        assert _reload(server, text) == (code, message), text
        assert served_version(server, "m") == 1
    # The deprecated model_type alone means tensorflow.
    typed = _config(root, typed=f'base_path: "{other}" model_type: TENSORFLOW')
    assert _reload(server, typed) == (grpc.StatusCode.OK, "")
    assert served_version(server, "typed") == 1
    # A model without a platform (it was served as tensorflow).
    assert _reload(server, _config(root, new2=f'base_path: "{other}"')) == (
        invalid,
        NO_PLATFORM.format("new2"),
    )
    assert served_version(server, "m") == 1


def test_reload_of_another_config_kind(served) -> None:
    """model_service_impl.cc: only a ModelConfigList is taken (it was FAILED_PRECONDITION with
    ReloadConfig's "Cannot transition" text)."""
    server, _ = served
    request = model_management_pb2.ReloadConfigRequest()
    request.config.custom_model_config.Pack(model_server_config_pb2.ModelServerConfig())
    with pytest.raises(grpc.RpcError) as info:
        server.models().HandleReloadConfigRequest(request, timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == (
        "ServerModelConfig type not supported by HandleReloadConfigRequest. Only ModelConfigList "
        "is currently supported"
    )


def _start_fails(impl: str, *flags: str) -> str:
    """The output of a server that refuses to start (TF Serving prints to stdout)."""
    argv = [*server_argv(impl), f"--port={free_port()}", *flags]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode != 0, result.stdout + result.stderr
    return result.stdout + result.stderr


# A first config refused at start-up (the text inside model m's ``config { }``), and the status.
REFUSED_AT_START = (
    ('model_platform: "tflite"', "Model m requests unsupported platform tflite"),
    ("", NO_PLATFORM.format("m")),
    ("model_type: OTHER", "ModelServerConfig::model_type choice 2 not supported."),
    (
        'model_type: TENSORFLOW model_platform: "tensorflow"',
        "Illegal setting both ModelServerConfig::model_type (deprecated) and "
        "ModelServerConfig::model_platform, model name is m",
    ),
)


def test_start_up_refuses_what_tf_serving_refuses(impl, model_stock, tmp_path) -> None:
    """The first config gets the same checks: ``Failed to start server. Error: `` and the
    status as absl prints it (main.cc)."""
    model_stock.install("a", tmp_path / "m", 1)
    relative = "Failed to start server. Error: INVALID_ARGUMENT: " + RELATIVE.format(
        "m", "relative/m"
    )
    starts = {("--model_name=m", "--model_base_path=relative/m"): relative}
    for index, (text, refusal) in enumerate(REFUSED_AT_START):
        config = tmp_path / f"models-{index}.config"
        model = f'name: "m" base_path: "{tmp_path / "m"}" {text}'
        config.write_text(f"model_config_list {{ config {{ {model} }} }}\n")
        starts[(f"--model_config_file={config}",)] = f"INVALID_ARGUMENT: {refusal}"
    # A server of its own for each case, two starting at a time (a start is mostly imports).
    with ThreadPoolExecutor(2) as pool:
        outputs = list(pool.map(lambda flags: _start_fails(impl, *flags), starts))
    for (flags, message), output in zip(starts.items(), outputs, strict=True):
        assert message in output, (flags, output)


def test_polled_config_file_is_checked(model_stock, tmp_path, logs_dir) -> None:
    """A polled config file that TF Serving would refuse is logged and not applied; the next
    good one is."""
    model_stock.install("a", tmp_path / "m", 1)
    model_stock.install("b", tmp_path / "n", 1)
    config = tmp_path / "models.config"
    config.write_text(model_config({"m": tmp_path / "m"}))
    flags = [f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=1"]
    server = start_server("fdl", "polled-rules", logs_dir, flags)
    try:
        config.write_text(model_config({"m": tmp_path / "m", "n": "n"}))
        logged = RELATIVE.format("n", "n")
        wait_for(lambda: logged in server.process.log_tail(), 30, "the refusal logged")
        assert served_version(server, "m") == 1
        config.write_text(model_config({"m": tmp_path / "m", "n": tmp_path / "n"}))
        wait_for(
            lambda: served_version(server, "n") == 1,
            60,
            "model n",
            check=server.process.ensure_alive,
        )
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("uri", "relative"),
    [
        ("", True), ("m", True), ("./m", True), ("models/m", True), ("a://x", True),
        ("/m", False), ("s3://bucket/m", False), ("gs://b", False), ("hdfs.v2://h/p", False),
    ],
)  # fmt: skip
def test_uri_is_relative_path(uri: str, relative: bool) -> None:
    """tsl's ParseURI: a scheme is a letter and at least one more letter, digit or dot, so
    ``a://x`` is a relative path; IsAbsolutePath: a leading slash."""
    assert uri_is_relative_path(uri) is relative


def test_config_file_bytes_that_are_not_utf8(impl, model_stock, tmp_path, logs_dir) -> None:
    """A byte that is not UTF-8 in a comment (a Latin-1 editor's ``é``) is read as TF Serving's
    parser reads it, skipped with the comment; in a value, the polled file is refused with the
    usual one-line message naming the file, not a traceback at every poll."""
    model_stock.install("a", tmp_path / "m", 1)
    config = tmp_path / "models.config"
    good = model_config({"m": tmp_path / "m"}).encode()
    config.write_bytes(b"# mod\xe8les servis\n" + good)
    flags = [f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=1"]
    server = start_server(impl, "config-bytes", logs_dir, flags)
    try:
        assert served_version(server, "m") == 1
        if impl != "fdl":
            return  # the logged texts below are ours
        config.write_bytes(good.replace(b'name: "m"', b'name: "m\xe9"'))
        logged = f"model config file {config} not applied: cannot parse model config file"
        wait_for(lambda: logged in server.process.log_tail(), 30, "the refusal logged")
        assert "poll failed" not in server.process.log_tail()
        assert "Traceback" not in server.process.log_tail()
        assert served_version(server, "m") == 1
    finally:
        server.stop()
