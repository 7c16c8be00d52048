-- stats.lua: the queue's counts by state and the age of the oldest queued job. Read
-- only: it writes nothing, so no out-of-memory rule applies.
-- ARGV: 1 prefix
-- Returns a flat list of integers:
--   1-3   queued ids at high, normal, low priority, over every queue (LLEN)
--   4-6   age (ms) of the oldest queued job of each priority, -1 when none was found
--   7     scheduled: delayed jobs and retries (ZCARD scheduled), 8 running (ZCARD leases),
--   9     suspects (LLEN suspects), 10 dead (ZCARD dead)
--   11    Redis's clock (ms)
--   then the names of the keys of the wrong type (written by someone else), counted 0.
-- Bounded: one O(1) count per key, and for each ready list at most OLDEST_LOOK entries
-- read from its tail (the end workers pop: ids are LPUSHed, so the oldest is there) to
-- find one whose record is still queued (a cancelled job's entry stays until a fetch
-- drops it). A job's age counts from its submit (`submitted_at`), so a retried job
-- counts its earlier runs too.
local OLDEST_LOOK = 10
local wrong = {}
local function count(key, want, cmd)
  local t = key_type(key)
  if t == 'none' then return 0 end
  if t ~= want then
    table.insert(wrong, key)
    return 0
  end
  return redis.call(cmd, key)
end
local function oldest_age(key) return oldest_queued_age(key, OLDEST_LOOK) end
local out = {}
-- Every queue counts: the default one and the named ones of {ns}:queues (at most
-- queue::MAX_QUEUES of them, so at most 3 x that many lists).
local names = {'default'}
if key_type(P .. ':queues') == 'set' then
  for _, q in ipairs(redis.call('SRANDMEMBER', P .. ':queues', 1000)) do
    if q ~= 'default' and queue_ok(q) then table.insert(names, q) end
  end
elseif key_type(P .. ':queues') ~= 'none' then
  table.insert(wrong, P .. ':queues')
end
for i, prio in ipairs({'high', 'normal', 'low'}) do
  out[i], out[3 + i] = 0, -1
  for _, q in ipairs(names) do
    local key = ready_key(prio, q)
    out[i] = out[i] + count(key, 'list', 'LLEN')
    out[3 + i] = math.max(out[3 + i], oldest_age(key))
  end
end
out[7] = count(P .. ':scheduled', 'zset', 'ZCARD')
out[8] = count(P .. ':leases', 'zset', 'ZCARD')
out[9] = count(P .. ':suspects', 'list', 'LLEN')
out[10] = count(P .. ':dead', 'zset', 'ZCARD')
out[11] = NOW
for _, key in ipairs(wrong) do table.insert(out, key) end
return out
