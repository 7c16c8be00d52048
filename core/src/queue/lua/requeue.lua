-- requeue.lua: put a dead job back in its queue with a fresh set of attempts.
-- ARGV: 1 prefix, 2 id
-- Returns 1 when requeued, 0 when the job is not dead (or unknown), -1 when it is a
-- dead malformed queue entry with no payload (nothing could ever run).
-- The attempt counter keeps growing (it is the fencing token); failures start again.
local id = ARGV[2]
local job = job_key(id)
local f = redis.call('HMGET', job, 'status', 'priority', 'payload', 'queue')
if f[1] ~= 'dead' then return 0 end
if not f[3] then return -1 end
redis.call('ZREM', P .. ':dead', id)
redis.call('PERSIST', job)
redis.call('PERSIST', job .. ':attempts')
redis.call('HSET', job, 'status', 'queued', 'failures', 0, 'rescues', 0)
redis.call('HDEL', job, 'finished_at')
redis.call('LPUSH', ready_key(f[2], f[4]), id)
return 1
