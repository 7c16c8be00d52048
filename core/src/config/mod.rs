//! Configuration: `mcpq.toml`, shared by the worker and the producer.
//!
//! ```toml
//! redis_url = "redis://127.0.0.1:6379"   # REDIS_URL overrides it
//! redis_password_env = "MCPQ_REDIS_PASSWORD"   # the env var holding Redis's password
//! namespace = "mcpq"                      # prefix of every Redis key; MCPQ_NAMESPACE overrides it
//! mcp_servers_file = "claude_desktop_config.json"   # optional: more servers, see mcp_json
//!
//! [worker]
//! concurrency = 4          # jobs run at once by one worker process
//! shutdown_grace = "10s"   # on SIGTERM, how long running jobs may finish
//! poll_interval = "100ms"  # how often an idle worker looks for new jobs
//! # metrics_listen = "127.0.0.1:9717"   # serve GET /metrics (default: off)
//!
//! [queue]                  # leases, retries, retention, priorities: see config::queue
//! lease = "30s"
//! max_payload = 33554432   # bytes (32 MiB)
//!
//! [defaults]
//! job_timeout = "5m"       # a job's deadline unless the job sets options.timeout
//! startup_timeout = "30s"  # spawn + MCP initialize of one server
//! call_timeout = "60s"     # one tools/call
//! kill_grace = "2s"        # between SIGTERM and SIGKILL of a server's process group
//! restart_backoff = "100ms"      # wait before restarting a crashed server; doubles per crash
//! restart_backoff_max = "10s"
//! crash_loop_threshold = 5       # this many crashes within crash_loop_window ...
//! crash_loop_window = "60s"
//! unhealthy_for = "30s"          # ... make jobs needing the server fail fast this long
//!
//! [servers.remote]                    # a streamable-HTTP MCP server
//! url = "http://127.0.0.1:8000/mcp"
//! headers = { "X-Team" = "billing" }
//! bearer_token_env = "REMOTE_MCP_TOKEN"  # Authorization: Bearer $REMOTE_MCP_TOKEN
//!
//! [servers.echo]
//! command = "mcpq-fixture"
//! args = []
//! env = { LOG_LEVEL = "debug" }
//! cwd = "/tmp"
//! startup_timeout = "10s"  # overrides [defaults]
//! call_timeout = "30s"
//! tools = ["echo", "sleep*"]  # the only tools jobs may reach (default: all)
//! ```
//!
//! The file given to `--config` / `MCPQ_CONFIG` may also be an MCP JSON file (a `.json`
//! path: Claude Desktop, Cursor or VS Code form, read by [`mcp_json`]); then every other
//! setting takes its default. Values are validated when loaded: a bad value is an error
//! that names the file and the key, never a surprise at run time.
//!
//! Server names (`[servers.NAME]` and the names in JSON files) are non-empty, without
//! spaces or control characters, and without `__`: `SERVER__TOOL` is how tools are named
//! to a model, so a name holding the separator would make those names ambiguous
//! ([`server_name_problem`]).

pub mod email;
pub mod llm;
pub mod mcp_json;
pub mod queue;
pub mod rate;
pub mod redis_target;
pub mod redis_url;
pub mod schedules;
pub mod serve;
pub mod served;
pub mod webhooks;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

// The defaults, one constant each with why it is that value. The serde defaults and
// `Default` impls below use them; the examples in this module's doc and in README's
// "Configuration" must match them (a test checks `[worker]` and `[defaults]`).

