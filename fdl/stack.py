"""`fdl up`: the whole stack in the foreground (Redis, model server, worker, gateway).

honcho supervises the children: their output is interleaved with a name prefix, and Ctrl-C (or
SIGTERM) stops every child's process group, so nothing is left behind.
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

from fdl.model_config import sync_config
from fdl.redis_server import redis_server_argv
from fdl.settings import CommonSettings

API_KEY_FILE = "api_key"
# No -Q: the worker consumes the app's default queue, FDL_TRAINING_QUEUE (training/tasks.py), the
# queue the gateway sends to; the containers run the same command.
WORKER_ARGV = [
    "celery",
    "-A",
    "training.tasks",
    "worker",
    "--concurrency",
    "1",
    "--prefetch-multiplier",
    "1",
    "--loglevel",
    "INFO",
]


@dataclass
class Stack:
    """The commands and environment of every process `fdl up` starts."""

    env: dict[str, str]
    commands: dict[str, list[str]] = field(default_factory=dict)
    api_key: str | None = None
    api_key_generated: bool = False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def ensure_api_key(settings: CommonSettings) -> tuple[str, bool]:
    """The first admin key: FDL_API_KEYS, else one stored under FDL_VAR_DIR (made once)."""
    if settings.api_keys:
        return settings.api_keys.split(",")[0].strip(), False
    path = settings.var_dir / API_KEY_FILE
    if path.exists():
        return path.read_text().strip(), False
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key, True


def model_server_argv(settings: CommonSettings, config_file: Path, poll_s: int = 2) -> list[str]:
    """The real tensorflow_model_server when it is on PATH, else our compatible server."""
    binary = shutil.which("tensorflow_model_server") or "fdl-model-server"
    return [
        binary,
        f"--port={settings.serving_grpc_port}",
        f"--rest_api_port={settings.serving_rest_port}",
        f"--model_config_file={config_file}",
        f"--model_config_file_poll_wait_seconds={poll_s}",
        f"--file_system_poll_wait_seconds={poll_s}",
        # Labels kept in labels.json must not stop a restart before their versions have loaded.
        "--allow_version_labels_for_unavailable_models=true",
        "--enable_grpc_healthcheck_service=true",
    ]


def plan_stack(settings: CommonSettings) -> Stack:
    model_dir = settings.model_dir.resolve()
    var_dir = settings.var_dir.resolve()
    data_dir = settings.data_dir.resolve()
    for folder in (model_dir, var_dir, data_dir):
        folder.mkdir(parents=True, exist_ok=True)
    config_file = sync_config(model_dir)
    api_key, generated = ensure_api_key(settings)
    env = {
        "FDL_MODEL_DIR": str(model_dir),
        "FDL_VAR_DIR": str(var_dir),
        "FDL_DATA_DIR": str(data_dir),
        "FDL_API_KEYS": settings.api_keys or api_key,
        "FDL_SERVING_HOST": settings.serving_host,
        "FDL_SERVING_GRPC_PORT": str(settings.serving_grpc_port),
        "FDL_SERVING_REST_PORT": str(settings.serving_rest_port),
        "FDL_GATEWAY_HOST": settings.gateway_host,
        "FDL_GATEWAY_PORT": str(settings.gateway_port),
        "PYTHONUNBUFFERED": "1",
    }
    stack = Stack(env=env, api_key=api_key, api_key_generated=generated)
    if settings.redis_url:
        env["FDL_REDIS_URL"] = settings.redis_url
    else:
        port = free_port()
        env["FDL_REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
        stack.commands["redis"] = redis_server_argv(port, var_dir / "redis")
    stack.commands["serving"] = model_server_argv(settings, config_file)
    stack.commands["worker"] = list(WORKER_ARGV)
    stack.commands["gateway"] = ["fdl-gateway"]
    return stack


def run_stack(stack: Stack) -> int:
    from honcho.manager import Manager
    from honcho.printer import Printer

    # Children find our console scripts (fdl-gateway, celery) next to this interpreter.
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, **stack.env, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    manager = Manager(Printer(sys.stdout))
    for name, argv in stack.commands.items():
        manager.add_process(name, shlex.join(argv), env=env)
    manager.loop()
    return manager.returncode or 0
