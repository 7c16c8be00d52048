//! `Metrics`: the worker's Prometheus metrics (prometheus-client), shared by everything
//! that counts: the runner, the supervisor, the pool's calls, the log writer, the
//! report loop; [`Metrics::encode`] gives the text `/metrics` serves.
//!
//! The families (README, "Metrics", says what each means):
//! - `mcpq_jobs_started_total{kind}`, `mcpq_jobs_finished_total{kind,outcome}`,
//!   `mcpq_job_duration_seconds{kind,outcome}` (histogram), by the runner;
//! - `mcpq_queue_depth{priority}`, `mcpq_queue_jobs{state}`,
//!   `mcpq_queue_oldest_age_seconds`, from `queue::stats` in the report loop;
//! - `mcpq_tool_call_duration_seconds{server,tool}` (histogram), one observation per
//!   `tools/call` of a job, however it ended;
//! - `mcpq_pool_sessions{server,state}` (busy, idle), set when scraped;
//! - `mcpq_server_spawns_total{server}`, `mcpq_server_crashes_total{server}`,
//!   `mcpq_server_restarts_total{server}`, by the supervisor and its health book;
//! - `mcpq_webhook_deliveries_total{outcome}` ([`Metrics::webhook_delivery`]);
//! - `mcpq_log_lines_dropped_total`, by the worker's log writer.
//!
//! Guarantees:
//! - **Bounded label values.** Kinds and outcomes are fixed words. Server names come
//!   from the config, at most [`MAX_SERVERS`] of them get their own series (the rest
//!   share `server="other"`); tool names come from jobs and servers: the first
//!   [`MAX_TOOLS_PER_SERVER`] names called on a server get their own series, later ones
//!   share `tool="other"` (so jobs calling made-up names can push real tools into
//!   `other`, but never grow the series past the cap); webhook
//!   outcomes at most [`MAX_WEBHOOK_OUTCOMES`]. Names of any length are cut to
//!   [`MAX_LABEL_BYTES`]. So a million distinct tool names add 100 series per server.
//! - **Cheap hot path.** Counting a job or a call takes read locks and atomics; it
//!   allocates only the first time a label value is seen.
//! - Cloning shares the metrics (one registry per worker process).

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A counter (the log writer increments [`Metrics::log_lines_dropped`]).
pub use prometheus_client::metrics::counter::Counter;

/// Servers with their own series; the rest are counted as `server="other"`.
pub const MAX_SERVERS: usize = 256;
/// Tools of one server with their own series; the rest are `tool="other"`.
pub const MAX_TOOLS_PER_SERVER: usize = 100;
/// Distinct webhook delivery outcomes; the rest are `outcome="other"`.
pub const MAX_WEBHOOK_OUTCOMES: usize = 16;
/// Longest label value kept (bytes); longer ones are cut at a character boundary.
pub const MAX_LABEL_BYTES: usize = 128;

/// The `Content-Type` of [`Metrics::encode`]'s text (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Job durations (s): 10 ms to an hour.
const JOB_BUCKETS: [f64; 16] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0,
    3600.0,
];
/// Tool call durations (s): 1 ms to 5 min.
const CALL_BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 300.0,
];

