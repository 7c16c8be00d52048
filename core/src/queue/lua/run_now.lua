-- run_now.lua: queue now a job that waits in {ns}:scheduled: a failed job waiting for
-- its retry's backoff, or a delayed one (`options.run_at`). Its failures so far still
-- count against max_attempts.
-- ARGV: 1 prefix, 2 id, 3 dead ttl (s)
-- Returns 1 when it was queued; 0 when it was not waiting there (already queued,
-- running, ended, unknown), with its status (or '' for none).
local id = ARGV[2]
local sched = P .. ':scheduled'
-- The job's status as stored ('' for none, or a record that is not a hash).
local function status()
  if key_type(job_key(id)) ~= 'hash' then return '' end
  return redis.call('HGET', job_key(id), 'status') or ''
end
if key_type(sched) ~= 'zset' or not redis.call('ZSCORE', sched, id) then return {0, status()} end
-- Read after: a malformed record found waiting is dead-lettered on the way.
if promote_one(sched, id, tonumber(ARGV[3])) == 0 then return {0, status()} end
redis.call('PUBLISH', BASE .. ':wake', 1)
return {1, 'queued'}
