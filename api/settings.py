"""Gateway settings: one object, read once (``FDL_`` environment variables)."""

from __future__ import annotations

import ssl
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, FilePath, field_validator, model_validator

from api.serving_tls import key_pair_problem
from api.settings_hosts import check_trusted_proxies, parse_allowed_hosts
from api.settings_keys import check_gateway_keys, read_keys
from fdl.settings import CommonSettings, folder_problem, seconds

# The most FDL_SHUTDOWN_GRACE_S may be, and its default: the stop waits of `fdl up`, Compose and
# Kubernetes are sized for it (fdl/stack_supervisor.py, tests/deploy/test_stop_waits.py).
SHUTDOWN_GRACE_S = 10.0
ProfileName = Literal["digit", "photo"]
LogLevel = Literal["CRITICAL", "FATAL", "ERROR", "WARNING", "WARN", "INFO", "DEBUG", "NOTSET"]


class GatewaySettings(CommonSettings):
    # Admin keys: FDL_API_KEYS (comma-separated, in CommonSettings) plus this file (a secret).
    api_keys_file: Path | None = None
    # Keys that may classify only: FDL_CLASSIFY_KEYS plus FDL_CLASSIFY_KEYS_FILE.
    classify_keys: str | None = Field(default=None, repr=False)
    classify_keys_file: Path | None = None
    # True: anyone may classify. False: a classify or admin key is required.
    classify_open: bool = True
    # Per key (or per client address when anonymous, an IPv6 client by its /64), GCRA in Redis.
    # 0 disables the limit.
    rate_limit_per_minute: int = Field(default=1200, ge=0)
    rate_limit_burst: int = Field(default=100, ge=1)
    # The limits' Redis check (a LAN round trip: well under a millisecond) gives up after this
    # long and lets the request through; Redis is then skipped for FDL_RATE_LIMIT_BACKOFF_S at a
    # time until it answers again (api/ratelimit.py).
    rate_limit_timeout_s: float = seconds(0.5, gt=0)
    rate_limit_backoff_s: float = seconds(2.0, gt=0)
    # Requests with a key that is not valid, per client address (an IPv6 client by its /64),
    # GCRA in Redis, on whether or not the limit above is. Past it, every request from the
    # address that presents a key gets 429 until Retry-After, before its key is checked.
    # 0 disables it.
    auth_failures_per_minute: int = Field(default=30, ge=0)
    auth_failures_burst: int = Field(default=30, ge=1)
    # Training jobs that may wait in the gateway's training queue (queued job records: a job
    # whose message a reaper re-sent counts once); a submission beyond it gets 429 queue_full.
    # 0: no limit.
    max_queued_jobs: int = Field(default=1000, ge=0)
    # Socket timeout of the gateway's job-store calls: a hung Redis answers job routes 503 after
    # about this long per call, not redis-py's 5 s (the workers keep theirs).
    job_store_timeout_s: float = seconds(2.0, gt=0)
    # Deadlines of gRPC calls to the model server.
    predict_timeout_s: float = seconds(10.0, gt=0)
    metadata_timeout_s: float = seconds(5.0, gt=0)
    # Input specs (GetModelMetadata) are cached per model version this long.
    metadata_cache_s: float = seconds(30.0, ge=0)
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1)
    # The body of a keyed JSON route (a job spec, a label change: a few hundred bytes), read
    # only once the key has been checked (api/admin_route.py); above it, 413. At most
    # FDL_MAX_BODY_BYTES counts.
    max_json_body_bytes: int = Field(default=64 * 1024, ge=1)
    max_batch_size: int = Field(default=64, ge=1)
    # Predicts at once per model version; requests beyond it wait and go out together (up to
    # max_batch_size images per Predict) when one returns. 0: no limit, every request alone.
    # With several model-server replicas, at least their number (docs/gateway.md).
    predict_max_in_flight: int = Field(default=1, ge=0)
    # Classify requests with well-formed path parameters skip FastAPI's routing and dependency
    # solving (api/fastpath.py); false sends every request through FastAPI. Answers are the same.
    classify_fast_path: bool = True
    # Decoded-pixel limit per image (a JPEG counts at the scale it is decoded at); above it the
    # image is refused with 413. 16 M covers 12-16 MP camera photos at full resolution; the
    # models need 28x28 or 32x32.
    max_image_pixels: int = Field(default=16_000_000, ge=1)
    # Decoded pixels of all the images of one request (a batch); above it, 413.
    max_batch_pixels: int = Field(default=64_000_000, ge=1)
    # Decoded pixels in flight across the process (a pixel costs up to 4 bytes while decoded).
    # A request takes its largest image's share while its images decode one by one; one that
    # does not fit waits up to FDL_DECODE_WAIT_S, then 503 + Retry-After. Requests whose images
    # are all at most FDL_DECODE_FREE_PIXELS skip the budget: their memory is small.
    decode_budget_pixels: int = Field(default=24_000_000, ge=1)
    decode_free_pixels: int = Field(default=512 * 512, ge=0)
    decode_wait_s: float = seconds(2.0, ge=0)
    # Request-body bytes in flight across the process (a body is held 2-3 times while parsed).
    # A body past FDL_BODY_FREE_BYTES takes its share as its bytes arrive (api/middleware.py).
    body_budget_bytes: int = Field(default=32 * 1024 * 1024, ge=1)
    body_free_bytes: int = Field(default=256 * 1024, ge=0)
    # HTTP limits (api/http_guard.py): the request line and headers together (431 above it);
    # the time to receive them (from connecting, or from a keep-alive request's first byte)
    # and the time to receive a body after its headers (408); how long a client may leave its
    # responses unread once the connection's send buffer is full (then closed); idle keep-alive
    # connections; open connections (ones beyond it are closed at once). Each logs when it
    # triggers.
    max_header_bytes: int = Field(default=32 * 1024, ge=1024)
    header_timeout_s: float = seconds(10.0, gt=0)
    body_timeout_s: float = seconds(60.0, gt=0)
    write_timeout_s: float = seconds(60.0, gt=0)
    keepalive_timeout_s: float = seconds(5.0, gt=0)
    max_connections: int = Field(default=512, ge=1)
    # The probe listener (api/probe.py): GET/HEAD /healthz, /readyz and /metrics only, on this
    # port of FDL_GATEWAY_HOST, in the same process and event loop, with a connection cap of its
    # own, so a flood that fills FDL_MAX_CONNECTIONS never fails the kubelet's probes. For the
    # kubelet and Prometheus only: never expose it publicly. 0: off (many gateways on one host
    # then never clash).
    probe_port: int = Field(default=0, ge=0, le=65535)
    # Job event streams (GET /v1/jobs/{id}/events) open at once; one beyond it gets 503
    # too_many_streams + Retry-After before anything is streamed. The streams read Redis through
    # a pool of their own, this many connections (each quiet stream holds one for its blocking
    # XREAD), so they never take the connections of /readyz and the rate limits. 256: half of
    # FDL_MAX_CONNECTIONS, so streams alone never fill the gateway's connections, and far more
    # than the UI tabs and `fdl job --follow` sessions one replica sees.
    max_event_streams: int = Field(default=256, ge=1)
    # Proxies whose X-Forwarded-For / X-Forwarded-Proto are believed (comma-separated addresses
    # or CIDR networks, "*" for any). Empty: none, the client is the peer address.
    trusted_proxies: str = ""
    # The names the gateway answers to in the Host header (comma-separated, no port, an IPv6
    # address in brackets: [::1]); any other gets 400 host_not_allowed, /healthz and /readyz
    # excepted (api/middleware.py). "*": any. Against DNS rebinding: `fdl up` sets the loopback
    # names when it binds the gateway to a loopback address.
    allowed_hosts: str = "*"
    default_top_k: int = Field(default=3, ge=1)
    # Preprocessing profile per model, overriding the choice by channel count:
    # FDL_PROFILES='{"my_model": "photo"}'.
    profiles: dict[str, ProfileName] = Field(default_factory=dict)
    # FDL_SERVING_MODEL_BASE_PATH (serving_model_base_path) is in CommonSettings: the workers and
    # `python -m fdl.repository` render models.config with it too.
    # A gRPC target instead of FDL_SERVING_HOST:FDL_SERVING_GRPC_PORT: "unix:/run/tfs.sock",
    # "ipv4:10.0.0.5:8500,10.0.0.6:8500", "dns:///fdl-serving-headless:8500". Requests are spread
    # round-robin over every address the target resolves to.
    serving_grpc_target: str | None = None
    # TLS to the model server (its --ssl_config_file): the CA that signed its certificate turns
    # TLS on; a client certificate and key for servers with client_verify; the name in the
    # server's certificate when it is not FDL_SERVING_HOST.
    serving_tls_ca_file: FilePath | None = None
    serving_tls_cert_file: FilePath | None = None
    serving_tls_key_file: FilePath | None = None
    serving_tls_server_name: str | None = None
    # Seconds a stopping gateway gives the requests in flight (uvicorn's graceful shutdown); those
    # still running then are answered 503 shutting_down (api/shutdown.py). Lower only.
    shutdown_grace_s: float = Field(
        default=SHUTDOWN_GRACE_S, gt=0, le=SHUTDOWN_GRACE_S, allow_inf_nan=False
    )
    # How long a promotion waits for a version to load before giving up (504).
    promote_timeout_s: float = seconds(60.0, gt=0)
    # Every this many seconds the gateway asks each model-server replica whether its labels are
    # models.config's, and sends the config to one that differs (api/replica_sync.py). 0: never.
    replica_sync_s: float = seconds(30.0, ge=0)
    log_json: bool = True
    log_level: LogLevel = "INFO"  # any case

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_any_case(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_parse(cls, value: str) -> str:
        """Each entry an address, a network without host bits, or "*" alone (uvicorn's reading;
        api/settings_hosts.py)."""
        return check_trusted_proxies(value)

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts_parse(cls, value: str) -> str:
        parse_allowed_hosts(value)
        return value

    @property
    def allowed_host_names(self) -> frozenset[bytes] | None:
        """FDL_ALLOWED_HOSTS as the gateway compares Host headers with it; None: any."""
        return parse_allowed_hosts(self.allowed_hosts)

    @field_validator("serving_tls_ca_file")
    @classmethod
    def _ca_loads(cls, value: Path | None) -> Path | None:
        """Loaded as gRPC will load it, so a file with no PEM certificate stops the gateway here
        instead of failing every classification's handshake (503)."""
        if value is not None:
            try:
                ssl.create_default_context(cafile=str(value))
            except ssl.SSLError as error:
                reason = error.reason or str(error)
                raise ValueError(f"holds no usable PEM CA certificate ({reason})") from None
            except OSError as error:
                raise ValueError(f"cannot be read ({error.strerror})") from None
        return value

    @model_validator(mode="after")
    def _model_dir_usable(self) -> GatewaySettings:
        """A repository the gateway can lock and write: not a file, and, when FDL_MODEL_DIR is
        set, not in a missing folder (an unmounted volume: the lock would make the folder on the
        root filesystem). The default, var/models, is made where it is missing (`fdl up`)."""
        explicit = "model_dir" in self.model_fields_set
        if problem := folder_problem(self.model_dir, parent_must_exist=explicit):
            raise ValueError(f"FDL_MODEL_DIR: {problem}")
        return self

    @model_validator(mode="after")
    def _budgets_fit(self) -> GatewaySettings:
        if self.decode_budget_pixels < self.max_image_pixels:
            raise ValueError("FDL_DECODE_BUDGET_PIXELS must be at least FDL_MAX_IMAGE_PIXELS")
        if self.body_budget_bytes < self.max_body_bytes:
            raise ValueError("FDL_BODY_BUDGET_BYTES must be at least FDL_MAX_BODY_BYTES")
        return self

    @model_validator(mode="after")
    def _probe_port_apart(self) -> GatewaySettings:
        if self.probe_port and self.probe_port == self.gateway_port:
            raise ValueError(
                f"FDL_PROBE_PORT ({self.probe_port}) must differ from FDL_GATEWAY_PORT: the probe "
                "listener needs a port of its own (0 turns it off)"
            )
        return self

    @model_validator(mode="after")
    def _tls_pairs(self) -> GatewaySettings:
        if (self.serving_tls_cert_file is None) != (self.serving_tls_key_file is None):
            raise ValueError("FDL_SERVING_TLS_CERT_FILE and FDL_SERVING_TLS_KEY_FILE go together")
        if self.serving_tls_cert_file is not None and self.serving_tls_ca_file is None:
            raise ValueError("a client certificate needs FDL_SERVING_TLS_CA_FILE (TLS is off)")
        # Loaded as gRPC will load them, as the CA is: a pair it cannot use stops the gateway
        # here instead of failing every channel's handshake (model server unavailable, 503).
        cert, key = self.serving_tls_cert_file, self.serving_tls_key_file
        if cert is not None and key is not None and (problem := key_pair_problem(cert, key)):
            raise ValueError(problem)
        return self

    def check_keys(self) -> None:
        """Raise :class:`fdl.settings.WeakKeyError` naming each setting with a placeholder or short
        key, or a key file that is named but is not a file holding a key.

        The gateway calls it before it listens (``fdl-gateway``) and when the app is built, so a
        deployment with the shipped placeholder Secret never serves with it.
        """
        check_gateway_keys(
            self.api_keys, self.api_keys_file, self.classify_keys, self.classify_keys_file
        )

    def admin_keys(self) -> list[str]:
        return read_keys(self.api_keys, self.api_keys_file)

    def classify_only_keys(self) -> list[str]:
        return read_keys(self.classify_keys, self.classify_keys_file)

    @property
    def serving_target(self) -> str:
        """FDL_SERVING_GRPC_TARGET, else host:port, an IPv6 literal in brackets ([::1]:8500)."""
        if self.serving_grpc_target:
            return self.serving_grpc_target
        host = self.serving_host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{host}:{self.serving_grpc_port}"


@lru_cache
def get_settings() -> GatewaySettings:
    return GatewaySettings()
