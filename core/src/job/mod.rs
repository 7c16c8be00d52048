//! The job model: what a producer submits and a worker runs. Serde only, no I/O.
//!
//! A job travels as a versioned JSON envelope:
//!
//! ```json
//! {
//!   "version": 1,
//!   "id": "01JDX6Q6T3N7Z8YV1K0W2M4C5B",
//!   "kind": "agent",
//!   "payload": {"steps": [{"server": "echo", "tool": "echo", "arguments": {"text": "hi"}}]},
//!   "options": {"timeout": "30s", "max_attempts": 3, "priority": "high", "idempotency_key": "order-42"}
//! }
//! ```
//!
//! Guarantees:
//! - Unknown fields anywhere in the envelope are rejected, and the error names the field
//!   with its path (`payload.steps[0].tol: unknown field`), so a typo never runs silently.
//! - A `version` other than [`SCHEMA_VERSION`] is rejected; a missing one means the
//!   current version. `id` is assigned by the producer when absent.
//! - [`Job::check_servers`] rejects any server that is not in the worker's configuration:
//!   a job names servers, it never chooses a command to run.
//!
//! - `max_attempts`, `priority`, `queue` and `idempotency_key` are acted on by the queue; what they
//!   promise is in `docs/GUARANTEES.md`. `max_attempts` is at most [`MAX_ATTEMPTS_LIMIT`],
//!   `options.timeout` at most [`MAX_JOB_TIMEOUT`] (7 days): a payload with a longer one
//!   (`"18446744073709551615s"`) is rejected when it is read, at submit (exit 2) and by a
//!   worker (dead, `invalid_job`), never turned into a deadline.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use ulid::Ulid;

/// The envelope version this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

/// The prefix of the idempotency keys of the cron schedules' jobs
/// (`schedule:NAME:TICK_MS`, see `config::schedules`); submitted jobs may not use it.
pub const SCHEDULE_KEY_PREFIX: &str = "schedule:";

/// Default `options.max_attempts`.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// Default and largest `llm.max_steps`.
pub const DEFAULT_MAX_STEPS: u32 = 10;
/// Largest `llm.max_steps`.
pub const MAX_STEPS_LIMIT: u32 = 100;

/// A job's `llm` options; every field is optional.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LlmOptions {
    /// Model name (default: the worker's `llm.model`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Most model calls (default 10, at most 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<u32>,
    /// A system message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// The tools the model is offered, as `SERVER__TOOL` patterns (`fs__read_text_file`,
    /// `time__*`; see [`crate::tool_pattern`]), each naming one of the job's `servers`.
    /// Empty (the default): every tool of those servers. A server's own `tools` in the
    /// worker's config bounds this further. At most [`MAX_TOOL_PATTERNS`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<String>,
}

/// Most patterns in a job's `llm.tools` or a server's `tools`: an allow-list, not a
/// catalog; more is a mistake, and each call scans the list.
pub const MAX_TOOL_PATTERNS: usize = 256;

/// Checks a job's `llm.tools`: each a `SERVER__TOOL` pattern whose server is one of the
/// job's `servers`; the error names the pattern's path.
fn check_tool_patterns(patterns: &[String], servers: &[String]) -> Result<(), JobError> {
    use crate::tool_pattern::ToolPattern;
    if patterns.len() > MAX_TOOL_PATTERNS {
        return Err(JobError::invalid(
            "payload.llm.tools",
            format!("at most {MAX_TOOL_PATTERNS} patterns"),
        ));
    }
    for (i, text) in patterns.iter().enumerate() {
        let path = format!("payload.llm.tools[{i}]");
        let Some(pattern) = ToolPattern::parse(text) else {
            return Err(JobError::invalid(
                path,
                format!(
                    "`{}` is not SERVER__TOOL (e.g. \"fs__read_text_file\" or \"time__*\")",
                    text.escape_debug()
                ),
            ));
        };
        if !servers.iter().any(|s| s == pattern.server) {
            return Err(JobError::invalid(
                path,
                format!(
                    "server `{}` is not one of the job's servers ({}); add it to `servers`",
                    pattern.server.escape_debug(),
                    if servers.is_empty() {
                        "none".to_string()
                    } else {
                        servers.join(", ")
                    }
                ),
            ));
        }
    }
    Ok(())
}

