"""The Lua scripts that change training-job records in Redis atomically
(:class:`fdl.jobs.JobStore` runs them, imported from here; the record layout is
:mod:`fdl.job_records`'). The status changes are in :mod:`fdl.job_status_scripts`; here are the
writes of fields and events, the resends of queued jobs' messages and their confirmation, the
count of the jobs waiting in a queue, and the pruning of old records.

Every status change runs as one script that also appends the ``status`` event, so a change and
its event are never separated. Each call carries a token of its own (ARGV[1], a JSON-encoded
uuid) that the script stores in ``op_token`` when it applies: a retry of the same call
(fdl.store_retry, or redis-py's own, after the script ran but its reply was lost) finds its token
there and answers "applied" again without changing anything. Any later status change overwrites
the token, so a retry after someone else's change is judged afresh. The other writes that are
not idempotent by themselves, an event's XADD (SET_FIELDS_SCRIPT) and a resend's count
(RESEND_SCRIPT), carry tokens of their own in fields of their own (``event_token``,
``resend_token``), so that a status change in between does not hide a replay.
"""

from __future__ import annotations

from fdl.job_records import EVENTS_KEY, EVENTS_MAXLEN, JOB_KEY, QUEUED_BUILT
from fdl.job_status_scripts import (
    CANCEL_SCRIPT,
    CLAIM_SCRIPT,
    CREATE_SCRIPT,
    PRELUDE,
    SETTLE_LOST_SCRIPT,
    TERMINAL_TEST,
    TRANSITION_SCRIPT,
)

# Every script, those of status changes (fdl.job_status_scripts') included, is imported from here.
__all__ = [
    "CANCEL_SCRIPT",
    "CLAIM_SCRIPT",
    "CONFIRM_SCRIPT",
    "COUNT_QUEUED_SCRIPT",
    "CREATE_ONCE_SCRIPT",
    "CREATE_SCRIPT",
    "END_NOT_QUEUED_SCRIPT",
    "PRUNE_LEFTOVER_SCRIPT",
    "PRUNE_SCRIPT",
    "RESEND_SCRIPT",
    "SETTLE_LOST_SCRIPT",
    "SET_FIELDS_SCRIPT",
    "TRANSITION_SCRIPT",
]

# KEYS[1] job hash, KEYS[2] events stream; ARGV[1] an event's type ('' for none), ARGV[2] its
# data (JSON), ARGV[3] its time, ARGV[4] its token (a new one per call), ARGV[5] the writing
# run's worker name ('' for a write of no run: the gateway's, a reaper's), ARGV[6..] field/value
# pairs (JSON). Sets the fields of a job's record and appends the event, only while the record
# exists (it has a status): a late heartbeat or progress report of a job whose record is gone
# (pruned, deleted, lost with Redis's data) writes nothing. A run's write applies only while the
# record is running under its name: a run that lost its job (ended, or claimed by another run
# while this one went unheard) writes nothing into the record of the run that has it now. The
# record keeps the token and entry id of the last event appended here (``event_token``, JSON
# [token, id]): a retry of that call (its reply was lost) appends nothing and answers the same
# id, also once the run has lost the job (the event was its own). One field is enough, since
# one run writes its events in order and retries each before the next; status events (the
# other scripts') leave it alone. Returns 0 when the record is gone, -1 when it is not the
# writing run's, else the event's id (1 without an event).
SET_FIELDS_SCRIPT = """
if redis.call('HEXISTS', KEYS[1], 'status') == 0 then return 0 end
if ARGV[1] ~= '' then
  local last = redis.call('HGET', KEYS[1], 'event_token')
  last = last and cjson.decode(last)
  if type(last) == 'table' and last[1] == ARGV[4] then return last[2] end
end
local run = ARGV[5] or ''
if run ~= '' then
  local holder = redis.call('HGET', KEYS[1], 'worker')
  if cjson.decode(redis.call('HGET', KEYS[1], 'status')) ~= 'running' or not holder
     or cjson.decode(holder) ~= run then return -1 end
end
for i = 6, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
if ARGV[1] == '' then return 1 end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', 'EVENTS_MAXLEN', '*',
                      'type', ARGV[1], 'data', ARGV[2], 'time', ARGV[3])
redis.call('HSET', KEYS[1], 'event_token', cjson.encode({ARGV[4], id}))
return id
""".replace("EVENTS_MAXLEN", str(EVENTS_MAXLEN))

