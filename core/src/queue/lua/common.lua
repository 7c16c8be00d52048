-- common.lua: prepended to every script (see scripts.rs). Not a script on its own.
-- P is the prefix of the partition the script works on, "{ns}" or "{ns~N}" (a Redis
-- Cluster hash tag). KEYS[1] of every script is P .. ':', which every key the script
-- touches starts with, so that a cluster runs it on the node that holds the partition
-- (and an ACL of `~{ns}:*` allows it); ARGV[1] is P itself (the ARGV numbering of the
-- scripts predates KEYS). NOW is Redis's clock in ms.
local P = ARGV[1]
if KEYS[1] ~= P .. ':' then
  return redis.error_reply('mcpq: KEYS[1] must be the partition prefix ARGV[1] and a colon')
end
-- The namespace's own prefix "{ns}" (P without its partition number): the pub/sub
-- channels are the whole namespace's, whichever partition publishes.
local BASE = (string.gsub(P, '~%d+}$', '}'))
local t = redis.call('TIME')
local NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function job_key(id) return P .. ':job:' .. id end
local PRIORITIES = {high = true, normal = true, low = true}
-- A named queue (queue/queues.rs): up to 64 letters, digits, '-', '_' or '.'.
local function queue_ok(name)
  return #name <= 64 and string.match(name, '^[%w%-_.]+$') ~= nil
end
-- The list a job waits in: its queue's, at its priority. The default queue (no name,
-- 'default') keeps the names it had before queues had names ({ns}:ready:PRIORITY); a
-- named one is {ns}:queue:NAME:PRIORITY. An unknown priority or a malformed name (never
-- written by mcpq) falls back to normal / the default queue, so that no script parks a
-- job in a list no worker reads (fetch.lua dead-letters such records).
local function ready_key(priority, queue)
  if not PRIORITIES[priority] then priority = 'normal' end
  if not queue or queue == '' or queue == 'default' or not queue_ok(queue) then
    return P .. ':ready:' .. priority
  end
  return P .. ':queue:' .. queue .. ':' .. priority