/// Checks the templates of a plan's steps when the job is built (see
/// [`crate::template`]): syntax, and that each name exists at its step.
fn check_plan_templates(
    steps: &[PlanStep],
    input: &Map<String, Value>,
    email: bool,
) -> Result<(), JobError> {
    use crate::template::{template_bytes, TemplateContext, Templates, MAX_JOB_SOURCE_BYTES};
    let templates = Templates::new();
    let mut source = 0;
    let mut ctx = TemplateContext {
        input: input.keys().cloned().collect(),
        steps: Default::default(),
        email,
        answer: false,
    };
    for (i, step) in steps.iter().enumerate() {
        let templated = if step.literal_arguments {
            None
        } else {
            Some(&step.arguments)
        };
        for (key, value) in templated.into_iter().flatten() {
            source += template_bytes(value);
            if source > MAX_JOB_SOURCE_BYTES {
                return Err(JobError::invalid(
                    format!("payload.steps[{i}].arguments.{key}"),
                    format!(
                        "the job's templates add up to more than {} KiB, the limit of template text per job",
                        MAX_JOB_SOURCE_BYTES / 1024
                    ),
                ));
            }
            templates.check(value, &ctx).map_err(|e| {
                JobError::invalid(format!("payload.steps[{i}].arguments.{key}"), e.to_string())
            })?;
        }
        if let Some(name) = &step.name {
            if ctx.steps.contains(name) {
                return Err(JobError::invalid(
                    format!("payload.steps[{i}].name"),
                    format!("two steps are named `{name}`; step names must be unique"),
                ));
            }
            ctx.steps.insert(name.clone());
        }
    }
    Ok(())
}

fn check_max_steps(n: u32) -> Result<(), JobError> {
    if (1..=MAX_STEPS_LIMIT).contains(&n) {
        Ok(())
    } else {
        Err(JobError::invalid(
            "payload.llm.max_steps",
            format!("must be between 1 and {MAX_STEPS_LIMIT}"),
        ))
    }
}

/// Largest `options.max_attempts`: more is a retry storm, not a policy.
pub const MAX_ATTEMPTS_LIMIT: u32 = 100;

/// Longest `options.timeout`: 7 days. A job that needs longer is a workflow, not a job;
/// the bound also keeps the worker's `Instant::now() + timeout` far from overflow.
pub const MAX_JOB_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// Which ready queue a job waits in. Served by weight (`[queue] weights`): high first,
/// and low still gets its share, so it never starves.
///
/// In JSON: `"high"`, `"normal"`, `"low"`, or a number (> 0 high, 0 normal, < 0 low).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Served first (weight 6 of 10 by default).
    High,
    /// The default (weight 3 of 10).
    #[default]
    Normal,
    /// Served last, but at least weight 1 of 10 of the fetches when there is other work.
    Low,
}

impl Priority {
    /// All priorities, highest first.
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

    /// The name used in JSON, in Redis keys and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }

    /// From a number: > 0 high, 0 normal, < 0 low.
    pub fn from_number(n: i64) -> Self {
        match n {
            n if n > 0 => Priority::High,
            0 => Priority::Normal,
            _ => Priority::Low,
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Priority {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "high" => Ok(Priority::High),
            "normal" => Ok(Priority::Normal),
            "low" => Ok(Priority::Low),
            other => other
                .parse::<i64>()
                .map(Priority::from_number)
                .map_err(|_| {
                    format!("unknown priority `{other}`: use high, normal, low or a number")
                }),
        }
    }
}

impl<'de> Deserialize<'de> for Priority {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(i64),
            Name(String),
        }
        match Raw::deserialize(d) {
            Ok(Raw::Number(n)) => Ok(Priority::from_number(n)),
            Ok(Raw::Name(s)) => s.parse().map_err(serde::de::Error::custom),
            Err(_) => Err(serde::de::Error::custom(
                "expected high, normal, low or a number",
            )),
        }
    }
}

/// Why a job envelope was rejected. Always a usage error: retrying cannot fix it.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum JobError {
    /// The text is not JSON, or a field has the wrong type, is missing or is unknown.
    #[error("invalid job: {path}: {message}")]
    Invalid {
        /// Where in the envelope, e.g. `payload.steps[1].server` (`.` for the whole text).
        path: String,
        /// What is wrong there.
        message: String,
    },
    /// `version` names an envelope this build does not understand.
    #[error("invalid job: version: unsupported schema version {found} (this mcpq reads version {SCHEMA_VERSION})")]
    UnsupportedVersion {
        /// The version found in the envelope.
        found: u32,
    },
    /// More follows the job's JSON value (a JSON lines file given as one job).
    #[error("invalid job: more than one JSON value (the next starts on line {line}): one job per file; use `mcpq batch submit` for JSON lines")]
    TrailingData {
        /// The line where the second value starts.
        line: usize,
    },
    /// A step names a server that is not configured.
    #[error("invalid job: {path}: unknown server `{server}` (configured: {known})")]
    UnknownServer {
        /// Where the server is named.
        path: String,
        /// The name used.
        server: String,
        /// The configured names, comma separated (or "none").
        known: String,
    },
}

