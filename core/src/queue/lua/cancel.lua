-- cancel.lua: cancel a job that has not finished.
-- ARGV: 1 prefix, 2 id, 3 result ttl (s), 4 dead ttl (s)
-- Returns the status the job had ('queued', 'scheduled', 'failed', 'running', 'waiting'), or, when nothing was
-- done, its final status, or 'unknown'; 'dead' also when the record was malformed and
-- is dead-lettered instead (kept for the dead ttl, like every dead job).
-- A running job is marked cancelled at once (its attempt can no longer write, see
-- finish.lua) and its worker is told on the channel {ns}:cancel.
local id = ARGV[2]
local job = job_key(id)
if key_type(job) == 'none' then return 'unknown' end
-- A malformed record (someone else wrote into it) is dead-lettered rather than half
-- cancelled: the record is judged before any write.
local problem = record_problem(id)
if problem then
  bury(id, problem .. ' (found by mcpq cancel)', tonumber(ARGV[4]))
  return 'dead'
end
local f = redis.call('HMGET', job, 'status', 'priority', 'attempt', 'worker', 'started_at', 'queue')
local status = f[1]
if not status then return 'unknown' end
if status == 'queued' then
  redis.call('LREM', ready_key(f[2], f[6]), 1, id)
  redis.call('LREM', P .. ':suspects', 1, id)
elseif status == 'failed' or status == 'scheduled' then
  redis.call('ZREM', P .. ':scheduled', id)
elseif status == 'waiting' then
  -- A batch's fan-in job that has not been released: nothing else to undo.
elseif status == 'running' then
  redis.call('ZREM', P .. ':leases', id)
  redis.call('RPUSH', job .. ':attempts', attempt_record(f[3], f[4], f[5], 'cancelled', nil))
  redis.call('PUBLISH', BASE .. ':cancel', id)
else
  return status
end
local err = cjson.encode({kind = 'cancelled', retryable = false,
  message = 'cancelled by mcpq cancel while ' .. status})
redis.call('HSET', job, 'status', 'cancelled', 'error', err, 'finished_at', string.format('%d', NOW))
redis.call('HDEL', job, 'lease_until', 'next_run_at')
redis.call('EXPIRE', job, tonumber(ARGV[3]))
redis.call('EXPIRE', job .. ':attempts', tonumber(ARGV[3]))
job_ended(id, 'cancelled')
return status
