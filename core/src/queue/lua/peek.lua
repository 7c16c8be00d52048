-- peek.lua: would a fetch find work in this partition? Read only, O(queues).
-- ARGV: 1 prefix, then the names of the queues the worker serves.
-- Returns 1 when a suspect waits, a served queue that is not paused has a job queued at
-- any priority, or a retry or delayed job is due; else 0. Used by workers fetching
-- across partitions (fetch.rs) to skip the empty ones in one round trip.
if key_type(P .. ':suspects') == 'list' and redis.call('LLEN', P .. ':suspects') > 0 then
  return 1
end
local sched = P .. ':scheduled'
if key_type(sched) == 'zset'
  and #redis.call('ZRANGEBYSCORE', sched, '-inf', NOW, 'LIMIT', 0, 1) > 0 then
  return 1
end
local paused = P .. ':paused'
local any_paused = key_type(paused) == 'set'
for i = 2, #ARGV do
  local name = ARGV[i]
  if not (any_paused and redis.call('SISMEMBER', paused, name) == 1) then
    for priority, _ in pairs(PRIORITIES) do
      local key = ready_key(priority, name)
      if key_type(key) == 'list' and redis.call('LLEN', key) > 0 then return 1 end
    end
  end
end
return 0
