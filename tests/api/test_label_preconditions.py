"""Label changes take HTTP preconditions (RFC 9110): If-Match with the label's version (its
entity tag, ``"3"``, the ETag of every promotion and rollback) or ``*``, and If-None-Match: * to
create a label only. A condition that does not hold is 412 ``precondition_failed`` and changes
nothing: not ``labels.json``, not ``models.config``, not the version the label serves. Checked
under the repository's lock, so a retried rollback cannot roll back twice and of two promotions
from the same version, through two gateways, exactly one wins. Real gateways, model server."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from fdl.repository import CONFIG_FILE
from fdl.repository_reads import LABELS_FILE, read_labels
from harness.gateway import Gateway, classify

MODEL = "promo"  # versions 1, 2 and 3; the labels here are named pc-… and removed after each


def url(gateway: Gateway, label: str, rollback: bool = False) -> str:
    return f"{gateway.url}/v1/models/{MODEL}/labels/{label}{':rollback' if rollback else ''}"


def promote(gateway: Gateway, label: str, version: int, **headers: str) -> httpx.Response:
    return httpx.post(
        url(gateway, label),
        json={"version": version},
        headers=gateway.admin() | conditions(headers),
        timeout=60,
    )


def roll_back(gateway: Gateway, label: str, **headers: str) -> httpx.Response:
    return httpx.post(
        url(gateway, label, True), headers=gateway.admin() | conditions(headers), timeout=60
    )


def remove(gateway: Gateway, label: str, **headers: str) -> httpx.Response:
    return httpx.delete(
        url(gateway, label), headers=gateway.admin() | conditions(headers), timeout=60
    )


def conditions(headers: dict[str, str]) -> dict[str, str]:
    """if_match="…" → If-Match: …"""
    return {name.replace("_", "-").title(): value for name, value in headers.items()}


def served(gateway: Gateway, label: str) -> int:
    """The version the model server answers for the label."""
    response = classify(f"{url(gateway, label)}:classify", gateway.classifier())
    assert response.status_code == 200, response.text
    return int(response.json()["version"])


def repository_files(gateway: Gateway) -> tuple[bytes, bytes]:
    model_dir = Path(gateway.env["FDL_MODEL_DIR"])
    return (model_dir / LABELS_FILE).read_bytes(), (model_dir / CONFIG_FILE).read_bytes()


def labels(gateway: Gateway) -> dict[str, int]:
    return read_labels(Path(gateway.env["FDL_MODEL_DIR"])).get(MODEL, {})


def refused(response: httpx.Response, *names: str) -> str:
    """The message of a 412 that names what is said in ``names``."""
    assert response.status_code == 412, response.text
    error = response.json()["error"]
    assert error["code"] == "precondition_failed", error
    assert "nothing was changed" in error["message"], error
    for name in names:
        assert name in error["message"], (name, error)
    return str(error["message"])


@pytest.fixture(autouse=True)
def labels_removed(gateway: Gateway) -> Iterator[None]:
    """The other tests of the shared gateway see promo's labels as they were."""
    yield
    for label in [name for name in labels(gateway) if name.startswith("pc-")]:
        assert remove(gateway, label).status_code == 200


def test_a_promotion_from_a_version_the_label_left_changes_nothing(gateway: Gateway) -> None:
    first = promote(gateway, "pc-set", 1)
    assert first.status_code == 200 and first.headers["ETag"] == '"1"'
    moved = promote(gateway, "pc-set", 2, if_match='"1"')
    assert moved.status_code == 200, moved.text
    assert moved.headers["ETag"] == '"2"' and moved.json()["previous"] == 1
    before = repository_files(gateway)

    stale = promote(gateway, "pc-set", 3, if_match='"1"')  # another admin's view, before the move
    message = refused(stale, "'pc-set'", "version 2 now", "expected version 1")
    assert stale.headers["ETag"] == '"2"', message
    assert stale.json()["error"]["details"] == {"label": "pc-set", "version": 2}
    assert repository_files(gateway) == before
    assert served(gateway, "pc-set") == 2

    # A list: any of them; weak tags never match (If-Match compares strongly).
    weak = promote(gateway, "pc-set", 3, if_match='W/"2"')
    refused(weak, "weak", "never")
    assert repository_files(gateway) == before
    listed = promote(gateway, "pc-set", 3, if_match='"1", W/"2", "2"')
    assert listed.status_code == 200 and listed.headers["ETag"] == '"3"'
    assert labels(gateway)["pc-set"] == 3 and served(gateway, "pc-set") == 3


def test_a_retried_rollback_rolls_back_once(gateway: Gateway) -> None:
    assert promote(gateway, "pc-roll", 3).status_code == 200
    first = roll_back(gateway, "pc-roll", if_match='"3"')
    assert first.status_code == 200, first.text
    assert first.json()["version"] == 2
    before = repository_files(gateway)
    # The client lost the answer and sends the same request again: refused, not 2 -> 1.
    again = roll_back(gateway, "pc-roll", if_match='"3"')
    refused(again, "'pc-roll'", "version 2 now", "expected version 3")
    assert first.headers["ETag"] == again.headers["ETag"] == '"2"'
    assert repository_files(gateway) == before
    assert labels(gateway)["pc-roll"] == 2 and served(gateway, "pc-roll") == 2
    assert roll_back(gateway, "pc-roll", if_match="*").json()["version"] == 1
    missing = roll_back(gateway, "pc-none", if_match='"3"')
    refused(missing, "has no label 'pc-none'")
    assert "ETag" not in missing.headers


