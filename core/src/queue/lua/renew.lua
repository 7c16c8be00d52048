-- renew.lua: extend the leases a worker still holds.
-- ARGV: 1 prefix, 2 lease (ms), then pairs: id, attempt
-- Returns a flat list {id, status, ...} of the jobs whose lease this worker lost
-- (status is what the job is now: cancelled, queued after a rescue, ...).
local lease = tonumber(ARGV[2])
local lost = {}
for i = 3, #ARGV, 2 do
  local id, attempt = ARGV[i], ARGV[i + 1]
  -- A record someone replaced by another type must not fail the other renewals.
  local f = {false, false}
  if key_type(job_key(id)) == 'hash' then
    f = redis.call('HMGET', job_key(id), 'status', 'attempt')
  end
  if f[1] == 'running' and f[2] == attempt then
    redis.call('ZADD', P .. ':leases', 'XX', NOW + lease, id)
    redis.call('HSET', job_key(id), 'lease_until', string.format('%d', NOW + lease))
  else
    table.insert(lost, id)
    table.insert(lost, f[1] or 'expired or corrupt')
  end
end
return lost
