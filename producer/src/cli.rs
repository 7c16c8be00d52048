//! The command line, as typed: clap types only, no I/O.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Submit jobs to mcpq and read their status and results.
///
/// mcpq is a job queue whose workers run MCP tools. `mcpq` puts jobs into Redis;
/// `mcpq-worker` runs them against the MCP servers named in its config.
#[derive(Debug, Parser)]
#[command(name = "mcpq", version, after_long_help = EXIT_CODES)]
pub struct Cli {
    /// Config file (mcpq.toml or MCP JSON: Claude Desktop, Cursor, VS Code); its server list is what jobs may name.
    #[arg(long, global = true, env = "MCPQ_CONFIG")]
    pub config: Option<PathBuf>,
    /// Redis URL; overrides redis_url in the config. Put no password here (`ps` shows
    /// it to every local user): set REDIS_URL instead, or redis_password_env in the
    /// config (the name of an environment variable holding the password).
    #[arg(long, global = true, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Key namespace; overrides namespace in the config.
    #[arg(long, global = true, env = "MCPQ_NAMESPACE")]
    pub namespace: Option<String>,
    /// Print one JSON object per line on stdout (each with a "type" field) instead of text;
    /// an error is one {"type":"error","kind":...} object on stderr (kinds: see README).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

pub const EXIT_CODES: &str = "\
Exit status:
  0  success (the job succeeded, or the command did what it says)
  1  the job is dead (failed for good) or was cancelled
  2  usage or input error (bad flags, invalid job, unknown server or job id)
  3  Redis cannot be reached or refused the command (out of memory, ACL, read-only)
  4  the job has not finished (queued, running, or failed and waiting to retry; wait timed out)";

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Submit a job and print its id.
    ///
    /// The job comes from a JSON file, from stdin (`-`), or from flags (`mcpq submit agent
    /// ...`, `mcpq submit email --eml ...`). Job kinds: agent plans (tool calls with
    /// templates), agents in LLM mode (a model calls the tools), and emails (with
    /// attachments and a reply). The formats are below.
    #[command(args_conflicts_with_subcommands = true, after_long_help = SUBMIT_EXAMPLES)]
    Submit(Box<SubmitArgs>),
    /// Show where a job is (queued, running, failed = will retry, succeeded, dead,
    /// cancelled), its timestamps and one line per attempt.
    #[command(after_long_help = "Example:\n  mcpq status 01JDX6Q6T3N7Z8YV1K0W2M4C5B --json")]
    Status(IdArg),
    /// Print a finished job's result (exit 1 and the error if it failed, 4 if not finished).
    #[command(after_long_help = "Example:\n  mcpq result 01JDX6Q6T3N7Z8YV1K0W2M4C5B")]
    Result(IdArg),
    /// List the configured MCP servers with their health, sessions and tools.
    ///
    /// Health, sessions and tools come from the running workers' reports (every 5 s);
    /// `mcpq servers check` starts each server here and asks it directly.
    #[command(after_long_help = SERVERS_EXAMPLES)]
    Servers(ServersArgs),
    /// Serve the HTTP API (runs `mcpq-serve`): submit jobs, wait for results, batches,
    /// dead letters, /health and /openapi.json, on 127.0.0.1:7717 by default.
    ///
    /// Every route but /health needs `Authorization: Bearer <token>`: tokens are
    /// [[serve.tokens]] in the config (a name and the environment variable holding the
    /// secret), or MCPQ_SERVE_TOKEN. Without a token only a loopback address is allowed.
    /// See README "HTTP API"; `mcpq-serve --help` for the rest.
    #[command(after_long_help = SERVE_EXAMPLES)]
    Serve(ServeArgs),
    /// Run one job here, without Redis, and print its result like `mcpq wait`.
    ///
    /// The quickest way to write and debug a plan: the job (a JSON file as `mcpq submit`
    /// reads it, or `-` for stdin) is validated as at submit, then run by the worker's
    /// own code (`mcpq-worker run`: the same runner, supervisor, pool, deadlines,
    /// allow-lists and limits) with servers started for it and stopped at its end.
    /// One attempt, no retries; Ctrl-C stops the job and its servers. Exit status as
    /// `mcpq wait`: 0 succeeded, 1 failed or stopped, 2 bad job, flag or config.
    #[command(after_long_help = RUN_EXAMPLES)]
    Run(RunArgs),
    /// Wait until a job finishes, then print its result like `mcpq result`.
    #[command(after_long_help = "Example:\n  mcpq wait 01JDX6Q6T3N7Z8YV1K0W2M4C5B --timeout 30s")]
    Wait(WaitArgs),
    /// Cancel a job: a queued job never runs; a running one is stopped (its tool call
    /// ends, its server is stopped or its pooled session retired) and marked cancelled.
    ///
    /// Exit status: 0 when the job is cancelled now or had already finished (the output
    /// says which), 2 for an unknown job.
    #[command(after_long_help = "Example:\n  mcpq cancel 01JDX6Q6T3N7Z8YV1K0W2M4C5B --json")]
    Cancel(IdArg),
    /// The dead-letter set: jobs that failed permanently or ran out of attempts.
    #[command(after_long_help = DLQ_EXAMPLES)]
    Dlq(DlqArgs),
    /// List jobs, newest first: all of them, one batch's, or those in one state.
    #[command(after_long_help = JOBS_EXAMPLES)]
    Jobs(JobsArgs),
    /// List the cron schedules of the config ([schedules.NAME]) with their last run
    /// (tick and job, as the workers recorded it) and their next one.
    ///
    /// Every worker fires the schedules; each tick yields one job however many run.
    #[command(after_long_help = "Examples:\n  mcpq schedules\n  mcpq schedules --json")]
    Schedules,
    /// Many jobs as one: submit a JSON lines file, follow it, export its results, and
    /// run a final job once all of them have ended.
    #[command(after_long_help = BATCH_EXAMPLES)]
    Batch(BatchArgs),
    /// Completion webhooks: list deliveries (pending, delivered, gone, failed) and send
    /// a failed one again.
    ///
    /// A job or batch with a callback (`options.callback`, or --callback-url /
    /// --callback-endpoint) gets one delivery per end, stored with the end itself and
    /// POSTed by the workers, signed, until a 2xx (delivered) or a 410 (gone) answers
    /// or webhooks.max_age (24h) passes (failed).
    #[command(after_long_help = WEBHOOKS_EXAMPLES)]
    Webhooks(WebhooksArgs),
    /// The queues: jobs waiting per priority, the oldest one's age, jobs started in the
    /// last minute, paused or serving.
    ///
    /// A job waits in its named queue (`--queue`, options.queue; default `default`);
    /// workers serve the queues given by `mcpq-worker --queues emails:3,agents:1`.
    #[command(after_long_help = QUEUES_EXAMPLES)]
    Queues,
    /// Pause or resume one queue: while paused, no worker takes its jobs (running ones
    /// finish; submits still enqueue).
    #[command(after_long_help = QUEUES_EXAMPLES)]
    Queue(QueueArgs),
}

