"""Every stop wait outlasts the stop it waits for, so SIGKILL never cuts a server's drain short:
`fdl up` (supervisord's ``stopwaitsecs``), Compose (``stop_grace_period``) and Kubernetes
(``terminationGracePeriodSeconds`` after the preStop pause, deploy/lint/k8s_disruption.py) give
the gateway and the model server more than the deadlines they stop by, read from the modules that
set them: raising one without the waits fails here.

Before, supervisord and Compose gave every child 10 s, and the gateway needs up to 3 s (its probe
listener) plus 10 s (its requests in flight) plus its app's shutdown: it was SIGKILLed mid-drain
(11.7 s measured), and our model server, whose deadline is 10 s, at its deadline.
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest

from api.probe import SHUTDOWN_S as PROBE_SHUTDOWN_S
from api.settings import SHUTDOWN_GRACE_S, GatewaySettings
from api.shutdown import SETTLE_S
from deploy.lint import k8s_disruption
from deploy.lint.common import load_compose
from fdl.settings import CommonSettings
from fdl.stack import plan_stack
from fdl.stack_supervisor import (
    DEFAULT_STOP_WAIT_S,
    GATEWAY_SHUTDOWN_S,
    SERVING_SHUTDOWN_S,
    STOP_MARGIN_S,
    STOP_WAIT_S,
    WORKER_STOP_WAIT_S,
    supervisor_config,
)
from harness.procs import REPO_ROOT
from serving.__main__ import SHUTDOWN_DEADLINE_S

# The most each server takes to stop after SIGTERM, by its own constants. The gateway's app
# shutdown: its cancelled requests' end (SETTLE_S), then its clients closed (a moment).
GATEWAY_OWN_S = PROBE_SHUTDOWN_S + SHUTDOWN_GRACE_S + SETTLE_S
SERVING_OWN_S = SHUTDOWN_DEADLINE_S
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|m|s|ms|us)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6}


def compose_seconds(value: str) -> float:
    """A Compose duration (``23s``, ``2m``, ``1m30s``) in seconds."""
    parts = _DURATION.findall(value)
    assert parts and "".join(n + u for n, u in parts) == value, value
    return sum(float(number) * _UNIT_S[unit] for number, unit in parts)


def test_the_grace_setting_stays_within_what_the_waits_cover() -> None:
    """FDL_SHUTDOWN_GRACE_S defaults to SHUTDOWN_GRACE_S and cannot be set above it."""
    field = GatewaySettings.model_fields["shutdown_grace_s"]
    assert field.default == SHUTDOWN_GRACE_S
    assert any(getattr(meta, "le", None) == SHUTDOWN_GRACE_S for meta in field.metadata)


def test_the_supervisor_budgets_cover_each_servers_own_deadlines() -> None:
    assert GATEWAY_SHUTDOWN_S > GATEWAY_OWN_S
    assert SERVING_SHUTDOWN_S >= SERVING_OWN_S
    # Kubernetes' budget of the gateway (after the preStop pause) is at least as large.
    assert k8s_disruption.SHUTDOWN_S["fdl-gateway"] >= GATEWAY_SHUTDOWN_S
    assert k8s_disruption.SHUTDOWN_S["fdl-serving"] >= SERVING_SHUTDOWN_S


def test_fdl_up_waits_for_each_child_past_its_own_deadlines(tmp_path: Path) -> None:
    settings = CommonSettings(
        _env_file=None,
        model_dir=tmp_path / "var" / "models",
        var_dir=tmp_path / "var",
        data_dir=tmp_path / "var" / "data",
        api_keys="admin-key-for-stop-wait-tests",
    )
    parsed = configparser.ConfigParser(interpolation=None)
    parsed.read_string(supervisor_config(plan_stack(settings)))
    waits = {
        section.removeprefix("program:"): int(parsed[section]["stopwaitsecs"])
        for section in parsed.sections()
        if section.startswith("program:")
    }
    assert waits["gateway"] >= GATEWAY_OWN_S + STOP_MARGIN_S, waits
    assert waits["serving"] >= SERVING_OWN_S + STOP_MARGIN_S, waits
    assert waits["redis"] == DEFAULT_STOP_WAIT_S, waits
    # A run past its training when the stack stops finishes (docs/training.md, Reliability).
    assert waits["worker"] == WORKER_STOP_WAIT_S >= 30, waits
    # The leftovers of a killed stack are stopped together, for the longest of them.
    assert max(waits.values()) == STOP_WAIT_S


@pytest.mark.parametrize(
    ("service", "own_s"), [("gateway", GATEWAY_OWN_S), ("serving", SERVING_OWN_S)]
)
def test_compose_waits_for_each_server_past_its_own_deadlines(service: str, own_s: float) -> None:
    services = load_compose(REPO_ROOT / "deploy" / "compose.yaml")["services"]
    grace = services[service].get("stop_grace_period")
    assert grace is not None, f"{service}: no stop_grace_period (the engine's default is 10 s)"
    assert compose_seconds(grace) >= own_s + STOP_MARGIN_S, grace


def test_compose_gives_the_worker_the_grace_kubernetes_gives_it() -> None:
    services = load_compose(REPO_ROOT / "deploy" / "compose.yaml")["services"]
    docs = (REPO_ROOT / "deploy" / "k8s" / "base" / "worker.yaml").read_text()
    found = re.search(r"terminationGracePeriodSeconds: (\d+)", docs)
    assert found is not None
    assert compose_seconds(services["worker"]["stop_grace_period"]) == int(found.group(1))
