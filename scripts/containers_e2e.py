"""End-to-end test of the compose stack in containers, over the published gateway port only.

Run by scripts/test-containers.sh once the stack is up: trains mnist_logreg (1 epoch) with the
admin key, classifies real MNIST test digits, promotes a label, restarts the gateway container
and expects the same answers, checks who owns what in the shared model volume, who reaches the
model server, that every container has a read-only root and an init as PID 1, runs every
container's HEALTHCHECK, and checks that Redis refuses clients without its password
(FDL_REDIS_PASSWORD, from the environment) and that no container logs it or the admin key.
Every wait has a deadline.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from fdl.job_records import TERMINAL

MODEL = "mnist_logreg"
DIGITS = 60
SERVICES = ("redis", "serving", "gateway", "worker", "flower")
FDL_UID = "10001"
# PID 1 of every container: tini (our images' ENTRYPOINT) or podman's --init (compose `init: true`:
# catatonit, mounted as /run/podman-init).
INITS = ("tini", "podman-init")


def log(message: str) -> None:
    print(f"   {time.strftime('%H:%M:%S')} {message}", flush=True)


def until(what: str, deadline_s: float, probe: Callable[[], Any], interval: float = 2.0) -> Any:
    """``probe()``'s first truthy result; fails with the last one after the deadline."""
    end = time.monotonic() + deadline_s
    last: Any = None
    while time.monotonic() < end:
        try:
            last = probe()
        except (httpx.HTTPError, subprocess.SubprocessError) as error:
            last = error
        else:
            if last and not isinstance(last, BaseException):
                return last
        time.sleep(interval)
    raise SystemExit(f"FAIL: {what} within {deadline_s:.0f} s (last: {last!r})")


def podman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def mnist_digits(folder: Path, count: int) -> tuple[list[bytes], list[int]]:
    """The first ``count`` test digits as PNG files, with their labels."""
    with gzip.open(folder / "t10k-images-idx3-ubyte.gz") as handle:
        raw = handle.read()
    images = np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)[:count]
    with gzip.open(folder / "t10k-labels-idx1-ubyte.gz") as handle:
        labels = list(handle.read()[8 : 8 + count])
    pngs = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    return pngs, labels


class Stack:
    def __init__(self, url: str, key: str, project: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=60)
        self.admin = {"Authorization": f"Bearer {key}"}
        self.project = project

    def container(self, service: str) -> str:
        return f"{self.project}_{service}_1"

    def classify(self, path: str, pngs: list[bytes]) -> list[int] | None:
        answers: list[int] = []
        for start in range(0, len(pngs), 20):
            files = [
                ("file", (f"{i}.png", p, "image/png")) for i, p in enumerate(pngs[start:][:20])
            ]
            response = self.http.post(f"/v1/models/{MODEL}{path}:classify", files=files)
            if response.status_code != 200:
                log(f"classify{path}: {response.status_code} {response.text[:200]}")
                return None
            answers += [p["class_id"] for p in response.json()["predictions"]]
        return answers


def train(stack: Stack) -> int:
    response = stack.http.post("/v1/jobs", json={"model": MODEL, "epochs": 1}, headers=stack.admin)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    log(f"job {job_id} submitted")

    def finished() -> dict[str, Any] | None:
        job = stack.http.get(f"/v1/jobs/{job_id}", headers=stack.admin).json()
        return job if job["status"] in TERMINAL else None

    job = until("the training job finishes", 600, finished, interval=3)
    assert job["status"] == "succeeded", json.dumps(job)[:2000]
    version = int(job["result"]["version"])
    log(f"job succeeded: version {version}; result {json.dumps(job['result'])[:300]}")
    return version


def check_model_volume(stack: Stack, version: int) -> None:
    """The worker and gateway (uid 10001) write, the model server reads, all as non-root."""
    listing = podman(
        "exec", stack.container("worker"), "find", "/models", "-printf", "%U:%G %m %p\n"
    )
    assert listing.returncode == 0, listing.stderr
    log("model volume:\n      " + "\n      ".join(listing.stdout.split("\n")[:12]))
    for line in listing.stdout.strip().splitlines():
        owner, mode, path = line.split(" ", 2)
        assert owner.split(":")[0] == FDL_UID, f"{path} is owned by {owner}, not the fdl user"
        assert int(mode, 8) & 0o600 == 0o600, f"{path} mode {mode}: its owner cannot read/write"
    files = ("/models/models.config", "/models/labels.json", f"/models/{MODEL}/{version}")
    for service, test in (("serving", "-r"), ("gateway", "-w"), ("worker", "-w")):
        user = podman("exec", stack.container(service), "id", "-u").stdout.strip()
        assert user == FDL_UID, f"{service} runs as uid {user}"
        for path in files:
            result = podman("exec", stack.container(service), "test", test, path)
            assert result.returncode == 0, f"{service} (uid {user}) fails test {test} {path}"


REACH = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], 8500), timeout=3).close()
except OSError as error:
    print(error)
    sys.exit(1)
