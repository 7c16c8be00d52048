-- webhook_retry.lua: send a failed (or gone) webhook delivery again (mcpq webhooks retry).
-- ARGV: 1 prefix, 2 delivery id
-- Returns the state it had: 'failed' or 'gone' (it is pending now, due at once, with a
-- fresh max_age counted from now), another state (nothing done), or 'unknown'.
-- The attempt counter keeps growing: it is the fencing token of webhook_done.lua.
local did = ARGV[2]
local k = webhook_key(did)
if key_type(k) ~= 'hash' then return 'unknown' end
local state = redis.call('HGET', k, 'state')
if state ~= 'failed' and state ~= 'gone' then return state or 'unknown' end
local now = string.format('%d', NOW)
redis.call('HSET', k, 'state', 'pending', 'since', now)
redis.call('HDEL', k, 'ended_at')
redis.call('PERSIST', k)
own_zset(P .. ':webhooks:due')
own_zset(P .. ':webhooks:failed')
redis.call('ZREM', P .. ':webhooks:failed', did)
redis.call('ZADD', P .. ':webhooks:due', NOW, did)
return state
