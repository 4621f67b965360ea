"""Settings shared by every FDL Serve process.

Each service subclasses :class:`CommonSettings` once and reads it once; every field comes from an
``FDL_``-prefixed environment variable (or ``.env``).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# A key shorter than this, or one that starts like a placeholder of the examples (the shipped
# deploy/k8s/base/secret.yaml holds "replace-me-with-a-long-random-key"), stops the gateway (and
# `fdl up`) at start: a guessable admin key would be live on the network. `openssl rand -hex 32`
# makes one.
MIN_KEY_LENGTH = 16
PLACEHOLDER_PREFIXES = ("replace-me", "change-me", "changeme")


class WeakKeyError(ValueError):
    """A configured API key is a placeholder, too short or not visible ASCII; the message names
    the setting."""


def split_keys(inline: str | None) -> list[str]:
    """Comma-separated keys (``FDL_API_KEYS``), blanks dropped."""
    return [key.strip() for key in (inline or "").split(",") if key.strip()]


def check_keys(sources: list[tuple[str, list[str]]], advice: str = "") -> None:
    """Raise :class:`WeakKeyError` naming, by setting and position (never the key itself), every
    key of ``sources`` (setting, keys) that :func:`weak_key_reason` refuses."""
    problems = [
        f"{name}: key {index} of {len(keys)} {reason}"
        for name, keys in sources
        for index, key in enumerate(keys, 1)
        if (reason := weak_key_reason(key)) is not None
    ]
    if problems:
        raise WeakKeyError(
            "refusing to start with a weak API key: "
            + "; ".join(problems)
            + f". Use random keys of at least {MIN_KEY_LENGTH} characters, e.g. "
            f"`openssl rand -hex 32`{advice}."
        )


def weak_key_reason(key: str) -> str | None:
    """Why ``key`` must not be used, or None when it is acceptable. Never quotes the key."""
    for prefix in PLACEHOLDER_PREFIXES:
        if key.lower().startswith(prefix):
            return f"is a placeholder (it starts with {prefix!r}), not a secret"
    if len(key) < MIN_KEY_LENGTH:
        return f"is {len(key)} characters long; at least {MIN_KEY_LENGTH} are required"
    if not all("!" <= char <= "~" for char in key):
        # Header values are bytes, read as Latin-1: a client that sends a non-ASCII key as UTF-8
        # (most do) never matches, and spaces or control characters get trimmed or mangled.
        return (
            "has a character outside visible ASCII ('!' to '~', 0x21-0x7E), such as a space, a "
            "control character or a non-ASCII letter, which HTTP headers do not carry reliably"
        )
    return None


# How every FDL_ settings class reads its values (the services' and the CLI's own small one).
FDL_SETTINGS = SettingsConfigDict(
    env_prefix="FDL_",
    env_file=".env",
    extra="ignore",
    env_ignore_empty=True,
    hide_input_in_errors=True,
)


class CommonSettings(BaseSettings):
    # An empty variable means "not set", as compose files write `FDL_X: ${X:-}` for optional ones.
    # A validation error names the setting and the reason but never quotes the input: a check
    # across fields (e.g. FDL_DECODE_BUDGET_PIXELS below FDL_MAX_IMAGE_PIXELS) would otherwise
    # print the start of every setting read, FDL_API_KEYS and a password in FDL_REDIS_URL
    # included, into the process's log. Subclasses inherit this config.
    model_config = FDL_SETTINGS

    # Unset means: the launcher starts a private Redis and passes its URL to every child.
    redis_url: str | None = None
    model_dir: Path = Path("./var/models")
    data_dir: Path = Path("./var/data")
    var_dir: Path = Path("./var")
    serving_host: str = "127.0.0.1"
    serving_grpc_port: int = 8500
    serving_rest_port: int = 8501
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8000
    training_queue: str = "training"
    # Comma-separated admin keys.
    api_keys: str | None = Field(default=None, repr=False)
    # The root of the base paths written into models.config (the model repository as the model
    # server sees it), when it differs from FDL_MODEL_DIR (containers, object storage). Unset:
    # FDL_MODEL_DIR resolved. Every process that renders models.config reads it (the gateway's
    # promotions, the worker's publish, `python -m fdl.repository`, `fdl up`), so all agree.
    serving_model_base_path: str | None = None

    def require_redis_url(self) -> str:
        if not self.redis_url:
            raise RuntimeError(
                "FDL_REDIS_URL is not set; start the stack with `fdl up` (which starts Redis) "
                "or point FDL_REDIS_URL at a Redis server"
            )
        return self.redis_url


@lru_cache
def get_settings() -> CommonSettings:
    return CommonSettings()
