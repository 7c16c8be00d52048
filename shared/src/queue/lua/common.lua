-- common.lua: prepended to every script (see scripts.rs). Not a script on its own.
-- P is the namespace prefix "{ns}" (ARGV[1] of every script); NOW is Redis's clock in ms.
local P = ARGV[1]
local t = redis.call('TIME')
local NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function job_key(id) return P .. ':job:' .. id end
local function ready_key(priority) return P .. ':ready:' .. (priority or 'normal') end
-- One attempt's history entry. `err` is already JSON (or nil).
local function attempt_record(attempt, worker, started, outcome, err)
  local rec = '{"attempt":' .. tostring(attempt or 0)
    .. ',"worker":' .. cjson.encode(worker or '')
    .. ',"started_at":' .. tostring(started or 0)
    .. ',"ended_at":' .. string.format('%d', NOW)
    .. ',"outcome":"' .. outcome .. '"'
  if err and err ~= '' then rec = rec .. ',"error":' .. err end
  return rec .. '}'
end
