-- limit_release.lua: gives back one call's concurrency slot (`limits.rs`).
-- ARGV: 1 prefix, 2 endpoint, 3 holder
-- Returns 1 when the slot was held, 0 when it was not (it expired, or the key was
-- reset); a key of the wrong type is left alone (the next acquire resets it).
local holders = P .. ':limit:' .. ARGV[2] .. ':holders'
if key_type(holders) ~= 'zset' then return 0 end
return redis.call('ZREM', holders, ARGV[3])
