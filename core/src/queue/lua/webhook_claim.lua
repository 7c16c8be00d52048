-- webhook_claim.lua: take up to `max` due webhook deliveries for one worker to send.
-- ARGV: 1 prefix, 2 max deliveries, 3 lease (ms), 4 retention (s) of ended deliveries,
--       5 worker name, 6.. names of serial endpoints (one delivery at a time each)
-- Returns a list of {did, attempt, type, subject, status, callback, created_at}, all
-- strings; attempt is the delivery's attempt number, its fencing token for
-- webhook_done.lua.
-- A claimed delivery stays in {ns}:webhooks:due, its due time pushed a lease ahead: a
-- worker that dies while sending loses nothing, the delivery comes back when the lease
-- is over (so a receiver may get it twice: at-least-once, deduplicated on its id). A
-- delivery to a serial endpoint is claimed only if it can take the endpoint's token
-- {ns}:webhooks:busy:NAME (held for the lease, released by webhook_done.lua); one that
-- cannot waits a second. Entries whose hash is gone or not pending are dropped.
-- Work per call is bounded: at most max + 100 due entries are looked at.
local max, lease, retention = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local due_key, index, failed = P .. ':webhooks:due', P .. ':webhooks', P .. ':webhooks:failed'
-- The due set is what there is to send; the listing and the failed set are only
-- trimmed here: one of those overwritten by someone else is set aside at the end
-- (own_zset), never a reason to stop sending.
local t = key_type(due_key)
if t ~= 'none' and t ~= 'zset' then
  return redis.error_reply(due_key .. ' is a ' .. t .. ', not a sorted set (written by something other than mcpq?)')
end
local serial = {}
for i = 6, #ARGV do serial[ARGV[i]] = true end
local due = redis.call('ZRANGEBYSCORE', due_key, '-inf', NOW, 'LIMIT', 0, max + 100)
local out, stale = {}, {}
for _, did in ipairs(due) do
  if #out >= max then break end
  local k = webhook_key(did)
  local f = (key_type(k) == 'hash') and redis.call('HMGET', k, 'state', 'attempts', 'type',
    'subject', 'status', 'callback', 'endpoint', 'created_at')
  if not f or f[1] ~= 'pending' then
    table.insert(stale, did)
  else
    local free = true
    if f[7] and f[7] ~= '' and serial[f[7]] then
      local busy = P .. ':webhooks:busy:' .. f[7]
      local t = key_type(busy)
      if t ~= 'none' and t ~= 'string' then
        free = false -- someone else's key: the endpoint waits until it is removed
      else
        free = redis.call('SET', busy, did, 'NX', 'PX', lease) ~= false
      end
      if not free then redis.call('ZADD', due_key, NOW + 1000, did) end
    end
    if free then
      local a = f[2]
      local attempt = 1
      if a and #a <= 9 and string.match(a, '^%d+$') then attempt = tonumber(a) + 1 end
      redis.call('HSET', k, 'attempts', attempt, 'claimed_by', ARGV[5],
        'claimed_at', string.format('%d', NOW))
      redis.call('ZADD', due_key, NOW + lease, did)
      table.insert(out, {did, tostring(attempt), f[3] or '', f[4] or '', f[5] or '',
        f[6] or '', f[8] or '0'})
    end
  end
end
-- Removals last: the first write of a script must be one an out-of-memory Redis
-- refuses (SET, HSET, ZADD above), or it could go on writing past maxmemory.
for _, did in ipairs(stale) do redis.call('ZREM', due_key, did) end
-- The listing and the failed set keep what the retention keeps.
own_zset(index)
own_zset(failed)
redis.call('ZREMRANGEBYSCORE', index, '-inf', NOW - retention * 1000)
redis.call('ZREMRANGEBYSCORE', failed, '-inf', NOW - retention * 1000)
return out