type Static1 = [(&'static str, &'static str); 1];
type Static2 = [(&'static str, &'static str); 2];
type Owned1 = [(&'static str, String); 1];
type Owned2 = [(&'static str, String); 2];
type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The kind label of a job whose payload could not be decoded.
pub const KIND_INVALID: &str = "invalid";

/// How an attempt ended, as the runner decided (`fate::Fate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    /// The result was stored.
    Succeeded,
    /// It failed and runs again after a backoff.
    Retry,
    /// It failed for good: the dead-letter set.
    Dead,
    /// Cut off by shutdown, back to its queue.
    Released,
    /// Stopped by `mcpq cancel`.
    Cancelled,
    /// Its lease was lost (another attempt owns it).
    LeaseLost,
}

impl JobOutcome {
    /// The `outcome` label.
    pub fn as_str(self) -> &'static str {
        match self {
            JobOutcome::Succeeded => "succeeded",
            JobOutcome::Retry => "retry",
            JobOutcome::Dead => "dead",
            JobOutcome::Released => "released",
            JobOutcome::Cancelled => "cancelled",
            JobOutcome::LeaseLost => "lease_lost",
        }
    }
}

/// One server's series, made once and kept (no allocation per event).
struct ServerSeries {
    spawns: Counter,
    crashes: Counter,
    restarts: Counter,
    busy: Gauge,
    idle: Gauge,
    tools: RwLock<HashMap<String, Histogram>>,
    other_tools: Histogram,
    name: String,
}

struct Inner {
    registry: Registry,
    jobs_started: Family<Static1, Counter>,
    jobs_finished: Family<Static2, Counter>,
    job_duration: HistogramFamily<Static2>,
    queue_depth: Family<Static1, Gauge>,
    queue_jobs: Family<Static1, Gauge>,
    queue_oldest: Gauge<f64, AtomicU64>,
    tool_calls: HistogramFamily<Owned2>,
    pool_sessions: Family<Owned2, Gauge>,
    spawns: Family<Owned1, Counter>,
    crashes: Family<Owned1, Counter>,
    restarts: Family<Owned1, Counter>,
    webhooks: Family<Owned1, Counter>,
    limit_waits: HistogramFamily<Owned2>,
    log_lines_dropped: Counter,
    webhook_outcomes: RwLock<HashMap<String, Counter>>,
    servers: RwLock<HashMap<String, Arc<ServerSeries>>>,
}

/// The worker's metrics. Cheap to clone; clones share the series.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn job_histogram() -> Histogram {
    Histogram::new(JOB_BUCKETS)
}

fn call_histogram() -> Histogram {
    Histogram::new(CALL_BUCKETS)
}

/// `text` cut to [`MAX_LABEL_BYTES`] at a character boundary.
fn bounded(text: &str) -> &str {
    if text.len() <= MAX_LABEL_BYTES {
        return text;
    }
    let mut end = MAX_LABEL_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl Metrics {
    /// Every family, registered, with no series yet.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let jobs_started = Family::<Static1, Counter>::default();
        let jobs_finished = Family::<Static2, Counter>::default();
        let job_duration: HistogramFamily<Static2> = Family::new_with_constructor(job_histogram);
        let queue_depth = Family::<Static1, Gauge>::default();
        let queue_jobs = Family::<Static1, Gauge>::default();
        let queue_oldest = Gauge::<f64, AtomicU64>::default();
        let tool_calls: HistogramFamily<Owned2> = Family::new_with_constructor(call_histogram);
        let pool_sessions = Family::<Owned2, Gauge>::default();
        let spawns = Family::<Owned1, Counter>::default();
        let crashes = Family::<Owned1, Counter>::default();
        let restarts = Family::<Owned1, Counter>::default();
        let webhooks = Family::<Owned1, Counter>::default();
        let limit_waits: HistogramFamily<Owned2> = Family::new_with_constructor(call_histogram);
        let log_lines_dropped = Counter::default();
        // Counters are registered without `_total`: the encoder adds it.
        let r = &mut registry;
        r.register(
            "mcpq_jobs_started",
            "Jobs this worker started, by kind (agent, email, invalid: undecodable)",
            jobs_started.clone(),
        );
        r.register(
            "mcpq_jobs_finished",
            "Attempts this worker ended, by kind and outcome (succeeded, retry, dead, released, cancelled, lease_lost)",
            jobs_finished.clone(),
        );
        r.register(
            "mcpq_job_duration_seconds",
            "How long attempts ran on this worker, by kind and outcome",
            job_duration.clone(),
        );
        r.register(
            "mcpq_queue_depth",
            "Jobs waiting for a worker, by priority (whole namespace)",
            queue_depth.clone(),
        );
        r.register(
            "mcpq_queue_jobs",
            "Jobs by state: scheduled (delayed, or waiting to retry), running (leased), suspects, dead (whole namespace)",
            queue_jobs.clone(),
        );
        r.register(
            "mcpq_queue_oldest_age_seconds",
            "Age of the oldest queued job since its submit (0 when none is queued)",
            queue_oldest.clone(),
        );
        r.register(
            "mcpq_tool_call_duration_seconds",
            "Duration of the tools/call requests of jobs, by server and tool, however they ended",
            tool_calls.clone(),
        );
        r.register(
            "mcpq_pool_sessions",
            "Warm pooled sessions, by server and state (busy: calls in flight, idle)",
            pool_sessions.clone(),
        );
        r.register(
            "mcpq_server_spawns",
            "MCP server processes started, by server",
            spawns.clone(),
        );
        r.register(
            "mcpq_server_crashes",
            "MCP server crashes (died during a call or start-up, or while idle), by server",
            crashes.clone(),
        );
        r.register(
            "mcpq_server_restarts",
            "Starts of a server after it crashed, by server",
            restarts.clone(),
        );
        r.register(
            "mcpq_webhook_deliveries",
            "Completion webhook deliveries, by outcome",
            webhooks.clone(),
        );
        r.register(
            "mcpq_limit_wait_seconds",
            "Time calls waited for a cluster-wide limit before they were admitted or gave up, by endpoint (server:NAME or llm) and the limit that held them (rate, concurrency, tokens, paused)",
            limit_waits.clone(),
        );
        r.register(
            "mcpq_log_lines_dropped",
            "Worker log lines dropped because the log output was blocked or closed",
            log_lines_dropped.clone(),
        );
        Metrics {
            inner: Arc::new(Inner {
                registry,
                jobs_started,
                jobs_finished,
                job_duration,
                queue_depth,
                queue_jobs,
                queue_oldest,
                tool_calls,
                pool_sessions,
                spawns,
                crashes,
                restarts,
                webhooks,
                limit_waits,
                log_lines_dropped,
                webhook_outcomes: RwLock::default(),
                servers: RwLock::default(),
            }),
        }
    }

    /// The text `/metrics` serves ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; a label that could not be encoded would be
        // a bug of the encoder, and the partial text is still the best answer.
        let _ = prometheus_text::encode(&mut out, &self.inner.registry);
        out
    }

    /// A job of `kind` started (`agent`, `email`, or [`KIND_INVALID`]).
    pub fn job_started(&self, kind: &'static str) {
        self.inner
            .jobs_started
            .get_or_create(&[("kind", kind)])
            .inc();
    }

    /// An attempt of a job of `kind` ended with `outcome` after `took`.
    pub fn job_finished(&self, kind: &'static str, outcome: JobOutcome, took: Duration) {
        let labels = [("kind", kind), ("outcome", outcome.as_str())];
        self.inner.jobs_finished.get_or_create(&labels).inc();
        self.inner
            .job_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// The queue's counts (from `queue::stats`): `queued` by priority, and by state.
    pub fn set_queue(
        &self,
        queued: [(&'static str, u64); 3],
        states: [(&'static str, u64); 4],
        oldest: Option<Duration>,
    ) {
        for (priority, n) in queued {
            let n = i64::try_from(n).unwrap_or(i64::MAX);
            self.inner
                .queue_depth
                .get_or_create(&[("priority", priority)])
                .set(n);
        }
        for (state, n) in states {
            let n = i64::try_from(n).unwrap_or(i64::MAX);
            self.inner
                .queue_jobs
                .get_or_create(&[("state", state)])
                .set(n);
        }
        self.inner
            .queue_oldest
            .set(oldest.map_or(0.0, |d| d.as_secs_f64()));
    }

    /// One `tools/call` of a job on `server` took `took` (whatever its end).
    pub fn tool_call(&self, server: &str, tool: &str, took: Duration) {
        let series = self.server(server);
        let secs = took.as_secs_f64();
        let tool = bounded(tool);
        {
            let tools = series.tools.read().unwrap_or_else(|p| p.into_inner());
            if let Some(h) = tools.get(tool) {
                h.observe(secs);
                return;
            }
        }
        let mut tools = series.tools.write().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = tools.get(tool) {
            h.observe(secs);
        } else if tools.len() < MAX_TOOLS_PER_SERVER {
            let labels = [("server", series.name.clone()), ("tool", tool.to_string())];
            let h = self.inner.tool_calls.get_or_create_owned(&labels);
            h.observe(secs);
            tools.insert(tool.to_string(), h);
        } else {
            series.other_tools.observe(secs);
        }
    }

    /// Pooled sessions of `server` now: `busy` with calls in flight, `idle`.
    pub fn set_pool_sessions(&self, server: &str, busy: usize, idle: usize) {
        let series = self.server(server);
        series.busy.set(i64::try_from(busy).unwrap_or(i64::MAX));
        series.idle.set(i64::try_from(idle).unwrap_or(i64::MAX));
    }

    /// A process of `server` was started.
    pub fn server_spawned(&self, server: &str) {
        self.server(server).spawns.inc();
    }

    /// `server` crashed.
    pub fn server_crashed(&self, server: &str) {
        self.server(server).crashes.inc();
    }

    /// `server` is being started again after a crash.
    pub fn server_restarted(&self, server: &str) {
        self.server(server).restarts.inc();
    }

    /// A completion webhook delivery ended with `outcome` (a short fixed word of the
    /// dispatcher: `delivered`, `retry`, `failed`...; at most [`MAX_WEBHOOK_OUTCOMES`]
    /// distinct ones get their own series).
    pub fn webhook_delivery(&self, outcome: &str) {
        let outcome = bounded(outcome);
        {
            let known = self
                .inner
                .webhook_outcomes
                .read()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(c) = known.get(outcome) {
                c.inc();
                return;
            }
        }
        let mut known = self
            .inner
            .webhook_outcomes
            .write()
            .unwrap_or_else(|p| p.into_inner());
        let name = if known.len() < MAX_WEBHOOK_OUTCOMES || known.contains_key(outcome) {
            outcome
        } else {
            "other"
        };
        let family = &self.inner.webhooks;
        known
            .entry(name.to_string())
            .or_insert_with(|| family.get_or_create_owned(&[("outcome", name.to_string())]))
            .inc();
    }

    /// A call to `endpoint` (a configured server's `server:NAME`, or `llm`: a bounded
    /// set) waited `took` for a cluster-wide limit, first held by `limit`.
    pub fn limit_wait(&self, endpoint: &str, limit: &'static str, took: Duration) {
        self.inner
            .limit_waits
            .get_or_create_owned(&[
                ("endpoint", bounded(endpoint).to_string()),
                ("limit", limit.to_string()),
            ])
            .observe(took.as_secs_f64());
    }

    /// The counter of dropped log lines, for the log writer to increment.
    pub fn log_lines_dropped(&self) -> Counter {
        self.inner.log_lines_dropped.clone()
    }

    /// The series of `server`, made on first use (at most [`MAX_SERVERS`], then
    /// `other`'s).
    fn server(&self, server: &str) -> Arc<ServerSeries> {
        {
            let servers = self.inner.servers.read().unwrap_or_else(|p| p.into_inner());
            if let Some(s) = servers.get(server) {
                return s.clone();
            }
        }
        let mut servers = self
            .inner
            .servers
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(s) = servers.get(server) {
            return s.clone();
        }
        let name = if servers.len() < MAX_SERVERS {
            server
        } else {
            "other"
        };
        if let Some(s) = servers.get(name) {
            return s.clone();
        }
        let series = Arc::new(self.new_series(bounded(name)));
        servers.insert(name.to_string(), series.clone());
        series
    }

    fn new_series(&self, name: &str) -> ServerSeries {
        let one = [("server", name.to_string())];
        let state = |s: &str| [("server", name.to_string()), ("state", s.to_string())];
        let i = &self.inner;
        ServerSeries {
            spawns: i.spawns.get_or_create_owned(&one),
            crashes: i.crashes.get_or_create_owned(&one),
            restarts: i.restarts.get_or_create_owned(&one),
            busy: i.pool_sessions.get_or_create_owned(&state("busy")),
            idle: i.pool_sessions.get_or_create_owned(&state("idle")),
            tools: RwLock::default(),
            other_tools: i.tool_calls.get_or_create_owned(&[
                ("server", name.to_string()),
                ("tool", "other".to_string()),
            ]),
            name: name.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_has_every_family_and_counts() {
        let m = Metrics::new();
        m.job_started("agent");
        m.job_finished("agent", JobOutcome::Dead, Duration::from_millis(30));
        m.tool_call("echo", "echo", Duration::from_millis(2));
        m.server_spawned("echo");
        m.webhook_delivery("delivered");
        m.log_lines_dropped().inc();
        let text = m.encode();
        for line in [
            "mcpq_jobs_started_total{kind=\"agent\"} 1",
            "mcpq_jobs_finished_total{kind=\"agent\",outcome=\"dead\"} 1",
            "mcpq_job_duration_seconds_count{kind=\"agent\",outcome=\"dead\"} 1",
            "mcpq_tool_call_duration_seconds_count{server=\"echo\",tool=\"echo\"} 1",
            "mcpq_server_spawns_total{server=\"echo\"} 1",
            "mcpq_webhook_deliveries_total{outcome=\"delivered\"} 1",
            "mcpq_log_lines_dropped_total 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing in:\n{text}"
            );
        }
    }

    #[test]
    fn label_values_from_outside_are_bounded() {
        let m = Metrics::new();
        for i in 0..(MAX_TOOLS_PER_SERVER + 50) {
            m.tool_call("s", &format!("tool{i}"), Duration::from_millis(1));
        }
        for i in 0..(MAX_WEBHOOK_OUTCOMES + 5) {
            m.webhook_delivery(&format!("o{i}"));
        }
        m.tool_call("s", &"x".repeat(10_000), Duration::from_millis(1));
        let text = m.encode();
        let series = |prefix: &str| text.lines().filter(|l| l.starts_with(prefix)).count();
        // One `_count` line per tool series: the first 100 tools and `other`.
        assert_eq!(
            series("mcpq_tool_call_duration_seconds_count{"),
            MAX_TOOLS_PER_SERVER + 1
        );
        assert!(
            text.contains("mcpq_tool_call_duration_seconds_count{server=\"s\",tool=\"other\"} 51")
        );
        assert_eq!(
            series("mcpq_webhook_deliveries_total{"),
            MAX_WEBHOOK_OUTCOMES + 1
        );
        assert!(text.lines().all(|l| l.len() < 2 * MAX_LABEL_BYTES + 200));
    }
}
