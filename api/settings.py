"""Gateway settings: one object, read once (``FDL_`` environment variables)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from fdl.settings import CommonSettings


class GatewaySettings(CommonSettings):
    # File with one admin key per line (e.g. a mounted secret); merged with FDL_API_KEYS.
    api_keys_file: Path | None = None
    # Deadline of one gRPC call to the model server.
    predict_timeout_s: float = 10.0
    metadata_cache_s: float = 30.0
    max_body_bytes: int = 10 * 1024 * 1024
    max_batch_size: int = 64
    default_top_k: int = 3

    def admin_keys(self) -> list[str]:
        keys = [k.strip() for k in (self.api_keys or "").split(",") if k.strip()]
        if self.api_keys_file and self.api_keys_file.exists():
            keys += [
                line.strip()
                for line in self.api_keys_file.read_text().splitlines()
                if line.strip() and not line.startswith("#")
            ]
        return keys

    @property
    def serving_target(self) -> str:
        return f"{self.serving_host}:{self.serving_grpc_port}"


@lru_cache
def get_settings() -> GatewaySettings:
    return GatewaySettings()
