//! End-to-end tests: the real `mcpq` and `mcpq-worker` binaries, the real Redis, real
//! MCP server processes. One module per topic.

mod attachments; // which files submit may read, a private attachment root, caps, the sweep
mod bad_input; // invalid jobs and configs: clear errors, exit 2, nothing enqueued
mod batches; // mcpq batch: JSON lines in, results out in order, progress, the fan-in
mod cluster; // a real 6-node Redis Cluster: every job succeeds, a failover mid-run, per-master keys
mod cohosting; // mcpq serve --with-worker: a job calls a gateway tool of its own process
mod dashboard; // the web dashboard: login, counts, dead letters, CSRF, hostile data
mod dashboard_views; // the dashboard's queues, history, job page, servers, schedules, limits
mod delays; // delayed jobs: --delay, --at, options.run_at, scheduled, cancel
mod delivery; // retries, dead letters, fencing, idempotency, cancel, retention, priorities
mod email; // email jobs: the .eml corpus, attachments, reply drafts
mod end_to_end; // submit -> worker -> MCP server -> result, one job to many
mod failures; // tool errors, server crashes, stderr floods
mod health; // what /health reads: queue counts by state, worker heartbeats
mod http; // streamable-HTTP servers: bearer tokens, headers, a server that goes away
mod json_errors; // under --json every error is one JSON object on stderr, same exit code
mod llm; // LLM mode against a scripted OpenAI-compatible API
mod mcp_front; // mcpq serve's MCP front with clients nobody here wrote: Python SDK, Inspector, conformance
mod mcp_lifecycle; // the MCP front stops, a stdio client stops it, its worker cannot start
mod mcp_readme; // the README's MCP client snippets, as copied
mod metrics; // a worker's /metrics, parsed by the Prometheus reference parser
mod partitions; // [redis] partitions on one node: spread, idempotency, batches, agreement
mod plans; // plans as small programs: templates, continue_on_error
mod pool; // the warm session pool: reuse, multiplexing, replacement, limits
mod queues; // named queues: routing, weights, pause and resume, mcpq queues
mod rate_limits; // cluster-wide rate and concurrency limits, measured by the server
mod run_one; // mcpq run job.json: one job in-process, no Redis, wait's exit codes
mod schedules; // cron schedules: one job per tick on many workers, catch_up, mcpq schedules
mod secrets_and_logs; // secrets echoed back are redacted; no forged log lines
mod sentinel; // a Sentinel master, a replica, 3 sentinels: a failover mid-run loses no acknowledged job
mod serve; // mcpq serve: the HTTP API, tokens, long polls, OpenAPI
mod servers; // mcpq servers / servers check: tool discovery, what fails
mod shutdown; // SIGTERM with jobs running: exit 0, no process left
mod signals; // the clean signal state of every MCP server
mod terminal; // human output escapes control characters from outside
mod third_party; // real MCP servers from npm and PyPI
mod tls; // rediss:// with a private CA, mTLS, insecure, a wrong CA; Sentinel over TLS
mod tool_allowlists; // servers' and jobs' tool allow-lists; arguments checked against inputSchema
mod torture; // the supervisor's torture suite: hangs elsewhere, none here
mod webhooks; // completion webhooks: retries, an outage, a restart, signatures, the SSRF guard
