"""deploy/lint/worker_probe.py: the worker's liveness check (deploy/k8s/base/worker.yaml's
livenessProbe, deploy/compose.yaml's healthcheck) runs fdl-worker-probe as its own argv, with
options it takes, within its timeout; a shell, a wrapper or Celery's plain ping fails."""

from __future__ import annotations

from typing import Any

import pytest

from deploy.lint import probes, worker_probe
from deploy.lint.common import Errors, load_compose, load_yaml_documents
from harness.procs import REPO_ROOT

K8S = REPO_ROOT / "deploy" / "k8s" / "base"
Doc = dict[str, Any]


@pytest.fixture(autouse=True)
def _no_notes_left() -> None:
    probes.notes()


def worker_liveness(command: Any = None, timeout_s: Any = None) -> list[Doc]:
    """deploy/k8s/base/worker.yaml with its liveness command and timeoutSeconds replaced (None:
    as shipped)."""
    docs = load_yaml_documents(K8S / "worker.yaml")
    liveness = docs[0]["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]
    if command is not None:
        liveness["exec"]["command"] = command
    if timeout_s is not None:
        liveness["timeoutSeconds"] = timeout_s
    return docs


def worker_healthcheck(test: Any = None, timeout: Any = None) -> dict[str, Any]:
    """deploy/compose.yaml with the worker's healthcheck test and timeout replaced."""
    project = load_compose(REPO_ROOT / "deploy" / "compose.yaml")
    healthcheck = project["services"]["worker"]["healthcheck"]
    if test is not None:
        healthcheck["test"] = test
    if timeout is not None:
        healthcheck["timeout"] = timeout
    return project


def worker_errors(argv: list[str], timeout_s: float = 30) -> tuple[Errors, Errors]:
    """The errors of ``argv`` as the worker's liveness command (Kubernetes) and as its compose
    healthcheck, each with a timeout of ``timeout_s``."""
    k8s = worker_probe.check_k8s(worker_liveness(argv, timeout_s))
    compose = worker_probe.check_compose(
        worker_healthcheck(["CMD", *argv], f"{timeout_s:g}s"), "compose.yaml"
    )
    return k8s, compose


def test_the_worker_liveness_runs_its_probe() -> None:
    """The shipped liveness checks (Kubernetes, compose) run fdl-worker-probe as an argv."""
    assert worker_probe.check_k8s(worker_liveness()) == []
    project = worker_healthcheck()
    assert project["services"]["worker"]["healthcheck"]["test"][:2] == ["CMD", "fdl-worker-probe"]
    assert probes.check_compose(project, "compose.yaml") == []


@pytest.mark.parametrize(
    "argv",
    [
        ["fdl-worker-probe"],
        ["fdl-worker-probe", "--timeout=15", "--redis-timeout", "2"],  # 23 s + 5 s start-up
        ["fdl-worker-probe", "--destination", "worker2@%h", "--timeout", "10"],
    ],
)
def test_a_worker_probe_within_the_timeout_passes(argv: list[str]) -> None:
    assert worker_errors(argv) == ([], [])


PLAIN_PING = 'export CELERY_BROKER_URL="$FDL_REDIS_URL"; exec celery inspect ping --timeout 10'


@pytest.mark.parametrize(
    "argv",
    [
        ["sh", "-c", PLAIN_PING],  # the old liveness: a Redis outage restarted every worker
        ["sh", "-c", f"fdl-worker-probe || {PLAIN_PING}"],
        ["fdl-worker-probes"],
        # a shell or a wrapper that makes a check that cannot fail
        ["sh", "-c", "fdl-worker-probe || true"],
        ["sh", "-c", "fdl-worker-probe; exit 0"],
        ["sh", "-c", "exec fdl-worker-probe"],
        ["echo", "fdl-worker-probe"],
        ["/bin/true", "fdl-worker-probe"],
        [],
    ],
)
def test_a_worker_liveness_without_its_probe_first_fails(argv: list[str]) -> None:
    k8s, compose = worker_errors(argv)
    assert len(k8s) == 1, k8s
    assert k8s[0].startswith(
        "Deployment fdl-worker/worker: livenessProbe must run fdl-worker-probe"
    )
    assert len(compose) == 1, compose
    assert compose[0].startswith("compose.yaml: worker healthcheck must run fdl-worker-probe")


@pytest.mark.parametrize(
    "test",
    [
        ["CMD-SHELL", "fdl-worker-probe || true"],
        ["CMD-SHELL", "fdl-worker-probe"],
        "fdl-worker-probe --timeout 10",  # a string: run by the shell
        ["NONE"],
    ],
)
def test_a_compose_healthcheck_through_a_shell_fails(test: Any) -> None:
    errors = worker_probe.check_compose(worker_healthcheck(test), "compose.yaml")
    assert len(errors) == 1 and "must run fdl-worker-probe" in errors[0], errors


@pytest.mark.parametrize(
    ("argv", "timeout_s", "worst"),
    [
        (["fdl-worker-probe", "--timeout", "60"], 30, 73),  # 60 + 2 * 3 + 2 + 5
        (["fdl-worker-probe", "--redis-timeout", "10"], 30, 37),
        (["fdl-worker-probe"], 20, 23),  # the shipped probe, a shorter timeout
        (["fdl-worker-probe", "--timeout", "10"], 1, 23),  # Kubernetes' default: 1 s
    ],
)
def test_a_worker_probe_that_may_overrun_its_timeout_fails(
    argv: list[str], timeout_s: float, worst: float
) -> None:
    k8s, compose = worker_errors(argv, timeout_s)
    assert len(k8s) == 1, k8s
    assert k8s[0].startswith(
        f"Deployment fdl-worker/worker: livenessProbe: fdl-worker-probe may take {worst} s "
    )
    assert f"more than its timeoutSeconds of {timeout_s} s" in k8s[0]
    assert len(compose) == 1 and f"may take {worst} s" in compose[0], compose
    assert f"more than its timeout of {timeout_s} s" in compose[0]


def test_the_timeouts_left_out_are_the_defaults() -> None:
    """Kubernetes' timeoutSeconds is 1 s when left out; compose's timeout 30 s."""
    docs = worker_liveness()
    del docs[0]["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["timeoutSeconds"]
    (error,) = worker_probe.check_k8s(docs)
    assert "more than its timeoutSeconds of 1 s" in error
    project = worker_healthcheck()
    del project["services"]["worker"]["healthcheck"]["timeout"]
    assert worker_probe.check_compose(project, "compose.yaml") == []
    project["services"]["worker"]["healthcheck"]["timeout"] = "1m30"
    (error,) = worker_probe.check_compose(project, "compose.yaml")
    assert error == "compose.yaml: worker healthcheck: timeout is not a duration"


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["fdl-worker-probe", "--timeout", "0"], "argument --timeout: not a positive number"),
        (["fdl-worker-probe", "--timeout"], "argument --timeout: expected one argument"),
        (["fdl-worker-probe", "--help"], "unknown arguments ['--help']"),
        (["fdl-worker-probe", "celery@host"], "unknown arguments ['celery@host']"),
    ],
)
def test_a_worker_probe_it_would_refuse_fails(argv: list[str], error: str) -> None:
    k8s, compose = worker_errors(argv)
    assert len(k8s) == 1 and error in k8s[0], k8s
    assert len(compose) == 1 and error in compose[0], compose


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("30s", 30), ("1m30s", 90), ("1.5s", 1.5), ("500ms", 0.5), ("1h", 3600), ("30", None)],
)
def test_compose_durations(value: str, seconds: float | None) -> None:
    assert worker_probe.compose_seconds(value) == seconds
