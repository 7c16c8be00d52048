-- batch_create.lua: make a batch (before its jobs are enqueued), or find the one a
-- re-run of the same command made.
-- ARGV: 1 prefix, 2 batch id, 3 total (jobs it will hold), 4 retention (s) of the batch
--       once finished, 5 idempotency key ("" = none), 6 idempotency ttl (s),
--       7 fingerprint of the input, 8 source (what the jobs came from, for listings),
--       then, for a fan-in job ("" in 9 = none): 9 id, 10 payload (envelope JSON),
--       11 kind, 12 priority, 13 max_attempts
-- Returns {code, batch id}: 1 made now; 0 the key names a batch made from the same input
-- (a re-run: enqueue what is missing into that one); 2 the key names a batch made from
-- other input (refused; nothing written); 3 a batch with this id exists (refused).
-- The batch hash {ns}:batch:ID counts its jobs: total, pending (not ended yet),
-- succeeded, dead, cancelled. The fan-in job is stored with status 'waiting' and no
-- queue entry; common.lua's job_ended queues it when pending reaches 0.
local id, total, ttl, key, idem_ttl = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])
local fingerprint, source = ARGV[7], ARGV[8]
local b = P .. ':batch:' .. id
local ikey = P .. ':batch-idem:' .. key
if key ~= '' then
  local first = redis.call('GET', ikey)
  if first then
    if redis.call('HGET', P .. ':batch:' .. first, 'fingerprint') == fingerprint then
      return {0, first}
    end
    return {2, first}
  end
end
if redis.call('EXISTS', b) == 1 then return {3, id} end
local now = string.format('%d', NOW)
local final = ARGV[9] or ''
redis.call('HSET', b, 'total', total, 'pending', total, 'succeeded', 0, 'dead', 0,
  'cancelled', 0, 'created_at', now, 'ttl', ttl, 'fingerprint', fingerprint,
  'source', source, 'then', final)
if key ~= '' then
  redis.call('SET', ikey, id, 'EX', idem_ttl)
  redis.call('HSET', b, 'idempotency_key', key)
end
redis.call('ZADD', P .. ':batches', NOW, id)
if final ~= '' then
  local job = job_key(final)
  if redis.call('EXISTS', job) == 1 then
    redis.call('DEL', b)
    redis.call('ZREM', P .. ':batches', id)
    if key ~= '' then redis.call('DEL', ikey) end
    return {3, final}
  end
  redis.call('HSET', job, 'status', 'waiting', 'payload', ARGV[10], 'kind', ARGV[11],
    'priority', ARGV[12], 'max_attempts', ARGV[13], 'attempt', 0, 'failures', 0,
    'submitted_at', now, 'batch_of', id)
end
if total == 0 then
  redis.call('HSET', b, 'finished_at', now)
  if final ~= '' then
    redis.call('HSET', job_key(final), 'status', 'queued')
    redis.call('LPUSH', ready_key(ARGV[12]), final)
  end
end
return {1, id}