impl JobError {
    fn invalid(path: impl Into<String>, message: impl Into<String>) -> Self {
        JobError::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// A job id: a ULID, so ids sort by submission time and match apalis-redis task ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub Ulid);

impl JobId {
    /// A fresh id.
    pub fn generate() -> Self {
        JobId(Ulid::generate())
    }

    /// The id of the `n`th job (from 0) of the batch with this id: the same time, the
    /// random part counted up, so a batch's jobs sort in input order and a re-run of the
    /// same input derives the same ids.
    pub fn nth_member(self, n: u64) -> JobId {
        JobId(Ulid(self.0 .0.wrapping_add(u128::from(n) + 1)))
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for JobId {
    type Err = JobError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ulid::from_string(s.trim()).map(JobId).map_err(|e| {
            JobError::invalid(
                "id",
                format!("`{s}` is not a job id ({e}); ids look like 01JDX6Q6T3N7Z8YV1K0W2M4C5B"),
            )
        })
    }
}

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// Run an agent: a plan of tool calls.
    Agent,
    /// Process an inbound email with instructions.
    Email,
    /// Do nothing and succeed with a `null` result: the cost of the queue alone (fetch,
    /// lease, outcome), for benchmarks and health checks. It takes no payload.
    Noop,
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JobKind::Agent => "agent",
            JobKind::Email => "email",
            JobKind::Noop => "noop",
        })
    }
}

/// One tool call of a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanStep {
    /// Optional name, shown in results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A server name from the worker's configuration.
    pub server: String,
    /// The tool to call on that server.
    pub tool: String,
    /// The tool's arguments (a JSON object); strings may be templates over the job's
    /// input and earlier steps (see [`crate::template`]).
    #[serde(default)]
    pub arguments: Map<String, Value>,
    /// When true, a failure of this step is recorded in the results and the plan goes
    /// on (later steps see it as `steps.NAME.error`); by default it ends the plan.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub continue_on_error: bool,
    /// When true, `arguments` are sent as given: no string is read as a template. What
    /// the MCP front sets for a client's call (its text is data, not a template).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub literal_arguments: bool,
    /// When true, a tool's error answer (`isError: true`) is the step's result, not a
    /// failure: the job succeeds with it (and is not retried). What the MCP front sets:
    /// the client gets the tool's answer as the server gave it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_tool_errors: bool,
}

/// Payload of an `agent` job: an ordered plan of tool calls, run one after the other.
/// The job's result is the list of tool results; the first failing step fails the job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentJob {
    /// Plan mode: the steps, in order. At least one, unless `prompt` is given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<PlanStep>,
    /// LLM mode: what to ask the model (see [`crate::agent::llm`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// LLM mode: the servers whose tools the model may call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
    /// LLM mode: model options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm: Option<LlmOptions>,
    /// Data the steps' templates may use as `input.KEY`.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub input: Map<String, Value>,
}

pub mod email;

pub use email::{Attachment, EmailJob, ReplySpec};

pub mod eml;

pub mod callback;

pub mod queue_name;
pub use queue_name::{queue_name_problem, DEFAULT_QUEUE, MAX_QUEUE_NAME};
pub mod run_at;

pub use callback::Callback;

/// The kind-specific part of a job.
#[derive(Debug, Clone, PartialEq)]
pub enum JobPayload {
    /// See [`AgentJob`].
    Agent(AgentJob),
    /// See [`EmailJob`] (boxed: it is much larger than a plan).
    Email(Box<EmailJob>),
    /// See [`JobKind::Noop`].
    Noop,
}

/// How a job is run. Every field is optional in JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobOptions {
    /// Deadline for the whole job, from the moment a worker starts it. Default: the
    /// worker's `defaults.job_timeout`.
    #[serde(
        default,
        with = "crate::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// How many times the job may run in all (default 3).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// `high`, `normal` (default) or `low`; served by weight, so low never starves.
    #[serde(default)]
    pub priority: Priority,
    /// A second submit with the same key returns the first job's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Announce the job's end by a signed HTTP POST (see [`callback`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<Callback>,
    /// The named queue the job waits in (default `default`); only workers serving it
    /// run it (see [`queue_name`]).
    #[serde(default = "default_queue", skip_serializing_if = "is_default_queue")]
    pub queue: String,
    /// Do not start before this time (RFC 3339; see [`run_at`]): the job waits as
    /// `scheduled`. A time in the past runs it now; at most [`run_at::MAX_DELAY`] ahead.
    #[serde(
        default,
        with = "run_at::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub run_at: Option<std::time::SystemTime>,
}

fn default_queue() -> String {
    DEFAULT_QUEUE.to_string()
}

fn is_default_queue(queue: &String) -> bool {
    queue == DEFAULT_QUEUE
}

fn default_max_attempts() -> u32 {
    DEFAULT_MAX_ATTEMPTS
}

