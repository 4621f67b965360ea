"""Property-based requests generated from the OpenAPI schema: no server errors, ever.

Runs against a real gateway over an empty model repository (so that generated promotions
cannot touch the models other tests use), backed by the real model server and Redis.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from harness.gateway import Gateway


@pytest.fixture(scope="module")
def fuzz_gateway(
    more_gateways: Callable[..., Gateway], tmp_path_factory: pytest.TempPathFactory
) -> Gateway:
    return more_gateways("gateway-fuzz", model_dir=tmp_path_factory.mktemp("fuzz-models"))


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_server_errors(fuzz_gateway: Gateway, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzz_gateway.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    seen: set[str] = set()

    @given(case=schema.as_strategy(generation_mode=mode))
    @settings(
        max_examples=120,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case) -> None:
        seen.add(f"{case.method} {case.path}")
        case.call_and_validate(
            base_url=fuzz_gateway.url,
            headers=fuzz_gateway.admin(),
            checks=[not_a_server_error],
            timeout=30,
        )

    run()
    assert len(seen) >= 10, seen  # the run reached (nearly) every operation