const QUEUES_EXAMPLES: &str = "Examples:
  mcpq submit job.json --queue emails           # into the `emails` queue
  mcpq-worker --queues emails:3,agents:1        # 3 emails jobs for 1 agents job while both wait
  mcpq queues                                   # depth, oldest age, started last minute, state
  mcpq queue pause emails                       # workers stop taking its jobs at their next poll
  mcpq queue resume emails --json";

/// `mcpq queue`.
#[derive(Debug, Args)]
pub struct QueueArgs {
    #[command(subcommand)]
    pub action: QueueAction,
}

/// What to do with a queue.
#[derive(Debug, Subcommand)]
pub enum QueueAction {
    /// Stop every worker taking this queue's jobs (within one poll interval).
    Pause {
        /// The queue.
        name: String,
    },
    /// Let workers take this queue's jobs again.
    Resume {
        /// The queue.
        name: String,
    },
}

const WEBHOOKS_EXAMPLES: &str = "Examples:
  mcpq webhooks list                       # newest first: id, state, attempts, target, last answer
  mcpq webhooks list --failed --json       # those that ran out of webhooks.max_age, or were refused
  mcpq webhooks retry job-01JDX6Q6T3N7Z8YV1K0W2M4C5B-1   # send it again (a fresh max_age)

Delivery ids are what receivers get in X-Mcpq-Delivery (dedupe on it: a delivery may
arrive twice). Ended deliveries are kept for webhooks.retention (7d).";