impl JobOptions {
    /// Whether every option is the default.
    pub fn is_default(&self) -> bool {
        *self == JobOptions::default()
    }
}

impl Default for JobOptions {
    fn default() -> Self {
        JobOptions {
            timeout: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            priority: Priority::Normal,
            idempotency_key: None,
            callback: None,
            queue: default_queue(),
            run_at: None,
        }
    }
}

/// A validated job. Two jobs are equal when their id, payload and options are
/// (`id_fixed` says where the id came from, not what the job is).
#[derive(Debug, Clone)]
pub struct Job {
    /// Unique id.
    pub id: JobId,
    /// True when `id` came from outside (the job's JSON, a batch's derivation): the
    /// queue keeps it. A fresh id (false) is the producer's to re-draw, so that the job
    /// lands in the partition its idempotency key or the round-robin picks
    /// (`queue::partition`).
    pub id_fixed: bool,
    /// What to do.
    pub payload: JobPayload,
    /// How to run it.
    pub options: JobOptions,
}

impl PartialEq for Job {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && self.payload == other.payload && self.options == other.options
    }
}

/// The wire form, field for field.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    #[serde(default)]
    version: Option<u32>,
    #[serde(default)]
    id: Option<String>,
    kind: JobKind,
    /// Absent (null) only for `noop` jobs, which take none.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    payload: Value,
    /// Left out when every option is the default: a small job's stored envelope stays
    /// under Redis's 64-byte compact-hash value limit (see `lua/finish.lua`).
    #[serde(default, skip_serializing_if = "JobOptions::is_default")]
    options: JobOptions,
}

fn path_error<E: fmt::Display>(prefix: &str, err: serde_path_to_error::Error<E>) -> JobError {
    let inner = err.path().to_string();
    let path = match (prefix, inner.as_str()) {
        ("", ".") => ".".to_string(),
        ("", p) => p.to_string(),
        (pre, ".") => pre.to_string(),
        (pre, p) => format!("{pre}.{p}"),
    };
    JobError::invalid(path, err.into_inner().to_string())
}

impl Job {
    /// A new agent job with a fresh id.
    pub fn agent(steps: Vec<PlanStep>, options: JobOptions) -> Self {
        Job {
            id: JobId::generate(),
            id_fixed: false,
            payload: JobPayload::Agent(AgentJob {
                steps,
                input: Map::new(),
                prompt: None,
                servers: Vec::new(),
                llm: None,
            }),
            options,
        }
    }

    /// A new email job with a fresh id.
    pub fn email(email: EmailJob, options: JobOptions) -> Self {
        Job {
            id: JobId::generate(),
            id_fixed: false,
            payload: JobPayload::Email(Box::new(email)),
            options,
        }
    }

    /// The kind of the payload.
    pub fn kind(&self) -> JobKind {
        match self.payload {
            JobPayload::Agent(_) => JobKind::Agent,
            JobPayload::Email(_) => JobKind::Email,
            JobPayload::Noop => JobKind::Noop,
        }
    }

    /// Reads and validates an envelope. A missing `id` gets a fresh one.
    pub fn from_json(text: &[u8]) -> Result<Job, JobError> {
        Self::from_json_with(text, None)
    }

    /// Like [`Job::from_json`], with `id` for a job whose JSON names none (a batch's
    /// jobs get ids derived from the batch's, so that a re-run finds them again).
    pub fn from_json_or_id(text: &[u8], id: JobId) -> Result<Job, JobError> {
        let mut job = Self::from_json_with(text, Some(id))?;
        job.id_fixed = true;
        Ok(job)
    }

    fn from_json_with(text: &[u8], id: Option<JobId>) -> Result<Job, JobError> {
        let mut de = serde_json::Deserializer::from_slice(text);
        let mut env: Envelope =
            serde_path_to_error::deserialize(&mut de).map_err(|e| path_error("", e))?;
        // One job per text: anything but whitespace after it was dropped silently once
        // (`mcpq submit jobs.jsonl` enqueued the first line only).
        de.end()
            .map_err(|e| JobError::TrailingData { line: e.line() })?;
        if let (None, Some(id)) = (&env.id, id) {
            env.id = Some(id.to_string());
        }
        Self::from_envelope(env)
    }

    /// Like [`Job::from_json`], from an already parsed value.
    pub fn from_value(value: Value) -> Result<Job, JobError> {
        let env: Envelope =
            serde_path_to_error::deserialize(value).map_err(|e| path_error("", e))?;
        Self::from_envelope(env)
    }

