-- fetch.lua: lease up to `max` queued jobs to a worker.
-- ARGV: 1 prefix, 2 worker name, 3 lease (ms), 4 pick (0 <= pick < sum of weights),
--       5 weight of high, 6 weight of normal, 7 weight of low, 8 dead ttl (s),
--       9 max jobs, 10 stride (coprime with the sum of the weights),
--       11 alone: 1 when the worker runs no job now (it may take a suspect)
-- Returns {suspects waiting, jobs}, jobs a list of {id, attempt, payload,
-- max_attempts, failures, alone} (empty when nothing is ready); alone = 1 for a
-- suspect, which the worker must run with no other job beside it.
-- Suspects are jobs whose worker died under them (rescue.lua puts them in
-- {ns}:suspects): nobody knows which of a dead worker's jobs killed it, so each runs
-- alone once, on an idle worker; a worker-killing job then takes only itself down and
-- the innocent ones finish. An idle worker takes the oldest suspect before anything
-- else; a busy one never does (it learns how many wait, and drains to take one).
-- Job j of the batch draws pick + j x stride (mod the sum): within every sum-of-weights
-- consecutive draws each priority comes first exactly its weight's times.
-- Work per call is bounded: at most 100 due retries moved, at most `max` jobs and 100
-- stale entries popped, whatever the queue length (apalis-redis unpacked the whole due
-- set).
local worker, lease = ARGV[2], tonumber(ARGV[3])
local dead_ttl = tonumber(ARGV[8])
local alone = ARGV[11] == '1'
-- 1. Retries whose backoff is over and delayed jobs whose time has come go back to
--    the front of their queue (common.lua's promote_due; the rescuer tick does the same
--    in bigger chunks, so a long due backlog never rests on fetches alone).
promote_due(100, dead_ttl)
local out, got, skipped = {}, 0, 0
-- Judges the popped entry `id` alone and leases it if it is a queued job: true when
-- leased. A malformed entry is dead-lettered (never run), any other status is a stale
-- entry (dropped).
local function take(id, suspect)
  local job = job_key(id)
  local problem = record_problem(id)
  local status = (not problem) and redis.call('HGET', job, 'status')
  if not problem and not status then
    problem = 'the job record has no status (written by something other than mcpq?)'
  end
  if problem then
    bury(id, problem, dead_ttl)
    skipped = skipped + 1
    return false
  elseif status ~= 'queued' then
    -- Cancelled, dead, running: a stale entry; drop it.
    skipped = skipped + 1
    return false
  end
  local attempt = redis.call('HINCRBY', job, 'attempt', 1)
  redis.call('HSET', job, 'status', 'running', 'worker', worker,
    'started_at', string.format('%d', NOW), 'lease_until', string.format('%d', NOW + lease))
  redis.call('HDEL', job, 'next_run_at')
  redis.call('ZADD', P .. ':leases', NOW + lease, id)
  local f = redis.call('HMGET', job, 'payload', 'max_attempts', 'failures')
  table.insert(out, {id, attempt, f[1] or '', f[2] or '1', f[3] or '0', suspect and 1 or 0})
  got = got + 1
  return true
end
-- 2. An idle worker takes the oldest suspect, and nothing else.
if alone then
  while skipped < 100 do
    local id = redis.call('LPOP', P .. ':suspects')
    if not id then break end
    if take(id, true) then
      return {redis.call('LLEN', P .. ':suspects'), out}
    end
  end
end
-- 3. Which queue first: by weight; the others in priority order when it is empty.
local pick, wh, wn = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local total = wh + wn + tonumber(ARGV[7])
local max, stride = tonumber(ARGV[9]), tonumber(ARGV[10])
local function order_for(draw)
  if draw < wh then return {'high', 'normal', 'low'}
  elseif draw < wh + wn then return {'normal', 'high', 'low'}
  else return {'low', 'high', 'normal'} end
end
-- 4. Pop until `max` queued jobs turned up or the queues are empty.
while got < max and skipped < 100 do
  local id
  for _, q in ipairs(order_for((pick + got * stride) % total)) do
    id = redis.call('RPOP', ready_key(q))
    if id then break end
  end
  if not id then break end
  take(id, false)
end
return {redis.call('LLEN', P .. ':suspects'), out}
