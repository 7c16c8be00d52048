-- fetch.lua: lease up to `max` queued jobs to a worker.
-- ARGV: 1 prefix, 2 worker name, 3 lease (ms), 4 pick (0 <= pick < sum of weights),
--       5 weight of high, 6 weight of normal, 7 weight of low, 8 dead ttl (s),
--       9 max jobs, 10 stride (coprime with the sum of the weights),
--       11 alone: 1 when the worker runs no job now (it may take a suspect),
--       12 queue pick (a random number below 2^31), 13 unused, then 2 per queue the
--       worker serves: name, weight
-- Queues in the set {ns}:paused are skipped (a pause takes effect at the next fetch).
-- Per queue, the jobs started are counted in the hash {ns}:started:MINUTE (field: the
-- queue's name; kept 3 minutes) for `mcpq queues`. A record with no queue is in
-- 'default'.
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
own_zset(P .. ':leases')
own_zset(P .. ':dead')
-- The queues served now: those given, but the paused ones.
local paused = P .. ':paused'
local any_paused = key_type(paused) == 'set'
local served, by_name, qtotal = {}, {}, 0
for i = 14, #ARGV, 2 do
  local name = ARGV[i]
  if not (any_paused and redis.call('SISMEMBER', paused, name) == 1) then
    table.insert(served, {name, tonumber(ARGV[i + 1])})
    by_name[name] = true
    qtotal = qtotal + tonumber(ARGV[i + 1])
  end
end
local started = {}
local out, got, skipped = {}, 0, 0
-- Judges the popped entry `id` alone and leases it if it is a queued job: true when
-- leased. A malformed entry is dead-lettered (never run), any other status is a stale
-- entry (dropped).
local now_s = string.format('%d', NOW)
local lease_s = string.format('%d', NOW + lease)
local function take(id, suspect)
  local job = job_key(id)
  -- One read: the judged fields (common.lua's JUDGED, 1-7), then status, payload,
  -- next_run_at.
  local f, problem = judged_record(id, {'status', 'payload', 'next_run_at'})
  if f and not f[8] then
    if next(f) == nil and key_type(job) == 'none' then
      problem = 'the queue held an entry with no job record (written by something other than mcpq?): ' .. id
    else
      problem = 'the job record has no status (written by something other than mcpq?)'
    end
  end
  if not problem then
    local a = key_type(job .. ':attempts')
    if a ~= 'none' and a ~= 'list' then problem = 'the attempt history is a ' .. a .. ', not a list' end
  end
  if problem then
    bury(id, problem, dead_ttl)
    skipped = skipped + 1
    return false
  elseif f[8] ~= 'queued' then
    -- Cancelled, dead, running: a stale entry; drop it.
    skipped = skipped + 1
    return false
  end
  -- A job of a queue this worker does not serve now (put in the wrong list by a worker
  -- of an older version, or paused since) goes back to the front of its own list.
  local q = f[7] or 'default'
  if not by_name[q] then
    redis.call('RPUSH', ready_key(f[1], f[7]), id)
    skipped = skipped + 1
    return false
  end
  local attempt = tonumber(f[2] or '0') + 1
  redis.call('HSET', job, 'status', 'running', 'attempt', string.format('%d', attempt),
    'worker', worker, 'started_at', now_s, 'lease_until', lease_s)
  if f[10] then redis.call('HDEL', job, 'next_run_at') end
  -- Each lease at once: should a later step of this call fail, the jobs taken so far
  -- have their lease, and the rescuer gives them back when it expires.
  redis.call('ZADD', P .. ':leases', NOW + lease, id)
  table.insert(out, {id, attempt, f[9] or '', f[5] or '1', f[4] or '0', suspect and 1 or 0})
  started[q] = (started[q] or 0) + 1
  got = got + 1
  return true
end
-- Counts what was started, per queue, in this minute's hash.
-- A field someone else wrote that is not a count is overwritten, never HINCRBY'd (that
-- would raise an error after the leases above were written).
local function count_started()
  local h = P .. ':started:' .. string.format('%d', math.floor(NOW / 60000))
  if next(started) == nil or key_type(h) ~= 'none' and key_type(h) ~= 'hash' then return end
  for q, n in pairs(started) do
    local was = redis.call('HGET', h, q)
    was = (was and #was <= 15 and string.match(was, '^%d+$') and tonumber(was)) or 0
    redis.call('HSET', h, q, string.format('%d', was + n))
  end
  redis.call('EXPIRE', h, 180)
end
-- The suspects of the queues served, among the first 100 (a suspect of another queue
-- waits for a worker serving it): their ids, and whether the worker may take each.
local function own_suspects()
  local mine = {}
  if key_type(P .. ':suspects') ~= 'list' then return mine end
  for _, id in ipairs(redis.call('LRANGE', P .. ':suspects', 0, 99)) do
    local q = 'default'
    if entry_name(id) == id and key_type(job_key(id)) == 'hash' then
      q = redis.call('HGET', job_key(id), 'queue') or 'default'
    end
    -- A malformed entry is anybody's to judge (and dead-letter).
    if by_name[q] or record_problem(id) then
      table.insert(mine, id)
    end
  end
  return mine
end
-- 2. An idle worker takes the oldest suspect of its queues, and nothing else.
if alone then
  for _, id in ipairs(own_suspects()) do
    redis.call('LREM', P .. ':suspects', 1, id)
    if take(id, true) then
      count_started()
      return {#own_suspects(), out}
    end
  end
end
-- 3. Which queue first: by weight; the others in priority order when it is empty.
local pick, wh, wn = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local total = wh + wn + tonumber(ARGV[7])
local max, stride = tonumber(ARGV[9]), tonumber(ARGV[10])
local HIGH_FIRST, NORMAL_FIRST, LOW_FIRST =
  {'high', 'normal', 'low'}, {'normal', 'high', 'low'}, {'low', 'high', 'normal'}
local function order_for(draw)
  if draw < wh then return HIGH_FIRST
  elseif draw < wh + wn then return NORMAL_FIRST
  else return LOW_FIRST end
end
-- Which served queue first, by weight; the others in the order given. The draw and
-- its stride are taken over the weights of the queues served now (paused ones left
-- out), so every share comes first once per round.
local function gcd(a, b)
  while b ~= 0 do a, b = b, a % b end
  return a
end
local qpick = tonumber(ARGV[12]) % math.max(qtotal, 1)
local qstride = math.max(math.floor(qtotal * 0.618), 1)
while qtotal > 0 and gcd(qstride, qtotal) ~= 1 do qstride = qstride + 1 end
local single = #served == 1 and {served[1][1]}
local function queues_for(draw)
  if single then return single end
  local order, first = {}, nil
  for i, q in ipairs(served) do
    if not first and draw < q[2] then first = i else draw = draw - q[2] end
  end
  if first then table.insert(order, served[first][1]) end
  for i, q in ipairs(served) do
    if i ~= first then table.insert(order, q[1]) end
  end
  return order
end
-- 4. Pop until `max` queued jobs turned up or the served queues are empty.
-- A list found empty is not popped again in this call (the lists of a busy queue are
-- mostly one priority: without this, most pops of a batch would be empty ones).
local empty, keys_of = {}, {}
while got < max and skipped < 100 and qtotal > 0 do
  local id
  local priorities = order_for((pick + got * stride) % total)
  for _, queue in ipairs(queues_for((qpick + got * qstride) % qtotal)) do
    for _, prio in ipairs(priorities) do
      local key = keys_of[prio .. ' ' .. queue]
      if not key then
        key = ready_key(prio, queue)
        keys_of[prio .. ' ' .. queue] = key
      end
      if not empty[key] then
        id = redis.call('RPOP', key)
        if id then break end
        empty[key] = true
      end
    end
    if id then break end
  end
  if not id then break end
  take(id, false)
end
count_started()
return {#own_suspects(), out}
