-- enqueue.lua: add a batch of jobs; each is skipped when its id or its idempotency key
-- is known already.
-- ARGV: 1 prefix, 2 idempotency ttl (s), 3 batch id ("" = none; the batch was made by
--       batch_create.lua), 4 retention (s) of the job index {ns}:jobs, 5 most queue
--       names the namespace may hold, then 10 per job:
--       id, payload (envelope JSON), kind, priority (high|normal|low), max_attempts,
--       idempotency key ("" = none), line of the batch's input ("" = none),
--       callback (JSON of options.callback, "" = none: kept in the record, for the
--       webhook delivery common.lua's job_ended stores when the job ends),
--       queue ("" = the default queue; a named one is recorded in the set {ns}:queues),
--       run_at (ms since the epoch, "" = none: options.run_at)
-- A job whose run_at is still ahead of Redis's clock is `scheduled`: its id waits in
-- {ns}:scheduled (by run_at) instead of a ready list, and promote_due (common.lua)
-- queues it once due. A run_at in the past queues it at once.
-- A job enqueued into a batch is appended to the batch's list {ns}:batch:ID:jobs, so
-- the list holds the batch's jobs in input order (a re-run that finds a job already
-- there appends nothing). Every enqueued job goes into {ns}:jobs (by submit time, for
-- `mcpq jobs`), from which entries older than the retention are trimmed here.
-- Returns a flat list, 2 per job: 1 and the id when enqueued; 0 and the first job's id
-- when the idempotency key was seen before; 2 and the id when a job with that id exists
-- already (refused: nothing enqueued, and the key, if any, is not bound to that job).
local ttl = tonumber(ARGV[2])
local batch = ARGV[3]
local index = P .. ':jobs'
-- Judged before any write, so that no write can fail half-way.
if key_type(index) ~= 'none' and key_type(index) ~= 'zset' then
  return redis.error_reply(index .. ' is not a sorted set (written by something other than mcpq?)')
end
local sched_type = key_type(P .. ':scheduled')
if sched_type ~= 'none' and sched_type ~= 'zset' then
  return redis.error_reply(P .. ':scheduled is not a sorted set (written by something other than mcpq?); a worker sets it aside on its next fetch')
end
if batch ~= '' then
  if key_type(P .. ':batch:' .. batch) ~= 'hash' then
    return redis.error_reply('batch ' .. batch .. ' does not exist (expired?) or is not a hash')
  end
  if redis.call('HGET', P .. ':batch:' .. batch, 'sealed') then
    return redis.error_reply('batch ' .. batch .. ' was cancelled (mcpq batch cancel): nothing more is enqueued into it')
  end
  local t = key_type(P .. ':batch:' .. batch .. ':jobs')
  if t ~= 'none' and t ~= 'list' then
    return redis.error_reply('the job list of batch ' .. batch .. ' is a ' .. t .. ', not a list')
  end
end
-- A queue name not seen before must fit under the cap on queue names. At the cap, the
-- names whose lists are all empty and that are not paused are dropped first (a name
-- costs nothing once its jobs are gone; it comes back with its next job).
local queues = P .. ':queues'
local new_queues, fresh = {}, 0
for i = 6, #ARGV, 10 do
  local q = ARGV[i + 8]
  if q ~= '' and not new_queues[q] then
    local t = key_type(queues)
    if t ~= 'none' and t ~= 'set' then
      return redis.error_reply(queues .. ' is not a set (written by something other than mcpq?)')
    end
    if redis.call('SISMEMBER', queues, q) == 0 then
      new_queues[q] = true
      fresh = fresh + 1
    end
  end
end
local cap = tonumber(ARGV[5])
-- Whether queue `q` has no job waiting in any of its lists.
local function no_job_waits(q)
  for _, prio in ipairs({'high', 'normal', 'low'}) do
    if redis.call('EXISTS', ready_key(prio, q)) == 1 then return false end
  end
  return true
end
-- The ready lists this call pushes to must be lists (or absent): judged before any
-- write, so that a list someone else replaced never strands a half-enqueued call.
local judged_lists = {}
for i = 6, #ARGV, 10 do
  local rk = ready_key(ARGV[i + 3], ARGV[i + 8])
  if not judged_lists[rk] then
    judged_lists[rk] = true
    local t = key_type(rk)
    if t ~= 'none' and t ~= 'list' then
      return redis.error_reply(rk .. ' is a ' .. t .. ', not a list (written by something other than mcpq?)')
    end
  end
