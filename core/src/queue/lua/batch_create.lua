-- batch_create.lua: make a batch (before its jobs are enqueued), or find the one a
-- re-run of the same command made. The idempotency key is kept for at most the
-- jobs' own retention (the caller passes the shorter), so a re-run never recreates a
-- job that ran and expired.
-- ARGV: 1 prefix, 2 batch id, 3 total (jobs it will hold), 4 retention (s) of the batch
--       once finished, 5 idempotency key ("" = none), 6 idempotency ttl (s),
--       7 fingerprint of the input, 8 source (what the jobs came from, for listings),
--       9 the batch's callback (JSON, "" = none: announced when the batch finishes),
--       then, for a fan-in job ("" in 10 = none): 10 id, 11 payload (envelope JSON),
--       12 kind, 13 priority, 14 max_attempts, 15 its callback (JSON, "" = none),
--       16 its queue ("" = the default queue)
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
-- Every key this script writes is judged first, so no write can fail half-way.
for k, want in pairs({[P .. ':batches'] = 'zset', [b .. ':jobs'] = 'list'}) do
  local t = key_type(k)
  if t ~= 'none' and t ~= want then
    return redis.error_reply(k .. ' is a ' .. t .. ', not a ' .. want .. ' (written by something other than mcpq?)')
  end
end
if key ~= '' and key_type(ikey) ~= 'none' and key_type(ikey) ~= 'string' then
  return redis.error_reply(ikey .. ' is not a string (written by something other than mcpq?)')
end
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
if (ARGV[10] or '') ~= '' and redis.call('EXISTS', job_key(ARGV[10])) == 1 then return {3, ARGV[10]} end
local now = string.format('%d', NOW)
local final = ARGV[10] or ''
redis.call('HSET', b, 'total', total, 'pending', total, 'succeeded', 0, 'dead', 0,
  'cancelled', 0, 'created_at', now, 'ttl', ttl, 'fingerprint', fingerprint,
  'source', source, 'then', final)
if ARGV[9] ~= '' then redis.call('HSET', b, 'callback', ARGV[9]) end
if key ~= '' then
  redis.call('SET', ikey, id, 'EX', idem_ttl)
  redis.call('HSET', b, 'idempotency_key', key)
end
redis.call('ZADD', P .. ':batches', NOW, id)
-- The index keeps the batches made within the retention (after the first write, which
-- must be one an out-of-memory Redis refuses: HSET above).
redis.call('ZREMRANGEBYSCORE', P .. ':batches', '-inf', NOW - ttl * 1000)
if final ~= '' then
  local job = job_key(final)
  redis.call('HSET', job, 'status', 'waiting', 'payload', ARGV[11], 'kind', ARGV[12],
    'priority', ARGV[13], 'max_attempts', ARGV[14], 'attempt', 0, 'failures', 0,
    'submitted_at', now, 'batch_of', id)
  if (ARGV[15] or '') ~= '' then redis.call('HSET', job, 'callback', ARGV[15]) end
  if (ARGV[16] or '') ~= '' then
    redis.call('HSET', job, 'queue', ARGV[16])
    -- Listed like any queue a job was submitted to (past the cap only by this one).
    local t = key_type(P .. ':queues')
    if t == 'none' or t == 'set' then redis.call('SADD', P .. ':queues', ARGV[16]) end
  end
  redis.call('ZADD', P .. ':jobs', NOW, final)
end
if total == 0 then batch_done(b) end
return {1, id}