def test_a_removal_takes_if_match(gateway: Gateway) -> None:
    assert promote(gateway, "pc-del", 2).status_code == 200
    before = repository_files(gateway)
    refused(remove(gateway, "pc-del", if_match='"1"'), "version 2 now", "expected version 1")
    assert repository_files(gateway) == before and served(gateway, "pc-del") == 2
    removed = remove(gateway, "pc-del", if_match='"2"')
    assert removed.status_code == 200, removed.text
    assert removed.json()["version"] == 2 and "ETag" not in removed.headers
    assert "pc-del" not in labels(gateway)
    refused(remove(gateway, "pc-del", if_match="*"), "has no label 'pc-del'", "to exist")


def test_if_none_match_star_creates_only(gateway: Gateway) -> None:
    before = repository_files(gateway)
    refused(promote(gateway, "pc-new", 2, if_match="*"), "has no label", "If-Match: *")
    assert repository_files(gateway) == before
    created = promote(gateway, "pc-new", 2, if_none_match="*")
    assert created.status_code == 200 and created.headers["ETag"] == '"2"'
    after = repository_files(gateway)
    again = promote(gateway, "pc-new", 3, if_none_match="*")
    refused(again, "version 2 now", "If-None-Match: * expected no such label")
    assert again.headers["ETag"] == '"2"'
    assert repository_files(gateway) == after and served(gateway, "pc-new") == 2
    assert promote(gateway, "pc-new", 3, if_match="*").headers["ETag"] == '"3"'


def test_two_promotions_from_the_same_version_through_two_gateways(
    gateway: Gateway, more_gateways: Callable[..., Gateway]
) -> None:
    other = more_gateways("gateway-preconditions")
    assert promote(gateway, "pc-race", 1).status_code == 200
    start = threading.Barrier(2)
    answers: dict[int, httpx.Response] = {}

    def promote_to(target: Gateway, version: int) -> None:
        start.wait(30)
        answers[version] = promote(target, "pc-race", version, if_match='"1"')

    threads = [
        threading.Thread(target=promote_to, args=(gateway, 2)),
        threading.Thread(target=promote_to, args=(other, 3)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    statuses = {version: answer.status_code for version, answer in answers.items()}
    assert sorted(statuses.values()) == [200, 412], {v: a.text for v, a in answers.items()}
    winner = next(version for version, status in statuses.items() if status == 200)
    refused(answers[5 - winner], f"version {winner} now", "expected version 1")
    assert labels(gateway)["pc-race"] == winner and served(gateway, "pc-race") == winner


BAD_IF_MATCH = [
    ("4", "'4'"),
    ('"abc"', "names no version"),
    ('"03"', "names no version"),
    ('W/"x"', "names no version"),
    ("", "is empty"),
    (", ,", "is empty"),
    ('*, "2"', "* alone"),
    ('"2" "3"', "no entity tag"),
    (",".join(['"2"'] * 33), "more than 32"),
    ('"2"' + " ," * 550, "at most 1024"),
]


@pytest.mark.parametrize(("value", "said"), BAD_IF_MATCH)
def test_a_malformed_if_match_is_refused(gateway: Gateway, value: str, said: str) -> None:
    assert promote(gateway, "pc-bad", 2).status_code == 200
    before = repository_files(gateway)
    for answer in (
        promote(gateway, "pc-bad", 3, if_match=value),
        roll_back(gateway, "pc-bad", if_match=value),
        remove(gateway, "pc-bad", if_match=value),
    ):
        assert answer.status_code == 422, answer.text
        error = answer.json()["error"]
        assert error["code"] == "invalid_if_match" and said in error["message"], error
    assert repository_files(gateway) == before


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (lambda g: roll_back(g, "pc-bad", if_none_match="*"), "means nothing here"),
        (lambda g: remove(g, "pc-bad", if_none_match="*"), "means nothing here"),
        (lambda g: promote(g, "pc-bad", 3, if_none_match='"2"'), "only *"),
        (lambda g: promote(g, "pc-bad", 3, if_none_match="*", if_match='"2"'), "with If-Match"),
    ],
)
def test_if_none_match_where_it_means_nothing(
    gateway: Gateway, change: Callable[[Gateway], httpx.Response], said: str
) -> None:
    assert promote(gateway, "pc-bad", 2).status_code == 200
    before = repository_files(gateway)
    answer = change(gateway)
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["code"] == "invalid_if_none_match" and said in error["message"], error
    assert repository_files(gateway) == before


def test_the_key_and_the_model_go_first(gateway: Gateway) -> None:
    anonymous = httpx.post(url(gateway, "pc-any", True), headers={"If-Match": "4"}, timeout=10)
    assert anonymous.status_code == 401
    nowhere = f"{gateway.url}/v1/models/nothing_here/labels/stable"
    missing = httpx.post(
        nowhere, json={"version": 1}, headers=gateway.admin() | {"If-Match": '"1"'}, timeout=10
    )
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"


def test_the_openapi_document_lists_them(gateway: Gateway) -> None:
    paths = httpx.get(f"{gateway.url}/openapi.json", timeout=10).json()["paths"]
    label = "/v1/models/{model}/labels/{label}"
    for path, method in ((label, "post"), (f"{label}:rollback", "post"), (label, "delete")):
        operation = paths[path][method]
        assert "412" in operation["responses"], (path, method)
        headers = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
        assert "If-Match" in headers, (path, method, headers)
    assert "If-None-Match" in {p["name"] for p in paths[label]["post"]["parameters"]}
    assert "ETag" in paths[label]["post"]["responses"]["200"]["headers"]
