-- finish.lua: store the outcomes of attempts, each only if its attempt still holds its
-- job. Many outcomes per call (queue/finish.rs batches what a worker's jobs end at
-- about the same time); each is judged and written alone, as if by a call of its own.
-- ARGV: 1 prefix, 2 result ttl (s), 3 dead ttl (s), 4 keep the payload after success
--       (1) or not (0), then 5 per outcome:
--       id, attempt (the fencing token), outcome (succeeded | retry | dead | release),
--       body (the result JSON for succeeded, the error JSON otherwise, "" for release),
--       retry delay (ms)
-- Returns one answer per outcome, in order: 'ok'; or 'stale:<status>:<attempt>' when
-- another attempt or a cancel owns the job now (then nothing is written but the job's
-- stale_writes counter); or 'buried:<why>' when the record was found malformed (someone
-- else wrote into it while the job ran): it is dead-lettered as invalid_job and the
-- outcome dropped. Each record is judged before any write to it, so no write can fail
-- half-way; the first write of the call is an HSET (refused when Redis is out of
-- memory, before anything was written).
-- Compact records: a job that succeeds at its first attempt keeps no attempt history
-- list (nor is the list's type judged then: nothing is written to it) (its one attempt is the record's own worker, started_at and finished_at;
-- results.rs reads it so), and its payload is dropped unless ARGV[4] asks to keep it.
local result_ttl, dead_ttl, keep_payload = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4] == '1'
local now = string.format('%d', NOW)
local totals = {}
local function count(field) totals[field] = (totals[field] or 0) + 1 end

-- The fields read per outcome, after common.lua's JUDGED ones (f[8] on).
local READ = {'status', 'worker', 'started_at', 'callback', 'batch', 'idempotency_key'}
-- Ids whose lease ends: one ZREM at the end of the call.
local unleased = {}
local function finish_one(id, attempt, outcome, body, delay)
  local job = job_key(id)
  local f, problem = judged_record(id, READ)
  if f and not f[8] then return 'stale:expired:0' end
  if not problem and (outcome ~= 'succeeded' or attempt ~= '1') then
    -- Only a first attempt's success leaves the history alone; the others write it.
    local a = key_type(job .. ':attempts')
    if a ~= 'none' and a ~= 'list' then problem = 'the attempt history is a ' .. a .. ', not a list' end
  end
  if problem then
    bury(id, problem .. ' (found when attempt ' .. attempt .. ' stored its outcome)', dead_ttl)
    return 'buried:' .. problem
  end
  -- JUDGED: 1 priority, 2 attempt, 7 queue; READ: 8 status, 9 worker, 10 started_at,
  -- 11 callback, 12 batch.
  if f[8] ~= 'running' or f[2] ~= attempt then
    redis.call('HINCRBY', job, 'stale_writes', 1)
    local now_status = string.gsub(string.sub(tostring(f[8]), 1, 50), '[:\r\n]', '_')
    return 'stale:' .. now_status .. ':' .. tostring(f[2] or 0)
  end
  local known = {callback = f[11], batch = f[12]}
  local history = job .. ':attempts'
  if outcome == 'succeeded' then
    redis.call('HSET', job, 'status', 'succeeded', 'result', body, 'finished_at', now)
    -- A job with an idempotency key keeps it: a later submit with the same key is
    -- compared with it (the HTTP API answers 409 to a different job).
    if not keep_payload and not f[13] then
      redis.call('HDEL', job, 'lease_until', 'payload')
    else
      redis.call('HDEL', job, 'lease_until')
    end
    if attempt ~= '1' then
      redis.call('RPUSH', history, attempt_record(f[2], f[9], f[10], 'succeeded', nil))
      redis.call('EXPIRE', history, result_ttl)
    end
    redis.call('EXPIRE', job, result_ttl)
    job_ended(id, 'succeeded', known)
    count('succeeded')
  elseif outcome == 'retry' then
    local due = NOW + tonumber(delay)
    redis.call('HSET', job, 'status', 'failed', 'error', body, 'next_run_at', string.format('%d', due))
    redis.call('HDEL', job, 'lease_until')
    redis.call('RPUSH', history, attempt_record(f[2], f[9], f[10], 'failed', body))
    redis.call('HINCRBY', job, 'failures', 1)
    redis.call('ZADD', P .. ':scheduled', due, id)
    count('retried')
  elseif outcome == 'dead' then
    redis.call('HSET', job, 'status', 'dead', 'error', body, 'finished_at', now)
    redis.call('HDEL', job, 'lease_until')
    redis.call('RPUSH', history, attempt_record(f[2], f[9], f[10], 'dead', body))
    redis.call('HINCRBY', job, 'failures', 1)
    redis.call('ZADD', P .. ':dead', NOW, id)
    redis.call('EXPIRE', job, dead_ttl)
    redis.call('EXPIRE', history, dead_ttl)
    job_ended(id, 'dead', known)
    count('dead')
  else
    local rk = ready_key(f[1], f[7])
    local t = key_type(rk)
    if t ~= 'none' and t ~= 'list' then redis.call('RENAME', rk, rk .. ':corrupt') end
    -- release: cut off by the worker's shutdown, not the job's fault, so not counted; it
    -- goes to the front of its queue so that another worker starts it at once.
    redis.call('HSET', job, 'status', 'queued')
    redis.call('HDEL', job, 'lease_until')
    redis.call('RPUSH', history, attempt_record(f[2], f[9], f[10], 'released', nil))
    redis.call('RPUSH', rk, id)
    count('released')
  end
  table.insert(unleased, id)
  return 'ok'
end

-- A caller's mistake is refused before anything is written.
local OUTCOMES = {succeeded = true, retry = true, dead = true, release = true}
for i = 5, #ARGV, 5 do
  if not OUTCOMES[ARGV[i + 2]] then
    return redis.error_reply('finish.lua: unknown outcome ' .. ARGV[i + 2])
  end
end
-- Keys every outcome may write, made the right type before anything is written (one
-- someone else replaced is set aside as KEY:corrupt), so no outcome fails half-way.
own_zset(P .. ':leases')
own_zset(P .. ':dead')
own_zset(P .. ':scheduled')
local out = {}
ended_lines = {}
for i = 5, #ARGV, 5 do
  table.insert(out, finish_one(ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]))
end
chunked('ZREM', P .. ':leases', unleased, 500)
flush_ended()
add_totals(totals)
if totals.released then redis.call('PUBLISH', BASE .. ':wake', 'released') end
return out