/// `mcpq webhooks`.
#[derive(Debug, Args)]
pub struct WebhooksArgs {
    #[command(subcommand)]
    pub action: WebhooksAction,
}

/// What to do with webhook deliveries.
#[derive(Debug, Subcommand)]
pub enum WebhooksAction {
    /// List deliveries, newest first.
    List {
        /// Only the failed ones (retried for webhooks.max_age without a 2xx or 410, or
        /// refused: a private address, an unknown endpoint, a secret not allowed).
        #[arg(long)]
        failed: bool,
        /// Show at most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Send a failed (or gone) delivery again, at once, with a fresh webhooks.max_age.
    Retry {
        /// The delivery id (`mcpq webhooks list`; X-Mcpq-Delivery).
        id: String,
    },
}

const JOBS_EXAMPLES: &str = "Examples:
  mcpq jobs                          # the 50 newest jobs: id, status, kind, submitted, attempts
  mcpq jobs --status running
  mcpq jobs --status scheduled       # delayed jobs (submit --delay / --at) not due yet
  mcpq jobs --status dead --limit 500 --json
  mcpq jobs --batch 01JDX6Q6T3N7Z8YV1K0W2M4C5B --status failed

Jobs are listed while their record is kept (queue.result_ttl, queue.dead_ttl).";

/// `mcpq jobs`.
#[derive(Debug, Args)]
pub struct JobsArgs {
    /// Only jobs in this state: queued, scheduled (delayed), running, failed,
    /// succeeded, dead, cancelled, waiting (a batch's final job).
    #[arg(long, value_parser = parse_status)]
    pub status: Option<mcpq_core::queue::JobStatus>,
    /// Only this batch's jobs.
    #[arg(long)]
    pub batch: Option<String>,
    /// Only jobs of this named queue (`default`: jobs that name none).
    #[arg(long, value_parser = parse_queue)]
    pub queue: Option<String>,
    /// Show at most this many.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
}

fn parse_queue(s: &str) -> Result<String, String> {
    match mcpq_core::job::queue_name::queue_name_problem(s) {
        None => Ok(s.to_string()),
        Some(why) => Err(format!("`{s}` is not a queue name: it {why}")),
    }
}

fn parse_status(s: &str) -> Result<mcpq_core::queue::JobStatus, String> {
    mcpq_core::queue::JobStatus::parse(s).ok_or_else(|| {
        format!(
            "`{s}` is not a status: queued, scheduled, running, failed, succeeded, dead, cancelled or waiting"
        )
    })
}

const BATCH_EXAMPLES: &str = r#"Examples:
  mcpq batch submit jobs.jsonl                  # prints the batch id
  mcpq batch submit jobs.jsonl --skip-invalid --idempotency-key nightly-2026-11-27
  mcpq batch submit jobs.jsonl --then summary.json --wait
  generate-jobs | mcpq batch submit -
  mcpq batch submit ~/Maildir/.Invoices --server filesystem --instructions "File it" \
    --steps @plan.json --reply-text 'Filed {{ attachments | length }} file(s)'   # one email job per message
  mcpq batch status 01JDX6Q6T3N7Z8YV1K0W2M4C5B
  mcpq batch wait 01JDX6Q6T3N7Z8YV1K0W2M4C5B --timeout 2h
  mcpq batch results 01JDX6Q6T3N7Z8YV1K0W2M4C5B --out results.jsonl
  mcpq batch cancel 01JDX6Q6T3N7Z8YV1K0W2M4C5B
  mcpq batch list

A JSON lines file holds one job per line, each in the format of `mcpq submit FILE`
(blank lines are skipped). Every line is checked before anything is enqueued; each bad
line is reported with its number and reason, and then nothing is submitted unless
--skip-invalid is given. With --idempotency-key, running the same command again (after
a crash, say) finds the batch and enqueues only what is missing.

The final job (--then) runs once, after every job of the batch has succeeded, died or
been cancelled; its templates see input.batch: id, total, succeeded, dead, cancelled.

Exit status of `wait`: 0 every job succeeded, 1 one or more are dead or cancelled,
4 the timeout passed first."#;

/// `mcpq batch`.
#[derive(Debug, Args)]
pub struct BatchArgs {
    #[command(subcommand)]
    pub action: BatchAction,
}

/// What to do with batches.
#[derive(Debug, Subcommand)]
pub enum BatchAction {
    /// Submit one job per line of a JSON lines file (`-` for stdin); prints the batch id.
    Submit(Box<BatchSubmitArgs>),
    /// Counts by state (succeeded, dead, cancelled, pending), rate and ETA.
    Status(IdArg),
    /// Follow a batch until every job has ended: a progress bar on a terminal, a line
    /// every few seconds otherwise, progress objects with --json.
    Wait(BatchWaitArgs),
    /// Write one JSON line per job, in input order: line, id, status, result or error.
    Results(BatchResultsArgs),
    /// Cancel every job of the batch that has not ended, and its final job.
    Cancel(IdArg),
    /// The newest batches with their counts.
    List {
        /// Show at most this many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
}

/// `mcpq batch submit`.
#[derive(Debug, Args)]
pub struct BatchSubmitArgs {
    /// A JSON lines file, one job per line, or `-` for stdin. With --steps: a mailbox
    /// instead, each message an email job (a directory of .eml files, a Maildir, or an
    /// mbox file).
    pub file: PathBuf,
    /// With --steps, the plan every message's email job runs.
    #[command(flatten)]
    pub email: EmailPlanArgs,
    /// Submit the valid lines even when some are bad (each bad one is still reported).
    #[arg(long)]
    pub skip_invalid: bool,
    /// Names this batch: the same command run again with the same key (and the same
    /// input) enqueues only what is missing. Kept for queue.idempotency_ttl.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// A job file to run once, when every job of the batch has ended.
    #[arg(long)]
    pub then: Option<PathBuf>,
    /// After submitting, wait like `mcpq batch wait`.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: how long to wait at most.
    #[arg(long, value_parser = parse_duration, default_value = "24h")]
    pub timeout: Duration,
    /// The batch's own webhook: one delivery when every job of it has ended (a line's
    /// `options.callback` announces that job alone).
    #[command(flatten)]
    pub callback: CallbackArgs,
}

/// `mcpq batch wait`.
#[derive(Debug, Args)]
pub struct BatchWaitArgs {
    /// The id `mcpq batch submit` printed.
    pub id: String,
    /// How long to wait at most (exit 4 when it passes first).
    #[arg(long, value_parser = parse_duration, default_value = "24h")]
    pub timeout: Duration,
}

/// `mcpq batch results`.
#[derive(Debug, Args)]
pub struct BatchResultsArgs {
    /// The id `mcpq batch submit` printed.
    pub id: String,
    /// Write to this file instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

const DLQ_EXAMPLES: &str = "Examples:
  mcpq dlq list                       # newest first: id, when, attempts, last error
  mcpq dlq show 01JDX6Q6T3N7Z8YV1K0W2M4C5B   # payload, every attempt with its error
  mcpq dlq requeue 01JDX6Q6T3N7Z8YV1K0W2M4C5B  # back to its queue, attempts start again
  mcpq dlq requeue --all
  mcpq dlq purge --older-than 7d      # delete dead jobs that died more than 7 days ago

Dead jobs are deleted by themselves after queue.dead_ttl (default 7d).";

/// `mcpq dlq`.
#[derive(Debug, Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    pub action: DlqAction,
}

/// What to do with the dead-letter set.
#[derive(Debug, Subcommand)]
pub enum DlqAction {
    /// List dead jobs, newest first.
    List {
        /// Show at most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Show one dead job: payload, every attempt with its error and stderr tail.
    Show(IdArg),
    /// Put dead jobs back in their queue with a fresh set of attempts.
    Requeue {
        /// The dead job to requeue.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Requeue every dead job.
        #[arg(long)]
        all: bool,
    },
    /// Delete dead jobs that died more than some time ago.
    Purge {
        /// e.g. 7d, 12h, 0s (everything).
        #[arg(long, value_parser = parse_duration)]
        older_than: Duration,
    },
}

const SERVERS_EXAMPLES: &str = "Examples:
  mcpq servers                  # configured servers, health, tools (from the workers)
  mcpq servers --json
  mcpq servers check            # start each server once, list its tools, report failures
  mcpq servers check filesystem --json

Exit status of `check`: 0 every server answered, 1 at least one failed.";

const SUBMIT_EXAMPLES: &str = r#"Examples:
  mcpq submit agent --server echo --tool echo --args '{"text":"hi"}' --timeout 30s
  mcpq submit job.json
  mcpq submit job.json --wait    # submit, then wait and print the result
  mcpq submit email --eml message.eml --server filesystem --steps @plan.json
  mcpq submit email.json --attach invoice.pdf   # a JSON email job plus a local file

Job files (version and id are optional; unknown fields are rejected):

