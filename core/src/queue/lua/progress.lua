-- progress.lua: a running job's newest progress report, kept and announced.
-- ARGV: 1 prefix, 2 job id, 3 the report (JSON, written by the worker)
-- Writes the report into the job's hash (field `progress`) and publishes "ID REPORT" on
-- {ns}:progress. Returns 1, or 0 without a write when the job has no record (it
-- expired) or its key is not a hash (written by something other than mcpq).
local key = job_key(ARGV[2])
if key_type(key) ~= 'hash' then return 0 end
redis.call('HSET', key, 'progress', ARGV[3])
redis.call('PUBLISH', BASE .. ':progress', ARGV[2] .. ' ' .. ARGV[3])
return 1