/// A Redis on this machine at its standard port: what a developer runs.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// One deployment per Redis needs no setting; a second one sets its own.
pub const DEFAULT_NAMESPACE: &str = "mcpq";
/// 4 jobs at once: each may hold its own servers, and 4 stdio servers fit a small host.
pub const DEFAULT_CONCURRENCY: usize = 4;
/// 10 s on SIGTERM for running jobs: inside the 30 s Kubernetes and most process
/// managers give before SIGKILL, with room to stop the servers afterwards.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// 100 ms: the wait between submit and start on an idle worker, against one cheap Redis
/// call per interval.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// 5 min per job: a plan of several calls at the default call timeout fits; a stuck job
/// does not hold its slot for long.
pub const DEFAULT_JOB_TIMEOUT: Duration = Duration::from_secs(300);
/// 30 s for spawn + `initialize`: Python servers take ~1 s, `npx` may download first.
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// 60 s per `tools/call`: a slow tool (a search, a build) finishes; a hung one is cut
/// within a minute.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// 2 s between SIGTERM and SIGKILL: time to flush and exit, while a stop stays bounded
/// (`supervisor::max_stop_time`).
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(2);
/// 100 ms before the first restart of a crashed server: a one-off crash costs little,
/// and the doubling keeps a crash loop from spinning.
pub const DEFAULT_RESTART_BACKOFF: Duration = Duration::from_millis(100);
/// 10 s at most between restarts: a job rather fails fast than waits longer.
pub const DEFAULT_RESTART_BACKOFF_MAX: Duration = Duration::from_secs(10);
/// 5 crashes (within [`DEFAULT_CRASH_LOOP_WINDOW`]) are a loop, not bad luck.
pub const DEFAULT_CRASH_LOOP_THRESHOLD: u32 = 5;
/// Crashes are counted over 60 s.
pub const DEFAULT_CRASH_LOOP_WINDOW: Duration = Duration::from_secs(60);
/// 30 s of failing fast for an unhealthy server: jobs stop paying its start-up, and a
/// fixed server is tried again soon.
pub const DEFAULT_UNHEALTHY_FOR: Duration = Duration::from_secs(30);
/// Sessions outlive jobs by default: a warm session saves a server's cold start per call.
pub const DEFAULT_POOL: bool = true;
/// 16 calls in flight per session: MCP matches answers to requests by JSON-RPC id, and
/// the SDK servers (TypeScript, Python, rmcp) answer concurrent requests, so a worker
/// of the default concurrency (4) or of 8 or 16 runs on one warm process instead of one
/// process per job slot. Measured on a 2-core box, concurrency 8, 2,000 echo jobs on
/// server-everything: see docs/BENCHMARKS.md ("The pool's default"). A server that answers one request at a
/// time is still served ([`DEFAULT_GROW_AFTER`] adds sessions when its calls queue), but
/// should say so with `max_in_flight = 1` ("serial").
pub const DEFAULT_MAX_IN_FLIGHT: usize = 16;
/// Largest `servers.NAME.max_in_flight`: as many calls as a worker can run at once
/// (`worker.concurrency` is at most 1,024).
pub const MAX_IN_FLIGHT_LIMIT: usize = 1024;
/// 50 ms: a session whose oldest running call has run longer than this is treated as
/// queuing, and the next call starts another session (up to `max_sessions`). An echo
/// call takes well under 1 ms, even with 16 in flight on a loaded 2-core box, so a warm
/// multiplexed session does not grow by accident; a server that handles calls one at a
/// time, or is saturated, shows up within a few calls. A tool that simply takes longer
/// than this looks the same (the pool grows; see the pool's caveats).
pub const DEFAULT_GROW_AFTER: Duration = Duration::from_millis(50);
/// Longest `servers.NAME.grow_after`: an hour is "grow only when every session is full".
pub const MAX_GROW_AFTER: Duration = Duration::from_secs(3600);

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML / JSON for this schema.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said, with the key.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid config: {key}: {message}")]
    Invalid {
        /// The key, e.g. `servers.echo.command`.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// An MCP JSON file (`--config x.json` or `mcp_servers_file`) could not be used; the
    /// error names the file and the key in it.
    #[error(transparent)]
    McpJson(#[from] mcp_json::McpJsonError),
}

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where Redis is.
    #[serde(default = "default_redis_url")]
    pub redis_url: String,
    /// Name of an environment variable holding Redis's password, put into the URL when
    /// connecting ([`Config::redis_connect_url`]): a password in `--redis-url` shows in
    /// `ps`, one in an environment variable does not. Never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_password_env: Option<String>,
    /// Prefix of every Redis key this deployment uses.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// An MCP JSON file with more servers (relative to this file): Claude Desktop,
    /// Cursor or VS Code form ([`mcp_json`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_servers_file: Option<PathBuf>,
    /// Worker process settings.
    #[serde(default)]
    pub worker: WorkerConfig,
    /// Deadlines used when a server or job sets none.
    #[serde(default)]
    pub defaults: Defaults,
    /// Leases, retries, retention, priorities (`[queue]`).
    #[serde(default)]
    pub queue: queue::QueueSettings,
    /// Attachments of email jobs (`[email]`).
    #[serde(default)]
    pub email: email::EmailSettings,
    /// The model API of LLM-mode jobs (`[llm]`); none: such jobs fail with
    /// `llm_not_configured`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm: Option<llm::LlmSettings>,
    /// Where email replies are sent (`[smtp]`); none: replies are drafted, not sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp: Option<email::SmtpSettings>,
    /// The HTTP front, `mcpq serve` (`[serve]`).
    #[serde(default)]
    pub serve: serve::ServeSettings,
    /// Completion webhooks: secrets, retries, named endpoints (`[webhooks]`).
    #[serde(default)]
    pub webhooks: webhooks::WebhookSettings,
    /// TLS, Sentinel, Cluster, partitions and replica waits (`[redis]`).
    #[serde(default)]
    pub redis: redis_target::RedisSettings,
    /// The MCP servers jobs may use, by name.
    #[serde(default)]
    pub servers: BTreeMap<String, ServerConfig>,
    /// Cron schedules: a job submitted at each tick by the workers (`[schedules.NAME]`,
    /// see [`schedules`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub schedules: BTreeMap<String, schedules::ScheduleConfig>,
    /// Servers of the MCP JSON file skipped for `"disabled": true`, sorted, for callers
    /// to report (not a setting: never read from TOML).
    #[serde(skip)]
    pub disabled_servers: Vec<String>,
    /// Values `${VAR}` / `${input:ID}` put into servers of the MCP JSON file that may
    /// be secrets (a token in a URL or an argument): redacted like the configured ones
    /// (not a setting: never read from TOML).
    #[serde(skip)]
    pub substituted_secrets: Vec<String>,
}

/// `[worker]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// Jobs run at once by one worker process (1..=1024, default 4: [`DEFAULT_CONCURRENCY`]).
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// On SIGTERM/SIGINT, how long running jobs may finish before they are stopped
    /// (default 10 s: [`DEFAULT_SHUTDOWN_GRACE`]).
    #[serde(default = "default_shutdown_grace", with = "crate::duration")]
    pub shutdown_grace: Duration,
    /// How often an idle worker polls Redis for new jobs (default 100 ms:
    /// [`DEFAULT_POLL_INTERVAL`]).
    #[serde(default = "default_poll_interval", with = "crate::duration")]
    pub poll_interval: Duration,
    /// Address to serve Prometheus metrics on (`GET /metrics`), e.g. `127.0.0.1:9717`;
    /// none by default (off). `--metrics-listen` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// The queues this worker serves, with weights: `"emails:3,agents:1"` (default: the
    /// `default` queue alone). `--queues` overrides it. See [`crate::queue::queues`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queues: Option<String>,
}