  An agent plan: steps in order; arguments may be templates over input, earlier
  named steps and job.id ({{ input.city }}, {{ steps.NAME.text }}, .result,
  .structured, .error); "continue_on_error" lets the plan go on after a failure.
  {"kind": "agent", "payload": {
     "input": {"city": "Oslo"},
     "steps": [{"name": "greet", "server": "echo", "tool": "echo",
                "arguments": {"text": "weather in {{ input.city }}"}},
               {"server": "echo", "tool": "echo",
                "arguments": {"text": "{{ steps.greet.text | upper }}"}}]},
   "options": {"timeout": "30s", "max_attempts": 3, "priority": "high",
               "idempotency_key": "order-42"}}

  An agent in LLM mode: the worker's [llm] model calls the tools of "servers"
  (named server__tool) until it answers or max_steps.
  {"kind": "agent", "payload": {"prompt": "What time is it in Tokyo?",
     "servers": ["time"], "llm": {"model": "gpt-4o-mini", "max_steps": 10}}}

  An email: attachments as content_base64, or local files given with
  --attach FILE (a "path" in the job is read only under --attach-root DIR: a job
  file never chooses local files by itself); the plan's templates also see email.*
  and attachments[i].name/.path/.size; the reply is drafted (and sent over the
  worker's [smtp] with "send": true). Instead of "steps", "llm": {...} lets the
  model handle it.
  mcpq submit email.json --attach invoice.pdf, with email.json:
  {"kind": "email", "payload": {"from": "Ana <ana@example.com>", "subject": "Invoice",
     "text": "Please file it.", "instructions": "File the invoice.",
     "servers": ["echo"],
     "steps": [{"name": "file", "server": "echo", "tool": "echo",
                "arguments": {"text": "{{ attachments[0].path }}"}}],
     "reply": {"text": "Filed {{ attachments[0].name }}.", "send": false}}}

  A no-op: does nothing, succeeds with a null result (the queue's own cost, or a
  probe that workers take jobs).
  {"kind": "noop"}"#;

/// `mcpq submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// A job JSON file, or `-` for stdin.
    pub file: Option<PathBuf>,
    #[command(subcommand)]
    pub kind: Option<SubmitKind>,
    #[command(flatten)]
    pub options: JobOptionArgs,
    /// After submitting, wait for the result and print it (exit status as `mcpq wait`).
    #[arg(long, global = true)]
    pub wait: bool,
    /// Attach this local file to the email job (repeat for more). The only way a file
    /// is read besides --attach-root: a job file never chooses local files by itself.
    #[arg(long, global = true, value_name = "FILE")]
    pub attach: Vec<PathBuf>,
    /// Let a job file's attachments give a `path`, read only if it resolves (symlinks
    /// followed) inside DIR; relative paths are taken from DIR.
    #[arg(long, global = true, value_name = "DIR")]
    pub attach_root: Option<PathBuf>,
}

/// Job options shared by every way to submit; they override the file's `options`.
#[derive(Debug, Args, Clone, Default)]
pub struct JobOptionArgs {
    /// Deadline of the whole job once a worker starts it, e.g. 30s, 2m.
    #[arg(long, global = true, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Most runs of the job in all, retries included (default 3).
    #[arg(long, global = true)]
    pub max_attempts: Option<u32>,
    /// high, normal (default) or low; served by weight, so low never starves.
    #[arg(long, global = true)]
    pub priority: Option<mcpq_core::job::Priority>,
    /// A second submit with the same key (within queue.idempotency_ttl, default 24h)
    /// enqueues nothing and prints the first job's id.
    #[arg(long, global = true)]
    pub idempotency_key: Option<String>,
    /// The named queue to wait in (default `default`); only workers serving it
    /// (`mcpq-worker --queues`) run the job.
    #[arg(long, global = true, value_name = "NAME")]
    pub queue: Option<String>,
    /// Start the job no sooner than this long from now, e.g. 10m, 2h (at most 365
    /// days): it waits as `scheduled` (`mcpq jobs --status scheduled`).
    #[arg(long, global = true, value_parser = parse_duration, conflicts_with = "at")]
    pub delay: Option<Duration>,
    /// Start the job no sooner than this RFC 3339 time, e.g. 2026-12-01T09:00:00Z (a
    /// time in the past runs it now; at most 365 days ahead).
    #[arg(long, global = true, value_parser = parse_time)]
    pub at: Option<std::time::SystemTime>,
    #[command(flatten)]
    pub callback: CallbackArgs,
}

/// A completion webhook (`options.callback`, or a batch's own): see README "Webhooks".
#[derive(Debug, Args, Clone, Default)]
pub struct CallbackArgs {
    /// POST a signed JSON notice to this http(s) URL when the job (or batch) ends;
    /// retried for webhooks.max_age (24h) until a 2xx or 410 answers.
    #[arg(
        long,
        global = true,
        value_name = "URL",
        conflicts_with = "callback_endpoint"
    )]
    pub callback_url: Option<String>,
    /// With --callback-url: the worker's environment variable holding the signing
    /// secret (must be webhooks.secret_env or listed in webhooks.secret_envs).
    #[arg(long, global = true, value_name = "NAME", requires = "callback_url")]
    pub callback_secret_env: Option<String>,
    /// Instead of --callback-url: a named endpoint of the config ([webhooks.endpoints.NAME]).
    #[arg(long, global = true, value_name = "NAME")]
    pub callback_endpoint: Option<String>,
}

impl CallbackArgs {
    /// The callback the flags give, if any.
    pub fn callback(&self) -> Option<mcpq_core::job::Callback> {
        use mcpq_core::job::Callback;
        match (&self.callback_url, &self.callback_endpoint) {
            (Some(url), _) => Some(Callback::url(url.clone(), self.callback_secret_env.clone())),
            (None, Some(name)) => Some(Callback::endpoint(name.clone())),
            (None, None) => None,
        }
    }
}

/// Jobs built from flags.
#[derive(Debug, Subcommand)]
pub enum SubmitKind {
    /// An agent job with one tool call.
    #[command(
        after_long_help = "Example:\n  mcpq submit agent --server echo --tool echo --args '{\"text\":\"hi\"}' --timeout 30s"
    )]
    Agent(AgentArgs),
    /// An email job from a raw message (.eml): its attachments go to the worker's
    /// attachment directory, the plan's templates see email.* and attachments.
    #[command(after_long_help = EMAIL_EXAMPLES)]
    Email(EmailArgs),
}

