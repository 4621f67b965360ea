"""Settings shared by every FDL Serve process.

Each service subclasses :class:`CommonSettings` once and reads it once; every field comes from an
``FDL_``-prefixed environment variable (or ``.env``).
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from fdl.key_patterns import predictable_reason
from fdl.redis_url import REDIS_URL_FORM, credentials_in_userinfo, redis_url_problem

# A key shorter than this, or one that starts like a placeholder of the examples (the shipped
# deploy/k8s/base/secret.yaml holds "replace-me-with-a-long-random-key"), stops the gateway (and
# `fdl up`) at start: a guessable admin key would be live on the network. `openssl rand -hex 32`
# makes one.
MIN_KEY_LENGTH = 16
PLACEHOLDER_PREFIXES = ("replace-me", "change-me", "changeme")

# What the gateway and the worker say, in one line at start, when they have no Redis URL.
REDIS_URL_UNSET = (
    "FDL_REDIS_URL is not set; start the stack with `fdl up` (which starts Redis) "
    "or point FDL_REDIS_URL at a Redis server"
)


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
    """Why ``key`` must not be used, or None when it is acceptable (a placeholder, too short,
    not visible ASCII, or guessable: :mod:`fdl.key_patterns`). Never quotes the key."""
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
    return predictable_reason(key)


NOT_A_PORT = "not a port number from 1 to 65535"


def _port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise ValueError(NOT_A_PORT)
    return value


# A TCP port of a setting (Python's socket calls would take 99999 as 99999 % 65536).
Port = Annotated[int, AfterValidator(_port)]
# The longest timeout or interval a setting may hold: a day. Beyond about 1e9 s a socket timeout
# or a gRPC deadline overflows (every call then fails at once), and inf or nan mean nothing.
MAX_SECONDS = 86_400.0


def seconds(default: float, *, gt: float | None = None, ge: float | None = None) -> Any:
    """A timeout or interval field: finite, at most :data:`MAX_SECONDS`."""
    return Field(default=default, gt=gt, ge=ge, le=MAX_SECONDS, allow_inf_nan=False)


# What reading settings raises for a bad value: pydantic's errors, pydantic-settings' (a JSON
# setting that does not parse), and a file a setting or .env names that cannot be read.
SETTINGS_ERRORS = (ValidationError, SettingsError, OSError, UnicodeError)


def settings_problem(error: Exception) -> str:
    """One line naming each invalid setting and what is wrong (``FDL_X: reason; FDL_Y: ...``),
    never a secret's value (keys, passwords, URLs): the only parts of values it quotes are
    FDL_TRUSTED_PROXIES entries and FDL_PROFILES keys (model names), which are not secrets."""
    if isinstance(error, ValidationError):
        errors = error.errors(include_url=False, include_input=False, include_context=False)
        return "; ".join(
            ": ".join(
                [*_where([str(part) for part in e["loc"]]), e["msg"].removeprefix("Value error, ")]
            )
            for e in errors
        )
    if isinstance(error, SettingsError):
        # 'error parsing value for field "profiles" from source "EnvSettingsSource"'
        field = re.search(r'field "(\w+)"', str(error))
        cause = f" ({error.__cause__})" if error.__cause__ is not None else ""
        return f"{_variable(field[1])}: not valid JSON{cause}" if field else str(error)
    if isinstance(error, UnicodeDecodeError):  # .env: its own message quotes the byte
        return f".env is not UTF-8 text ({error.reason} at byte {error.start})"
    return str(error)


def _where(loc: list[str]) -> list[str]:
    """A field's place as its variable, then the keys inside it (FDL_PROFILES, my_model); a check
    across fields has none (its message names the settings)."""
    return [_variable(loc[0]), *loc[1:]] if loc else []


def _variable(field: str) -> str:
    return f"FDL_{field.upper()}"


def folder_problem(path: Path, parent_must_exist: bool = True) -> str | None:
    """Why ``path`` cannot be used as a folder, or None: it is something else (a file, a FIFO),
    or (``parent_must_exist``) it is missing and so is the folder it would be made in (a volume
    not mounted: making it would write to the filesystem underneath)."""
    try:
        if path.exists():
            return None if path.is_dir() else f"{path} exists and is not a folder"
        if parent_must_exist and not path.absolute().parent.is_dir():
            return f"{path} does not exist, nor does its parent folder (a volume not mounted?)"
    except OSError as error:
        return f"{path} cannot be looked at ({error.strerror})"
    return None


def unmakeable(path: Path) -> str | None:
    """Why ``path``, when it is missing, could not be made, or None: the nearest of its
    ancestors that exists is not a folder (a file), or takes no new entries (read-only). Makes
    nothing."""
    absolute = path.absolute()
    for ancestor in (absolute, *absolute.parents):
        try:
            if not ancestor.exists():
                continue
            if ancestor == absolute:
                return None
            if not ancestor.is_dir():
                return f"{path} cannot be made: {ancestor} is not a folder"
        except OSError as error:
            return f"{path} cannot be made: {ancestor} cannot be looked at ({error.strerror})"
        if not os.access(ancestor, os.W_OK | os.X_OK):
            return f"{path} cannot be made: {ancestor} is not writable"
        return None
    return None


def prepare_var_dir(var_dir: Path, setting: str = "FDL_VAR_DIR") -> str | None:
    """Make FDL_VAR_DIR (or the folder of another ``setting``, FDL_CHECKPOINT_DIR) where it is
    missing, parents and all, and check that it takes files, or say why not (``FDL_VAR_DIR:
    reason``): under a file, in a read-only folder or filesystem."""
    if problem := folder_problem(var_dir, parent_must_exist=False) or unmakeable(var_dir):
        return f"{setting}: {problem}"
    try:
        # A link whose target is missing: the target is made, as `fdl up` (which resolves the
        # setting) makes it, instead of mkdir's EEXIST on the link itself.
        Path(os.path.realpath(var_dir)).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return f"{setting}: {var_dir} cannot be made ({error.strerror})"
    if not os.access(var_dir, os.W_OK | os.X_OK):
        return f"{setting}: {var_dir} is not writable"
    return None


def prepare_model_dir(model_dir: Path, explicit: bool) -> str | None:
    """Make ``model_dir`` ready for the repository's lock, or say why not (``FDL_MODEL_DIR:
    reason``). A set one (``explicit``) is only checked: a missing parent is a volume not
    mounted, and the models would go to the disk underneath. The default, var/models, is made
    where it is missing, parents and all (a fresh checkout), as `fdl up` makes it."""
    if problem := folder_problem(model_dir, parent_must_exist=explicit):
        return f"FDL_MODEL_DIR: {problem}"
    if not explicit:
        try:
            model_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            return f"FDL_MODEL_DIR: {model_dir} cannot be made ({error.strerror})"
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
    serving_grpc_port: Port = 8500
    serving_rest_port: Port = 8501
    gateway_host: str = "127.0.0.1"
    gateway_port: Port = 8000
    training_queue: str = "training"
    # Comma-separated admin keys.
    api_keys: str | None = Field(default=None, repr=False)
    # The root of the base paths written into models.config (the model repository as the model
    # server sees it), when it differs from FDL_MODEL_DIR (containers, object storage). Unset:
    # FDL_MODEL_DIR resolved. Every process that renders models.config reads it (the gateway's
    # promotions, the worker's publish, `python -m fdl.repository`, `fdl up`), so all agree.
    serving_model_base_path: str | None = None
    # `fdl up`: how often supervisord starts a child again that keeps exiting before its start
    # time, after 1 s, 2 s, 3 s ..., before it gives it up (FATAL). docs/deploy.md, "fdl up".
    start_retries: int = Field(default=10, ge=0, le=1000)

    @field_validator("redis_url")
    @classmethod
    def _credentials_in_userinfo(cls, url: str | None) -> str | None:
        """A URL both clients take (:func:`redis_url_problem`), in one form for both:
        credentials_in_userinfo."""
        if url and (problem := redis_url_problem(url)):
            raise ValueError(f"{problem}; {REDIS_URL_FORM}")
        return credentials_in_userinfo(url) if url else url

    def require_redis_url(self) -> str:
        if not self.redis_url:
            raise RuntimeError(REDIS_URL_UNSET)
        return self.redis_url


@lru_cache
def get_settings() -> CommonSettings:
    return CommonSettings()