impl WorkerConfig {
    /// The queues served ([`WorkerConfig::queues`], checked when the config was loaded).
    pub fn served(&self) -> Result<served::Served, String> {
        match &self.queues {
            Some(spec) => spec.parse(),
            None => Ok(served::Served::default()),
        }
    }
}

/// `[defaults]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// A job's deadline when it sets no `options.timeout` (default 5 min:
    /// [`DEFAULT_JOB_TIMEOUT`]).
    #[serde(default = "default_job_timeout", with = "crate::duration")]
    pub job_timeout: Duration,
    /// Spawn plus MCP `initialize` of one server (default 30 s: [`DEFAULT_STARTUP_TIMEOUT`]).
    #[serde(default = "default_startup_timeout", with = "crate::duration")]
    pub startup_timeout: Duration,
    /// One `tools/call` (default 60 s: [`DEFAULT_CALL_TIMEOUT`]).
    #[serde(default = "default_call_timeout", with = "crate::duration")]
    pub call_timeout: Duration,
    /// Between SIGTERM and SIGKILL when a server's process group is stopped (default 2 s:
    /// [`DEFAULT_KILL_GRACE`]).
    #[serde(default = "default_kill_grace", with = "crate::duration")]
    pub kill_grace: Duration,
    /// Wait before restarting a server after its first crash; doubles with each further
    /// crash in a row (default 100 ms: [`DEFAULT_RESTART_BACKOFF`]).
    #[serde(default = "default_restart_backoff", with = "crate::duration")]
    pub restart_backoff: Duration,
    /// Upper bound of that wait (default 10 s: [`DEFAULT_RESTART_BACKOFF_MAX`]).
    #[serde(default = "default_restart_backoff_max", with = "crate::duration")]
    pub restart_backoff_max: Duration,
    /// Crashes within `crash_loop_window` that mark a server unhealthy (default 5:
    /// [`DEFAULT_CRASH_LOOP_THRESHOLD`]).
    #[serde(default = "default_crash_loop_threshold")]
    pub crash_loop_threshold: u32,
    /// Window in which crashes are counted (default 60 s: [`DEFAULT_CRASH_LOOP_WINDOW`]).
    #[serde(default = "default_crash_loop_window", with = "crate::duration")]
    pub crash_loop_window: Duration,
    /// How long jobs that need an unhealthy server fail fast before it is tried again
    /// (default 30 s: [`DEFAULT_UNHEALTHY_FOR`]).
    #[serde(default = "default_unhealthy_for", with = "crate::duration")]
    pub unhealthy_for: Duration,
}

/// `[servers.NAME]`: how to reach one MCP server: a stdio program to start (`command`)
/// or a streamable-HTTP endpoint (`url`), exactly one of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Program to run (looked up in PATH when it has no `/`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub command: String,
    /// Streamable-HTTP endpoint, e.g. `http://127.0.0.1:8000/mcp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Extra HTTP headers sent to `url`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Name of an environment variable (of the worker) holding a bearer token for `url`,
    /// sent as `Authorization: Bearer <token>`. Never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_env: Option<String>,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment variables for it.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory (default: the worker's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<PathBuf>,
    /// Overrides `defaults.startup_timeout`.
    #[serde(
        default,
        with = "crate::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub startup_timeout: Option<Duration>,
    /// Overrides `defaults.call_timeout`.
    #[serde(
        default,
        with = "crate::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub call_timeout: Option<Duration>,
    /// Overrides `defaults.kill_grace`.
    #[serde(
        default,
        with = "crate::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub kill_grace: Option<Duration>,
    /// Keep sessions of this server alive across jobs (default true: [`DEFAULT_POOL`]). With `false`, each
    /// job starts its own server and stops it at its end (for servers that keep per-job
    /// state).
    #[serde(default = "default_pool")]
    pub pool: bool,
    /// Sessions started with the worker and kept even when idle (default 0).
    #[serde(default)]
    pub min_sessions: usize,
    /// Most sessions at once (default: `worker.concurrency`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sessions: Option<usize>,
    /// Calls in flight on one session (1..=[`MAX_IN_FLIGHT_LIMIT`]; default 16:
    /// [`DEFAULT_MAX_IN_FLIGHT`]; MCP matches answers to requests by id). `1` is
    /// "serial": one call per session, a session per concurrent call (up to
    /// `max_sessions`), for servers that handle one request at a time.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// A call starts another session (up to `max_sessions`, one start at a time) when
    /// every session with a free slot has a call that has been running longer than this:
    /// its calls are queuing (default 50 ms: [`DEFAULT_GROW_AFTER`]; at most
    /// [`MAX_GROW_AFTER`]). `"0s"`: another session whenever none is idle.
    #[serde(
        default,
        with = "crate::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub grow_after: Option<Duration>,
    /// An idle session older than this is closed (beyond `min_sessions`), and one idle
    /// for half of it is pinged before reuse (default 5 min: [`DEFAULT_IDLE_TTL`]).
    #[serde(
        default,
        with = "crate::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub idle_ttl: Option<Duration>,
    /// Calls after which a session is replaced by a fresh one (default: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_calls: Option<u64>,
    /// Most calls of this server in any window of the rate's period, over all workers
    /// of the namespace, e.g. `"60/min"` (default: none). A call over it waits, within
    /// its job's deadline (`queue::limits`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<rate::Rate>,
    /// Most calls of this server in flight at once over all workers of the namespace
    /// (1..=[`MAX_CONCURRENT_LIMIT`]; default: none). A call over it waits, within its
    /// job's deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u32>,
    /// The only tools of this server any job may reach: tool names or globs with `*`
    /// (`["read_text_file", "list_*"]`). Empty (the default): every tool, as before the
    /// setting existed. A model is offered only these, and a plan step or model call to
    /// another is refused (`invalid_job`, never retried). At most
    /// [`crate::job::MAX_TOOL_PATTERNS`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<String>,
}