const EMAIL_EXAMPLES: &str = r#"Example:
  mcpq submit email --eml message.eml --instructions "File the invoice" --server filesystem \
    --steps '[{"name":"info","server":"filesystem","tool":"get_file_info",
               "arguments":{"path":"{{ attachments[0].path }}"}}]' \
    --reply-text 'Got {{ attachments | length }} file(s): {{ steps.info.text }}'

Templates see: email.from, email.to, email.cc, email.subject, email.text, email.html,
email.message_id, email.date, attachments[i].name/.path/.size/.content_type,
input.instructions, steps.NAME.text/.result/.structured, job.id.
--steps also takes @FILE (a JSON array of steps); --attach FILE adds local files."#;

/// `mcpq submit email`.
#[derive(Debug, Args)]
pub struct EmailArgs {
    /// The raw message (RFC 5322, as saved by a mail client), or `-` for stdin.
    #[arg(long)]
    pub eml: PathBuf,
    #[command(flatten)]
    pub plan: EmailPlanArgs,
}

/// What an email job does with its message: `mcpq submit email`, and `mcpq batch
/// submit` of a mailbox (one plan for every message).
#[derive(Debug, Args)]
pub struct EmailPlanArgs {
    /// What to do with the email (templates see it as input.instructions).
    #[arg(long, default_value = "")]
    pub instructions: String,
    /// A server the job may use (repeat for more); each must be in the config.
    #[arg(long = "server")]
    pub servers: Vec<String>,
    /// The plan: a JSON array of steps, or @FILE (required for email jobs).
    #[arg(long)]
    pub steps: Option<String>,
    /// Draft a reply with this body (a template).
    #[arg(long)]
    pub reply_text: Option<String>,
    /// The reply's subject (a template; default "Re: " + the subject).
    #[arg(long, requires = "reply_text")]
    pub reply_subject: Option<String>,
    /// Send the reply over SMTP (the worker's [smtp] config).
    #[arg(long, requires = "reply_text")]
    pub send_reply: bool,
}

