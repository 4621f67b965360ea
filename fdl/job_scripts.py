"""The Lua scripts that change training-job records in Redis atomically
(:class:`fdl.jobs.JobStore` runs them; the record layout is :mod:`fdl.job_records`').

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

from fdl.job_records import EVENTS_MAXLEN, TERMINAL

# Lua: whether status ``s`` is terminal.
_TERMINAL_TEST = " or ".join(f"s == '{status}'" for status in sorted(TERMINAL))

# Common arguments of the status scripts: KEYS[1] job hash, KEYS[2] events stream; ARGV[1]
# token, ARGV[2] the event's data (JSON), ARGV[3] the event's time; then each script's own.
_PRELUDE = """
local key, stream, token = KEYS[1], KEYS[2], ARGV[1]
local function replayed() return redis.call('HGET', key, 'op_token') == token end
local function status()
  local raw = redis.call('HGET', key, 'status')
  if not raw then return nil end
  return cjson.decode(raw)
end
local function is_terminal(s) return TERMINAL_TEST end
local function number(field)
  local raw = redis.call('HGET', key, field)
  if not raw then return nil end
  local value = cjson.decode(raw)
  if type(value) == 'number' then return value end
  return nil
end
local function set_pairs(first)
  for i = first, #ARGV, 2 do redis.call('HSET', key, ARGV[i], ARGV[i + 1]) end
end
local function changed(data)
  redis.call('HSET', key, 'op_token', token)
  redis.call('XADD', stream, 'MAXLEN', '~', 'EVENTS_MAXLEN', '*',
             'type', 'status', 'data', data or ARGV[2], 'time', ARGV[3])
end
""".replace("TERMINAL_TEST", _TERMINAL_TEST).replace("EVENTS_MAXLEN", str(EVENTS_MAXLEN))

# KEYS[3] the index; ARGV[4] creation time, ARGV[5] job id, ARGV[6..] field/value pairs (JSON).
# Writes the record, indexes it and emits ``queued``. Returns 1 (also on a replay).
CREATE_SCRIPT = (
    _PRELUDE
    + """
if replayed() then return 1 end
set_pairs(6)
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[5])
changed()
return 1
"""
)

# ARGV[4] the changing run's worker name ('' for a change of no run: the gateway's, a reaper's),
# ARGV[5..] field/value pairs (JSON), the new status among them. A run's change (its end)
# applies only while the record runs under its name, as its writes in SET_FIELDS_SCRIPT do; a
# retry of one that applied (its token) still answers 1. Returns 1 when applied, 0 when the job
# is missing or (a change of no run) terminal, -1 when it is not the changing run's.
TRANSITION_SCRIPT = (
    _PRELUDE
    + """
if replayed() then return 1 end
local current = status()
if not current then return 0 end
if ARGV[4] ~= '' then
  local holder = redis.call('HGET', key, 'worker')
  if current ~= 'running' or not holder or cjson.decode(holder) ~= ARGV[4] then return -1 end
elseif is_terminal(current) then return 0 end
set_pairs(5)
changed()
return 1
"""
)

# The claim of an attempt. ARGV[4] heartbeat threshold (epoch seconds), ARGV[5..] field/value
# pairs (JSON) set with status running. A queued job is claimed; a running one only when its
# heartbeat (else its start) is older than the threshold (its worker was lost). Counts the
# attempt. Returns 1 when claimed, 0 otherwise (missing, terminal, or running elsewhere).
CLAIM_SCRIPT = (
    _PRELUDE
    + """
if replayed() then return 1 end
local current = status()
if current == 'running' then
  local beat = number('heartbeat_at') or number('started_at')
  if beat and beat >= tonumber(ARGV[4]) then return 0 end
elseif current ~= 'queued' then
  return 0
end
set_pairs(5)
redis.call('HSET', key, 'status', cjson.encode('running'),
           'attempts', tostring((number('attempts') or 0) + 1))
changed()
return 1
"""
)

# What becomes of a running job whose worker was lost, decided in one step (a duplicate message
# that a worker receives meanwhile finds the job either still running elsewhere or already
# settled, never a queued job about to be ended). ARGV[4] heartbeat threshold (epoch seconds),
# ARGV[5] the attempts the reaper saw, ARGV[6] the outcomes: JSON {status: [event data (JSON),
# {field: value (JSON)}]} for 'queued' and 'cancelled', and 'succeeded' (the job's version is
# already published) or 'failed' (it is out of attempts) when they apply. A running job whose
# heartbeat (else its start) is older than the threshold and whose attempts are still those seen
# takes the first of succeeded, cancelled (when its cancellation was requested), failed, else
# queued. Returns the status it was left in (also on a replay); '' when nothing changed (it beat
# again, ended, or was claimed again).
SETTLE_LOST_SCRIPT = (
    _PRELUDE
    + """
if replayed() then return status() end
if status() ~= 'running' then return '' end
local beat = number('heartbeat_at') or number('started_at')
if beat and beat >= tonumber(ARGV[4]) then return '' end
if (number('attempts') or 0) ~= tonumber(ARGV[5]) then return '' end
local outcomes = cjson.decode(ARGV[6])
local chosen = 'queued'
if outcomes['succeeded'] then
  chosen = 'succeeded'
elseif redis.call('HGET', key, 'cancel_requested') == 'true' then
  chosen = 'cancelled'
elseif outcomes['failed'] then
  chosen = 'failed'
end
local event, fields = outcomes[chosen][1], outcomes[chosen][2]
for field, value in pairs(fields) do redis.call('HSET', key, field, value) end
changed(event)
return chosen
"""
)

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
# after it. Returns 1 when marked (the caller sends the message), 2 when ended, 0 otherwise.
RESEND_SCRIPT = (
    _PRELUDE
    + """
if replayed() then return 2 end
if status() ~= 'queued' then return 0 end
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
# unless RESEND_SCRIPT already ended the job for want of it (a worker that gets the message
# finds the job failed and skips it). Safe to retry. Returns 1 when confirmed (also when it was
# already, or its record never waited for it), 0 when the job was ended unconfirmed, -1 when the
# record is gone.
CONFIRM_SCRIPT = """
local raw = redis.call('HGET', KEYS[1], 'status')
if not raw then return -1 end
if redis.call('HGET', KEYS[1], 'enqueued') ~= 'false' then return 1 end
if cjson.decode(raw) == 'failed' and redis.call('HGET', KEYS[1], 'error') == ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'enqueued', 'true')
return 1
"""

# ARGV[4..] field/value pairs (JSON) set when a queued job is cancelled. Flags a job that is not
# terminal for cancellation; only a job still queued is cancelled at once (its worker, if a
# message reaches one, then finds it terminal). Returns -1 for a missing job, 0 when it is
# terminal, 1 when only flagged, 2 when cancelled.
CANCEL_SCRIPT = (
    _PRELUDE
    + """
if replayed() then return 2 end
local current = status()
if not current then return -1 end
if is_terminal(current) then return 0 end
redis.call('HSET', key, 'cancel_requested', 'true')
if current ~= 'queued' then return 1 end
redis.call('HSET', key, 'status', cjson.encode('cancelled'))
set_pairs(4)
changed()
return 2
"""
)

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
""".replace("TERMINAL_TEST", _TERMINAL_TEST)

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