    fn from_envelope(env: Envelope) -> Result<Job, JobError> {
        if let Some(found) = env.version {
            if found != SCHEMA_VERSION {
                return Err(JobError::UnsupportedVersion { found });
            }
        }
        let (id, id_fixed) = match env.id {
            Some(id) => (id.parse()?, true),
            None => (JobId::generate(), false),
        };
        if env.payload.is_null() && env.kind != JobKind::Noop {
            return Err(JobError::invalid(
                "payload",
                format!("missing: an {} job needs one", env.kind),
            ));
        }
        let payload = match env.kind {
            JobKind::Noop => match &env.payload {
                Value::Null => JobPayload::Noop,
                Value::Object(m) if m.is_empty() => JobPayload::Noop,
                _ => {
                    return Err(JobError::invalid(
                        "payload",
                        "a noop job takes no payload (leave it out, or give {})",
                    ))
                }
            },
            JobKind::Agent => JobPayload::Agent(
                serde_path_to_error::deserialize(env.payload)
                    .map_err(|e| path_error("payload", e))?,
            ),
            JobKind::Email => JobPayload::Email(
                serde_path_to_error::deserialize(env.payload)
                    .map_err(|e| path_error("payload", e))?,
            ),
        };
        let job = Job {
            id,
            id_fixed,
            payload,
            options: env.options,
        };
        job.validate()?;
        Ok(job)
    }

    /// What a job from outside (`mcpq submit`, the HTTP API, the MCP front) may not do
    /// that a worker's own jobs do: take an idempotency key of the cron schedules
    /// ([`SCHEDULE_KEY_PREFIX`]), which would claim a future tick and keep the
    /// schedule's job from running.
    pub fn check_submitted(&self) -> Result<(), JobError> {
        match &self.options.idempotency_key {
            Some(key) if key.starts_with(SCHEDULE_KEY_PREFIX) => Err(JobError::invalid(
                "options.idempotency_key",
                format!("keys starting with `{SCHEDULE_KEY_PREFIX}` are the cron schedules' own"),
            )),
            _ => Ok(()),
        }
    }