end
local idle_queues = {}
if fresh > 0 and redis.call('SCARD', queues) + fresh > cap then
  local paused = key_type(P .. ':paused') == 'set'
  for _, q in ipairs(redis.call('SRANDMEMBER', queues, cap + 100)) do
    local is_paused = paused and redis.call('SISMEMBER', P .. ':paused', q) == 1
    if not is_paused and no_job_waits(q) then table.insert(idle_queues, q) end
  end
  if redis.call('SCARD', queues) - #idle_queues + fresh > cap then
    return redis.error_reply('too many queues: this namespace has ' .. cap ..
      ' queues with jobs waiting, the most it may hold (queue ' .. next(new_queues) .. ' would be one more)')
  end
end
local out = {}
local ready = 0
-- The list pushes and index entries are written after the loop, one command per list
-- (in input order: LPUSH a b c is LPUSH a, LPUSH b, LPUSH c) and per 500 entries.
local pushes, push_order, indexed = {}, {}, {}
local submitted = string.format('%d', NOW)
for i = 6, #ARGV, 10 do
  local id, payload, kind, priority, max_attempts, key, line, callback, queue =
    ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], ARGV[i + 6],
    ARGV[i + 7], ARGV[i + 8]
  local run_at = tonumber(ARGV[i + 9])
  local job = job_key(id)
  local first, code = nil, 0
  local ikey = P .. ':idem:' .. key
  if key ~= '' then first = redis.call('GET', ikey) end
  if not first and redis.call('EXISTS', job) == 1 then first, code = id, 2 end
  if first then
    table.insert(out, code)
    table.insert(out, first)
  else
    redis.call('HSET', job, 'status', 'queued', 'payload', payload, 'kind', kind,
      'priority', priority, 'max_attempts', max_attempts, 'attempt', 0, 'failures', 0,
      'submitted_at', submitted)
    if key ~= '' then
      -- A delayed job keeps its key until it has run, at the least.
      local key_ttl = ttl
      if run_at and run_at > NOW then key_ttl = ttl + math.ceil((run_at - NOW) / 1000) end
      redis.call('SET', ikey, id, 'EX', key_ttl)
      redis.call('HSET', job, 'idempotency_key', key)
    end
    if callback ~= '' then redis.call('HSET', job, 'callback', callback) end
    if queue ~= '' then
      redis.call('HSET', job, 'queue', queue)
      redis.call('SADD', queues, queue)
    end
    if batch ~= '' then
      redis.call('HSET', job, 'batch', batch, 'batch_line', line)
      redis.call('RPUSH', P .. ':batch:' .. batch .. ':jobs', id)
    end
    if run_at and run_at > NOW then
      redis.call('HSET', job, 'status', 'scheduled', 'next_run_at', string.format('%d', run_at))
      redis.call('ZADD', P .. ':scheduled', run_at, id)
    else
      local rk = ready_key(priority, queue)
      if not pushes[rk] then
        pushes[rk] = {}
        table.insert(push_order, rk)
      end
      table.insert(pushes[rk], id)
      ready = ready + 1
    end
    table.insert(indexed, NOW)
    table.insert(indexed, id)
    table.insert(out, 1)
    table.insert(out, id)
  end
end
-- A list that was empty before this call wakes the idle workers (one PUBLISH per list
-- that became non-empty, none while the queue has a backlog: busy workers need none).
local woke = false
for _, rk in ipairs(push_order) do
  local items = pushes[rk]
  for i = 1, #items, 500 do
    local last = math.min(i + 499, #items)
    local len = redis.call('LPUSH', rk, unpack(items, i, last))
    if len == last then woke = true end
  end
end
chunked('ZADD', index, indexed, 1000)
-- Last, not first: Redis lets a script that has written once go on writing past
-- maxmemory (for atomicity), so the first write must be one it refuses when out of
-- memory (HSET), or an OOM Redis would take jobs in.
redis.call('ZREMRANGEBYSCORE', index, '-inf', NOW - tonumber(ARGV[4]) * 1000)
-- Idle workers fetch at once (queue/lease.rs listen_for_work); nobody listening costs
-- nothing.
if woke then redis.call('PUBLISH', BASE .. ':wake', ready) end
-- Names idle before this call that got no job in it are dropped.
for _, q in ipairs(idle_queues) do
  if no_job_waits(q) then redis.call('SREM', queues, q) end
end
return out