impl ServerConfig {
    /// Whether a job may call `tool` of this server (its `tools` allow-list).
    pub fn allows_tool(&self, tool: &str) -> bool {
        self.tools.is_empty()
            || self
                .tools
                .iter()
                .any(|p| crate::tool_pattern::glob(p, tool))
    }
}

/// Largest `servers.NAME.max_concurrent`: each slot is one Redis sorted-set entry, and
/// more than 10 000 calls at once is no limit at all.
pub const MAX_CONCURRENT_LIMIT: u32 = 10_000;

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            command: String::new(),
            url: None,
            headers: BTreeMap::new(),
            bearer_token_env: None,
            args: Vec::new(),
            env: BTreeMap::new(),
            cwd: None,
            startup_timeout: None,
            call_timeout: None,
            kill_grace: None,
            pool: DEFAULT_POOL,
            min_sessions: 0,
            max_sessions: None,
            max_in_flight: default_max_in_flight(),
            grow_after: None,
            idle_ttl: None,
            max_calls: None,
            rate: None,
            max_concurrent: None,
            tools: Vec::new(),
        }
    }
}

/// 5 min: a session idle that long is closed (beyond `min_sessions`), one idle half of it
/// is pinged before reuse; servers leak less, bursts a few minutes apart stay warm.
pub const DEFAULT_IDLE_TTL: Duration = Duration::from_secs(300);

fn default_pool() -> bool {
    DEFAULT_POOL
}
fn default_max_in_flight() -> usize {
    DEFAULT_MAX_IN_FLIGHT
}

fn default_redis_url() -> String {
    DEFAULT_REDIS_URL.to_string()
}
fn default_namespace() -> String {
    DEFAULT_NAMESPACE.to_string()
}
fn default_concurrency() -> usize {
    DEFAULT_CONCURRENCY
}
fn default_shutdown_grace() -> Duration {
    DEFAULT_SHUTDOWN_GRACE
}
fn default_poll_interval() -> Duration {
    DEFAULT_POLL_INTERVAL
}
fn default_job_timeout() -> Duration {
    DEFAULT_JOB_TIMEOUT
}
fn default_startup_timeout() -> Duration {
    DEFAULT_STARTUP_TIMEOUT
}
fn default_call_timeout() -> Duration {
    DEFAULT_CALL_TIMEOUT
}
fn default_kill_grace() -> Duration {
    DEFAULT_KILL_GRACE
}
fn default_restart_backoff() -> Duration {
    DEFAULT_RESTART_BACKOFF
}
fn default_restart_backoff_max() -> Duration {
    DEFAULT_RESTART_BACKOFF_MAX
}
fn default_crash_loop_threshold() -> u32 {
    DEFAULT_CRASH_LOOP_THRESHOLD
}
fn default_crash_loop_window() -> Duration {
    DEFAULT_CRASH_LOOP_WINDOW
}
fn default_unhealthy_for() -> Duration {
    DEFAULT_UNHEALTHY_FOR
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            concurrency: default_concurrency(),
            shutdown_grace: default_shutdown_grace(),
            poll_interval: default_poll_interval(),
            metrics_listen: None,
            queues: None,
        }
    }
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            job_timeout: default_job_timeout(),
            startup_timeout: default_startup_timeout(),
            call_timeout: default_call_timeout(),
            kill_grace: default_kill_grace(),
            restart_backoff: default_restart_backoff(),
            restart_backoff_max: default_restart_backoff_max(),
            crash_loop_threshold: default_crash_loop_threshold(),
            crash_loop_window: default_crash_loop_window(),
            unhealthy_for: default_unhealthy_for(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            redis_url: default_redis_url(),
            redis_password_env: None,
            namespace: default_namespace(),
            mcp_servers_file: None,
            worker: WorkerConfig::default(),
            defaults: Defaults::default(),
            queue: queue::QueueSettings::default(),
            serve: serve::ServeSettings::default(),
            email: email::EmailSettings::default(),
            smtp: None,
            llm: None,
            webhooks: webhooks::WebhookSettings::default(),
            redis: redis_target::RedisSettings::default(),
            servers: BTreeMap::new(),
            schedules: BTreeMap::new(),
            disabled_servers: Vec::new(),
            substituted_secrets: Vec::new(),
        }
    }
}

