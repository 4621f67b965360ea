"""The gateway refuses, with a 422 that names the field and says why, a job spec whose values
training could not use: a learning rate (or epsilon, max_norm) that float32 holds as 0, a beta,
rho or momentum that float32 rounds to 1, a dropout that would drop every unit in bfloat16, and
early stopping with a training cap that leaves no validation examples. Before, a learning rate of
1e-50 was queued, trained nothing and published. No job is recorded or queued for them."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import httpx
import redis

from harness.gateway import Gateway

# A spec's fields, the field the 422 names, and what its message says.
REFUSED: list[tuple[dict, str, str]] = [
    ({"optimizer": {"learning_rate": 1e-50}}, "learning_rate", "counts as 0 in float32"),
    ({"optimizer": {"learning_rate": 1e-40}}, "learning_rate", "would not change the model"),
    ({"optimizer": {"epsilon": 1e-50}}, "epsilon", "divide 0 by 0"),
    ({"optimizer": {"beta_2": 0.99999999}}, "beta_2", "rounds to 1 in float32"),
    ({"regularization": {"max_norm": 1e-300}}, "max_norm", "clipped to 0"),
    ({"regularization": {"dropout": 0.995}}, "dropout", "rounds above 127/128 in bfloat16"),
    ({"early_stopping": {}, "max_train_examples": 4}, "max_train_examples", "early_stopping"),
    ({"model": "cifar10_cnn_bn", "batch_size": 1}, "batch_size", "batch normalization"),
]


def test_values_training_cannot_use_are_refused_with_422(
    redis_url: str, lone_gateway: Callable[..., AbstractContextManager[Gateway]]
) -> None:
    queue = "meaningless-values"
    client = redis.Redis.from_url(redis_url)
    with lone_gateway("gateway-meaningless", redis_url, FDL_TRAINING_QUEUE=queue) as gateway:
        url, headers = f"{gateway.url}/v1/jobs", gateway.admin()
        for fields, field, says in REFUSED:
            spec = {"model": "mnist_mlp", **fields}
            response = httpx.post(url, json=spec, headers=headers, timeout=10)
            assert response.status_code == 422, (spec, response.text)
            error = response.json()["error"]
            assert says in error["message"], (spec, error)
            named = [d["field"] for d in error["details"]]
            assert any(f == field or f.endswith(f".{field}") for f in named), (spec, named)
        assert client.llen(queue) == 0
        tiny = {"model": "mnist_mlp", "optimizer": {"learning_rate": 1e-30}}
        accepted = httpx.post(url, json=tiny, headers=headers, timeout=10)
        assert accepted.status_code == 202, accepted.text  # small, but float32 holds it
        assert client.llen(queue) == 1
