"""The reading half of :class:`fdl.jobs.JobStore`: records, their index, the flags a worker
polls, and event streams, as the gateway and the workers read them (no writes here)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Sequence
from typing import Any, cast

import redis

from fdl.job_records import (
    EVENTS_KEY,
    INDEX_KEY,
    JOB_KEY,
    Events,
    StreamReply,
    decode_events,
    decode_record,
)
from fdl.store_retry import retried as _retried

# The method JobReads.list hides the builtin inside the class body.
_Statuses = list[tuple[str, str | None]]
_Ids = list[str]
_Groups = dict[str | None, list[str]]
_Records = list[dict[str, Any]]
_Entries = list[tuple[str, float]]  # (job id, index score: its creation time)
_Row = tuple[str, list[str | None]]  # (job id, raw field values)
# Index entries a scan of every record reads per step (one ZREVRANGEBYSCORE, then one pipeline of
# that many HMGETs): what a scan holds at once is one step's, whatever the number of records kept.
SCAN_CHUNK = 2000
# Jobs of one creation time a scan reads in one command (ties are microsecond-rare: only jobs
# written at the very same time share one); a larger group is read this many at a time.
TIED_MAX = 10 * SCAN_CHUNK

log = logging.getLogger("fdl.jobs")


def keyed(job_id: str, record: dict[str, Any] | None) -> dict[str, Any] | None:
    """``record``, read from the key of ``job_id``, with ``job_id`` as its id whatever id it
    holds (only a hand-edited Redis makes them differ, logged): a reader acts on the job it
    read, never on one a record names."""
    if record is not None and record.get("id") != job_id:
        log.warning(
            "job %s: its record holds another id (%s); read as %s",
            job_id,
            repr(record.get("id"))[:100],
            job_id,
        )
        record["id"] = job_id
    return record


class JobReads:
    """Reads of job records; :class:`fdl.jobs.JobStore` adds the writes. Reads return plain
    dicts (every field of a record present, ``None`` when unset) or ``None`` for an unknown
    job."""

    redis: redis.Redis
    retry_for_s: float
    _local: threading.local

    @_retried
    def now(self) -> float:
        """Redis's clock, in epoch seconds. Every time the store writes (a heartbeat, a send, a
        start) and every cut-off compared with one (a reaper's, a claim's) is read from it, so
        machines whose own clocks disagree never take a live job for lost."""
        seconds, microseconds = self.redis.time()
        return seconds + microseconds / 1e6

    @_retried
    def get(self, job_id: str) -> dict[str, Any] | None:
        """Returns the job's record (its id: ``job_id``, see :func:`keyed`), or None for an
        unknown job."""
        raw = cast(dict[str, str], self.redis.hgetall(JOB_KEY.format(job_id)))
        return keyed(job_id, decode_record(raw))

    @_retried
    def list(
        self, status: str | None = None, limit: int = 50, offset: int = 0
    ) -> tuple[list[dict[str, Any]], int]:
        """One page (``limit`` records after ``offset`` matching ones) of the jobs in ``status``
        (None: all), newest first, and the number of matching jobs; reads only the page's
        records, each in one step (HGETALL), in a pipeline without a transaction: a Redis at its
        maxmemory refuses MULTI's queued commands, reads too, and the records read together
        need no more than each its own consistency (a page's ids are read before them anyway)."""
        if status is None:
            total = int(self.redis.zcard(INDEX_KEY))
            page_ids = cast(list[str], self.redis.zrevrange(INDEX_KEY, offset, offset + limit - 1))
        else:
            matching = [i for i, (s,) in self._scan("status") if s and json.loads(s) == status]
            total, page_ids = len(matching), matching[offset : offset + limit]
        return self.records(page_ids), total

    @_retried
    def records(self, job_ids: Sequence[str]) -> _Records:
        """The records of ``job_ids`` that exist, in that order, each read in one step (HGETALL)
        in one pipeline without a transaction (see :meth:`list`); each one's id is the id it was
        read by (:func:`keyed`)."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hgetall(JOB_KEY.format(job_id))
        read = zip(job_ids, map(decode_record, pipe.execute()), strict=True)
        return [r for r in (keyed(job_id, record) for job_id, record in read) if r is not None]

    @_retried
    def statuses(self) -> _Statuses:
        """(job id, status) of every job, newest first, without reading the whole records."""
        return [(i, json.loads(v[0]) if v[0] else None) for i, v in self._scan("status")]

    @_retried
    def ids_by_status(self) -> _Groups:
        """The ids of every indexed job by status (None: an index entry without a record), each
        newest first: one scan (:meth:`_scan`) that keeps only the ids."""
        groups: _Groups = {}
        for job_id, (status,) in self._scan("status"):
            groups.setdefault(json.loads(status) if status else None, []).append(job_id)
        return groups

    def _scan(self, *fields: str) -> Iterator[_Row]:
        """(job id, the raw values of ``fields``) of every indexed job, newest first, the index
        read a step at a time (:meth:`_index_steps`), each step's records in pipelines of at most
        SCAN_CHUNK HMGETs that other clients' commands interleave with (no transaction)."""
        for ids in self._index_steps():
            for start in range(0, len(ids), SCAN_CHUNK):
                chunk = ids[start : start + SCAN_CHUNK]
                pipe = self.redis.pipeline(transaction=False)
                for job_id in chunk:
                    pipe.hmget(JOB_KEY.format(job_id), list(fields))
                yield from zip(chunk, pipe.execute(), strict=True)

    def _index_steps(self) -> Iterator[_Ids]:
        """Every indexed job id, newest first, in steps of at most SCAN_CHUNK entries by score
        (creation time), not by rank, so that a job indexed or removed meanwhile moves no other.
        A step never ends inside a group of equal scores: when it would, the group is read whole
        in one command and the next step starts below its score. So each job indexed all along is
        read exactly once (one indexed meanwhile may be left out), unless more than TIED_MAX
        share a score (then that group is read TIED_MAX at a time by rank)."""
        high = "+inf"
        while True:
            entries = cast(
                _Entries,
                self.redis.zrevrangebyscore(
                    INDEX_KEY, high, "-inf", start=0, num=SCAN_CHUNK, withscores=True
                ),
            )
            if len(entries) < SCAN_CHUNK:
                if entries:
                    yield [job_id for job_id, _ in entries]
                return
            last = entries[-1][1]
            before = [job_id for job_id, score in entries if score != last]
            if before:
                yield before
            yield from self._tied(last)
            high = f"({last!r}"  # below the group's score (a float's repr reads back the same)

    def _tied(self, score: float) -> Iterator[_Ids]:
        """The ids of every indexed job created at ``score``: one read, TIED_MAX at most."""
        offset = 0
        while True:
            ids = cast(
                _Ids,
                self.redis.zrevrangebyscore(INDEX_KEY, score, score, start=offset, num=TIED_MAX),
            )
            if ids:
                yield ids
            if len(ids) < TIED_MAX:
                return
            offset += TIED_MAX

    @_retried
    def cancel_requested(self, job_id: str) -> bool:
        """Whether cancellation was requested."""
        value = self.redis.hget(JOB_KEY.format(job_id), "cancel_requested")
        return bool(value and json.loads(value))

    @_retried
    def stop_requested(self, job_id: str) -> bool:
        """Whether the worker running the job should stop it (it polls this between batches):
        its cancellation was requested, or its record is gone (pruned, deleted, or lost with
        Redis's data), so that nobody could follow it or be told what it published."""
        status, flag = self.redis.hmget(JOB_KEY.format(job_id), ["status", "cancel_requested"])
        return status is None or bool(flag and json.loads(flag))

    @_retried
    def read_events(
        self, job_id: str, after: str = "0-0", block_ms: int | None = None, count: int = 100
    ) -> Events:
        """At most ``count`` of the job's events after the stream id ``after`` (``0-0``: from the
        first), waiting up to ``block_ms`` when there are none yet (None: no wait), oldest first:
        ``(entry id, {"type", "data", "time"})``."""
        reply = cast(
            StreamReply,
            self.redis.xread({EVENTS_KEY.format(job_id): after}, count=count, block=block_ms),
        )
        return decode_events(reply)

    def ping(self) -> bool:
        """Whether Redis answers (raises when it is unreachable)."""
        return bool(self.redis.ping())
