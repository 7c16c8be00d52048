-- batch_seal.lua: close a batch whose jobs will never all be enqueued (its submit was
-- cut short, and it is being cancelled): the jobs missing from its list count as
-- cancelled, so it can finish, and no more jobs may join it; its fan-in job is expected
-- to be cancelled already.
-- ARGV: 1 prefix, 2 batch id
-- Returns the number of missing jobs counted as cancelled.
local b = P .. ':batch:' .. ARGV[2]
if key_type(b) ~= 'hash' then return 0 end
local total, pending = batch_count(b, 'total'), batch_count(b, 'pending')
local cancelled = batch_count(b, 'cancelled')
local t = key_type(b .. ':jobs')
if not total or not pending or not cancelled or (t ~= 'none' and t ~= 'list') then return 0 end
-- A submit still running is refused from now on (enqueue.lua).
redis.call('HSET', b, 'sealed', '1')
local missing = total - redis.call('LLEN', b .. ':jobs')
if missing <= 0 or pending <= 0 then return 0 end
if missing > pending then missing = pending end
redis.call('HINCRBY', b, 'cancelled', missing)
if redis.call('HINCRBY', b, 'pending', -missing) == 0 then batch_done(b) end
return missing
