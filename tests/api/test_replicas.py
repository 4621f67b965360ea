"""Which model-server replicas a promotion reloads: the addresses behind the gateway's target."""

from __future__ import annotations

import asyncio

import pytest

from api.replicas import replica_targets


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("ipv4:127.0.0.1:8500,127.0.0.2:8501", ["ipv4:127.0.0.1:8500", "ipv4:127.0.0.2:8501"]),
        ("ipv6:[::1]:8500", ["ipv6:[::1]:8500"]),
        ("unix:/run/serving.sock", ["unix:/run/serving.sock"]),
        ("127.0.0.1:8500", ["ipv4:127.0.0.1:8500"]),
        ("[::1]:8500", ["ipv6:[::1]:8500"]),
        ("dns:///127.0.0.1:8500", ["ipv4:127.0.0.1:8500"]),
        ("dns://10.0.0.53/127.0.0.1:8500", ["ipv4:127.0.0.1:8500"]),
        # Nothing to resolve, or a name that does not resolve: the target itself (one replica).
        ("model-server", ["model-server"]),
        ("no-such-host.invalid:8500", ["no-such-host.invalid:8500"]),
    ],
)
def test_replica_targets(target: str, expected: list[str]) -> None:
    assert asyncio.run(replica_targets(target)) == expected


def test_a_name_resolves_to_each_of_its_addresses() -> None:
    targets = asyncio.run(replica_targets("dns:///localhost:8500"))
    assert "ipv4:127.0.0.1:8500" in targets
    assert len(targets) == len(set(targets))