    /// Checks what serde cannot: non-empty plans and names, sane options.
    pub fn validate(&self) -> Result<(), JobError> {
        if !(1..=MAX_ATTEMPTS_LIMIT).contains(&self.options.max_attempts) {
            return Err(JobError::invalid(
                "options.max_attempts",
                format!("must be between 1 and {MAX_ATTEMPTS_LIMIT}"),
            ));
        }
        if let Some(key) = &self.options.idempotency_key {
            if key.is_empty() || key.len() > 256 {
                return Err(JobError::invalid(
                    "options.idempotency_key",
                    "must be 1 to 256 bytes long",
                ));
            }
        }
        if let Some(callback) = &self.options.callback {
            callback.validate("options.callback")?;
        }
        if let Some(problem) = queue_name_problem(&self.options.queue) {
            return Err(JobError::invalid("options.queue", problem));
        }
        if let Some(at) = self.options.run_at {
            run_at::check(at, std::time::SystemTime::now())
                .map_err(|e| JobError::invalid("options.run_at", e))?;
        }
        if self.options.timeout == Some(Duration::ZERO) {
            return Err(JobError::invalid(
                "options.timeout",
                "must be longer than zero",
            ));
        }
        if self.options.timeout.is_some_and(|t| t > MAX_JOB_TIMEOUT) {
            return Err(JobError::invalid(
                "options.timeout",
                "must be at most 7 days (7d)",
            ));
        }
        match &self.payload {
            JobPayload::Agent(agent) => {
                match (&agent.prompt, agent.steps.is_empty()) {
                    (Some(_), false) => {
                        return Err(JobError::invalid(
                            "payload",
                            "give either `steps` (a plan) or `prompt` (LLM mode), not both",
                        ))
                    }
                    (Some(p), true) if p.trim().is_empty() => {
                        return Err(JobError::invalid("payload.prompt", "must not be empty"))
                    }
                    (None, true) => {
                        return Err(JobError::invalid(
                            "payload.steps",
                            "a plan needs at least one step (or give `prompt` for LLM mode)",
                        ))
                    }
                    _ => {}
                }
                if agent.prompt.is_none() && (agent.llm.is_some() || !agent.servers.is_empty()) {
                    return Err(JobError::invalid(
                        "payload",
                        "`llm` and `servers` belong to LLM mode: give a `prompt` too",
                    ));
                }
                if let Some(n) = agent.llm.as_ref().and_then(|l| l.max_steps) {
                    check_max_steps(n)?;
                }
                if let Some(llm) = &agent.llm {
                    check_tool_patterns(&llm.tools, &agent.servers)?;
                }
                check_plan_templates(&agent.steps, &agent.input, false)?;
                for (i, step) in agent.steps.iter().enumerate() {
                    if step.server.trim().is_empty() {
                        return Err(JobError::invalid(
                            format!("payload.steps[{i}].server"),
                            "must not be empty",
                        ));
                    }
                    if step.tool.trim().is_empty() {
                        return Err(JobError::invalid(
                            format!("payload.steps[{i}].tool"),
                            "must not be empty",
                        ));
                    }
                }
            }
            JobPayload::Noop => {}
            JobPayload::Email(email) => {
                // `from` may be empty or not an address (a bounce, `From: foo`): mail as
                // it arrives is accepted, and only a reply, which needs an address, fails
                // (`no_reply_address`, when the worker drafts it).
                match (email.steps.is_empty(), &email.llm) {
                    (true, None) => {
                        return Err(JobError::invalid(
                            "payload.steps",
                            "an email job needs a plan (`steps`, tool calls with templates over email.* and attachments) or `llm` (LLM mode)",
                        ))
                    }
                    (false, Some(_)) => {
                        return Err(JobError::invalid(
                            "payload",
                            "give either `steps` (a plan) or `llm` (LLM mode), not both",
                        ))
                    }
                    _ => {}
                }
                if let Some(n) = email.llm.as_ref().and_then(|l| l.max_steps) {
                    check_max_steps(n)?;
                }
                if let Some(llm) = &email.llm {
                    check_tool_patterns(&llm.tools, &email.servers)?;
                }
                for (i, a) in email.attachments.iter().enumerate() {
                    if a.name.trim().is_empty() {
                        return Err(JobError::invalid(
                            format!("payload.attachments[{i}].name"),
                            "must not be empty",
                        ));
                    }
                    if a.content_base64.is_none() && a.path.is_none() {
                        return Err(JobError::invalid(
                            format!("payload.attachments[{i}]"),
                            "needs content_base64 (or, in a file given to mcpq submit, a path)",
                        ));
                    }
                }
                let mut input = Map::new();
                input.insert("instructions".to_string(), Value::Null);
                check_plan_templates(&email.steps, &input, true)?;
                if let Some(reply) = &email.reply {
                    use crate::template::{TemplateContext, Templates};
                    let ctx = TemplateContext {
                        input: input.keys().cloned().collect(),
                        steps: email.steps.iter().filter_map(|s| s.name.clone()).collect(),
                        email: true,
                        answer: email.llm.is_some(),
                    };
                    let templates = Templates::new();
                    for (path, text) in [
                        ("payload.reply.text", Some(&reply.text)),
                        ("payload.reply.subject", reply.subject.as_ref()),
                    ] {
                        if let Some(text) = text {
                            templates
                                .check(&Value::String(text.clone()), &ctx)
                                .map_err(|e| JobError::invalid(path, e.to_string()))?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Every server the job names, with where it names it.
    pub fn servers(&self) -> Vec<(String, &str)> {
        match &self.payload {
            JobPayload::Agent(agent) => agent
                .steps
                .iter()
                .enumerate()
                .map(|(i, s)| (format!("payload.steps[{i}].server"), s.server.as_str()))
                .chain(
                    agent
                        .servers
                        .iter()
                        .enumerate()
                        .map(|(i, s)| (format!("payload.servers[{i}]"), s.as_str())),
                )
                .collect(),
            JobPayload::Email(email) => {
                email
                    .servers
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (format!("payload.servers[{i}]"), s.as_str()))
                    .chain(
                        email.steps.iter().enumerate().map(|(i, s)| {
                            (format!("payload.steps[{i}].server"), s.server.as_str())
                        }),
                    )
                    .collect()
            }
            JobPayload::Noop => Vec::new(),
        }
    }

    /// Rejects the job if it names a server for which `is_known` is false.
    pub fn check_servers<'a>(
        &self,
        known: impl IntoIterator<Item = &'a str> + Clone,
    ) -> Result<(), JobError> {
        for (path, server) in self.servers() {
            if !known.clone().into_iter().any(|k| k == server) {
                let mut names: Vec<&str> = known.clone().into_iter().collect();
                names.sort_unstable();
                let known = if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                };
                return Err(JobError::UnknownServer {
                    path,
                    server: server.to_string(),
                    known,
                });
            }
        }
        Ok(())
    }

    /// The envelope as a JSON value.
    pub fn to_value(&self) -> Value {
        let payload = match &self.payload {
            JobPayload::Agent(a) => serde_json::to_value(a),
            JobPayload::Email(e) => serde_json::to_value(e),
            JobPayload::Noop => Ok(Value::Null),
        }
        .expect("job payloads are plain data and always serialize");
        let env = Envelope {
            version: Some(SCHEMA_VERSION),
            id: Some(self.id.to_string()),
            kind: self.kind(),
            payload,
            options: self.options.clone(),
        };
        serde_json::to_value(env).expect("job envelopes are plain data and always serialize")
    }

    /// The envelope as JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&self.to_value()).expect("a JSON value always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn agent_json() -> Value {
        json!({
            "kind": "agent",
            "payload": {"steps": [{"server": "echo", "tool": "echo", "arguments": {"text": "hi"}}]},
            "options": {"timeout": "30s"}
        })
    }

    #[test]
    fn round_trips_an_agent_job() {
        let job = Job::from_value(agent_json()).expect("valid job");
        assert_eq!(job.kind(), JobKind::Agent);
        assert_eq!(job.options.timeout, Some(Duration::from_secs(30)));
        assert_eq!(job.options.max_attempts, DEFAULT_MAX_ATTEMPTS);
        let again = Job::from_json(&job.to_json()).expect("round trip");
        assert_eq!(again, job);
        assert_eq!(job.to_value()["version"], json!(1));
    }

    #[test]
    fn a_second_json_value_after_the_job_is_refused_naming_its_line_and_batch_submit() {
        let one = agent_json().to_string();
        let two = format!("{one}\n{one}\n");
        let err = Job::from_json(two.as_bytes()).expect_err("two jobs in one text");
        assert_eq!(err, JobError::TrailingData { line: 2 });
        assert!(err.to_string().contains("mcpq batch submit"), "{err}");
        let junk = format!("{one} x");
        assert!(matches!(
            Job::from_json(junk.as_bytes()),
            Err(JobError::TrailingData { line: 1 })
        ));
        // Whitespace after the one job is fine.
        Job::from_json(format!("\n{one}\n\n  ").as_bytes()).expect("one job");
    }

    #[test]
    fn unknown_fields_are_named_with_their_path() {
        let mut v = agent_json();
        v["payload"]["steps"][0]["tol"] = json!("x");
        let err = Job::from_value(v).expect_err("unknown field");
        let text = err.to_string();
        assert!(text.contains("payload.steps[0]"), "{text}");
        assert!(text.contains("tol"), "{text}");

        let mut v = agent_json();
        v["colour"] = json!("red");
        assert!(Job::from_value(v)
            .expect_err("unknown")
            .to_string()
            .contains("colour"));
    }

    #[test]
    fn missing_fields_and_bad_kinds_are_named() {
        let v = json!({"kind": "agent", "payload": {"steps": [{"server": "echo"}]}});
        let text = Job::from_value(v).expect_err("missing tool").to_string();
        assert!(
            text.contains("payload.steps[0]") && text.contains("tool"),
            "{text}"
        );

        let v = json!({"kind": "fax", "payload": {}});
        let text = Job::from_value(v).expect_err("bad kind").to_string();
        assert!(text.contains("kind") && text.contains("fax"), "{text}");
    }

    #[test]
    fn an_email_job_may_have_an_empty_missing_or_non_address_from() {
        let email = |from: Option<&str>| {
            let mut payload = json!({"instructions": "file it", "reply": {"text": "ok"},
                "steps": [{"server": "echo", "tool": "echo", "arguments": {"text": "hi"}}]});
            if let Some(from) = from {
                payload["from"] = json!(from);
            }
            json!({"kind": "email", "payload": payload})
        };
        for from in [None, Some(""), Some("foo"), Some("MAILER-DAEMON")] {
            let job = Job::from_value(email(from)).unwrap_or_else(|e| panic!("{from:?}: {e}"));
            let JobPayload::Email(e) = &job.payload else {
                panic!("an email job")
            };
            assert_eq!(e.from, from.unwrap_or_default());
            // Written back with `from` even when empty, for readers that require it.
            assert_eq!(job.to_value()["payload"]["from"], json!(e.from));
            assert_eq!(Job::from_json(&job.to_json()).expect("round trip"), job);
        }
    }

    #[test]
    fn wrong_version_is_rejected() {
        let mut v = agent_json();
        v["version"] = json!(2);
        assert_eq!(
            Job::from_value(v),
            Err(JobError::UnsupportedVersion { found: 2 })
        );
    }

    #[test]
    fn empty_plan_and_zero_attempts_are_rejected() {
        let v = json!({"kind": "agent", "payload": {"steps": []}});
        assert!(Job::from_value(v)
            .expect_err("empty")
            .to_string()
            .contains("payload.steps"));
        let mut v = agent_json();
        v["options"]["max_attempts"] = json!(0);
        assert!(Job::from_value(v)
            .expect_err("zero")
            .to_string()
            .contains("max_attempts"));
    }

    #[test]
    fn a_timeout_beyond_the_maximum_is_rejected_naming_the_field_and_the_maximum() {
        for (timeout, maximum) in [
            (json!("18446744073709551615s"), "365 days"),
            (json!(1e300), "365 days"),
            (json!("8d"), "7 days"),
        ] {
            let mut v = agent_json();
            v["options"]["timeout"] = timeout.clone();
            let text = Job::from_value(v).expect_err("too long").to_string();
            assert!(
                text.contains("options.timeout") && text.contains(maximum),
                "{timeout}: {text}"
            );
        }
        let mut v = agent_json();
        v["options"]["timeout"] = json!("7d");
        assert!(Job::from_value(v).is_ok());
    }

    #[test]
    fn unknown_servers_are_rejected() {
        let job = Job::from_value(agent_json()).expect("valid");
        assert!(job.check_servers(["echo", "fs"]).is_ok());
        let err = job.check_servers(["fs"]).expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "invalid job: payload.steps[0].server: unknown server `echo` (configured: fs)"
        );
    }

    #[test]
    fn llm_tool_patterns_must_name_a_server_of_the_job() {
        let job = |tools: Value| {
            Job::from_value(serde_json::json!({"kind": "agent", "payload": {
                "prompt": "hi", "servers": ["fs", "time"], "llm": {"tools": tools}}}))
        };
        let ok = job(serde_json::json!(["fs__read_text_file", "time__*"])).expect("valid");
        let JobPayload::Agent(agent) = &ok.payload else {
            panic!("agent")
        };
        assert_eq!(agent.llm.as_ref().map(|l| l.tools.len()), Some(2));
        let err = job(serde_json::json!(["fs__read_text_file", "git__log"])).expect_err("git");
        assert!(
            err.to_string().contains("payload.llm.tools[1]") && err.to_string().contains("`git`"),
            "{err}"
        );
        let err = job(serde_json::json!(["read_text_file"])).expect_err("no server");
        assert!(err.to_string().contains("payload.llm.tools[0]"), "{err}");
    }

    #[test]
    fn bad_ids_are_rejected() {
        let mut v = agent_json();
        v["id"] = json!("not-an-id");
        assert!(Job::from_value(v)
            .expect_err("bad id")
            .to_string()
            .contains("id"));
    }

    #[test]
    fn template_text_is_bounded_per_string_and_per_job_before_it_is_parsed() {
        let step =
            |text: String| json!({"server": "echo", "tool": "echo", "arguments": {"text": text}});
        // One string over the template source limit.
        let big = "{{ input.a }}".repeat(6000);
        let v = json!({"kind": "agent", "payload": {"input": {"a": 1}, "steps": [step(big)]}});
        let err = Job::from_json(v.to_string().as_bytes())
            .expect_err("too long")
            .to_string();
        assert!(err.contains("template source limit is 64 KiB"), "{err}");
        // Many strings within it that add up past the per-job limit.
        let part = "{{ input.a }}".repeat(4000);
        let steps: Vec<Value> = (0..25).map(|_| step(part.clone())).collect();
        let v = json!({"kind": "agent", "payload": {"input": {"a": 1}, "steps": steps}});
        let err = Job::from_json(v.to_string().as_bytes())
            .expect_err("too much in all")
            .to_string();
        assert!(err.contains("limit of template text per job"), "{err}");
        assert!(
            err.contains("payload.steps[2"),
            "names the step where it passed: {err}"
        );
    }

    #[test]
    fn submitted_jobs_may_not_take_a_schedules_key() {
        let mut job = Job::agent(
            vec![PlanStep {
                name: None,
                server: "echo".into(),
                tool: "echo".into(),
                arguments: Map::new(),
                continue_on_error: false,
                literal_arguments: false,
                keep_tool_errors: false,
            }],
            JobOptions::default(),
        );
        job.options.idempotency_key = Some("schedule:nightly:1795833985000".into());
        assert!(
            job.validate().is_ok(),
            "a worker's own schedule job stays valid"
        );
        let e = job.check_submitted().expect_err("refused").to_string();
        assert!(e.contains("options.idempotency_key"), "{e}");
        job.options.idempotency_key = Some("order-42".into());
        assert!(job.check_submitted().is_ok());
    }

    #[test]
    fn a_noop_job_takes_no_payload_and_stores_small() {
        let job = Job::from_json(br#"{"kind": "noop"}"#).expect("noop");
        assert_eq!(job.kind(), JobKind::Noop);
        assert!(job.servers().is_empty());
        assert!(Job::from_json(br#"{"kind": "noop", "payload": {}}"#).is_ok());
        let e = Job::from_json(br#"{"kind": "noop", "payload": {"x": 1}}"#)
            .expect_err("a payload")
            .to_string();
        assert!(e.contains("noop job takes no payload"), "{e}");
        // Under Redis's 64-byte limit for values of a compact (listpack) hash, so a
        // finished noop job's record stays compact.
        let stored = job.to_json();
        assert!(stored.len() < 64, "{}", String::from_utf8_lossy(&stored));
        assert_eq!(Job::from_json(&stored).expect("round trip"), job);
        // Other kinds still need one, and say so.
        let e = Job::from_json(br#"{"kind": "agent"}"#)
            .expect_err("no payload")
            .to_string();
        assert!(e.contains("payload") && e.contains("agent job needs one"), "{e}");
    }
}
