-- rescue.lua: re-queue jobs whose lease expired (their worker died, was killed or
-- paused). The lost attempt counts as a failure, so a job that kills its worker every
-- time ends dead after max_attempts instead of looping for ever.
-- It also forgets dead-set entries older than the dead ttl (their records expired), so
-- the dead set does not grow for ever when nobody lists it.
-- ARGV: 1 prefix, 2 dead ttl (s)
-- Returns {requeued, dead}. At most 100 jobs per call.
redis.call('ZREMRANGEBYSCORE', P .. ':dead', '-inf', NOW - tonumber(ARGV[2]) * 1000)
local expired = redis.call('ZRANGEBYSCORE', P .. ':leases', '-inf', NOW, 'LIMIT', 0, 100)
local requeued, dead = 0, 0
for _, id in ipairs(expired) do
  redis.call('ZREM', P .. ':leases', id)
  local job = job_key(id)
  local f = redis.call('HMGET', job, 'status', 'attempt', 'worker', 'started_at', 'priority',
    'failures', 'max_attempts')
  if f[1] == 'running' then
    local err = cjson.encode({kind = 'lease_expired', retryable = true,
      message = 'attempt ' .. tostring(f[2]) .. ': worker ' .. tostring(f[3]) ..
        ' stopped renewing its lease (it died, was killed, or was paused)'})
    redis.call('RPUSH', job .. ':attempts', attempt_record(f[2], f[3], f[4], 'lease_expired', err))
    local failures = redis.call('HINCRBY', job, 'failures', 1)
    redis.call('HDEL', job, 'lease_until')
    if failures >= tonumber(f[7] or '1') then
      redis.call('HSET', job, 'status', 'dead', 'error', err, 'finished_at', string.format('%d', NOW))
      redis.call('ZADD', P .. ':dead', NOW, id)
      redis.call('EXPIRE', job, tonumber(ARGV[2]))
      redis.call('EXPIRE', job .. ':attempts', tonumber(ARGV[2]))
      dead = dead + 1
    else
      redis.call('HSET', job, 'status', 'queued', 'error', err)
      redis.call('RPUSH', ready_key(f[5]), id)
      requeued = requeued + 1
    end
  end
end
return {requeued, dead}