# The common arguments (ARGV[2] the data of the ``failed`` event that ends a job never confirmed
# sent); ARGV[4] the first resend period (s), ARGV[5] now (epoch seconds), ARGV[6] the cap on
# its doublings, ARGV[7..] field/value pairs (JSON) set when such a job is ended. A job still
# queued whose message was last sent (else the job created) a period ago is due. When its record
# says that its message was never confirmed sent (``enqueued`` false: the gateway's submission
# was refused, or the gateway stopped, before it confirmed), it ends ``failed`` instead: its
# client was most likely answered 503 and may have submitted it again. Else it is marked sent
# now, its resend count grows and the token is kept (``resend_token``): one reaper re-sends it.
# A record without ``enqueued`` (written by an older gateway) counts as confirmed. A retry of
# that call (its reply was lost) finds its token and answers as the first try did (1 while the
# job is queued, instead of "not due", the mark it made, so the message is still sent; 2 until
# another status change), and a gateway's confirmation (CONFIRM_SCRIPT) runs wholly before or
# after it. A queued job looked at is put in its queue's set (``track``): a job that a process
# older than these sets queued again is counted from then on. Returns 1 when marked (the caller
# sends the message), 2 when ended, 0 otherwise.
RESEND_SCRIPT = (
    PRELUDE
    + """
if replayed() then return 2 end
if status() ~= 'queued' then return 0 end
track(key)
if redis.call('HGET', key, 'resend_token') == token then return 1 end
local resends = redis.call('HGET', key, 'resends')
resends = resends and tonumber(cjson.decode(resends)) or 0
local period = tonumber(ARGV[4]) * 2 ^ math.min(resends, tonumber(ARGV[6]))
local sent = redis.call('HGET', key, 'sent_at') or redis.call('HGET', key, 'created_at')
if sent then
  sent = cjson.decode(sent)
  if type(sent) == 'number' and sent + period > tonumber(ARGV[5]) then return 0 end
end
if redis.call('HGET', key, 'enqueued') == 'false' then
  set_pairs(7)
  changed()
  return 2
end
redis.call('HSET', key, 'sent_at', cjson.encode(tonumber(ARGV[5])),
  'resends', cjson.encode(resends + 1), 'resend_token', token)
return 1
"""
)

# KEYS[1] job hash; ARGV[1] the error (JSON) that RESEND_SCRIPT ends a job never confirmed sent
# with. The gateway's confirmation that a job's message was sent: ``enqueued`` becomes true,
# unless the job was already ended for want of it: by RESEND_SCRIPT, or ended ``failed`` before
# any worker claimed it (a submission under its Idempotency-Key took it over as abandoned,
# CREATE_ONCE_SCRIPT): a worker that gets the message finds the job failed and skips it. Safe to
# retry. Returns 1 when confirmed (also when it was already, or its record never waited for
# it), 0 when the job was ended unconfirmed, -1 when the record is gone.
CONFIRM_SCRIPT = """
local raw = redis.call('HGET', KEYS[1], 'status')
if not raw then return -1 end
if redis.call('HGET', KEYS[1], 'enqueued') ~= 'false' then return 1 end
local never_run = (tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0') or 0) == 0
if cjson.decode(raw) == 'failed'
  and (never_run or redis.call('HGET', KEYS[1], 'error') == ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'enqueued', 'true')
return 1
"""

# KEYS[1] a queue's set of queued jobs (fdl.job_records.QUEUED_KEY); ARGV[1] the status
# ``queued`` and ARGV[2] the queue, as records hold them (JSON). The jobs of the set whose record
# is queued in that queue, read in one step; the others (ended, claimed, pruned, deleted) leave
# the set. ARGV[3], when not empty, stops the count once it reaches that number (a script blocks
# every other client of the Redis while it runs: a cap's count needs to read no further). Returns
# -1, reading nothing, when the set lacks QUEUED_BUILT (JobStore.waiting builds it), else the count.
COUNT_QUEUED_SCRIPT = """
if redis.call('SISMEMBER', KEYS[1], 'BUILT') == 0 then return -1 end
local n, up_to = 0, tonumber(ARGV[3])
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if id ~= 'BUILT' then
    local found = redis.call('HMGET', 'JOB_PREFIX' .. id, 'status', 'queue')
    if found[1] == ARGV[1] and found[2] == ARGV[2] then
      n = n + 1
      if up_to and n >= up_to then return n end
    else redis.call('SREM', KEYS[1], id) end
  end
end
return n
""".replace("BUILT", QUEUED_BUILT).replace("JOB_PREFIX", JOB_KEY.format(""))

