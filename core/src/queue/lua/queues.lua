-- queues.lua: what `mcpq queues` shows. Read only.
-- ARGV: 1 prefix
-- Returns {now, queues}: one entry per queue (the default one, the named ones of
-- {ns}:queues, and paused names), each {name, paused (0|1), queued high, normal, low,
-- oldest age (ms, -1 = none) high, normal, low, started this minute, started the minute
-- before}. Bounded: at most MAX_QUEUES names (the cap enqueue.lua keeps), 3 LLEN and 30
-- entries looked at per queue.
local OLDEST_LOOK = 10
local function llen(key)
  if key_type(key) ~= 'list' then return 0 end
  return redis.call('LLEN', key)
end
local function oldest_age(key) return oldest_queued_age(key, OLDEST_LOOK) end
local names, seen = {'default'}, {default = true}
for _, set in ipairs({P .. ':queues', P .. ':paused'}) do
  if key_type(set) == 'set' then
    for _, q in ipairs(redis.call('SRANDMEMBER', set, 1000)) do
      if not seen[q] and queue_ok(q) then
        seen[q] = true
        table.insert(names, q)
      end
    end
  end
end
local paused = key_type(P .. ':paused') == 'set'
local minute = math.floor(NOW / 60000)
local function started(m, q)
  local h = P .. ':started:' .. string.format('%d', m)
  if key_type(h) ~= 'hash' then return 0 end
  local n = redis.call('HGET', h, q)
  return (n and string.match(n, '^%d+$') and tonumber(n)) or 0
end
local out = {}
for _, q in ipairs(names) do
  local row = {q, (paused and redis.call('SISMEMBER', P .. ':paused', q) == 1) and 1 or 0}
  for _, prio in ipairs({'high', 'normal', 'low'}) do table.insert(row, llen(ready_key(prio, q))) end
  for _, prio in ipairs({'high', 'normal', 'low'}) do table.insert(row, oldest_age(ready_key(prio, q))) end
  table.insert(row, started(minute, q))
  table.insert(row, started(minute - 1, q))
  table.insert(out, row)
end
return {NOW, out}