/// `mcpq submit agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// A server name from the config.
    #[arg(long)]
    pub server: String,
    /// The tool to call.
    #[arg(long)]
    pub tool: String,
    /// The tool's arguments, a JSON object.
    #[arg(long, default_value = "{}")]
    pub args: String,
}

/// `mcpq servers`.
#[derive(Debug, Args)]
pub struct ServersArgs {
    #[command(subcommand)]
    pub action: Option<ServersAction>,
}

/// `mcpq serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (default serve.listen, 127.0.0.1:7717); port 0 picks one.
    #[arg(long, conflicts_with = "stdio")]
    pub listen: Option<std::net::SocketAddr>,
    /// Speak MCP on stdin/stdout instead of HTTP (what Claude Desktop, Cursor and VS Code
    /// start as an MCP server); logs go to stderr.
    #[arg(long)]
    pub stdio: bool,
    /// Also run a worker in the same process (one process for a laptop or a single box).
    #[arg(long)]
    pub with_worker: bool,
}

const SERVE_EXAMPLES: &str = "\
Examples:
  mcpq serve --config mcpq.toml
  MCPQ_SERVE_TOKEN=$(openssl rand -hex 24) mcpq serve --listen 0.0.0.0:7717
  curl -s -H \"Authorization: Bearer $MCPQ_SERVE_TOKEN\" -H 'Content-Type: application/json' --data-binary @job.json http://127.0.0.1:7717/v1/jobs
  mcpq serve --stdio --with-worker --config mcpq.toml   # an MCP server for Claude Desktop, Cursor, VS Code