# KEYS[1] job hash, KEYS[2] events stream, KEYS[3] the index; ARGV[1] cut-off (epoch seconds),
# ARGV[2] job id. A job that ended (else was created) before the cut-off loses its record, its
# events and its index entry; an index entry whose record is gone goes too. Returns 1 when removed.
PRUNE_SCRIPT = """
local raw = redis.call('HGET', KEYS[1], 'status')
if raw then
  local s = cjson.decode(raw)
  if not (TERMINAL_TEST) then return 0 end
  local ended = redis.call('HGET', KEYS[1], 'finished_at')
  ended = ended or redis.call('HGET', KEYS[1], 'created_at')
  ended = ended and cjson.decode(ended)
  if type(ended) ~= 'number' or ended >= tonumber(ARGV[1]) then return 0 end
end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[2])
return 1
""".replace("TERMINAL_TEST", TERMINAL_TEST)

# KEYS[1] job hash, KEYS[2] events stream, KEYS[3] the index; ARGV[1] cut-off (epoch seconds),
# ARGV[2] job id, ARGV[3] now (epoch seconds). What workers older than SET_FIELDS_SCRIPT left
# after a job's record was pruned: a hash of only heartbeat or progress fields (no status) and an
# event stream without a record, neither indexed. Such keys go when the newest time they hold (a
# time field of the hash, the stream's last entry id) is before the cut-off; a hash that holds
# no time is stamped ``leftover_seen_at`` now and goes once that is. A job with a status, or an
# index entry, is never touched (PRUNE_SCRIPT's). Returns 1 when removed.
PRUNE_LEFTOVER_SCRIPT = """
if redis.call('ZSCORE', KEYS[3], ARGV[2]) then return 0 end
local cutoff = tonumber(ARGV[1])
local hash_type = redis.call('TYPE', KEYS[1])['ok']
if hash_type ~= 'none' then
  if hash_type ~= 'hash' or redis.call('HEXISTS', KEYS[1], 'status') == 1 then return 0 end
  local newest = nil
  for _, field in ipairs({'heartbeat_at', 'finished_at', 'started_at', 'created_at',
                          'sent_at', 'leftover_seen_at'}) do
    local value = tonumber(redis.call('HGET', KEYS[1], field) or '')
    if value and (not newest or value > newest) then newest = value end
  end
  if not newest then
    redis.call('HSET', KEYS[1], 'leftover_seen_at', ARGV[3])
    return 0
  end
  if newest >= cutoff then return 0 end
end
local stream_type = redis.call('TYPE', KEYS[2])['ok']
if stream_type ~= 'none' then
  if stream_type ~= 'stream' then return 0 end
  local info = redis.call('XINFO', 'STREAM', KEYS[2])
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then
      local ms = tonumber(string.match(info[i + 1], '^(%d+)'))
      if not ms or ms / 1000 >= cutoff then return 0 end
    end
  end
end
if hash_type == 'none' and stream_type == 'none' then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
return 1
"""

