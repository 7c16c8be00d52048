-- schedule_mark.lua: record that cron schedule NAME fired its tick TICK as job ID.
-- ARGV: 1 prefix, 2 schedule name, 3 tick (ms since the epoch), 4 job id
-- Returns 1 when recorded, 0 when a tick as new or newer was recorded already (another
-- worker got there first: the record only moves forward).
-- {ns}:schedules is a hash, one field per schedule: {"tick": ms, "job": id,
-- "fired_at": ms}. A field that is not such JSON (written by someone else) is
-- overwritten; a key of another type is set aside as {ns}:schedules:corrupt, so a
-- hostile entry never stops the schedules.
local h = P .. ':schedules'
local name, tick, id = ARGV[2], tonumber(ARGV[3]), ARGV[4]
local t = key_type(h)
if t ~= 'none' and t ~= 'hash' then redis.call('RENAME', h, h .. ':corrupt') end
local old = redis.call('HGET', h, name)
if old and #old <= 1000 then
  local ok, rec = pcall(cjson.decode, old)
  -- A recorded tick ahead of Redis's clock by more than a minute (a worker's clock that
  -- jumped, someone else's write, NaN) is not kept: it would silence the schedule.
  if ok and type(rec) == 'table' and type(rec.tick) == 'number' and rec.tick >= tick
    and rec.tick <= NOW + 60000 then
    return 0
  end
end
redis.call('HSET', h, name, cjson.encode({tick = tick, job = id, fired_at = NOW}))
return 1
