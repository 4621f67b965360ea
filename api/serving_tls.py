"""TLS to the model server (``FDL_SERVING_TLS_*``): the channel credentials of the gateway's
gRPC client."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

if TYPE_CHECKING:
    from api.settings import GatewaySettings


@dataclass(frozen=True)
class TLS:
    """TLS to the model server: the CA of its certificate, an optional client key pair, and the
    name to expect in its certificate when the target's host is not that name."""

    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> TLS | None:
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
        key = chain = None
        if self.cert_file is not None and self.key_file is not None:
            key, chain = self.key_file.read_bytes(), self.cert_file.read_bytes()
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_file.read_bytes(), private_key=key, certificate_chain=chain
        )
