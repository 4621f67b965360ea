"""Text in the gateway's answers (names, ids, statuses, messages, a job's error, what a status
event says) is printed as it is: rich markup in it (``[red]``, ``[link=…]``, an unbalanced
``[/]``, a backslash before a bracket) is neither applied nor able to end the command with a
MarkupError, and the exit status is the one the same answer without it gives.

The answers come from a real HTTP server on a free port, as in test_not_a_gateway.py (a proxy or
an impostor in front of the gateway can answer anything)."""

from __future__ import annotations

from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from fdl.cli_client import ExitCode
from tests.cli.test_not_a_gateway import JOB_ID, OtherJson, run, serve, url_of

COLOUR = "[red]x[/red]"
LINK = "[link=file:///etc/passwd]p[/link]"
CLOSE = "[/]"
# Text ending in two backslashes: rich.markup.escape leaves them as they are, and before a
# closing tag the pair then prints as one.
FOLDER = r"C:\models\\"
SHORT_ID = "[/]012345678"  # 12 characters, what `fdl jobs` and `fdl models` show of an id


class AnyStatus(OtherJson):
    """OtherJson, answering with the server's ``status`` (200 unless set)."""

    def send_response(self, code: int, message: str | None = None) -> None:
        super().send_response(getattr(self.server, "status", code), message)


@pytest.fixture(scope="module")
def impostor() -> Iterator[ThreadingHTTPServer]:
    yield from serve(AnyStatus)


def record(status: str, **fields: Any) -> dict[str, Any]:
    return {"id": JOB_ID, "status": status, "spec": {"model": "mnist_logreg", "epochs": 1}} | fields


def events(*statuses: str) -> bytes:
    return b"".join(f'event: status\ndata: {{"status": "{s}"}}\n\n'.encode() for s in statuses)


