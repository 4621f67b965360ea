"""The model listing and detail (``GET /v1/models``, ``GET /v1/models/{model}``) read the labels
without the repository lock, and never show a change that was not acknowledged: neither one a
killed writer left half made (its undo records on the disk), nor one a live writer is making.

A real gateway reads a repository of its own (a copy of the tests' tiny models) beside the shared
model server. The killed change is made by a real child process that takes the lock, records its
undo point, writes ``labels.json`` (the config stays old) and dies with SIGKILL, as in
``tests/training/test_undo_records.py``; the gateway was started before, so its start-up
rollback does not see it. The live writer is this test, holding the lock.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest

from fdl.repository import CONFIG_FILE, Repository, render_config
from fdl.repository_reads import LABELS_FILE, read_labels
from harness.gateway import Gateway
from harness.repository import copy_repository
from tests.training.test_undo_records import run_dying

BEFORE = {"digits": {"stable": 1}}
CHANGED = {"digits": {"stable": 2, "canary": 1}}
# A GET that waited for the lock would wait up to the gateway's lock timeout (300 s below).
PROMPT_S = 10

# A writer that takes the lock, records its undo point, writes labels.json, and dies.
DYING_WRITER = """
import json, os, signal, sys
from pathlib import Path
from fdl.repository import Repository

repo = Repository(Path(sys.argv[1]))
with repo.locked():
    repo.undo_point()
    repo.write_labels(json.loads(sys.argv[2]))
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.fixture(scope="module")
def repository(pristine_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Repository:
    return Repository(
        copy_repository(pristine_repository, tmp_path_factory.mktemp("readers") / "m")
    )


@pytest.fixture(scope="module")
def reader(
    gateways_here: Callable[..., AbstractContextManager[Gateway]], repository: Repository
) -> Iterator[Gateway]:
    with gateways_here(
        "readers", model_dir=repository.model_dir, FDL_PROMOTE_TIMEOUT_S="300"
    ) as gateway:
        yield gateway


def start_from(repository: Repository, labels: dict[str, dict[str, int]] | None) -> None:
    """``labels`` in labels.json (None: no labels.json) and the config rendered from them."""
    with repository.locked():
        if labels is None:
            (repository.model_dir / LABELS_FILE).unlink(missing_ok=True)
        else:
            repository.write_labels(labels)
        repository.write_config(repository.render())


def kill_mid_change(repository: Repository) -> None:
    run_dying(DYING_WRITER, str(repository.model_dir), json.dumps(CHANGED))
    # Half made: the new labels on the disk, the config old, the undo records left.
    assert read_labels(repository.model_dir) == CHANGED
    assert '"canary"' not in (repository.model_dir / CONFIG_FILE).read_text()
    assert records(repository) != []


def records(repository: Repository) -> list[str]:
    return sorted(p.name for p in repository.model_dir.iterdir() if ".undo" in p.name)


def shown_labels(gateway: Gateway) -> tuple[dict[str, int], dict[str, int]]:
    """The labels of ``digits`` in the listing and in its detail, each answered promptly."""
    listing = httpx.get(f"{gateway.url}/v1/models", headers=gateway.classifier(), timeout=PROMPT_S)
    assert listing.status_code == 200, listing.text
    (digits,) = [m for m in listing.json()["models"] if m["name"] == "digits"]
    detail = httpx.get(
        f"{gateway.url}/v1/models/digits", headers=gateway.classifier(), timeout=PROMPT_S
    )
    assert detail.status_code == 200, detail.text
    return digits["labels"], detail.json()["labels"]


@pytest.mark.parametrize("labelled", [True, False], ids=["labels", "no-labels-file"])
def test_a_killed_change_is_rolled_back_by_a_reader(
    reader: Gateway, repository: Repository, labelled: bool
) -> None:
    """The lock is free (the writer died): the first read rolls the change back, and shows and
    leaves the labels from before it."""
    start_from(repository, BEFORE if labelled else None)
    before = BEFORE["digits"] if labelled else {}
    kill_mid_change(repository)
    assert shown_labels(reader) == (before, before)
    assert read_labels(repository.model_dir) == (BEFORE if labelled else {})
    assert (repository.model_dir / LABELS_FILE).exists() is labelled
    assert (repository.model_dir / CONFIG_FILE).read_text() == render_config(repository.model_dir)
    assert records(repository) == []


@pytest.mark.parametrize("labelled", [True, False], ids=["labels", "no-labels-file"])
def test_a_killed_change_is_not_shown_while_the_lock_is_held(
    reader: Gateway, repository: Repository, labelled: bool
) -> None:
    """Another process holds the lock (here this test, as a writer about to roll the change
    back): the read answers at once with the labels from the undo records, and touches nothing."""
    start_from(repository, BEFORE if labelled else None)
    before = BEFORE["digits"] if labelled else {}
    kill_mid_change(repository)
    left = records(repository)
    with repository.file_lock(timeout_s=10):
        assert shown_labels(reader) == (before, before)
        assert read_labels(repository.model_dir) == CHANGED
        assert records(repository) == left
    assert shown_labels(reader) == (before, before)  # the lock is free again: rolled back
    assert records(repository) == []


def test_a_live_change_shows_once_it_stands(reader: Gateway, repository: Repository) -> None:
    """A change in the making (this test, holding the lock, both files written) is not shown;
    once kept it is, before the lock is given back; a change undone never was."""
    start_from(repository, BEFORE)
    with repository.locked():
        undo = repository.undo_point()
        repository.write_labels(CHANGED)
        repository.write_config(repository.render(CHANGED))
        assert shown_labels(reader) == (BEFORE["digits"], BEFORE["digits"])
        undo.discard()
        assert shown_labels(reader) == (CHANGED["digits"], CHANGED["digits"])
    with repository.locked():
        undo = repository.undo_point()
        repository.write_labels(BEFORE)
        assert shown_labels(reader) == (CHANGED["digits"], CHANGED["digits"])
        undo.restore()
    assert shown_labels(reader) == (CHANGED["digits"], CHANGED["digits"])
