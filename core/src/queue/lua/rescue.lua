-- rescue.lua: re-queue jobs whose lease expired (their worker died, was killed or
-- paused). A worker's death is not the job's failure: the lost attempt does not count
-- against max_attempts but against a separate rescue budget, so infrastructure crashes
-- do not burn a job's attempts, while a job that kills its worker every time still
-- ends dead after max_rescues + 1 lost leases. A rescued job is a suspect: it goes to
-- {ns}:suspects and runs alone on the next idle worker (fetch.lua), so the innocent
-- jobs a dead worker held are not charged again by a worker-killing neighbour.
-- It also forgets dead-set entries older than the dead ttl (their records expired), so
-- the dead set does not grow for ever when nobody lists it.
-- ARGV: 1 prefix, 2 dead ttl (s), 3 max rescues
-- Returns {requeued, dead}. At most 100 jobs per call.
local dead_ttl, max_rescues = tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', P .. ':dead', '-inf', NOW - dead_ttl * 1000)
local expired = redis.call('ZRANGEBYSCORE', P .. ':leases', '-inf', NOW, 'LIMIT', 0, 100)
local requeued, dead = 0, 0
for _, id in ipairs(expired) do
  redis.call('ZREM', P .. ':leases', id)
  local job = job_key(id)
  local problem = record_problem(id)
  local f = (not problem) and redis.call('HMGET', job, 'status', 'attempt', 'worker',
    'started_at', 'priority')
  if problem then
    bury(id, problem, dead_ttl)
    dead = dead + 1
  elseif f[1] == 'running' then
    local rescues = redis.call('HINCRBY', job, 'rescues', 1)
    local why = 'attempt ' .. tostring(f[2]) .. ': worker ' .. tostring(f[3]) ..
      ' stopped renewing its lease (it died, was killed, or was paused)'
    redis.call('HDEL', job, 'lease_until')
    if rescues > max_rescues then
      local err = cjson.encode({kind = 'lease_expired', retryable = false,
        message = why .. '; the job lost its worker ' .. rescues .. ' times, more than ' ..
          'queue.max_rescues (' .. max_rescues .. '): it may be what kills its workers'})
      redis.call('RPUSH', job .. ':attempts', attempt_record(f[2], f[3], f[4], 'lease_expired', err))
      redis.call('HSET', job, 'status', 'dead', 'error', err, 'finished_at', string.format('%d', NOW))
      redis.call('ZADD', P .. ':dead', NOW, id)
      redis.call('EXPIRE', job, dead_ttl)
      redis.call('EXPIRE', job .. ':attempts', dead_ttl)
      job_ended(id, 'dead')
      dead = dead + 1
    else
      local err = cjson.encode({kind = 'lease_expired', retryable = true,
        message = why .. ' (rescue ' .. rescues .. ' of ' .. max_rescues ..
          ', not counted as a failed attempt; it runs alone next)'})
      redis.call('RPUSH', job .. ':attempts', attempt_record(f[2], f[3], f[4], 'lease_expired', err))
      redis.call('HSET', job, 'status', 'queued', 'error', err)
      -- A suspect: it runs next on an idle worker, with no other job beside it (see
      -- fetch.lua), so if it is what kills workers, only it is charged again.
      redis.call('RPUSH', P .. ':suspects', id)
      requeued = requeued + 1
    end
  end
end
return {requeued, dead}
