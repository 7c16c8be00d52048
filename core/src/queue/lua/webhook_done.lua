-- webhook_done.lua: store what one attempt to send a webhook delivery came to.
-- ARGV: 1 prefix, 2 delivery id, 3 attempt (from webhook_claim.lua), 4 outcome:
--         delivered (2xx) | gone (410: the receiver wants no more) | retry | failed
--       5 retry delay (ms, computed by the caller: backoff with full jitter),
--       6 max age (ms): a retry due later than this after `since` fails instead,
--       7 retention (s) of an ended delivery, 8 what the receiver answered or why it
--       could not be reached (short text), 9 HTTP status ("" when none)
-- Returns the delivery's state now: 'delivered', 'gone', 'failed', 'pending' (a retry
-- is due), or 'stale' when nothing was written: no such delivery, it is not pending
-- (another worker ended it), or a retry from an attempt that is no longer the latest
-- (its lease ran out and another worker took it over). A late 2xx from an older
-- attempt still ends the delivery: it was delivered.
local did, outcome = ARGV[2], ARGV[4]
local k = webhook_key(did)
if key_type(k) ~= 'hash' then return 'stale' end
local f = redis.call('HMGET', k, 'state', 'attempts', 'since', 'endpoint')
if f[1] ~= 'pending' then return 'stale' end
if outcome == 'retry' and f[2] ~= ARGV[3] then return 'stale' end
local since = NOW
if f[3] and #f[3] <= 15 and string.match(f[3], '^%d+$') then since = tonumber(f[3]) end
local due = NOW + tonumber(ARGV[5])
if outcome == 'retry' and due - since > tonumber(ARGV[6]) then outcome = 'failed' end
local now = string.format('%d', NOW)
-- First write: HSET, which an out-of-memory Redis refuses before anything is changed.
redis.call('HSET', k, 'last_attempt_at', now, 'last_response', ARGV[8], 'last_status', ARGV[9])
if f[4] and f[4] ~= '' then
  local busy = P .. ':webhooks:busy:' .. f[4]
  if key_type(busy) == 'string' and redis.call('GET', busy) == did then redis.call('DEL', busy) end
end
own_zset(P .. ':webhooks:due')
if outcome == 'retry' then
  redis.call('HSET', k, 'next_at', string.format('%d', due))
  redis.call('ZADD', P .. ':webhooks:due', due, did)
  return 'pending'
end
if outcome ~= 'delivered' and outcome ~= 'gone' and outcome ~= 'failed' then
  return redis.error_reply('webhook_done.lua: unknown outcome ' .. outcome)
end
redis.call('ZREM', P .. ':webhooks:due', did)
redis.call('HSET', k, 'state', outcome, 'ended_at', now)
redis.call('HDEL', k, 'next_at')
if outcome == 'failed' then
  own_zset(P .. ':webhooks:failed')
  redis.call('ZADD', P .. ':webhooks:failed', NOW, did)
end
redis.call('EXPIRE', k, tonumber(ARGV[7]))
return outcome
