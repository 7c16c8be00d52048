-- limit_acquire.lua: one try to pass the cluster-wide limits of one endpoint (an MCP
-- server or the model API), all checked and taken in one step (`limits.rs`).
-- ARGV: 1 prefix, 2 endpoint ("server:NAME" or "llm"), 3 rate count (0: no rate),
--       4 rate window (ms), 5 max concurrent (0: no cap), 6 holder (unique per call),
--       7 slot lease (ms), 8 token count per period (0: no token limit),
--       9 token period (ms)
-- Keys: {ns}:limit:ENDPOINT:calls (sorted set: holder -> when it was admitted, ms),
--       {ns}:limit:ENDPOINT:holders (sorted set: holder -> its slot's expiry, ms),
--       {ns}:limit:ENDPOINT:state (hash: paused_until, tokens_tat; ms, Redis's clock).
-- Returns {1, 0, "ok", resets} when admitted (the call is counted and, with a cap, its
-- slot taken until released or expired), or {0, wait ms, reason, resets} when not:
-- reason "paused" (a 429's Retry-After), "tokens", "concurrency" or "rate"; the wait is
-- when that limit frees up at the earliest (for "concurrency", when the oldest slot
-- expires: a release may come sooner). `resets`: keys of the wrong type (written by
-- something else) deleted before the check; a field that is not a number reads as 0.
-- Only clean-up is written unless the call is admitted (expired or impossible entries
-- trimmed, keys of the wrong type deleted).
local base = P .. ':limit:' .. ARGV[2]
local calls, holders, state = base .. ':calls', base .. ':holders', base .. ':state'
local rate_count, window = tonumber(ARGV[3]), tonumber(ARGV[4])
local max_conc, holder, lease = tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7])
local tokens_count, tokens_period = tonumber(ARGV[8]), tonumber(ARGV[9])
-- Bounds on what a hostile state may ask a caller to wait (limits.rs says the same).
local MAX_PAUSE = 600000
local resets = 0
local function ensure(key, want)
  local t = key_type(key)
  if t ~= 'none' and t ~= want then
    redis.call('DEL', key)
    resets = resets + 1
  end
end
ensure(calls, 'zset')
ensure(holders, 'zset')
ensure(state, 'hash')
local function extend(key, ms)
  local ttl = redis.call('PTTL', key)
  if ttl < ms then redis.call('PEXPIRE', key, ms) end
end
local st = redis.call('HMGET', state, 'paused_until', 'tokens_tat')
local paused = finite(st[1]) or 0
if paused > NOW + MAX_PAUSE then
  -- Never written by limit_pause.lua, which caps it: reset, not obeyed.
  redis.call('HDEL', state, 'paused_until')
  resets = resets + 1
elseif paused > NOW then
  return {0, paused - NOW, 'paused', resets}
end
if tokens_count > 0 then
  -- A token bucket as GCRA: tokens_tat is when the bucket is full again; it holds
  -- tokens while that is less than one period away (limit_debit.lua moves it on).
  local tat = finite(st[2]) or 0
  if tat > NOW + 10 * tokens_period then
    -- Past limit_debit.lua's cap: not ours (or a shorter period now): reset.
    redis.call('HDEL', state, 'tokens_tat')
    resets = resets + 1
  elseif tat >= NOW + tokens_period then
    return {0, math.floor(tat - NOW - tokens_period) + 1, 'tokens', resets}
  end
end
if max_conc > 0 then
  -- Expired slots go, and so do slots expiring further ahead than any lease asks
  -- (written by someone else, or left by a Redis clock that jumped back): they would
  -- hold the endpoint shut for that long.
  redis.call('ZREMRANGEBYSCORE', holders, '-inf', NOW)
  redis.call('ZREMRANGEBYSCORE', holders, '(' .. string.format('%d', NOW + 10 * lease), '+inf')
  local held = redis.call('ZCARD', holders)
  if held >= max_conc then
    local first = redis.call('ZRANGE', holders, 0, 0, 'WITHSCORES')
    local wait = (tonumber(first[2]) or NOW) - NOW
    return {0, math.max(1, math.min(wait, lease)), 'concurrency', resets}
  end
end
if rate_count > 0 then
  -- A sliding window: the calls admitted within the last `window` ms.
  redis.call('ZREMRANGEBYSCORE', calls, '-inf', NOW - window)
  -- A call is counted at the time it was admitted, never later than now: one from the
  -- future (someone else's, or a clock that jumped back) is dropped, not waited for.
  redis.call('ZREMRANGEBYSCORE', calls, '(' .. string.format('%d', NOW), '+inf')
  local n = redis.call('ZCARD', calls)
  if n >= rate_count then
    -- The call that must leave the window before this one fits (n may exceed the
    -- count when a worker with a higher rate shares the endpoint).
    local nth = redis.call('ZRANGE', calls, n - rate_count, n - rate_count, 'WITHSCORES')
    local wait = (tonumber(nth[2]) or NOW) + window - NOW + 1
    return {0, math.max(1, math.min(wait, window)), 'rate', resets}
  end
  redis.call('ZADD', calls, NOW, holder)
  extend(calls, window)
end
if max_conc > 0 then
  redis.call('ZADD', holders, NOW + lease, holder)
  extend(holders, lease)
end
return {1, 0, 'ok', resets}
