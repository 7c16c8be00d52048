-- partitions.lua: store the namespace's partition count, unless one is stored already
-- or the namespace holds jobs in one partition (queue/partition.rs `agree`).
-- KEYS[1] "{ns}:"; ARGV: 1 prefix "{ns}", 2 the count wanted (> 1), 3 '1' when it was
-- configured (else a default: a cluster's 16).
-- Returns the count now stored, as a string; 'used' when the namespace holds jobs in
-- one partition and the count was configured (nothing stored).
local key = P .. ':partitions'
local stored = key_type(key) == 'string' and redis.call('GET', key)
if stored then return stored end
local used = redis.call('EXISTS', P .. ':jobs', P .. ':leases', P .. ':scheduled',
  P .. ':dead', P .. ':suspects', P .. ':ready:high', P .. ':ready:normal',
  P .. ':ready:low') > 0
local wanted = ARGV[2]
if used then
  if ARGV[3] == '1' then return 'used' end
  wanted = '1'
end
redis.call('SET', key, wanted)
return wanted
