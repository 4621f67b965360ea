"""The Lua scripts that change a training job's status, each with its ``status`` event in the
same step: its creation, a run's claim and end (any status change, TRANSITION_SCRIPT), a lost
run's settling and a cancellation; and the prelude that they, and RESEND_SCRIPT, share. Each
call's token (ARGV[1]) makes its replay safe, as :mod:`fdl.job_scripts` (which the job store
imports every script from) describes.
"""

from __future__ import annotations

from fdl.job_records import EVENTS_MAXLEN, JOB_KEY, QUEUED_KEY, TERMINAL

# Lua: whether status ``s`` is terminal.
TERMINAL_TEST = " or ".join(f"s == '{status}'" for status in sorted(TERMINAL))

# Common arguments of the status scripts: KEYS[1] job hash, KEYS[2] events stream; ARGV[1]
# token, ARGV[2] the event's data (JSON), ARGV[3] the event's time; then each script's own.
# ``changed`` (every status change) and ``track`` (given a job's hash) keep the job in its
# queue's set of queued jobs (fdl.job_records.QUEUED_KEY) while it is queued and out of it
# otherwise, in the same step as the change: the set's key is built here, not passed in KEYS
# (one Redis, not a cluster, holds every job), and a record without a queue is in no set.
PRELUDE = """
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
local function track(job)
  local q = redis.call('HGET', job, 'queue')
  q = q and cjson.decode(q)
  if type(q) ~= 'string' then return end
  local id, s = string.sub(job, JOB_PREFIX_LEN + 1), redis.call('HGET', job, 'status')
  if s and cjson.decode(s) == 'queued' then redis.call('SADD', 'QUEUED_PREFIX' .. q, id)
  else redis.call('SREM', 'QUEUED_PREFIX' .. q, id) end
end
local function changed(data)
  redis.call('HSET', key, 'op_token', token)
  redis.call('XADD', stream, 'MAXLEN', '~', 'EVENTS_MAXLEN', '*',
             'type', 'status', 'data', data or ARGV[2], 'time', ARGV[3])
  track(key)
end
local function settle(outcome)
  for field, value in pairs(outcome[2]) do redis.call('HSET', key, field, value) end
  changed(outcome[1])
end
""".replace("TERMINAL_TEST", TERMINAL_TEST).replace("EVENTS_MAXLEN", str(EVENTS_MAXLEN))
PRELUDE = PRELUDE.replace("JOB_PREFIX_LEN", str(len(JOB_KEY.format("")))).replace(
    "QUEUED_PREFIX", QUEUED_KEY.format("")
)

# KEYS[3] the index; ARGV[4] creation time, ARGV[5] job id, ARGV[6..] field/value pairs (JSON).
# Writes the record, indexes it and emits ``queued``. Returns 1 (also on a replay).
CREATE_SCRIPT = (
    PRELUDE
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
# retry of one that applied (its token) answers as its first try did. An end ``succeeded`` that
# published nothing ends ``cancelled`` once a cancel was requested, however late the gateway
# accepted it. Returns 1 when applied (2: ended cancelled so), 0 when the job is missing or (a
# change of no run) terminal, -1 when it is not the changing run's.
TRANSITION_SCRIPT = (
    PRELUDE
    + """
local asked = nil
for i = 5, #ARGV, 2 do if ARGV[i] == 'status' then asked = cjson.decode(ARGV[i + 1]) end end
if replayed() then
  if asked == 'succeeded' and status() == 'cancelled' then return 2 end
  return 1
end
local current = status()
if not current then return 0 end
if ARGV[4] ~= '' then
  local holder = redis.call('HGET', key, 'worker')
  if current ~= 'running' or not holder or cjson.decode(holder) ~= ARGV[4] then return -1 end
elseif is_terminal(current) then return 0 end
set_pairs(5)
local result = cjson.decode(redis.call('HGET', key, 'result') or 'null')
if asked == 'succeeded' and redis.call('HGET', key, 'cancel_requested') == 'true'
   and not (type(result) == 'table' and result['published'] == true) then
  local event = {status = 'cancelled', result = cjson.null, error = 'cancelled by request'}
  for field, value in pairs(event) do redis.call('HSET', key, field, cjson.encode(value)) end
  changed(cjson.encode(event))
  return 2
end
changed()
return 1
"""
)

# The claim of an attempt. ARGV[4] heartbeat threshold (epoch seconds), ARGV[5..] field/value
# pairs (JSON) set with status running. A queued job is claimed; a running one only when its
# heartbeat (else its start) is older than the threshold (its worker was lost). Counts the
# attempt. Returns 1 when claimed, 0 otherwise (missing, terminal, or running elsewhere).
CLAIM_SCRIPT = (
    PRELUDE
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
    PRELUDE
    + """
if replayed() then return status() end
if status() ~= 'running' then return '' end
local beat = number('heartbeat_at') or number('started_at')
if beat and beat >= tonumber(ARGV[4]) then return '' end
if (number('attempts') or 0) ~= tonumber(ARGV[5]) then return '' end
local outcomes = cjson.decode(ARGV[6])
local chosen = 'queued'
if outcomes['succeeded'] then chosen = 'succeeded'
elseif redis.call('HGET', key, 'cancel_requested') == 'true' then chosen = 'cancelled'
elseif outcomes['failed'] then chosen = 'failed' end
settle(outcomes[chosen])
return chosen
"""
)

# ARGV[4..] field/value pairs (JSON) set when a queued job is cancelled. Flags a job that is not
# terminal for cancellation; only a job still queued is cancelled at once (its worker, if a
# message reaches one, then finds it terminal). Returns -1 for a missing job, 0 when it is
# terminal, 1 when only flagged, 2 when cancelled.
CANCEL_SCRIPT = (
    PRELUDE
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

# A run's hand-back of its job, its worker stopping (training/worker_stop.py): ARGV[4] the run's
# worker name, ARGV[5] the outcomes (fdl.job_records.hand_back_outcomes: 'queued', 'counted',
# 'failed', 'cancelled'), ARGV[6] the hand-backs a job may have uncounted (FDL_MAX_HAND_BACKS),
# ARGV[7] the attempts it may count (FDL_MAX_ATTEMPTS). Only while the record is running under
# that name: its cancellation requested meanwhile, it ends ``cancelled``; else ``handed_back``
# counts one more, and up to ARGV[6] of them the job goes back to ``queued`` with the attempt
# its claim counted taken back (``attempts`` less one); past them the attempt stays counted,
# the job ``queued`` again ('counted') or, at ARGV[7] attempts, ``failed``. Returns the
# outcome it took ('queued', 'counted', 'failed', 'cancelled'; on a replay the status it was
# left in), '' when the record is not the run's.
HAND_BACK_SCRIPT = (
    PRELUDE
    + """
if replayed() then return status() end
local holder = redis.call('HGET', key, 'worker')
if status() ~= 'running' or not holder or cjson.decode(holder) ~= ARGV[4] then return '' end
local outcomes = cjson.decode(ARGV[5])
if redis.call('HGET', key, 'cancel_requested') == 'true' then
  settle(outcomes['cancelled'])
  return 'cancelled'
end
local handed, attempts = (number('handed_back') or 0) + 1, number('attempts') or 1
local chosen = 'queued'
if handed <= tonumber(ARGV[6]) then attempts = math.max(attempts - 1, 0)
elseif attempts >= tonumber(ARGV[7]) then chosen = 'failed'
else chosen = 'counted' end
redis.call('HSET', key, 'attempts', tostring(attempts), 'handed_back', tostring(handed))
settle(outcomes[chosen])
return chosen
"""
)
