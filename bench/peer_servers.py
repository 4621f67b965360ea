"""The peers ``bench/peers.py`` puts beside the gateway, each in a virtual environment of its own.

Each peer is a Python front end with the same preprocessing (decode the base64 image, grey,
resize, forward the tensor over REST v1 to the model server's ``:predict``), written as its
project's own samples write one: KServe's image transformer (``kserve_transformer.py``) and a
LitServe API (``litserve_peer.py``). Their packages go into ``var/bench/<name>-venv``, created on
first use, so none of them enters the project's dependencies.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gateway_stack import DIGITS as MODEL
from gateway_stack import REPO_ROOT, BenchStack, wait_http

from harness.procs import Process, free_port


@dataclass(frozen=True)
class Peer:
    name: str  # the project, in ratios and in --no-<key>'s help
    label: str  # the row name in the bench's table
    packages: tuple[str, ...]
    argv: Callable[[BenchStack, int], list[str]]  # the script's arguments for a stack and port
    ready_path: str  # answers 200 once the peer serves
    predict_path: str  # where the bench posts the JSON body

    def venv(self, key: str) -> Path:
        return REPO_ROOT / "var" / "bench" / f"{key}-venv"


def _kserve_argv(stack: BenchStack, port: int) -> list[str]:
    predictor = stack.rest_url.removeprefix("http://")
    return [
        "kserve_transformer.py", f"--model_name={MODEL}", f"--predictor_host={predictor}",
        f"--http_port={port}", "--enable_grpc=false", "--height=28", "--width=28", "--channels=1",
    ]  # fmt: skip


def _litserve_argv(stack: BenchStack, port: int) -> list[str]:
    predictor = stack.rest_url.removeprefix("http://")
    return [
        "litserve_peer.py", f"--model_name={MODEL}", f"--predictor_host={predictor}",
        f"--port={port}", "--height=28", "--width=28", "--channels=1",
    ]  # fmt: skip


PEERS = {
    "kserve": Peer(
        "KServe",
        "KServe transformer",
        ("kserve", "pillow"),
        _kserve_argv,
        f"/v1/models/{MODEL}",
        f"/v1/models/{MODEL}:predict",
    ),
    "litserve": Peer(
        "LitServe",
        "LitServe API",
        ("litserve", "numpy", "pillow", "requests"),
        _litserve_argv,
        "/health",
        "/predict",
    ),
}


def peer_python(key: str) -> Path:
    """The peer's virtual environment's interpreter, created on first use."""
    peer = PEERS[key]
    venv = peer.venv(key)
    python = venv / "bin" / "python"
    stamp = venv / ".installed"
    if not stamp.exists():
        print(f"creating {venv} (pip install {' '.join(peer.packages)}) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *peer.packages], check=True)
        stamp.touch()
    version = subprocess.run(
        [str(python), "-c", f"from importlib.metadata import version; print(version({key!r}))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    print(f"{key} {version} in {venv}")
    return python


def start_peer(key: str, stack: BenchStack, python: Path) -> tuple[Process, str]:
    """The peer serving ``MODEL`` in front of the stack's model server: the process and its URL
    for the JSON body."""
    peer = PEERS[key]
    port = free_port()
    script, *arguments = peer.argv(stack, port)
    process = Process(key, [str(python), str(REPO_ROOT / "bench" / script), *arguments], stack.logs)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + peer.ready_path, peer.label, process, timeout=120)
    except BaseException:
        process.stop()
        raise
    return process, url + peer.predict_path
