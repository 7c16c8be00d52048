-- finish.lua: store the outcome of one attempt, if that attempt still holds the job.
-- ARGV: 1 prefix, 2 id, 3 attempt (the fencing token), 4 outcome:
--         succeeded | retry | dead | release
--       5 body: the result JSON (succeeded) or the error JSON (others; "" for release)
--       6 retry delay (ms), 7 result ttl (s), 8 dead ttl (s)
-- Returns 'ok', or 'stale:<status>:<attempt>' when another attempt or a cancel owns the
-- job now; then nothing is written except the job's stale_writes counter; or
-- 'buried:<why>' when the record was found malformed (someone else wrote into it while
-- the job ran): it is dead-lettered as invalid_job, and nothing of the outcome is kept.
-- The record is judged before any write, so no write can fail half-way.
local id, outcome, body = ARGV[2], ARGV[4], ARGV[5]
local job = job_key(id)
if key_type(job) == 'none' then return 'stale:expired:0' end
local problem = record_problem(id)
if problem then
  bury(id, problem .. ' (found when attempt ' .. ARGV[3] .. ' stored its outcome)', tonumber(ARGV[8]))
  return 'buried:' .. problem
end
local f = redis.call('HMGET', job, 'status', 'attempt', 'priority', 'worker', 'started_at', 'queue')
if f[1] ~= 'running' or f[2] ~= ARGV[3] then
  if f[1] then redis.call('HINCRBY', job, 'stale_writes', 1) end
  return 'stale:' .. tostring(f[1] or 'expired') .. ':' .. tostring(f[2] or 0)
end
redis.call('ZREM', P .. ':leases', id)
redis.call('HDEL', job, 'lease_until')
local history = job .. ':attempts'
local now = string.format('%d', NOW)
if outcome == 'succeeded' then
  redis.call('RPUSH', history, attempt_record(f[2], f[4], f[5], 'succeeded', nil))
  redis.call('HSET', job, 'status', 'succeeded', 'result', body, 'finished_at', now)
  redis.call('EXPIRE', job, tonumber(ARGV[7]))
  redis.call('EXPIRE', history, tonumber(ARGV[7]))
  job_ended(id, 'succeeded')
elseif outcome == 'retry' then
  local due = NOW + tonumber(ARGV[6])
  redis.call('RPUSH', history, attempt_record(f[2], f[4], f[5], 'failed', body))
  redis.call('HINCRBY', job, 'failures', 1)
  redis.call('HSET', job, 'status', 'failed', 'error', body, 'next_run_at', string.format('%d', due))
  redis.call('ZADD', P .. ':scheduled', due, id)
elseif outcome == 'dead' then
  redis.call('RPUSH', history, attempt_record(f[2], f[4], f[5], 'dead', body))
  redis.call('HINCRBY', job, 'failures', 1)
  redis.call('HSET', job, 'status', 'dead', 'error', body, 'finished_at', now)
  redis.call('ZADD', P .. ':dead', NOW, id)
  redis.call('EXPIRE', job, tonumber(ARGV[8]))
  redis.call('EXPIRE', history, tonumber(ARGV[8]))
  job_ended(id, 'dead')
elseif outcome == 'release' then
  -- Cut off by the worker's shutdown: not the job's fault, so not counted; it goes to
  -- the front of its queue so that another worker starts it at once.
  redis.call('RPUSH', history, attempt_record(f[2], f[4], f[5], 'released', nil))
  redis.call('HSET', job, 'status', 'queued')
  redis.call('RPUSH', ready_key(f[3], f[6]), id)
else
  return redis.error_reply('finish.lua: unknown outcome ' .. outcome)
end
return 'ok'