end
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
-- Anything in our keys may have been written by someone else: these judge one entry
-- at a time, so that a bad one is dead-lettered alone and never aborts a script (a
-- Lua error would leave the script's earlier writes done and its answer lost).
-- A queue entry's name as it can be stored and shown: short ids of letters, digits,
-- '-', '_' and '.' keep their name; anything else (binary, huge, or with a ':' that
-- could name another job's keys, like "ID:attempts") is named by its hash.
local function entry_name(id)
  if #id <= 200 and string.match(id, '^[%w%-_.]+$') then return id end
  return 'invalid-' .. redis.sha1hex(id)
end
local function key_type(key) return redis.call('TYPE', key)['ok'] end
-- `cmd key items...` in calls of at most `step` items (Lua's unpack has a limit): many
-- list pushes or sorted-set entries in one command instead of one command each.
local function chunked(cmd, key, items, step)
  for i = 1, #items, step do
    redis.call(cmd, key, unpack(items, i, math.min(i + step - 1, #items)))
  end
end
-- A stored value as a finite number, or nil (tonumber reads "nan" and "inf" too, which
-- would carry through math.max/min into what a script writes).
local function finite(v)
  local n = tonumber(v or '')
  if n == nil or n ~= n or n == math.huge or n == -math.huge then return nil end
  return n
end
-- Age (ms) of the oldest job still queued in ready list `key`, -1 when none is found
-- among the `look` entries at its tail (the end workers pop: ids are LPUSHed, so the
-- oldest is there; a cancelled job's entry stays until a fetch drops it). Counts from
-- the job's submit (`submitted_at`). Read only; used by stats.lua and queues.lua.
local function oldest_queued_age(key, look)
  if key_type(key) ~= 'list' then return -1 end
  local ids = redis.call('LRANGE', key, -look, -1)
  for i = #ids, 1, -1 do
    local job = job_key(ids[i])
    if entry_name(ids[i]) == ids[i] and key_type(job) == 'hash' then
      local f = redis.call('HMGET', job, 'status', 'submitted_at')
      local at = f[2] and string.match(f[2], '^%d+$') and tonumber(f[2])
      if f[1] == 'queued' and at then
        if at > NOW then return 0 end
        return NOW - at
      end
    end
  end
  return -1
end
-- The fields of a record that fields_problem judges, in its order (callers may ask for
-- more after these in the same HMGET).
local JUDGED = {'priority', 'attempt', 'rescues', 'failures', 'max_attempts', 'stale_writes', 'queue'}
-- Why a record whose JUDGED fields are `f` cannot be run, or nil.
local function fields_problem(f)
  if f[1] and not PRIORITIES[f[1]] then
    return 'priority ' .. cjson.encode(string.sub(f[1], 1, 50)) .. ' is not high, normal or low'
  end
  if f[7] and not queue_ok(f[7]) then
    return 'queue name ' .. cjson.encode(string.sub(f[7], 1, 50)) .. ' is not a queue name'
  end
  -- Counters must be what HINCRBY accepts and a u32 holds: "0", or up to 9 digits
  -- without a leading zero.
  local names = {'attempt', 'rescue', 'failure', 'max_attempts', 'stale_writes'}
  for i = 2, 6 do
    local v = f[i]
    if v and v ~= '0' and not (#v <= 9 and string.match(v, '^[1-9]%d*$')) then
      return 'the ' .. names[i - 1] .. ' counter is not a number below 10^9'
    end
  end
  return nil
end
-- Reads the record of queue entry `id` in one call: its JUDGED fields, then those named
-- in `extra` (in order, after them). Returns the fields, or nil and why the entry
-- cannot be run (not a job id, not a hash; judged as fields_problem does); a record
-- with none of the fields asked for is {} (none: it expired or never was). The
-- attempt history's type is not looked at. Status is not judged here.
local function judged_record(id, extra)
  if entry_name(id) ~= id then return nil, 'the queue held an entry that is not a job id' end
  local job = job_key(id)
  local names = {unpack(JUDGED)}
  for _, e in ipairs(extra) do table.insert(names, e) end
  local f = redis.pcall('HMGET', job, unpack(names))
  if type(f) == 'table' and f.err then
    return nil, 'the job record is a ' .. key_type(job) .. ', not a hash (written by something other than mcpq?)'
  end
  local any = false
  for i = 1, #names do if f[i] then any = true break end end
  if not any then return {} end
  local problem = fields_problem(f)
  if problem then return nil, problem end
  return f
end
-- Why the record of queue entry `id` cannot be run, or nil. Status is not judged here.
local function record_problem(id)
  if entry_name(id) ~= id then return 'the queue held an entry that is not a job id' end
  local t = key_type(job_key(id))
  if t == 'none' then
    return 'the queue held an entry with no job record (written by something other than mcpq?): ' .. id
  end
  if t ~= 'hash' then return 'the job record is a ' .. t .. ', not a hash (written by something other than mcpq?)' end
  local a = key_type(job_key(id) .. ':attempts')
  if a ~= 'none' and a ~= 'list' then return 'the attempt history is a ' .. a .. ', not a list' end
  return fields_problem(redis.call('HMGET', job_key(id), unpack(JUDGED)))
end
-- A batch hash's counter as a number, or nil when someone else wrote something that is
-- not one ("0", or up to 15 digits without a leading zero).
local function batch_count(b, field)
  local v = redis.call('HGET', b, field)
  if v == '0' or (v and #v <= 15 and string.match(v, '^[1-9]%d*$')) then return tonumber(v) end
  return nil
end
-- Adds `counts` (a table outcome -> n) to the partition's running totals {ns}:totals
-- (fields succeeded, retried, dead, released: jobs ended that way since the namespace
-- began; `mcpq stats` sums them over partitions). Once per script call, whatever the
-- number of jobs it ended. A totals key someone else wrote is set aside (KEY:corrupt)
-- and a field that is not a count starts again from 0, so this never raises.
local HISTORY_TTL = 960
-- Adds `counts` (a table name -> n) to the fields NAME .. suffix of hash `k`. Read and
-- set, never HINCRBY: a field someone else wrote that is not a count would make
-- HINCRBY raise (and the whole script fail); such a field starts again from 0.
local function add_counts(k, counts, suffix)
  local args = {}
  for field, n in pairs(counts) do
    local name = field .. suffix
    local was = redis.call('HGET', k, name)
    was = (was and #was <= 15 and string.match(was, '^%d+$') and tonumber(was)) or 0
    table.insert(args, name)
    table.insert(args, string.format('%d', was + n))
  end
  redis.call('HSET', k, unpack(args))
end
local function add_totals(counts)
  if next(counts) == nil then return end
  local k = P .. ':totals'
  local t = key_type(k)
  if t ~= 'none' and t ~= 'hash' then redis.call('RENAME', k, k .. ':corrupt') end
  add_counts(k, counts, '')
  -- The same counts per 10 seconds, for the dashboard's chart: hash {ns}:ended:MINUTE
  -- (MINUTE = ms / 60000), fields OUTCOME:SLOT (SLOT 0-5, the 10 s of the minute),
  -- kept HISTORY_TTL s (`queue::history` reads the last 15 minutes). A key someone else
  -- wrote with another type is left alone and not counted in.
  local h = P .. ':ended:' .. string.format('%d', math.floor(NOW / 60000))
  local ht = key_type(h)
  if ht == 'none' or ht == 'hash' then
    add_counts(h, counts, ':' .. string.format('%d', math.floor((NOW % 60000) / 10000)))
    -- A new hash gets its TTL; so does one someone else made without one.
    if ht == 'none' or redis.call('TTL', h) < 0 then redis.call('EXPIRE', h, HISTORY_TTL) end
  end
end
-- Webhook deliveries (queue/webhooks.rs). A delivery is the hash {ns}:webhook:DID, due in
-- the sorted set {ns}:webhooks:due and listed in {ns}:webhooks (both by time, ms).
local function webhook_key(did) return P .. ':webhook:' .. did end
-- Makes `k` a key a sorted set may be written to: one of another type (written by
-- someone else) is set aside as KEY:corrupt, as bury does with a record.
local function own_zset(k)
  local t = key_type(k)
  if t ~= 'none' and t ~= 'zset' then redis.call('RENAME', k, k .. ':corrupt') end
end
-- Stores a delivery, due now, announcing that `what` ('job' or 'batch') `id` ended with
-- `status`, to `callback` (the JSON the producer stored in hash `h`). Its id DID is
-- WHAT-ID-N, N counted in `h`'s field 'webhooks', so each end of a job (a requeued dead
-- job ends again) is its own delivery, and a re-run of a script never makes two for
-- one end (the script is atomic). Called after the calling script's first write;
-- never raises: every value it reads is judged first.
local function webhook_create(h, what, id, status, callback)
  local v = redis.call('HGET', h, 'webhooks')
  local n = 1
  if v and #v <= 9 and string.match(v, '^[1-9]%d*$') then n = tonumber(v) + 1 end
  local did = what .. '-' .. entry_name(id) .. '-' .. n
  if key_type(webhook_key(did)) ~= 'none' then
    -- Someone else wrote this key (or the counter): a fresh name, by Redis's clock.
    did = did .. '-' .. string.format('%d', NOW)
    if key_type(webhook_key(did)) ~= 'none' then redis.call('DEL', webhook_key(did)) end
  end
  -- The endpoint's name, for one-at-a-time endpoints (webhook_claim.lua); a callback
  -- mcpq did not write (too long, not JSON) has none, and the dispatcher refuses it.
  local endpoint = ''
  if #callback <= 4096 then
    local ok, cb = pcall(cjson.decode, callback)
    if ok and type(cb) == 'table' and type(cb.endpoint) == 'string' and #cb.endpoint <= 128 then
      endpoint = cb.endpoint
    end
  end
  local now = string.format('%d', NOW)
  own_zset(P .. ':webhooks:due')
  own_zset(P .. ':webhooks')
  redis.call('HSET', h, 'webhooks', n)
  redis.call('HSET', webhook_key(did), 'type', what, 'subject', id, 'status', status,
    'callback', callback, 'endpoint', endpoint, 'state', 'pending', 'created_at', now,
    'since', now, 'attempts', 0)
  redis.call('ZADD', P .. ':webhooks:due', NOW, did)
  redis.call('ZADD', P .. ':webhooks', NOW, did)
end
-- Batch `b` has no pending job left: stamp it, let it expire with its jobs, and queue its
-- fan-in job if that still waits (a cancelled one stays cancelled).
local function batch_done(b)
  redis.call('HSET', b, 'finished_at', string.format('%d', NOW))
  local ttl = batch_count(b, 'ttl')
  if ttl and ttl > 0 then
    redis.call('EXPIRE', b, ttl)
    if key_type(b .. ':jobs') == 'list' then redis.call('EXPIRE', b .. ':jobs', ttl) end
  end
  local final = redis.call('HGET', b, 'then')
  if final and final ~= '' and key_type(job_key(final)) == 'hash' then
    local f = redis.call('HMGET', job_key(final), 'status', 'priority', 'queue')
    if f[1] == 'waiting' then
      redis.call('HSET', job_key(final), 'status', 'queued')
      redis.call('LPUSH', ready_key(f[2], f[3]), final)
    end
  end
  -- The batch's own callback (mcpq batch submit --callback-*): one delivery, in the
  -- same step that finished it.
  local callback = redis.call('HGET', b, 'callback')
  if callback and callback ~= '' then
    webhook_create(b, 'batch', string.sub(b, #P + 8), 'finished', callback)
  end
end
-- Job `id` has just ended with `status` (succeeded, dead or cancelled): if it has a
-- callback, store its webhook delivery (in the same script that stored the outcome, so
-- no end goes unannounced); if it belongs to a batch, count it there; when it was the batch's last pending job, finish the batch
-- (batch_done). Every script that ends a job calls this after its own writes, so it
-- never raises: a batch hash someone else broke is left alone. The Lua decrement is
-- what makes the fan-in run exactly once, however many workers end jobs at once. A job
-- that ends again (after `mcpq dlq requeue`) moves its count to its new status; it is
-- never pending twice (batch_counted holds the status it was counted as).
-- `known`, when given, holds the record's `callback` and `batch` fields as the caller
-- read them (false when absent) from a record it knows is a hash: not read again.
-- The end is announced on {ns}:ended as "ID STATUS" (heard by `mcpq serve`'s long
-- polls, notify.rs; nobody listening costs nothing): at once, or, while a script
-- gathers them in `ended_lines` (finish.lua), as one message of lines at its end
-- (flush_ended).
local ended_lines = nil
local function flush_ended()
  if ended_lines and #ended_lines > 0 then
    redis.call('PUBLISH', BASE .. ':ended', table.concat(ended_lines, '\n'))
  end
  ended_lines = nil
end
local function job_ended(id, status, known)
  if ended_lines then
    table.insert(ended_lines, id .. ' ' .. status)
  else
    redis.call('PUBLISH', BASE .. ':ended', id .. ' ' .. status)
  end
  local job = job_key(id)
  local callback, batch
  if known then
    callback, batch = known.callback, known.batch
  else
    if key_type(job) ~= 'hash' then return end
    local f = redis.call('HMGET', job, 'callback', 'batch')
    callback, batch = f[1], f[2]
  end
  if callback and callback ~= '' then webhook_create(job, 'job', id, status, callback) end
  if not batch then return end
  local b = P .. ':batch:' .. batch
  if key_type(b) ~= 'hash' then return end
  local pending = batch_count(b, 'pending')
  if not pending or not batch_count(b, status) then return end
  local counted = redis.call('HGET', job, 'batch_counted')
  if counted == status then return end
  if counted then
    if batch_count(b, counted) and batch_count(b, counted) > 0 then
      redis.call('HINCRBY', b, counted, -1)
    end
    redis.call('HINCRBY', b, status, 1)
    redis.call('HSET', job, 'batch_counted', status)
    return
  end
  redis.call('HSET', job, 'batch_counted', status)
  if pending <= 0 then return end
  redis.call('HINCRBY', b, status, 1)
  if redis.call('HINCRBY', b, 'pending', -1) == 0 then batch_done(b) end
end
-- Dead-letters queue entry `id` as malformed (`invalid_job`, never run), under its
-- entry_name; a key of the wrong type is kept aside as KEY:corrupt for inspection.
local function bury(id, reason, dead_ttl)
  local name = entry_name(id)
  local job = job_key(name)
  for _, k in ipairs({job, job .. ':attempts'}) do
    local t = key_type(k)
    local want = (k == job) and 'hash' or 'list'
    if t ~= 'none' and t ~= want then
      redis.call('RENAME', k, k .. ':corrupt')
      redis.call('EXPIRE', k .. ':corrupt', dead_ttl)
    end
  end
  local err = cjson.encode({kind = 'invalid_job', retryable = false, message = reason})
  redis.call('ZREM', P .. ':leases', name)
  redis.call('ZREM', P .. ':scheduled', name)
  redis.call('HSET', job, 'status', 'dead', 'finished_at', string.format('%d', NOW), 'error', err)
  redis.call('HSETNX', job, 'kind', 'unknown')
  redis.call('HDEL', job, 'lease_until', 'next_run_at')
  redis.call('ZADD', P .. ':dead', NOW, name)
  redis.call('EXPIRE', job, dead_ttl)
  redis.call('EXPIRE', job .. ':attempts', dead_ttl)
  job_ended(name, 'dead')
end
-- Takes `id` out of the scheduled set `sched` and queues it (at the end of its queue
-- and priority that workers pop next) when its record says it waits there (failed or
-- scheduled); a malformed record is buried, a stale entry only dropped. Returns 1 when
-- queued, else 0.
local function promote_one(sched, id, dead_ttl)
  redis.call('ZREM', sched, id)
  local problem = record_problem(id)
  if problem then
    bury(id, problem, dead_ttl)
    return 0
  end
  local f = redis.call('HMGET', job_key(id), 'status', 'priority', 'queue')
  if f[1] ~= 'failed' and f[1] ~= 'scheduled' then return 0 end
  redis.call('HSET', job_key(id), 'status', 'queued')
  redis.call('HDEL', job_key(id), 'next_run_at')
  redis.call('RPUSH', ready_key(f[2], f[3]), id)
  -- Listed again if the cap's clean-up dropped its queue while it waited.
  if f[3] and f[3] ~= '' and f[3] ~= 'default' and key_type(P .. ':queues') == 'set' then
    redis.call('SADD', P .. ':queues', f[3])
  end
  return 1
end
-- Queues up to `limit` ids of {ns}:scheduled whose time has come, oldest first: failed
-- jobs whose retry backoff is over and delayed jobs (status `scheduled`) whose run_at
-- has come. Each goes to the front of its queue (the end workers pop): it has waited
-- its turn already. A malformed entry (not a job id, no record, a bad counter) is
-- dead-lettered alone; an entry whose job is in any other state (cancelled, requeued by
-- hand) is dropped. Bounded: ZRANGEBYSCORE with LIMIT is O(log N + limit), whatever the
-- set's size. A set of another type (written by someone else) is set aside
-- (own_zset), so retries and delays work again from the next write on. Returns how
-- many entries it took out of the set.
local function promote_due(limit, dead_ttl)
  local sched = P .. ':scheduled'
  own_zset(sched)
  local due = redis.call('ZRANGEBYSCORE', sched, '-inf', NOW, 'LIMIT', 0, limit)
  local promoted = 0
  for _, id in ipairs(due) do promoted = promoted + promote_one(sched, id, dead_ttl) end
  if promoted > 0 then redis.call('PUBLISH', BASE .. ':wake', promoted) end
  return #due
end
