-- payload_read.lua: a job's envelope as submitted (its `payload` field), only if it is
-- at most ARGV[3] bytes; read only. Length and value in one step, so a payload made
-- huge by someone else meanwhile is never read.
-- ARGV: 1 prefix, 2 id, 3 most bytes
-- Returns {length, payload or nil}: length 0 when there is none (or the record is not
-- a hash), the payload nil when it is longer than asked.
local job = job_key(ARGV[2])
if key_type(job) ~= 'hash' then return {0, false} end
local n = redis.call('HSTRLEN', job, 'payload')
if n == 0 or n > tonumber(ARGV[3]) then return {n, false} end
return {n, redis.call('HGET', job, 'payload')}