impl Config {
    /// Loads `path` (TOML, or an MCP JSON file: a `.json` path), then the
    /// `mcp_servers_file` it names. With no path, `./mcpq.toml` if it exists, else the
    /// defaults. `${VAR}` references in JSON files are read from the environment.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        Config::load_with_env(path, &|var| std::env::var(var).ok())
    }

    /// [`Config::load`], reading the variables of MCP JSON files through `lookup`.
    pub fn load_with_env(
        path: Option<&Path>,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let path = match path {
            Some(p) => p.to_path_buf(),
            None => {
                let local = PathBuf::from("mcpq.toml");
                if !local.exists() {
                    return Ok(Config::default());
                }
                local
            }
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let mut config = if path.extension().is_some_and(|e| e == "json") {
            let file = mcp_json::read(&path, &text, lookup)?;
            Config {
                servers: file.servers,
                disabled_servers: file.disabled,
                substituted_secrets: file.secrets,
                ..Config::default()
            }
        } else {
            read_toml(&path, &text)?
        };
        if let Some(dir) = path.parent() {
            // `[redis]` ca_file / cert_file / key_file are relative to this file too.
            config.redis.resolve_paths(dir);
        }
        if let Some(file) = config.mcp_servers_file.clone() {
            let file = path.parent().map(|dir| dir.join(&file)).unwrap_or(file);
            let text = std::fs::read_to_string(&file).map_err(|source| ConfigError::Read {
                path: file.clone(),
                source,
            })?;
            let servers = mcp_json::read(&file, &text, lookup)?;
            config.disabled_servers = servers.disabled;
            config.substituted_secrets = servers.secrets;
            for (name, server) in servers.servers {
                if config.servers.contains_key(&name) {
                    return Err(ConfigError::Invalid {
                        key: format!("servers.{name}"),
                        message: format!(
                            "defined both in {} and in {}",
                            path.display(),
                            file.display()
                        ),
                    });
                }
                config.servers.insert(name, server);
            }
        }
        config.read_job_files(&path)?;
        config.validate()?;
        Ok(config)
    }

    /// The URL to connect with: `redis_url`, with the password from `redis_password_env`
    /// when that is set (an error naming the variable when it is not in the environment).
    /// Show it only through [`redis_url::redacted`].
    pub fn redis_connect_url(&self) -> Result<String, ConfigError> {
        let Some(var) = &self.redis_password_env else {
            return Ok(self.redis_url.clone());
        };
        let password = std::env::var(var).map_err(|_| ConfigError::Invalid {
            key: "redis_password_env".to_string(),
            message: format!("the environment variable {var} is not set (or not UTF-8)"),
        })?;
        redis_url::with_password(&self.redis_url, &password).ok_or_else(|| ConfigError::Invalid {
            key: "redis_url".to_string(),
            message: format!(
                "{} is not a redis:// URL (or rediss://, redis+sentinel://, redis+cluster://)",
                redis_url::redacted(&self.redis_url)
            ),
        })
    }

    /// Where and how to connect: [`Config::redis_connect_url`] with `[redis]`; the
    /// error names the key at fault.
    pub fn redis_target(&self) -> Result<redis_target::RedisTarget, ConfigError> {
        redis_target::RedisTarget::new(&self.redis_connect_url()?, &self.redis)
    }

    /// Applies overrides from the command line or the environment.
    pub fn with_overrides(
        mut self,
        redis_url: Option<String>,
        namespace: Option<String>,
    ) -> Result<Config, ConfigError> {
        if let Some(url) = redis_url {
            self.redis_url = url;
        }
        if let Some(ns) = namespace {
            self.namespace = ns;
        }
        self.validate()?;
        Ok(self)
    }

    /// Reads each schedule's `job_file` (relative to the config file at `path`) into its
    /// `job`, at most `queue.max_payload` bytes of JSON.
    fn read_job_files(&mut self, path: &Path) -> Result<(), ConfigError> {
        let limit = self.queue.max_payload;
        for (name, schedule) in &mut self.schedules {
            let Some(file) = schedule.job_file.clone() else {
                continue;
            };
            let invalid = |message: String| ConfigError::Invalid {
                key: format!("schedules.{name}.job_file"),
                message,
            };
            if schedule.job.is_some() {
                return Err(invalid("give `job` or `job_file`, not both".into()));
            }
            let file = path.parent().map(|dir| dir.join(&file)).unwrap_or(file);
            let text = std::fs::read(&file).map_err(|source| ConfigError::Read {
                path: file.clone(),
                source,
            })?;
            if text.len() > limit {
                return Err(invalid(format!(
                    "{} is larger than queue.max_payload ({limit} bytes)",
                    file.display()
                )));
            }
            let value = serde_json::from_slice(&text)
                .map_err(|e| invalid(format!("{} is not JSON: {e}", file.display())))?;
            schedule.job = Some(value);
            schedule.job_file = None;
        }
        Ok(())
    }

    /// The schedules, parsed (they were checked at load, so none fails here unless the
    /// config was changed since; those are left out and logged).
    pub fn resolved_schedules(&self) -> Vec<schedules::Schedule> {
        self.schedules
            .iter()
            .filter_map(
                |(name, config)| match schedules::Schedule::resolve(name, config) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        tracing::error!("schedule {name} left out: {e}");
                        None
                    }
                },
            )
            .collect()
    }

    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: &str| ConfigError::Invalid {
            key: key.to_string(),
            message: message.to_string(),
        };
        if self.namespace.is_empty()
            || self
                .namespace
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || "{}[]*?\\~".contains(c))
        {
            // `~` separates a namespace from its partition number (`{ns~3}`).
            return Err(invalid(
                "namespace",
                "must be non-empty, without spaces or any of {}[]*?\\~",
            ));
        }
        redis_target::RedisTarget::new(&self.redis_url, &self.redis)?;
        if !(1..=1024).contains(&self.worker.concurrency) {
            return Err(invalid("worker.concurrency", "must be between 1 and 1024"));
        }
        if let Err(e) = self.worker.served() {
            return Err(invalid("worker.queues", &e));
        }
        if self.worker.poll_interval.is_zero() {
            return Err(invalid("worker.poll_interval", "must be longer than zero"));
        }
        for (key, d) in [
            ("defaults.job_timeout", self.defaults.job_timeout),
            ("defaults.startup_timeout", self.defaults.startup_timeout),
            ("defaults.call_timeout", self.defaults.call_timeout),
            ("defaults.kill_grace", self.defaults.kill_grace),
        ] {
            if d.is_zero() {
                return Err(invalid(key, ZERO_DURATION));
            }
        }
        self.queue.validate()?;
        self.serve.validate()?;
        self.serve
            .mcp
            .validate(self.servers.keys().map(String::as_str))?;
        self.webhooks.validate()?;
        if let Some(rate) = self.llm.as_ref().and_then(|llm| llm.rate) {
            rate.check_requests()
                .map_err(|message| invalid("llm.rate", &message))?;
        }
        schedules::validate(&self.schedules, self.server_names())?;
        // A tick is fired once because its job's idempotency key outlives the round
        // of every worker: an hour at the least.
        if !self.schedules.is_empty() && self.queue.idempotency_ttl < Duration::from_secs(3600) {
            return Err(invalid(
                "queue.idempotency_ttl",
                "must be at least 1h when [schedules] are configured (it keeps each tick to one job)",
            ));
        }
        if self.defaults.crash_loop_threshold == 0 {
            return Err(invalid(
                "defaults.crash_loop_threshold",
                "must be at least 1",
            ));
        }
        for (name, server) in &self.servers {
            if let Some(problem) = server_name_problem(name) {
                return Err(invalid(&format!("servers.{name:?}"), problem));
            }
            match (server.command.trim().is_empty(), &server.url) {
                (true, None) => {
                    return Err(invalid(
                        &format!("servers.{name}"),
                        "needs a `command` (stdio) or a `url` (streamable HTTP)",
                    ))
                }
                (false, Some(_)) => {
                    return Err(invalid(
                        &format!("servers.{name}"),
                        "has both `command` and `url`: choose one",
                    ))
                }
                (true, Some(url))
                    if !(url.starts_with("http://") || url.starts_with("https://")) =>
                {
                    return Err(invalid(
                        &format!("servers.{name}.url"),
                        "must start with http:// or https://",
                    ))
                }
                _ => {}
            }
            let key = |k: &str| format!("servers.{name}.{k}");
            // The same rule as `[defaults]`: a zero deadline would fail every call of
            // this server at run time (as a retryable `timeout`), so it is refused here.
            for (k, d) in [
                ("startup_timeout", server.startup_timeout),
                ("call_timeout", server.call_timeout),
                ("kill_grace", server.kill_grace),
            ] {
                if d.is_some_and(|d| d.is_zero()) {
                    return Err(invalid(&key(k), ZERO_DURATION));
                }
            }
            if server.idle_ttl.is_some_and(|d| d.is_zero()) {
                return Err(invalid(
                    &key("idle_ttl"),
                    "must be longer than zero (for a fresh server per job, set pool = false)",
                ));
            }
            if !(1..=MAX_IN_FLIGHT_LIMIT).contains(&server.max_in_flight) {
                return Err(invalid(
                    &key("max_in_flight"),
                    &format!("must be between 1 and {MAX_IN_FLIGHT_LIMIT}"),
                ));
            }
            if server.grow_after.is_some_and(|d| d > MAX_GROW_AFTER) {
                return Err(invalid(
                    &key("grow_after"),
                    "must be at most 1h (a session is also added when every one is full)",
                ));
            }
            if server.max_sessions == Some(0) {
                return Err(invalid(&key("max_sessions"), "must be at least 1"));
            }
            if server.min_sessions > self.pool_settings(server).max_sessions {
                return Err(invalid(
                    &key("min_sessions"),
                    "must not exceed max_sessions",
                ));
            }
            if server.max_calls == Some(0) {
                return Err(invalid(&key("max_calls"), "must be at least 1"));
            }
            if let Some(rate) = server.rate {
                rate.check_requests()
                    .map_err(|message| invalid(&key("rate"), &message))?;
            }
            if server
                .max_concurrent
                .is_some_and(|n| !(1..=MAX_CONCURRENT_LIMIT).contains(&n))
            {
                return Err(invalid(
                    &key("max_concurrent"),
                    &format!("must be between 1 and {MAX_CONCURRENT_LIMIT}"),
                ));
            }
            if server.tools.len() > crate::job::MAX_TOOL_PATTERNS {
                return Err(invalid(
                    &key("tools"),
                    &format!("at most {} patterns", crate::job::MAX_TOOL_PATTERNS),
                ));
            }
            for (i, pattern) in server.tools.iter().enumerate() {
                // A tool name, never SERVER__TOOL: the server is this one. An empty
                // pattern would allow nothing and look like a typo.
                if pattern.trim().is_empty()
                    || pattern.trim() != pattern
                    || pattern.chars().any(char::is_control)
                {
                    return Err(invalid(
                        &key(&format!("tools[{i}]")),
                        "must be a tool name or a glob with `*` (e.g. \"read_text_file\", \"list_*\"), without spaces around it",
                    ));
                }
                // `llm.tools` spells SERVER__TOOL; here the server is this one, and that
                // spelling would match no tool (so refuse every one, silently).
                if pattern.starts_with(&format!("{name}__")) {
                    return Err(invalid(
                        &key(&format!("tools[{i}]")),
                        &format!(
                            "give the tool's own name (`{}`), not SERVER__TOOL",
                            &pattern[name.len() + 2..]
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The configured server names.
    pub fn server_names(&self) -> impl Iterator<Item = &str> + Clone {
        self.servers.keys().map(String::as_str)
    }

    /// The longest kill grace of any server (its own or `[defaults]`): with
    /// `supervisor::max_stop_time`, the longest a stopped server may take to go.
    pub fn max_kill_grace(&self) -> Duration {
        self.servers
            .values()
            .filter_map(|s| s.kill_grace)
            .chain([self.defaults.kill_grace])
            .max()
            .unwrap_or(self.defaults.kill_grace)
    }

    /// The effective pool settings of one server.
    pub fn pool_settings(&self, server: &ServerConfig) -> PoolSettings {
        PoolSettings {
            pooled: server.pool,
            min_sessions: server.min_sessions,
            max_sessions: server.max_sessions.unwrap_or(self.worker.concurrency),
            max_in_flight: server.max_in_flight,
            grow_after: server.grow_after.unwrap_or(DEFAULT_GROW_AFTER),
            idle_ttl: server.idle_ttl.unwrap_or(DEFAULT_IDLE_TTL),
            max_calls: server.max_calls,
        }
    }

    /// The effective deadlines of one server.
    pub fn timeouts(&self, server: &ServerConfig) -> ServerTimeouts {
        ServerTimeouts {
            startup: server
                .startup_timeout
                .unwrap_or(self.defaults.startup_timeout),
            call: server.call_timeout.unwrap_or(self.defaults.call_timeout),
            kill_grace: server.kill_grace.unwrap_or(self.defaults.kill_grace),
            max_answer: self.queue.max_result,
        }
    }
}

/// Pool settings of one server, defaults applied (see [`ServerConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    /// Sessions outlive jobs.
    pub pooled: bool,
    /// Sessions kept even when idle.
    pub min_sessions: usize,
    /// Most sessions at once.
    pub max_sessions: usize,
    /// Calls in flight on one session.
    pub max_in_flight: usize,
    /// Another session is started when the calls of every open one have queued this long.
    pub grow_after: Duration,
    /// Idle sessions beyond `min_sessions` close after this; ping after half of it.
    pub idle_ttl: Duration,
    /// Calls before a session is replaced.
    pub max_calls: Option<u64>,
}

/// Deadlines of one server, defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerTimeouts {
    /// Spawn + initialize.
    pub startup: Duration,
    /// One tool call.
    pub call: Duration,
    /// SIGTERM to SIGKILL.
    pub kill_grace: Duration,
    /// Largest single message (stdio line, HTTP body or SSE event) accepted from the
    /// server, in bytes: `queue.max_result`.
    pub max_answer: usize,
}

/// What is wrong with `name` as a server name, if anything: it must be non-empty,
/// without whitespace or control characters (it is a TOML key, a log field and a word on
/// the command line), and without `__`, the separator of `SERVER__TOOL` tool names.
pub fn server_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("a server name must be non-empty, without spaces")
    } else if name.contains("__") || name.ends_with('_') {
        Some(
            "a server name must not contain `__` or end in `_`: tools are named SERVER__TOOL, \
             so the name would be ambiguous (rename it, e.g. with a single `_` or `-`)",
        )
    } else {
        None
    }
}

/// What a zero deadline is told.
const ZERO_DURATION: &str = "must be longer than zero, e.g. \"30s\"";

/// Parses a TOML config; an error names the key it is about (`servers.echo.call_timeout:
/// ...`), as [`ConfigError::Invalid`] does.
fn read_toml(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let parse_error = |message: String| ConfigError::Parse {
        path: path.to_path_buf(),
        message,
    };
    let de = toml::Deserializer::parse(text).map_err(|e| parse_error(e.to_string()))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        if key == "." {
            parse_error(inner.to_string())
        } else {
            parse_error(format!("{key}: {inner}"))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write temp file");
        p
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mcpq-config-test-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    }

    #[test]
    fn reads_toml_with_servers_and_durations() {
        let dir = temp_dir("toml");
        let p = write(
            &dir,
            "mcpq.toml",
            r#"
namespace = "t1"
[worker]
concurrency = 8
[defaults]
call_timeout = "5s"
[servers.echo]
command = "mcpq-fixture"
args = ["--quiet"]
startup_timeout = "2s"
"#,
        );
        let c = Config::load(Some(&p)).expect("valid");
        assert_eq!(c.namespace, "t1");
        assert_eq!(c.worker.concurrency, 8);
        let echo = &c.servers["echo"];
        assert_eq!(echo.args, vec!["--quiet"]);
        let t = c.timeouts(echo);
        assert_eq!(t.startup, Duration::from_secs(2));
        assert_eq!(t.call, Duration::from_secs(5));
        assert_eq!(t.kill_grace, Duration::from_secs(2));
    }

    #[test]
    fn reads_claude_desktop_json_directly_and_by_reference() {
        let dir = temp_dir("claude");
        let json =
            r#"{"mcpServers": {"fs": {"command": "npx", "args": ["-y", "x"], "env": {"A": "1"}}}}"#;
        let p = write(&dir, "claude.json", json);
        let c = Config::load(Some(&p)).expect("json");
        assert_eq!(c.servers["fs"].command, "npx");
        assert_eq!(c.servers["fs"].env["A"], "1");

        let t = write(
            &dir,
            "with-ref.toml",
            "mcp_servers_file = \"claude.json\"\n[servers.echo]\ncommand = \"e\"\n",
        );
        let c = Config::load(Some(&t)).expect("toml + json");
        assert_eq!(c.server_names().collect::<Vec<_>>(), vec!["echo", "fs"]);
    }

    #[test]
    fn bad_values_name_their_key() {
        let dir = temp_dir("bad");
        let p = write(&dir, "a.toml", "[worker]\nconcurrency = 0\n");
        let e = Config::load(Some(&p)).expect_err("zero").to_string();
        assert!(e.contains("worker.concurrency"), "{e}");

        let p = write(&dir, "b.toml", "[worker]\nconcurency = 2\n");
        let e = Config::load(Some(&p)).expect_err("typo").to_string();
        assert!(e.contains("concurency"), "{e}");

        let p = write(&dir, "c.toml", "[defaults]\ncall_timeout = \"soon\"\n");
        let e = Config::load(Some(&p)).expect_err("duration").to_string();
        assert!(e.contains("call_timeout") || e.contains("soon"), "{e}");

        let e = Config::load(Some(&dir.join("missing.toml")))
            .expect_err("missing")
            .to_string();
        assert!(e.contains("missing.toml"), "{e}");
    }

    #[test]
    fn per_server_values_that_would_fail_every_job_are_refused_naming_the_key() {
        let dir = temp_dir("server-values");
        for (line, key) in [
            ("call_timeout = \"0s\"", "servers.echo.call_timeout"),
            ("startup_timeout = 0", "servers.echo.startup_timeout"),
            ("kill_grace = \"0ms\"", "servers.echo.kill_grace"),
            ("idle_ttl = \"0s\"", "servers.echo.idle_ttl"),
            ("call_timeout = \"-1s\"", "servers.echo.call_timeout"),
            ("startup_timeout = -1", "servers.echo.startup_timeout"),
            ("max_sessions = 0", "servers.echo.max_sessions"),
            ("tools = [\"read_file\", \" \"]", "servers.echo.tools[1]"),
            ("tools = [\"echo__read_file\"]", "servers.echo.tools[0]"),
            ("tools = [\" read_file\"]", "servers.echo.tools[0]"),
            ("max_in_flight = 0", "servers.echo.max_in_flight"),
            ("max_in_flight = 1025", "servers.echo.max_in_flight"),
            ("grow_after = \"2h\"", "servers.echo.grow_after"),
            ("max_calls = 0", "servers.echo.max_calls"),
            ("rate = \"10/day\"", "servers.echo.rate"),
            ("rate = \"0/s\"", "servers.echo.rate"),
            ("rate = \"100001/s\"", "servers.echo.rate"),
            ("max_concurrent = 0", "servers.echo.max_concurrent"),
            ("max_concurrent = 10001", "servers.echo.max_concurrent"),
        ] {
            let p = write(
                &dir,
                "server.toml",
                &format!("[servers.echo]\ncommand = \"e\"\n{line}\n"),
            );
            let e = Config::load(Some(&p)).expect_err(line).to_string();
            assert!(e.contains(key), "{line}: {e}");
        }
        let p = write(&dir, "defaults.toml", "[defaults]\nkill_grace = \"0s\"\n");
        let e = Config::load(Some(&p)).expect_err("zero grace").to_string();
        assert!(e.contains("defaults.kill_grace"), "{e}");

        // Servers from a Claude Desktop file, read directly or through
        // mcp_servers_file, are checked like the TOML ones.
        let p = write(
            &dir,
            "claude.json",
            r#"{"mcpServers": {"fs": {"command": " "}}}"#,
        );
        let e = Config::load(Some(&p))
            .expect_err("blank command")
            .to_string();
        assert!(e.contains("servers.fs"), "{e}");
        let t = write(
            &dir,
            "with-ref.toml",
            "mcp_servers_file = \"claude.json\"\n",
        );
        let e = Config::load(Some(&t))
            .expect_err("blank command")
            .to_string();
        assert!(e.contains("servers.fs"), "{e}");
    }

    /// The lines of section `[name]` in a TOML example (up to the next section or blank
    /// line), `prefix` (`//!`) and one space taken off each line.
    fn example_section(text: &str, prefix: &str, name: &str) -> String {
        let lines: Vec<&str> = text
            .lines()
            .map(|l| {
                let l = l.strip_prefix(prefix).unwrap_or(l);
                l.strip_prefix(' ').unwrap_or(l).trim_end()
            })
            .collect();
        let header = format!("[{name}]");
        let start = lines
            .iter()
            .position(|l| l.split('#').next().is_some_and(|h| h.trim() == header))
            .unwrap_or_else(|| panic!("no {header} in the example"));
        let mut out = format!("{header}\n");
        for line in &lines[start + 1..] {
            if line.is_empty() || line.starts_with('[') || line.starts_with("```") {
                break;
            }
            out.push_str(line);
            out.push('\n');
        }
        out
    }

    #[test]
    fn the_documented_worker_and_defaults_examples_are_the_defaults() {
        #[derive(Deserialize)]
        struct Example {
            worker: WorkerConfig,
            defaults: Defaults,
        }
        for (doc, text, prefix) in [
            ("config/mod.rs", include_str!("mod.rs"), "//!"),
            ("README.md", include_str!("../../../README.md"), ""),
        ] {
            let toml_text = format!(
                "{}{}",
                example_section(text, prefix, "worker"),
                example_section(text, prefix, "defaults")
            );
            let example: Example =
                toml::from_str(&toml_text).unwrap_or_else(|e| panic!("{doc}: {e}\n{toml_text}"));
            assert_eq!(example.worker, WorkerConfig::default(), "{doc}");
            assert_eq!(example.defaults, Defaults::default(), "{doc}");
        }
        assert_eq!(Config::default().redis_url, DEFAULT_REDIS_URL);
        assert_eq!(Config::default().namespace, DEFAULT_NAMESPACE);
        let server: ServerConfig = toml::from_str("command = \"e\"").expect("minimal server");
        assert_eq!(
            server,
            ServerConfig {
                command: "e".to_string(),
                ..ServerConfig::default()
            }
        );
        assert_eq!(server.pool, DEFAULT_POOL);
        assert_eq!(server.max_in_flight, DEFAULT_MAX_IN_FLIGHT);
    }
}
