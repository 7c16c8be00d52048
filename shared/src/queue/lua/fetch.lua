-- fetch.lua: lease the next job to a worker.
-- ARGV: 1 prefix, 2 worker name, 3 lease (ms), 4 pick (0 <= pick < sum of weights),
--       5 weight of high, 6 weight of normal, 7 dead ttl (s)
-- Returns nil when nothing is ready, else {id, attempt, payload, max_attempts, failures}.
-- Work per call is bounded: at most 100 due retries moved, at most 100 stale entries
-- skipped, whatever the queue length (apalis-redis unpacked the whole due set).
local worker, lease = ARGV[2], tonumber(ARGV[3])
-- 1. Retries whose backoff is over go back to the front of their queue.
local due = redis.call('ZRANGEBYSCORE', P .. ':scheduled', '-inf', NOW, 'LIMIT', 0, 100)
for _, id in ipairs(due) do
  redis.call('ZREM', P .. ':scheduled', id)
  local f = redis.call('HMGET', job_key(id), 'status', 'priority')
  if f[1] == 'failed' then
    redis.call('HSET', job_key(id), 'status', 'queued')
    redis.call('RPUSH', ready_key(f[2]), id)
  end
end
-- 2. Which queue first: by weight; the others in priority order when it is empty.
local pick, wh, wn = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local order
if pick < wh then order = {'high', 'normal', 'low'}
elseif pick < wh + wn then order = {'normal', 'high', 'low'}
else order = {'low', 'high', 'normal'} end
-- 3. Pop until a queued job turns up.
for _ = 1, 100 do
  local id
  for _, q in ipairs(order) do
    id = redis.call('RPOP', ready_key(q))
    if id then break end
  end
  if not id then return nil end
  local job = job_key(id)
  local status = redis.call('HGET', job, 'status')
  if not status then
    -- Written into the queue by something other than enqueue.lua: dead-letter it
    -- under its own name so that it is seen, never run.
    local err = cjson.encode({kind = 'invalid_job', retryable = false,
      message = 'the queue held an entry with no job record (written by something other than mcpq?): ' .. string.sub(id, 1, 200)})
    redis.call('HSET', job, 'status', 'dead', 'kind', 'unknown', 'attempt', 0, 'failures', 0,
      'finished_at', string.format('%d', NOW), 'error', err)
    redis.call('ZADD', P .. ':dead', NOW, id)
    redis.call('EXPIRE', job, tonumber(ARGV[7]))
  elseif status == 'queued' then
    local attempt = redis.call('HINCRBY', job, 'attempt', 1)
    redis.call('HSET', job, 'status', 'running', 'worker', worker,
      'started_at', string.format('%d', NOW), 'lease_until', string.format('%d', NOW + lease))
    redis.call('HDEL', job, 'next_run_at')
    redis.call('ZADD', P .. ':leases', NOW + lease, id)
    local f = redis.call('HMGET', job, 'payload', 'max_attempts', 'failures')
    return {id, attempt, f[1] or '', f[2] or '1', f[3] or '0'}
  end
  -- Any other status (cancelled, dead, running): a stale entry; drop it.
end
return nil