# A submission under an Idempotency-Key (fdl.job_idempotency): CREATE_SCRIPT's record, written
# only when the key names no job yet, in the same step as the key's mapping (a hash: ``job``, the
# job's id, and ``body``, the hash of its spec), so that concurrent submissions under one key
# create one job. KEYS[1..3] as CREATE_SCRIPT's (the new job's), KEYS[4] the mapping; ARGV[1..5]
# as CREATE_SCRIPT's (ARGV[4], the creation time, is now: Redis's clock), ARGV[6] the spec's
# hash, ARGV[7] the mapping's time to live (s), ARGV[8] '1' to create, '' to look only, ARGV[9]
# how old an unconfirmed job may be before it counts as abandoned (s), ARGV[10] the ``failed``
# event data and ARGV[11] the fields (JSON {field: JSON value}) of an abandoned job's end,
# ARGV[12..] the record's field/value pairs (JSON). The key names no job when it maps nothing
# (never used, or expired), or the job it maps was removed (pruned: it ended
# FDL_JOB_RETENTION_S ago), never queued (ended ``failed`` unconfirmed and never claimed: its
# submission was answered 503, or the reaper ended it, RESEND_SCRIPT) or abandoned: still
# ``queued`` unconfirmed, created ARGV[9] or longer ago, longer than a live submission takes to
# confirm its message. An abandoned job is ended in the same step, as RESEND_SCRIPT ends one
# (its message, if sent, finds it ended: a worker's claim skips it; a late confirmation answers
# 0), when creating; a look leaves it. The earlier job's keys are built here, not passed in
# KEYS: one Redis (not a cluster) holds every job. Returns {outcome, job id}: 'created' (also for
# a retry of this very call), 'free' (looked only), 'mismatch' (another spec), 'in_progress'
# (queued, its message not yet confirmed sent: its submission may still be under way) with its
# age (s) as a third element, or 'replay' with the earlier record's fields as a third element.
CREATE_ONCE_SCRIPT = (
    PRELUDE
    + """
local mapping, new_id, now = KEYS[4], ARGV[5], tonumber(ARGV[4])
local earlier = redis.call('HGET', mapping, 'job')
if earlier == new_id then return {'created', new_id} end
local creating = ARGV[8] == '1'
if earlier then
  local job = 'JOB_PREFIX' .. earlier
  local raw = redis.call('HGET', job, 'status')
  local s = raw and cjson.decode(raw)
  local unconfirmed = redis.call('HGET', job, 'enqueued') == 'false'
  local never_queued = s == 'failed' and unconfirmed
    and (tonumber(redis.call('HGET', job, 'attempts') or '0') or 0) == 0
  local age = now - (tonumber(redis.call('HGET', job, 'created_at') or '') or now)
  local abandoned = s == 'queued' and unconfirmed and age >= tonumber(ARGV[9])
  if s and not never_queued and not abandoned then
    if redis.call('HGET', mapping, 'body') ~= ARGV[6] then return {'mismatch', earlier} end
    if s == 'queued' and unconfirmed then return {'in_progress', earlier, tostring(age)} end
    return {'replay', earlier, redis.call('HGETALL', job)}
  end
  if abandoned and creating then
    for field, value in pairs(cjson.decode(ARGV[11])) do redis.call('HSET', job, field, value) end
    redis.call('HSET', job, 'op_token', token)
    redis.call('XADD', job .. 'EVENTS_SUFFIX', 'MAXLEN', '~', 'EVENTS_MAXLEN', '*',
               'type', 'status', 'data', ARGV[10], 'time', ARGV[3])
    track(job)
  end
end
if not creating then return {'free', ''} end
if not replayed() then
  set_pairs(12)
  redis.call('ZADD', KEYS[3], ARGV[4], new_id)
  changed()
end
redis.call('DEL', mapping)
redis.call('HSET', mapping, 'job', new_id, 'body', ARGV[6])
redis.call('EXPIRE', mapping, ARGV[7])
return {'created', new_id}
""".replace("JOB_PREFIX", JOB_KEY.format(""))
    .replace("EVENTS_SUFFIX", EVENTS_KEY.format("").removeprefix(JOB_KEY.format("")))
    .replace("EVENTS_MAXLEN", str(EVENTS_MAXLEN))
)

# The end of a job whose message the broker refused, submitted under an Idempotency-Key, and the
# release of the key, in one step: the key is let go only with the job ended, never while its
# record may still be queued (its message may have reached the queue, the broker's reply lost:
# a retry under the key would then make a second job to run beside it). KEYS[1..2] as
# TRANSITION_SCRIPT's, KEYS[3] the key's mapping; ARGV[1..3] as TRANSITION_SCRIPT's, ARGV[4] the
# job's id, ARGV[5..] field/value pairs (JSON), its status among them. Only a job still queued
# is ended (one that a worker claimed meanwhile runs on, its key naming it); the mapping is
# removed while it names that job. Returns 1 when ended (also on a replay), 0 otherwise.
END_NOT_QUEUED_SCRIPT = (
    PRELUDE
    + """
if replayed() then return 1 end
if status() ~= 'queued' then return 0 end
set_pairs(5)
changed()
if redis.call('HGET', KEYS[3], 'job') == ARGV[4] then redis.call('DEL', KEYS[3]) end
return 1
"""
)
