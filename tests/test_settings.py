"""Settings: every service reads FDL_ variables the same way."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.settings import GatewaySettings
from fdl.settings import CommonSettings


def test_empty_variables_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """Compose files pass optional settings as `FDL_X: ${X:-}`; empty must not fail validation."""
    for name in (
        "FDL_SERVING_TLS_CA_FILE",
        "FDL_SERVING_TLS_CERT_FILE",
        "FDL_SERVING_TLS_KEY_FILE",
        "FDL_SERVING_GRPC_TARGET",
        "FDL_REDIS_URL",
        "FDL_MODEL_DIR",
        "FDL_GATEWAY_PORT",
    ):
        monkeypatch.setenv(name, "")
    settings = GatewaySettings()
    assert settings.serving_tls_ca_file is None
    assert settings.serving_grpc_target is None
    assert settings.redis_url is None
    assert settings.model_dir == Path("./var/models")
    assert settings.gateway_port == 8000


def test_set_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FDL_MODEL_DIR", "/srv/models")
    monkeypatch.setenv("FDL_GATEWAY_PORT", "9000")
    settings = CommonSettings()
    assert settings.model_dir == Path("/srv/models")
    assert settings.gateway_port == 9000
    monkeypatch.setenv("FDL_GATEWAY_PORT", "not-a-port")
    with pytest.raises(ValueError, match="gateway_port"):
        CommonSettings()
