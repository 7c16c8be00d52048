-- limit_usage.lua: what one endpoint's limits hold now, read only (`limits.rs`, for the
-- dashboard). Writes nothing: entries limit_acquire.lua would trim are only not counted.
-- ARGV: 1 prefix, 2 endpoint, 3 rate window (ms, 0: no rate), 4 token period (ms, 0: no
--       token limit), 5 token count per period
-- Returns {calls admitted in the window, concurrency slots held, ms the endpoint stays
-- paused (0: none), tokens of the bucket in use}. A key of the wrong type counts 0.
local base = P .. ':limit:' .. ARGV[2]
local calls, holders, state = base .. ':calls', base .. ':holders', base .. ':state'
local window, period, count = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local MAX_PAUSE = 600000
local now = string.format('%d', NOW)
local in_window, held, paused_ms, tokens_used = 0, 0, 0, 0
if window > 0 and key_type(calls) == 'zset' then
  in_window = redis.call('ZCOUNT', calls, string.format('(%d', NOW - window), now)
end
if key_type(holders) == 'zset' then
  held = redis.call('ZCOUNT', holders, '(' .. now, '+inf')
end
if key_type(state) == 'hash' then
  local st = redis.call('HMGET', state, 'paused_until', 'tokens_tat')
  local paused = finite(st[1]) or 0
  if paused > NOW and paused <= NOW + MAX_PAUSE then paused_ms = math.floor(paused - NOW) end
  local tat = finite(st[2]) or 0
  if period > 0 and tat > NOW and tat <= NOW + 10 * period then
    -- GCRA: the bucket is full again at tat; each token takes period / count to refill.
    tokens_used = math.floor((tat - NOW) * count / period)
  end
end
return {in_window, held, paused_ms, tokens_used}
