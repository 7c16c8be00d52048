-- heartbeat.lua: one worker's heartbeat into {ns}:workers, then a bounded prune of the
-- entries of workers that stopped beating.
-- ARGV: 1 prefix, 2 worker id, 3 the worker's info (JSON, written by the worker),
--       4 dead after (ms), 5 ttl of the hash (s), 6 prune cursor (an HSCAN cursor the
--       previous call returned; "0" starts over)
-- A field's value is "MS INFO": Redis's clock at the heartbeat (ms), one space, the info.
-- Returns {next prune cursor, entries pruned}; an error, before any write, when
-- {ns}:workers is not a hash.
-- Bounded: each call looks at one HSCAN page (about 100 entries) and goes on from
-- there at the next call, so a fleet of any size is swept in turns. An entry whose
-- value does not start with a time (written by someone else) is pruned too.
local key = P .. ':workers'
local t = key_type(key)
if t ~= 'none' and t ~= 'hash' then
  return redis.error_reply(key .. ' is a ' .. t .. ', not a hash (written by something other than mcpq?)')
end
local dead_after = tonumber(ARGV[4])
-- The first write is HSET, which an out-of-memory Redis refuses.
redis.call('HSET', key, ARGV[2], string.format('%d', NOW) .. ' ' .. ARGV[3])
redis.call('EXPIRE', key, tonumber(ARGV[5]))
local page = redis.call('HSCAN', key, ARGV[6], 'COUNT', 100)
local fields, pruned = page[2], 0
for i = 1, #fields, 2 do
  local at = tonumber(string.match(fields[i + 1], '^(%d+) ') or '')
  if not at or at < NOW - dead_after then
    redis.call('HDEL', key, fields[i])
    pruned = pruned + 1
  end
end
return {page[1], pruned}
