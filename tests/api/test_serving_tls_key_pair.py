"""The gateway's client key pair for TLS to the model server (FDL_SERVING_TLS_CERT_FILE,
FDL_SERVING_TLS_KEY_FILE) is loaded at start, as its CA is, and one gRPC could not use stops the
gateway in one line naming the setting (exit 1). Before, such a gateway started and every
handshake failed (``TSI_INVALID_ARGUMENT``): the model server "unavailable", classify 503.
A pair that OpenSSL's default security level refuses to load but gRPC uses (a 1024-bit RSA key, a
SHA-1 signed certificate) is accepted: the model server takes it over mutual TLS."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from pydantic import ValidationError

from api.serving_tls import TLS
from api.settings import GatewaySettings
from fdl.settings import settings_problem
from fdl.wire.tfs_pb2 import GetModelStatusRequest, GetModelStatusResponse, ModelSpec
from harness.model_server import ModelServer, start_model_server
from harness.procs import wait_for
from harness.tls import make_pki, openssl, ssl_config
from tests.test_settings_errors import API_KEY, REDIS_URL, assert_no_secret, run_gateway
from tests.unprivileged import unprivileged

CERT, KEY = "FDL_SERVING_TLS_CERT_FILE", "FDL_SERVING_TLS_KEY_FILE"
EC = ["ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = make_pki(tmp_path_factory.mktemp("pki"))
    (folder / "garbage.key").write_text(
        "-----BEGIN PRIVATE KEY-----\nnot base64 at all\n-----END PRIVATE KEY-----\n"
    )
    openssl(folder, "ec", "-in", "client.key", "-aes256", "-passout", "pass:pw", "-out", "enc.key")
    # Client pairs below OpenSSL's default security level (2), which gRPC takes.
    for name, key, digest in (("rsa1024", ["rsa:1024"], "-sha256"), ("sha1", EC, "-sha1")):
        openssl(folder, "req", "-newkey", *key, "-nodes", "-keyout", f"{name}.key",
                "-out", f"{name}.csr", "-subj", "/CN=client")  # fmt: skip
        openssl(folder, "x509", "-req", digest, "-in", f"{name}.csr", "-CA", "ca.pem",
                "-CAkey", "ca.key", "-CAcreateserial", "-days", "2", "-extfile", "client.ext",
                "-out", f"{name}.pem")  # fmt: skip
    return folder


@pytest.fixture(scope="module")
def tls_server(
    pki: Path, logs_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ModelServer]:
    """The real model server over mutual TLS (client_verify), serving no model."""
    models = tmp_path_factory.mktemp("tls-models")
    (models / "models.config").write_text("model_config_list {}\n")
    config = ssl_config(models.parent / f"{models.name}.ssl", pki, client_verify=True)
    server = start_model_server(
        "model-server-key-pairs", models, logs_dir, flags=[f"--ssl_config_file={config}"]
    )
    try:
        yield server
    finally:
        server.process.stop()


def problem(pki: Path, cert: str, key: str) -> str:
    with pytest.raises(ValidationError) as caught:
        GatewaySettings(
            _env_file=None,  # type: ignore[call-arg]
            serving_tls_ca_file=pki / "ca.pem",
            serving_tls_cert_file=pki / cert,
            serving_tls_key_file=pki / key,
        )
    return settings_problem(caught.value)


@pytest.mark.parametrize(
    ("cert", "key", "line"),
    [
        ("client.pem", "server.key", f"{KEY}: is not the private key of the {CERT} certificate"),
        ("ca.pem", "client.key", f"{KEY}: is not the private key of the {CERT} certificate"),
        ("client.pem", "garbage.key", f"{KEY}: holds no usable PEM private key ("),
        ("client.pem", "client.pem", f"{KEY}: holds no usable PEM private key ("),
        ("client.pem", "enc.key", f"{KEY}: the key is encrypted; gRPC takes no passphrase"),
        ("client.key", "client.key", f"{CERT}: holds no usable PEM certificate ("),
    ],
    ids=["other-key", "ca-cert", "garbage-key", "cert-as-key", "encrypted", "key-as-cert"],
)
def test_a_pair_grpc_cannot_use_is_refused(pki: Path, cert: str, key: str, line: str) -> None:
    found = problem(pki, cert, key)
    assert found.startswith(line), found
    assert "BEGIN" not in found and "MHc" not in found  # nothing of the files' contents


def test_the_pair_and_the_tls_settings_of_a_working_gateway_are_accepted(pki: Path) -> None:
    settings = GatewaySettings(
        _env_file=None,  # type: ignore[call-arg]
        serving_tls_ca_file=pki / "ca.pem",
        serving_tls_cert_file=pki / "client.pem",
        serving_tls_key_file=pki / "client.key",
    )
    assert settings.serving_tls_key_file == pki / "client.key"


def test_an_unreadable_key_stops_the_real_gateway(pki: Path, tmp_path: Path) -> None:
    """Run as a process that file permissions bind (as root too: without CAP_DAC_OVERRIDE)."""
    key = tmp_path / "unreadable.key"
    key.write_bytes((pki / "client.key").read_bytes())
    key.chmod(0)
    env = {name: value for name, value in os.environ.items() if not name.startswith("FDL_")}
    env |= {"FDL_REDIS_URL": REDIS_URL, "FDL_API_KEYS": API_KEY, "FDL_LOG_JSON": "false"}
    env |= {
        "FDL_SERVING_TLS_CA_FILE": str(pki / "ca.pem"),
        "FDL_SERVING_TLS_CERT_FILE": str(pki / "client.pem"),
        "FDL_SERVING_TLS_KEY_FILE": str(key),
    }
    result = subprocess.run(
        [*unprivileged(), sys.executable, "-m", "api"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert result.stderr == f"fdl-gateway: {KEY}: cannot be read (Permission denied)\n", output
    assert_no_secret(output)


@pytest.mark.parametrize("name", ["rsa1024", "sha1"])
def test_a_pair_below_openssls_security_level_that_grpc_uses_is_accepted(
    pki: Path, tls_server: ModelServer, name: str
) -> None:
    """Before, refused as "holds no usable PEM private key (EE_KEY_TOO_SMALL)" or
    "(CA_MD_TOO_WEAK)", while the model server answered the gateway's gRPC over it."""
    settings = GatewaySettings(
        _env_file=None,  # type: ignore[call-arg]
        serving_tls_ca_file=pki / "ca.pem",
        serving_tls_cert_file=pki / f"{name}.pem",
        serving_tls_key_file=pki / f"{name}.key",
        serving_tls_server_name="localhost",
    )
    tls = TLS.from_settings(settings)
    assert tls is not None
    options = [("grpc.ssl_target_name_override", "localhost")]
    with grpc.secure_channel(tls_server.target, tls.credentials(), options=options) as channel:
        status = channel.unary_unary(
            "/tensorflow.serving.ModelService/GetModelStatus",
            request_serializer=GetModelStatusRequest.SerializeToString,
            response_deserializer=GetModelStatusResponse.FromString,
        )

        def answer() -> grpc.StatusCode | None:
            try:
                status(GetModelStatusRequest(model_spec=ModelSpec(name="none")), timeout=5)
            except grpc.RpcError as error:
                code = error.code()  # type: ignore[attr-defined]
                return None if code == grpc.StatusCode.UNAVAILABLE else code
            return grpc.StatusCode.OK

        # NOT_FOUND (no such model): the handshake, client certificate included, went through.
        found = wait_for(
            answer, 60, "the model server's answer", check=tls_server.process.ensure_alive
        )
        assert found == grpc.StatusCode.NOT_FOUND


def test_the_real_gateway_stops_in_one_line(pki: Path, tmp_path: Path) -> None:
    result = run_gateway(
        tmp_path,
        FDL_SERVING_TLS_CA_FILE=str(pki / "ca.pem"),
        FDL_SERVING_TLS_CERT_FILE=str(pki / "client.pem"),
        FDL_SERVING_TLS_KEY_FILE=str(pki / "server.key"),
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert result.stderr == (
        f"fdl-gateway: {KEY}: is not the private key of the {CERT} certificate\n"
    ), output
    assert_no_secret(output)
