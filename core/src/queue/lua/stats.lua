-- stats.lua: the queue's counts by state and the age of the oldest queued job. Read
-- only: it writes nothing, so no out-of-memory rule applies.
-- ARGV: 1 prefix
-- Returns a flat list of integers:
--   1-3   queued ids in ready:high, ready:normal, ready:low (LLEN)
--   4-6   age (ms) of the oldest queued job of each of them, -1 when none was found
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
local function oldest_age(key)
  if key_type(key) ~= 'list' then return -1 end
  local ids = redis.call('LRANGE', key, -OLDEST_LOOK, -1)
  for i = #ids, 1, -1 do
    local job = job_key(ids[i])
    if entry_name(ids[i]) == ids[i] and key_type(job) == 'hash' then
      local f = redis.call('HMGET', job, 'status', 'submitted_at')
      local at = f[2] and string.match(f[2], '^%d+$') and tonumber(f[2])
      if f[1] == 'queued' and at then
        if at > NOW then return 0 end
        return NOW - at
      end
    end
  end
  return -1
end
local out = {}
local ready = {P .. ':ready:high', P .. ':ready:normal', P .. ':ready:low'}
for i = 1, 3 do out[i] = count(ready[i], 'list', 'LLEN') end
for i = 1, 3 do out[3 + i] = oldest_age(ready[i]) end
out[7] = count(P .. ':scheduled', 'zset', 'ZCARD')
out[8] = count(P .. ':leases', 'zset', 'ZCARD')
out[9] = count(P .. ':suspects', 'list', 'LLEN')
out[10] = count(P .. ':dead', 'zset', 'ZCARD')
out[11] = NOW
for _, key in ipairs(wrong) do table.insert(out, key) end
return out
