"""A job's event stream (Redis stream written by :class:`fdl.jobs.JobStore`) as SSE messages.

Read with the asyncio Redis client, so a waiting subscriber holds no thread.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis

from fdl.jobs import EVENTS_KEY, JOB_KEY, TERMINAL, JobStatus

STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
TERMINAL_VALUES = frozenset(s.value for s in TERMINAL)


def _is_end(kind: str, data: Any) -> bool:
    return kind == "status" and isinstance(data, dict) and data.get("status") in TERMINAL_VALUES


async def job_status(client: aioredis.Redis, job_id: str) -> JobStatus | None:
    raw = await client.hget(JOB_KEY.format(job_id), "status")
    if raw is None:
        return None
    return JobStatus(json.loads(raw))


async def job_events(
    client: aioredis.Redis, job_id: str, after: str = "0-0", block_ms: int = 5000
) -> AsyncIterator[dict[str, Any]]:
    """SSE messages (id, event, data) after stream id ``after``; ends after the terminal status.

    A client that reconnects with ``Last-Event-ID`` past the end gets nothing and the stream
    closes at once.
    """
    key = EVENTS_KEY.format(job_id)
    while True:
        reply = await client.xread({key: after}, count=100, block=block_ms)
        entries = [entry for _stream, items in reply or [] for entry in items]
        if not entries:
            status = await job_status(client, job_id)
            if status is None or status.terminal:
                return
            continue
        for entry_id, fields in entries:
            after = entry_id
            kind = fields.get("type", "message")
            try:
                data = json.loads(fields.get("data", "null"))
            except json.JSONDecodeError:
                data = fields.get("data")
            yield {"id": entry_id, "event": kind, "data": json.dumps(data)}
            if _is_end(kind, data):
                return
