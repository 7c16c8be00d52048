-- enqueue.lua: add one job, unless its id or its idempotency key is known already.
-- ARGV: 1 prefix, 2 id, 3 payload (envelope JSON), 4 kind, 5 priority (high|normal|low),
--       6 max_attempts, 7 idempotency key ("" = none), 8 idempotency ttl (s)
-- Returns {1, id} when enqueued; {0, first_id} when the key or the id was seen before.
local id = ARGV[2]
local job = job_key(id)
if ARGV[7] ~= '' then
  local ikey = P .. ':idem:' .. ARGV[7]
  local first = redis.call('GET', ikey)
  if first then return {0, first} end
  redis.call('SET', ikey, id, 'EX', tonumber(ARGV[8]))
end
if redis.call('EXISTS', job) == 1 then return {0, id} end
redis.call('HSET', job, 'status', 'queued', 'payload', ARGV[3], 'kind', ARGV[4],
  'priority', ARGV[5], 'max_attempts', ARGV[6], 'attempt', 0, 'failures', 0,
  'submitted_at', string.format('%d', NOW))
if ARGV[7] ~= '' then redis.call('HSET', job, 'idempotency_key', ARGV[7]) end
redis.call('LPUSH', ready_key(ARGV[5]), id)
return {1, id}
