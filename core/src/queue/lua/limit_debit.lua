-- limit_debit.lua: charges the tokens a model answer used to the endpoint's token
-- bucket (`limits.rs`), after the fact: the bucket may be overdrawn, and then
-- limit_acquire.lua makes the next requests wait until it has refilled.
-- ARGV: 1 prefix, 2 endpoint, 3 tokens used, 4 token count per period, 5 period (ms)
-- Returns the bucket's new tokens_tat (ms). The debt is capped at 10 periods, so a
-- hostile usage report cannot stop the endpoint for longer. A state key of the wrong
-- type is replaced; a tokens_tat that is not a number reads as 0 (a full bucket).
local state = P .. ':limit:' .. ARGV[2] .. ':state'
local t = key_type(state)
if t ~= 'none' and t ~= 'hash' then redis.call('DEL', state) end
local used, count, period = finite(ARGV[3]) or 0, tonumber(ARGV[4]), tonumber(ARGV[5])
local tat = finite(redis.call('HGET', state, 'tokens_tat')) or 0
tat = math.max(tat, NOW) + used * (period / count)
tat = math.min(tat, NOW + 10 * period)
redis.call('HSET', state, 'tokens_tat', string.format('%d', math.ceil(tat)))
local ttl = redis.call('PTTL', state)
local need = math.ceil(tat - NOW) + period
if ttl < need then redis.call('PEXPIRE', state, need) end
return math.ceil(tat)
