"""Control characters in the gateway's text (ESC, the other C0 controls, DEL, the C1 controls)
never reach the terminal: wherever the CLI shows that text they are printed as Python writes them
(``\\x1b``); messages keep their newlines, one-line fields (ids, names, statuses, labels) show
``\\n``, and ``--json`` prints the gateway's JSON exactly. A real gateway carries a job's free
text (its error, its reason, a worker's note); an impostor, as in test_gateway_text.py, the rest
(names, labels and statuses the real gateway validates, and its error messages)."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from fdl.cli import app
from fdl.cli_client import ExitCode
from fdl.job_records import JobStatus
from fdl.jobs import JobStore
from harness.cli import BackgroundCli
from harness.gateway import ADMIN_KEY, Gateway, bearer
from tests.cli.test_gateway_text import AnyStatus, invoke, record
from tests.cli.test_not_a_gateway import JOB_ID, serve, url_of

# Each sequence as it comes, and as it is printed.
TITLE = ("\x1b]0;pwned\x07", r"\x1b]0;pwned\x07")
LINK = (
    "\x1b]8;;https://evil.example/\x1b\\here\x1b]8;;\x1b\\",
    r"\x1b]8;;https://evil.example/\x1b\here\x1b]8;;\x1b" + "\\",
)
CLIPBOARD = ("\x1b]52;c;cm0gLXJmIH4=\x07", r"\x1b]52;c;cm0gLXJmIH4=\x07")
CSI = ("\x1b[2J\x1b[8m", r"\x1b[2J\x1b[8m")  # clear the screen; conceal what follows
C1 = ("\x9b31m\x9d0;t\x9c\x85", r"\x9b31m\x9d0;t\x9c\x85")  # CSI, OSC, ST, NEL
OTHER = ("\x00\x08\r\x7f\x1f", r"\x00\x08\r\x7f\x1f")  # rich drops BS and CR unseen
# A one-line field (an id, a name, a status, a label): its newline is shown as \n.
NAME = (f"m{TITLE[0]}\n{C1[0]}{OTHER[0]}", f"m{TITLE[1]}\\n{C1[1]}{OTHER[1]}")


def message(word: str) -> tuple[str, str]:
    """A message: its newline (CRLF too) and its tab are kept (one space, once the output's
    runs of whitespace are made one)."""
    return (
        f"{word} {LINK[0]}{OTHER[0]}\r\n{CSI[0]}{CLIPBOARD[0]}\tend{C1[0]}!",
        f"{word} {LINK[1]}{OTHER[1]} {CSI[1]}{CLIPBOARD[1]} end{C1[1]}!",
    )


MESSAGE = message("bad")  # an error message, a job's error, a reason
NOTE = message("note")  # a worker's note (a log event)
# Raw controls but the newline (a tab rich would have turned into spaces).
RAW = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")


@pytest.fixture(autouse=True)
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "300")  # no table cell is wrapped or cut


def assert_clean(output: str, *shown: str) -> None:
    """No raw control character but the newline in ``output``, and each of ``shown`` in it (its
    runs of whitespace made one space, as ``said`` does)."""
    assert RAW.search(output) is None, repr(output)
    for text in shown:
        assert text in " ".join(output.split()), (text, output)


def assert_shown(result: Any, code: int, *shown: str) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == code, result.output
    assert_clean(result.output, *shown)


# --- a real gateway: a job's free text -----------------------------------------------------------


def cli(gateway: Gateway, *args: str) -> Any:
    return CliRunner().invoke(app, [*args, "--url", gateway.url], env={"FDL_API_KEY": ADMIN_KEY})


def ended_job(gateway: Gateway, redis_url: str, status: JobStatus, **outcome: Any) -> str:
    """A job that ran (a worker's note with a hostile message among its events) and ended."""
    job = {"model": "mnist_logreg", "epochs": 1}
    response = httpx.post(f"{gateway.url}/v1/jobs", json=job, headers=bearer(ADMIN_KEY), timeout=10)
    assert response.status_code == 202, response.text
    job_id = str(response.json()["id"])
    store = JobStore.from_url(redis_url)
    assert store.mark_running(job_id, "test-worker")
    assert store.append_event(job_id, "log", {"message": NOTE[0]})
    assert store.finish(job_id, status, **outcome)
    return job_id


def test_a_jobs_free_text_from_a_real_gateway(gateway: Gateway, redis_url: str) -> None:
    failed = ended_job(gateway, redis_url, JobStatus.FAILED, error=MESSAGE[0])
    followed = cli(gateway, "job", failed, "--follow")
    assert_shown(followed, ExitCode.JOB_FAILED, NOTE[1], f"Job failed. {MESSAGE[1]}")
    assert_shown(cli(gateway, "job", failed), ExitCode.OK, f"Error {MESSAGE[1]} Created")
    as_json = cli(gateway, "job", failed, "--json")
    assert_shown(as_json, ExitCode.OK)
    assert json.loads(as_json.output)["error"] == MESSAGE[0]
    result = {"published": False, "reason": MESSAGE[0], "metrics": {"test_accuracy": 0.5}}
    unpublished = ended_job(gateway, redis_url, JobStatus.SUCCEEDED, result=result)
    followed = cli(gateway, "job", unpublished, "--follow")
    assert_shown(followed, ExitCode.OK, f"Succeeded (test accuracy 50.00%); {MESSAGE[1]}.")
    assert_shown(cli(gateway, "job", unpublished), ExitCode.OK, f"Published no ({MESSAGE[1]})")


# --- an impostor: names, labels, statuses and error messages -------------------------------------


class Following(AnyStatus):
    """AnyStatus, and two answers to `fdl job --follow`: a path in the server's ``once`` is
    answered 503 with the error body there, once (a restarting gateway); while the server's
    ``held`` event is not set, a job's event stream opens and stays open (a job that goes on)."""

    def answer(self) -> None:
        path = self.path.split("?", 1)[0]
        error = getattr(self.server, "once", {}).pop(path, None)
        held: threading.Event | None = getattr(self.server, "held", None)
        if error is not None:
            data = json.dumps(error).encode()
            super(AnyStatus, self).send_response(503)  # not the server's status AnyStatus sends
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif held is not None and path.endswith("/events"):
            super(AnyStatus, self).send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            self.wfile.flush()
            held.wait(60)  # no event until the test ends (HTTP/1.0: the body ends at the close)
        else:
            super().answer()

    do_GET = do_POST = do_DELETE = answer


@pytest.fixture(scope="module")
def impostor() -> Iterator[ThreadingHTTPServer]:
    yield from serve(Following)


def sse(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


EVENTS = f"/v1/jobs/{JOB_ID}/events"
VERSION = {"version": 1, "state": C1[0], "labels": [LINK[0]], "job_id": CSI[0]}
MODELS = {"models": [{"name": NAME[0], "versions": [VERSION]}]}
PREDICTION = {"label": NAME[0], "score": 0.5, "top_k": [{"label": LINK[0], "score": 0.5}]}
# Each case: the command, the answers by path, the exit status, and what must be printed.
CASES: dict[str, tuple[list[str], dict[str, Any], int, list[str]]] = {
    "models": (["models"], {"/v1/models": MODELS}, ExitCode.OK, [NAME[1], C1[1], LINK[1], CSI[1]]),
    "jobs": (
        ["jobs"],
        {
            "/v1/jobs": {
                "jobs": [{"id": TITLE[0] + JOB_ID, "status": NAME[0], "spec": {"model": LINK[0]}}],
                "total": 1,
            }
        },
        ExitCode.OK,
        # The id is cut to 12 characters before it is made visible: the title's 10 and 2 more.
        [f"{TITLE[1]}01", NAME[1], LINK[1]],
    ),
    "job": (
        ["job", JOB_ID],
        {
            "/v1/jobs/": record(
                NAME[0],
                spec={"model": TITLE[0], "publish_as": LINK[0], "optimizer": {"name": CSI[0]}},
                result={"published": False, "metrics": {C1[0]: NAME[0]}},
            )
        },
        ExitCode.OK,
        [f"Status {NAME[1]}", f"{TITLE[1]} → {LINK[1]}", f"{CSI[1]} lr", f"{C1[1]} {NAME[1]}"],
    ),
    # The progress bar shows the last status event's text; the record says how the job ended.
    "job --follow": (
        ["job", JOB_ID, "--follow"],
        {
            "/v1/jobs/": record("failed", spec={"model": LINK[0]}, error=MESSAGE[0]),
            EVENTS: sse("log", {"message": NOTE[0]}) + sse("status", {"status": NAME[0]}),
        },
        ExitCode.JOB_FAILED,
        [f"Following job {JOB_ID} ({LINK[1]})", NOTE[1], NAME[1], f"Job failed. {MESSAGE[1]}"],
    ),
    "job --follow by prefix": (
        ["job", "0123", "--follow"],
        {
            "/v1/jobs": {"jobs": [{"id": "0123" + TITLE[0], "status": "queued"}], "total": 1},
            "/v1/jobs/": record("succeeded", result={"model": NAME[0], "published": True}),
        },
        ExitCode.OK,
        [f"Following job 0123{TITLE[1]}", f"published {NAME[1]} version"],
    ),
    "train --detach": (
        ["train", "mnist_logreg", "--epochs", "1", "--detach"],
        {"/v1/jobs": record("queued", id=NAME[0])},
        ExitCode.OK,
        [f"Job {NAME[1]} submitted", f"fdl job {NAME[1]} --follow"],
    ),
    "cancel": (
        ["cancel", "0123"],
        {
            "/v1/jobs": {"jobs": [{"id": "0123" + NAME[0], "status": "queued"}], "total": 1},
            "/v1/jobs/": record(CSI[0]),
        },
        ExitCode.OK,
        [f"Job 0123{NAME[1]} had already ended: {CSI[1]}."],
    ),
    "classify": (
        ["classify", "mnist_cnn", "IMAGE"],
        {"/v1/models/": {"version": 1, "predictions": [PREDICTION]}},
        ExitCode.OK,
        [NAME[1], f"{LINK[1]} 50.0%"],
    ),
    "promote": (
        ["promote", NAME[0], "2", "--label", TITLE[0]],
        {"/v1/models/": {"version": 2, "previous": 1}},
        ExitCode.OK,
        [f"{NAME[1]}: label {TITLE[1]} → version 2"],
    ),
}


@pytest.fixture
def hostile(impostor: ThreadingHTTPServer) -> ThreadingHTTPServer:
    impostor.answers, impostor.default, impostor.status = {}, None, 200  # type: ignore[attr-defined]
    impostor.once, impostor.held = {}, None  # type: ignore[attr-defined]
    return impostor


@pytest.mark.parametrize("case", CASES)
def test_controls_in_the_gateways_text_are_shown_escaped(
    hostile: ThreadingHTTPServer, case: str, tmp_path: Path
) -> None:
    args, answers, code, shown = CASES[case]
    hostile.answers = answers  # type: ignore[attr-defined]
    assert_shown(invoke(hostile, args, tmp_path), code, *shown)


@pytest.mark.parametrize("status", [404, 401, 502])
def test_controls_in_an_error_message_are_shown_escaped(
    hostile: ThreadingHTTPServer, status: int, tmp_path: Path
) -> None:
    # As a gateway's message quoting the request would carry them.
    hostile.default = {"error": {"code": "x", "message": MESSAGE[0]}}  # type: ignore[attr-defined]
    hostile.status = status  # type: ignore[attr-defined]
    result = invoke(hostile, ["promote", "mnist_cnn", "2"], tmp_path)
    code = ExitCode.AUTH if status == 401 else ExitCode.API_ERROR
    assert_shown(result, code, f"Error: {MESSAGE[1]} ({status} x)")


def test_controls_in_an_error_page_that_is_not_json(
    hostile: ThreadingHTTPServer, tmp_path: Path
) -> None:
    hostile.default, hostile.status = MESSAGE[0].encode(), 500  # type: ignore[attr-defined]
    result = invoke(hostile, ["models"], tmp_path)
    assert_shown(result, ExitCode.API_ERROR, f"Error: {MESSAGE[1]} (500 http_error)")


def test_controls_in_the_message_of_a_restarting_gateway(
    hostile: ThreadingHTTPServer, tmp_path: Path
) -> None:
    hostile.answers = {  # type: ignore[attr-defined]
        "/v1/jobs/": record("failed", error=MESSAGE[0]),
        EVENTS: sse("status", {"status": "failed"}),
    }
    hostile.once = {EVENTS: {"error": {"code": "x", "message": MESSAGE[0]}}}  # type: ignore[attr-defined]
    result = invoke(hostile, ["job", JOB_ID, "--follow"], tmp_path)
    assert_shown(result, ExitCode.JOB_FAILED, f"{MESSAGE[1]} (503 x); reconnecting")


def test_json_output_is_the_gateways_json_exactly(
    hostile: ThreadingHTTPServer, tmp_path: Path
) -> None:
    hostile.default = MODELS  # type: ignore[attr-defined]
    result = invoke(hostile, ["models", "--json"], tmp_path)
    assert_shown(result, ExitCode.OK)
    assert json.loads(result.output) == MODELS


def test_controls_in_the_id_that_detaching_names(hostile: ThreadingHTTPServer) -> None:
    """Ctrl-C while `fdl job --follow` follows a job that goes on: the id it names is escaped."""
    job_id = "0123" + NAME[0]
    hostile.answers = {  # type: ignore[attr-defined]
        "/v1/jobs": {"jobs": [{"id": job_id, "status": "running"}], "total": 1},
        "/v1/jobs/": record("running", id=job_id),
    }
    hostile.held = held = threading.Event()  # type: ignore[attr-defined]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FDL_")}
    env |= {"FDL_URL": url_of(hostile), "FDL_API_KEY": "k", "PYTHONUNBUFFERED": "1"}
    cli = BackgroundCli(["job", "0123", "--follow"], env | {"COLUMNS": "300"})
    try:
        cli.wait_line("Following job")
        cli.popen.send_signal(signal.SIGINT)
        cli.wait_line("Detached")
        assert cli.popen.wait(30) == ExitCode.OK, cli.output()
        cli.pump.join(10)
        assert_clean(
            cli.output(), f"Following job 0123{NAME[1]}", f"fdl job 0123{NAME[1]} --follow"
        )
    finally:
        held.set()
        cli.stop()