"""


def check_model_server_exposure(stack: Stack) -> None:
    """No published port; only the gateway shares the model server's network (the worker
    writes the model volume and never connects to the server)."""
    ports = podman("port", stack.container("serving"))
    assert ports.returncode == 0 and not ports.stdout.strip(), f"published: {ports.stdout}"
    networks = podman(
        "inspect", "--format", "{{json .NetworkSettings.Networks}}", stack.container("serving")
    )
    (address,) = [n["IPAddress"] for n in json.loads(networks.stdout).values()]
    for service, target, reaches in (
        ("gateway", "serving", True),
        ("worker", "serving", False),
        ("worker", address, False),
        ("flower", "serving", False),
        ("flower", address, False),
    ):
        result = podman("exec", stack.container(service), "python3", "-c", REACH, target)
        assert (result.returncode == 0) == reaches, (service, target, result.stdout)
    log("model server: no published port; the gateway reaches it, the worker and flower do not")


def check_runtime(stack: Stack) -> None:
    """Every container: a read-only root (the stack just trained, served and restarted so) and
    an init as PID 1, which forwards SIGTERM to the program."""
    for service in SERVICES:
        name = stack.container(service)
        read_only = podman("inspect", "--format", "{{.HostConfig.ReadonlyRootfs}}", name)
        assert read_only.stdout.strip() == "true", f"{service}: root not read-only"
        written = podman("exec", "-u", "0", name, "touch", "/fdl-read-only-check")
        assert "Read-only file system" in written.stderr, f"{service}: root writable {written}"
        pid1 = podman("exec", name, "cat", "/proc/1/comm").stdout.strip()
        assert pid1 in INITS, f"{service}: PID 1 is {pid1!r}, not an init"
    log(f"every container: read-only root, PID 1 one of {', '.join(INITS)}")


def check_healthchecks(stack: Stack) -> None:
    """Each container's own HEALTHCHECK (podman runs it on demand: no systemd timers here)."""
    for service in SERVICES:
        name = stack.container(service)
        until(
            f"{service}'s healthcheck passes",
            180,
            lambda name=name: podman("healthcheck", "run", name, timeout=60).returncode == 0,
            interval=3,
        )
        status = podman("inspect", "--format", "{{.State.Health.Status}}", name).stdout.strip()
        assert status == "healthy", f"{service}: {status}"
        log(f"{service}: healthy")


# One inline command to the stack's Redis over the network, as any container on it could send.
REDIS_SAYS = """
import socket, sys
with socket.create_connection(("redis", 6379), timeout=5) as connection:
    connection.sendall(sys.argv[1].encode() + b"\\r\\n")
    print(connection.recv(200).decode(errors="replace").strip())
"""


def check_credentials(stack: Stack, admin_key: str, redis_password: str) -> None:
    """Redis refuses a client without its password or with a wrong one; the admin key is not in
    the gateway's environment (a file from a compose secret); no log holds either secret."""
    for command, refusal in (("PING", "-NOAUTH"), ("AUTH not-the-password", "-WRONGPASS")):
        said = podman("exec", stack.container("flower"), "python3", "-c", REDIS_SAYS, command)
        assert said.returncode == 0, said.stderr
        assert said.stdout.startswith(refusal), (command, said.stdout)
    log("redis: PING without the password answers NOAUTH, a wrong password WRONGPASS")
    env = podman("inspect", "--format", "{{json .Config.Env}}", stack.container("gateway"))
    names = [item.split("=", 1)[0] for item in json.loads(env.stdout)]
    assert "FDL_API_KEYS" not in names and "FDL_API_KEYS_FILE" in names, names
    assert admin_key not in env.stdout
    for service in (*SERVICES, "model-config"):
        logs = podman("logs", stack.container(service))
        assert logs.returncode == 0, logs.stderr
        for name, secret in (("the Redis password", redis_password), ("the admin key", admin_key)):
            assert secret not in logs.stdout + logs.stderr, f"{service} logs {name}"
    log("gateway: admin keys from /run/secrets, not the environment; no log holds a secret")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--project", required=True)
    parser.add_argument("--mnist", type=Path, required=True)
    args = parser.parse_args()
    stack = Stack(args.url, args.key, args.project)
    until("the gateway answers /healthz", 180, lambda: stack.http.get("/healthz").is_success)

    version = train(stack)
    pngs, labels = mnist_digits(args.mnist, DIGITS)
    latest = until("the new version classifies", 120, lambda: stack.classify("", pngs))
    right = sum(a == b for a, b in zip(latest, labels, strict=True))
    log(f"classified {DIGITS} MNIST test digits: {right} right")
    assert right >= 0.8 * DIGITS, f"only {right}/{DIGITS} right"

    response = stack.http.post(
        f"/v1/models/{MODEL}/labels/stable", json={"version": version}, headers=stack.admin
    )
    assert response.status_code == 200, response.text
    stable = until(
        "the stable label classifies", 120, lambda: stack.classify("/labels/stable", pngs)
    )
    assert stable == latest, "the stable label answers differently from its version"
    log(f"label stable -> version {version}")

    # Stop, then start: `podman restart` refuses a container whose dependency chain holds an exited
    # one-shot (model-config: "container state improper"); `podman start` runs it again.
    for step in ("stop", "start"):
        result = podman(step, stack.container("gateway"))
        assert result.returncode == 0, f"podman {step}: {result.stderr}"
    until(
        "the restarted gateway answers /healthz", 120, lambda: stack.http.get("/healthz").is_success
    )
    again = until("the restarted gateway classifies", 120, lambda: stack.classify("", pngs))
    assert again == latest, "different answers after the gateway restart"
    assert stack.classify("/labels/stable", pngs) == latest, "the label changed after the restart"
    log("gateway restarted: the same answers, the label kept")

    check_model_volume(stack, version)
    check_model_server_exposure(stack)
    check_runtime(stack)
    check_healthchecks(stack)
    check_credentials(stack, args.key, os.environ["FDL_REDIS_PASSWORD"])
    log("end-to-end test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
