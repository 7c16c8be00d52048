-- promote.lua: queue delayed jobs and retries whose time has come, one chunk per call.
-- ARGV: 1 prefix, 2 dead ttl (s), 3 chunk (most ids taken from {ns}:scheduled)
-- Returns how many entries were taken out of {ns}:scheduled (queued, dead-lettered or
-- dropped as stale): the caller calls again while it gets a full chunk.
-- The work is common.lua's promote_due, which fetch.lua also runs (100 at a time):
-- O(log N + chunk) per call, so a million scheduled jobs cost the same per call as ten
-- (docs/BENCHMARKS.md, "Promoting scheduled jobs").
return promote_due(tonumber(ARGV[3]), tonumber(ARGV[2]))