MCP clients reach it at http://127.0.0.1:7717/mcp (same bearer token) or through --stdio.";

/// What to do with the servers.
#[derive(Debug, Subcommand)]
pub enum ServersAction {
    /// Start each server (or those named) once, list its tools, stop it; report what
    /// fails with the server's stderr tail.
    Check(CheckArgs),
}

/// `mcpq servers check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Server names (default: all configured).
    pub names: Vec<String>,
}

/// A job id.
#[derive(Debug, Args)]
pub struct IdArg {
    /// The id `mcpq submit` printed.
    pub id: String,
}

const RUN_EXAMPLES: &str = "Examples:
  mcpq run plan.json                        # the result as text; exit 0, or 1 and the error
  mcpq run plan.json --json                 # one {\"type\":\"result\",...} line
  echo '{\"kind\":\"agent\",\"payload\":{\"steps\":[{\"server\":\"echo\",\"tool\":\"echo\",\"arguments\":{\"text\":\"hi\"}}]}}' | mcpq run -";

/// `mcpq run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The job: a JSON file as `mcpq submit` reads it, or `-` for stdin.
    pub file: String,
}

/// `mcpq wait`.
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// The id `mcpq submit` printed.
    pub id: String,
    /// Give up after this long (exit 4), e.g. 30s.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    mcpq_core::duration::parse(s)
}

fn parse_time(s: &str) -> Result<std::time::SystemTime, String> {
    mcpq_core::job::run_at::parse(s)
}
