"""Recipes through the jobs API: the gateway fills a recipe's defaults into the stored spec and
answers 422 naming the field for an unknown recipe (no worker runs here)."""

from __future__ import annotations

import httpx

from harness.gateway import Gateway


def post(gateway: Gateway, spec: dict) -> httpx.Response:
    return httpx.post(f"{gateway.url}/v1/jobs", json=spec, headers=gateway.admin(), timeout=10)


def test_the_stored_spec_shows_the_recipes_values(gateway: Gateway) -> None:
    book = post(gateway, {"model": "cifar10_cnn_bn", "max_train_examples": 10})
    assert book.status_code == 202, book.text
    assert book.json()["spec"]["recipe"] == "book" and book.json()["spec"]["batch_size"] == 128
    fast = post(gateway, {"model": "cifar10_cnn_bn", "recipe": "fast", "max_train_examples": 10})
    assert fast.status_code == 202, fast.text
    spec = fast.json()["spec"]
    assert spec["batch_size"] == 256 and spec["optimizer"]["learning_rate"] == 0.004
    air = post(gateway, {"model": "cifar10_airnet", "batch_size": 64, "max_train_examples": 10})
    assert air.status_code == 202, air.text
    spec = air.json()["spec"]
    assert spec["recipe"] == "fast" and spec["batch_size"] == 64  # the caller's value wins
    assert spec["optimizer"]["name"] == "nesterov"


def test_an_unknown_recipe_is_a_422_naming_the_field(gateway: Gateway) -> None:
    response = post(gateway, {"model": "cifar10_cnn", "recipe": "turbo"})
    assert response.status_code == 422
    assert "recipe" in response.json()["error"]["message"]