# What the progress bar shows last: the last status event's text.
LAST_STATUS = f"{CLOSE}{CLOSE}{LINK}"
FAILED = record("failed", error=f"{COLOUR} {LINK} {CLOSE} {FOLDER}")
SUCCEEDED = record(
    "succeeded",
    result={"model": f"{COLOUR}{FOLDER}", "version": 2, "published": True},
)
# Each case: the command, the answers by path (the longest match), the exit status the same
# answers give without markup in them, and what must be printed as it is.
CASES: dict[str, tuple[list[str], dict[str, Any], int, list[str]]] = {
    "models": (
        ["models"],
        {
            "/v1/models": {
                "models": [
                    {
                        "name": COLOUR,
                        "versions": [
                            {"version": 1, "state": CLOSE, "labels": [LINK], "job_id": SHORT_ID},
                        ],
                    },
                    {"name": f"{FOLDER}{CLOSE}", "versions": []},
                ]
            }
        },
        ExitCode.OK,
        [COLOUR, CLOSE.lower(), LINK, SHORT_ID, f"{FOLDER}{CLOSE}"],
    ),
    "jobs": (
        ["jobs"],
        {
            "/v1/jobs": {
                "jobs": [
                    {"id": SHORT_ID + "ab", "status": f"{FOLDER}{CLOSE}", "spec": {}},
                    {"id": JOB_ID, "status": "queued", "spec": {"model": LINK}},
                ],
                "total": 2,
            }
        },
        ExitCode.OK,
        [SHORT_ID, f"{FOLDER}{CLOSE}", LINK],
    ),
    "job": (
        ["job", JOB_ID],
        {
            "/v1/jobs/": record(
                f"{FOLDER}{CLOSE}",
                spec={"model": COLOUR, "publish_as": LINK, "optimizer": {"name": CLOSE}},
                result={"published": False, "reason": COLOUR, "metrics": {CLOSE: LINK}},
                error=f"{CLOSE} {FOLDER}",
            )
        },
        ExitCode.OK,
        # The error is the last cell of its row: "Created" begins the next.
        [
            f"{FOLDER}{CLOSE}",
            f"{COLOUR} → {LINK}",
            f"{CLOSE} lr",
            f"no ({COLOUR})",
            LINK,
            f"Error {CLOSE} {FOLDER} Created",
        ],
    ),
    "job by prefix": (
        ["job", "0123"],
        {
            "/v1/jobs": {"jobs": [{"id": f"0123{COLOUR}", "status": "queued"}], "total": 1},
            "/v1/jobs/": record("queued", id=f"0123{FOLDER}{CLOSE}"),
        },
        ExitCode.OK,
        [f"0123{FOLDER}{CLOSE}"],
    ),
    "job --follow, failed": (
        ["job", JOB_ID, "--follow"],
        {"/v1/jobs/": FAILED, f"/v1/jobs/{JOB_ID}/events": events(CLOSE, LAST_STATUS)},
        ExitCode.JOB_FAILED,
        [f"Job failed. {COLOUR} {LINK} {CLOSE} {FOLDER}", LAST_STATUS],
    ),
    "job --follow, succeeded": (
        ["job", "0123", "--follow"],
        {
            "/v1/jobs": {"jobs": [{"id": f"0123{CLOSE}{FOLDER}", "status": "queued"}], "total": 1},
            "/v1/jobs/": SUCCEEDED,
            "/v1/models/": {"name": "x", "versions": [{"version": 2, "state": "AVAILABLE"}]},
        },
        ExitCode.OK,
        [
            f"Following job 0123{CLOSE}{FOLDER}",
            f"published {COLOUR}{FOLDER} version 2",
            f"serve {COLOUR}{FOLDER} version 2",
            f"{COLOUR}{FOLDER} version 2 is served.",
        ],
    ),
    "train --detach": (
        ["train", "mnist_logreg", "--epochs", "1", "--detach"],
        {"/v1/jobs": record("queued", id=f"{COLOUR}{FOLDER}{CLOSE}")},
        ExitCode.OK,
        [f"Job {COLOUR}{FOLDER}{CLOSE} submitted", f"fdl job {COLOUR}{FOLDER}{CLOSE} --follow"],
    ),
    "cancel": (
        ["cancel", JOB_ID],
        {"/v1/jobs/": record(FOLDER)},
        ExitCode.OK,
        [f"had already ended: {FOLDER}."],
    ),
    "cancel by prefix": (
        ["cancel", "0123"],
        {
            "/v1/jobs": {"jobs": [{"id": f"0123{LINK}", "status": "running"}], "total": 1},
            "/v1/jobs/": record("cancelled"),
        },
        ExitCode.OK,
        [f"Job 0123{LINK} cancelled."],
    ),
    "promote": (
        ["promote", COLOUR, "2", "--label", f"{FOLDER}{CLOSE}"],
        {"/v1/models/": {"version": 2, "previous": 1}},
        ExitCode.OK,
        [f"{COLOUR}: label {FOLDER}{CLOSE} → version 2 (was version 1)."],
    ),
    "classify": (
        ["classify", "mnist_cnn", "IMAGE"],
        {
            "/v1/models/": {
                "version": 1,
                "predictions": [
                    {"label": COLOUR, "score": 0.5, "top_k": [{"label": FOLDER, "score": 0.5}]}
                ],
            }
        },
        ExitCode.OK,
        [COLOUR, f"{FOLDER} 50.0%"],
    ),
}


def said(result: Any) -> str:
    """The output with the tables' runs of spaces made one."""
    return " ".join(result.output.split())


def invoke(server: ThreadingHTTPServer, args: list[str], tmp_path: Path) -> Any:
    return run(args, url_of(server), tmp_path)


@pytest.mark.parametrize("case", CASES)
def test_gateway_text_is_printed_as_it_is(
    impostor: ThreadingHTTPServer,
    case: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    args, answers, code, shown = CASES[case]
    impostor.answers, impostor.default, impostor.status = answers, None, 200  # type: ignore[attr-defined]
    monkeypatch.setenv("COLUMNS", "300")  # no table cell is wrapped
    result = invoke(impostor, args, tmp_path)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == code, result.output
    for text in shown:
        assert text in said(result), (text, result.output)


@pytest.mark.parametrize(
    ("status", "code"), [(404, ExitCode.API_ERROR), (401, ExitCode.AUTH), (502, ExitCode.API_ERROR)]
)
@pytest.mark.parametrize("args", [["models"], ["job", JOB_ID], ["promote", "mnist_cnn", "2"]])
def test_an_error_message_is_printed_as_it_is(
    impostor: ThreadingHTTPServer, status: int, code: int, args: list[str], tmp_path: Path
) -> None:
    message = f"{COLOUR} {LINK} {FOLDER}{CLOSE}"
    error = {"error": {"code": CLOSE, "message": message}}
    impostor.answers, impostor.default, impostor.status = {}, error, status  # type: ignore[attr-defined]
    result = invoke(impostor, args, tmp_path)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == code, result.output
    assert f"Error: {message} ({status} {CLOSE})" in said(result), result.output
