"""What TF Serving's gRPC flags ask of the gRPC server: channel arguments, TLS and UNIX sockets.

``--grpc_channel_arguments`` follows ``parseGrpcChannelArgs`` in TF Serving's server.cc: items
split on ``,`` and ``=``, a value that ``absl::SimpleAtoi`` reads as an int32 goes as an int,
anything else as a string. Unlike TF Serving (where such input is undefined behaviour) an item
without ``=`` or with an empty key is an error, empty items are skipped, whitespace around keys
and values is dropped and a value may contain ``=``.

``--ssl_config_file`` is an ascii ``tensorflow.serving.SSLConfig`` turned into server credentials
as ``BuildServerCredentials`` does; its PEM blocks are checked here so that a bad file stops the
server with a message naming the file and field, not with gRPC's "Failed to bind".
"""

from __future__ import annotations

import errno
import os
import re
import socket
import ssl
import stat
import tempfile
from pathlib import Path

import grpc

from fdl.wire.serving_config_pb2 import SSLConfig
from serving.config_files import ConfigError, parse_text_file

ChannelArgument = tuple[str, int | str]
_SIMPLE_ATOI = re.compile(r"\s*[+-]?[0-9]+\s*", re.ASCII)  # what absl::SimpleAtoi accepts
_INT32 = range(-(2**31), 2**31)
MAX_SOCKET_PATH = 107  # sockaddr_un.sun_path holds 108 bytes with the terminating NUL


class ChannelArgumentError(ValueError):
    pass


def parse_channel_arguments(text: str) -> list[ChannelArgument]:
    """``key=value,key=value`` into gRPC options, ints where the value is an int32."""
    result: list[ChannelArgument] = []
    for item in text.split(","):
        if not item.strip():
            continue
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not key:
            raise ChannelArgumentError(f"--grpc_channel_arguments: {item!r} is not key=value")
        number = int(value) if _SIMPLE_ATOI.fullmatch(value) else None
        result.append((key, number if number is not None and number in _INT32 else value))
    return result


def server_options(defaults: list[ChannelArgument], text: str) -> list[ChannelArgument]:
    """Our defaults, each replaced by a user argument of the same key (as in current gRPC C++,
    where ``AddChannelArgument`` overrides ``SetMaxMessageSize``)."""
    merged = dict(defaults)
    merged.update(parse_channel_arguments(text))
    return list(merged.items())


def _encrypted_key() -> bytes:
    raise ConfigError("is encrypted (gRPC needs an unencrypted PEM key)")


def _check_pem(config: SSLConfig, path: str) -> None:
    def fail(field: str, problem: object) -> ConfigError:
        return ConfigError(f"SSL config file {path}: {field} {problem}")

    for field in ("server_cert", "custom_ca"):
        if getattr(config, field):
            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(
                    cadata=getattr(config, field)
                )
            except (ssl.SSLError, ValueError) as error:
                raise fail(field, f"is not a PEM certificate: {error}") from error
    # The standard library loads keys only from files: a private folder, gone at once.
    with tempfile.TemporaryDirectory(prefix="fdl-ssl-") as folder:
        cert, key = Path(folder, "cert.pem"), Path(folder, "key.pem")
        cert.write_text(config.server_cert)
        key.write_text(config.server_key)
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key, _encrypted_key)
        except ConfigError as error:
            raise fail("server_key", error) from error
        except ssl.SSLError as error:
            if "KEY_VALUES_MISMATCH" in str(error):
                raise fail("server_key", "does not match server_cert") from error
            raise fail("server_key", f"is not a PEM private key: {error}") from error


def server_credentials(path: str) -> grpc.ServerCredentials:
    """``BuildServerCredentials`` with an SSL config file: the server's key pair, custom_ca as
    root certificates, and with client_verify a client certificate required and verified."""
    config = parse_text_file(path, SSLConfig(), "SSL config file")
    if not config.server_key or not config.server_cert:
        raise ConfigError(f"SSL config file {path}: server_key and server_cert are required")
    if config.client_verify and not config.custom_ca:
        raise ConfigError(
            f"SSL config file {path}: client_verify needs custom_ca (the CA of client certs)"
        )
    _check_pem(config, path)
    return grpc.ssl_server_credentials(
        [(config.server_key.encode(), config.server_cert.encode())],
        root_certificates=config.custom_ca.encode() or None,
        require_client_auth=config.client_verify,
    )


def check_socket_path(path: str) -> None:
    """Refuse a UNIX socket path gRPC cannot bind, or one another process is listening on.

    gRPC unlinks any socket file at the path before binding: a stale one left by a killed server
    is replaced, but so would be a live one, which would silently take another server's clients.
    """
    where = f"cannot listen for gRPC on UNIX socket {path}"
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise OSError(f"{where}: the path is longer than {MAX_SOCKET_PATH} bytes")
    parent = Path(path).parent
    if not parent.is_dir():
        raise OSError(f"{where}: directory {parent} does not exist")
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(f"{where}: a file that is not a socket is in the way")
    with socket.socket(socket.AF_UNIX) as probe:
        probe.settimeout(1)
        code = probe.connect_ex(path)
    if code == 0:
        raise OSError(f"{where}: another process is listening on it")
    if code not in (errno.ECONNREFUSED, errno.ENOENT):
        raise OSError(f"{where}: {os.strerror(code)}")
