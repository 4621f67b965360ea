"""Parsing of the gRPC front-end flags, in process: channel arguments, SSL config files and
UNIX socket paths (tests/serving/test_grpc_frontend.py runs the servers)."""

from __future__ import annotations

import socket
from pathlib import Path

import grpc
import pytest

from harness.tls import make_pki, openssl, ssl_config
from serving.config_files import ConfigError
from serving.protocol.grpc.options import (
    ChannelArgumentError,
    check_socket_path,
    parse_channel_arguments,
    server_credentials,
    server_options,
)
from serving.protocol.grpc.server import DEFAULT_OPTIONS, MAX_MESSAGE_BYTES


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_server_credentials_reject_bad_files(pki, tmp_path) -> None:
    good = ssl_config(tmp_path / "good.config", pki, client_verify=True)
    assert isinstance(server_credentials(str(good)), grpc.ServerCredentials)
    openssl(pki, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-aes128", "-pass", "pass:secret", "-out", "encrypted.key")  # fmt: skip
    cases = {
        "missing": (None, "cannot read SSL config file"),
        "unparsable": ("client_verfy: true\n", "cannot parse SSL config file"),
        "no-cert": ("server_key: 'x'\n", "server_key and server_cert are required"),
        "no-ca": ({"custom_ca": None}, "client_verify needs custom_ca"),
        "bad-cert": ({"server_cert": "junk"}, "server_cert is not a PEM certificate"),
        "bad-ca": ({"custom_ca": "junk"}, "custom_ca is not a PEM certificate"),
        "bad-key": ({"server_key": "junk"}, "server_key is not a PEM private key"),
    }
    for name, (text, needle) in cases.items():
        path = tmp_path / f"{name}.config"
        if isinstance(text, dict):
            ssl_config(path, pki, client_verify=True, **text)
        elif text is not None:
            path.write_text(text)
        with pytest.raises(ConfigError, match=needle) as info:
            server_credentials(str(path))
        assert str(path) in str(info.value), name
    for key, needle in (("client", "does not match server_cert"), ("encrypted", "is encrypted")):
        path = ssl_config(tmp_path / f"{key}.config", pki, key=key)
        with pytest.raises(ConfigError, match=needle):
            server_credentials(str(path))


# --- channel arguments --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("", []),
        ("a=1,,b=x,", [("a", 1), ("b", "x")]),
        ("  grpc.keepalive_time_ms = 500 ", [("grpc.keepalive_time_ms", 500)]),
        ("p=+7,n=-3,max=2147483647", [("p", 7), ("n", -3), ("max", 2147483647)]),
        ("big=2147483648,hex=0x10", [("big", "2147483648"), ("hex", "0x10")]),
        ("sep=1_000", [("sep", "1_000")]),
        ("agent=a=b,empty=", [("agent", "a=b"), ("empty", "")]),
    ],
)
def test_channel_argument_values(text, parsed) -> None:
    assert parse_channel_arguments(text) == parsed


@pytest.mark.parametrize(
    ("text", "item"),
    [("grpc.so_reuseport", "grpc.so_reuseport"), ("a=1,b", "b"), ("=5", "=5"), ("a=1, ,c", "c")],
)
def test_malformed_channel_arguments_name_the_item(text, item) -> None:
    with pytest.raises(ChannelArgumentError, match=f"'{item}' is not key=value"):
        parse_channel_arguments(text)


def test_user_channel_arguments_override_defaults() -> None:
    options = dict(server_options(DEFAULT_OPTIONS, "grpc.max_receive_message_length=1024,x=y"))
    assert options["grpc.max_receive_message_length"] == 1024
    assert options["grpc.max_send_message_length"] == MAX_MESSAGE_BYTES
    assert options["x"] == "y"
    assert len(server_options(DEFAULT_OPTIONS, "")) == len(DEFAULT_OPTIONS)


def test_socket_path_checks(tmp_path) -> None:
    short = tmp_path
    check_socket_path(str(short / "new.sock"))  # nothing there: fine
    stale = short / "stale.sock"
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(stale))
    check_socket_path(str(stale))  # gRPC replaces a stale socket file
    live = short / "live.sock"
    with socket.socket(socket.AF_UNIX) as listening:
        listening.bind(str(live))
        listening.listen()
        with pytest.raises(OSError, match="another process is listening"):
            check_socket_path(str(live))
    (short / "file").write_text("x")
    with pytest.raises(OSError, match="not a socket"):
        check_socket_path(str(short / "file"))
    with pytest.raises(OSError, match="longer than 107 bytes"):
        check_socket_path("/tmp/" + "s" * 120)
