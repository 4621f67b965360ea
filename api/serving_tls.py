"""TLS to the model server (``FDL_SERVING_TLS_*``): the channel credentials of the gateway's
gRPC client."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # imported where it is used: api.settings imports this module, and
    # fdl-gateway reads its settings before it tunes gRPC (fdl/grpc_tuning.py)
    import grpc


class TLSSettings(Protocol):
    """The settings of TLS to the model server (api.settings.GatewaySettings, which checks its
    key pair with :func:`key_pair_problem`)."""

    serving_tls_ca_file: Path | None
    serving_tls_cert_file: Path | None
    serving_tls_key_file: Path | None
    serving_tls_server_name: str | None


@dataclass(frozen=True)
class TLS:
    """TLS to the model server: the CA of its certificate, an optional client key pair, and the
    name to expect in its certificate when the target's host is not that name."""

    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None

    @classmethod
    def from_settings(cls, settings: TLSSettings) -> TLS | None:
        """None (plain gRPC) unless FDL_SERVING_TLS_CA_FILE is set."""
        if settings.serving_tls_ca_file is None:
            return None
        return cls(
            settings.serving_tls_ca_file,
            settings.serving_tls_cert_file,
            settings.serving_tls_key_file,
            settings.serving_tls_server_name,
        )

    def credentials(self) -> grpc.ChannelCredentials:
        import grpc

        key = chain = None
        if self.cert_file is not None and self.key_file is not None:
            key, chain = self.key_file.read_bytes(), self.cert_file.read_bytes()
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_file.read_bytes(), private_key=key, certificate_chain=chain
        )


class _Encrypted(Exception):
    """The key file asks for a passphrase: gRPC takes none."""


def _no_passphrase() -> bytes:
    raise _Encrypted


def key_pair_problem(cert: Path, key: Path) -> str | None:
    """Why gRPC could not take ``cert`` and ``key`` as the gateway's client key pair (``FDL_X:
    reason``), or None: each must be readable, the first hold a PEM certificate and the second
    its unencrypted PEM private key."""
    cert_name, key_name = "FDL_SERVING_TLS_CERT_FILE", "FDL_SERVING_TLS_KEY_FILE"
    for name, path in ((cert_name, cert), (key_name, key)):
        try:
            path.read_bytes()
        except OSError as error:
            return f"{name}: cannot be read ({error.strerror})"
    try:
        ssl.create_default_context(cafile=str(cert))
    except ssl.SSLError as error:
        return f"{cert_name}: holds no usable PEM certificate ({error.reason or error})"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # gRPC's TLS library (BoringSSL) has no security levels: it takes a 1024-bit RSA key or a
    # SHA-1 signed certificate, which OpenSSL's default level refuses to load (EE_KEY_TOO_SMALL,
    # CA_MD_TOO_WEAK). Whether the model server accepts them is the handshake's to say.
    context.set_ciphers("ALL:@SECLEVEL=0")
    try:
        context.load_cert_chain(cert, key, _no_passphrase)
    except _Encrypted:
        return f"{key_name}: the key is encrypted; gRPC takes no passphrase"
    except ssl.SSLError as error:
        if error.reason == "KEY_VALUES_MISMATCH":
            return f"{key_name}: is not the private key of the {cert_name} certificate"
        return f"{key_name}: holds no usable PEM private key ({error.reason or error})"
    return None
