-- limit_pause.lua: pauses one endpoint for every worker, after it answered 429 with
-- Retry-After (`limits.rs`).
-- ARGV: 1 prefix, 2 endpoint, 3 pause (ms, already capped by the caller; capped again
--       here at 10 min)
-- Returns the pause's end (ms, Redis's clock): the later of the one already set and
-- this one. A state key of the wrong type is replaced.
local state = P .. ':limit:' .. ARGV[2] .. ':state'
local t = key_type(state)
if t ~= 'none' and t ~= 'hash' then redis.call('DEL', state) end
local pause = math.max(0, math.min(finite(ARGV[3]) or 0, 600000))
local old = finite(redis.call('HGET', state, 'paused_until')) or 0
local until_at = math.max(math.min(old, NOW + 600000), NOW + pause)
redis.call('HSET', state, 'paused_until', string.format('%d', until_at))
local ttl = redis.call('PTTL', state)
if ttl < until_at - NOW + 1000 then redis.call('PEXPIRE', state, until_at - NOW + 1000) end
return until_at
