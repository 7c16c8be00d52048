//! `mcpq-worker run FILE`: run one job in this process, without Redis, and print its
//! outcome: the quickest way to write and debug a plan. `mcpq run` runs this command
//! (the producer links no supervisor and no MCP client, as for `servers check`).
//!
//! What it promises:
//! 1. The job is read (a file, or `-` for stdin; at most `queue.max_payload` bytes),
//!    decoded and validated as `mcpq submit` does it, and its servers checked against
//!    the config; anything wrong is exit 2 before a server starts.
//! 2. It runs through the worker's own code path ([`mcpq_shared::runner::run_job`]),
//!    with a supervisor, a session pool and a template sandbox of its own: the same
//!    deadlines, allow-lists, schema checks, result limit and redaction as a worker.
//!    No Redis connection is made at all (`REDIS_URL` is not read).
//! 3. SIGINT/SIGTERM stops the job (its call ends, its servers are stopped with their
//!    process trees) and it reports `cancelled`; every server it started is stopped
//!    before it exits, however the job ended.
//! 4. Output and exit status are `mcpq wait`'s: the result as text (a `result` line
//!    with `--json`) and 0; a failed job's error on stderr (`job_failed`) and 1, or
//!    `job_cancelled` and 1; 2 for a bad job, flag or config.
//!
//! Caveats: one attempt, no retries (a retryable failure says so in its `retryable`
//! field); no progress is stored, no webhook sent, and a batch's fan-in job gets no
//! batch counts (there is no batch).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use mcpq_shared::agent::template_sandbox::TemplateSandbox;
use mcpq_shared::cli_error::{CliError, CliErrorKind, EXIT_JOB_FAILED};
use mcpq_shared::failure::{FailureKind, JobFailure};
use mcpq_shared::mcp::{health_policy, McpPool};
use mcpq_shared::outcome_text::{failure_text, result_text};
use mcpq_shared::result_budget::ResultBudget;
use mcpq_shared::supervisor::{max_stop_time, Supervisor};
use mcpq_shared::terminal::{escape, print_json, print_line, Newlines};
use mcpq_shared::{logging, Config, Job};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// `mcpq-worker run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The job: a JSON file as `mcpq submit` reads it, or `-` for stdin.
    pub file: PathBuf,
    /// Print the outcome as one JSON line (`"type": "result"`); errors as one JSON line
    /// on stderr.
    #[arg(long)]
    pub json: bool,
}

/// Loads the config, reads and checks the job, runs it; returns the exit status.
pub fn main(config: Option<&Path>, args: RunArgs) -> ExitCode {
    let config = match Config::load(config) {
        Ok(c) => c,
        Err(e) => return report(&args, &CliError::new(CliErrorKind::Config, e.to_string())),
    };
    let job = match read_job(&config, &args.file) {
        Ok(job) => job,
        Err(message) => {
            return report(&args, &CliError::new(CliErrorKind::InvalidJob, message));
        }
    };
    let log_guard = logging::init("mcpq-worker", logging::LogFormat::Text, "warn,rmcp=error");
    let (redactor, metrics) = crate::instrument(&config, &log_guard);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let message = format!("cannot start the async runtime: {e}");
            return report(&args, &CliError::new(CliErrorKind::Internal, message));
        }
    };
    let id = job.id.to_string();
    let mut outcome = runtime.block_on(run(&config, &job, metrics));
    // What a worker would store, bounded and without our secrets.
    if let Ok(value) = &outcome {
        if let Err(failure) = ResultBudget::check(value, config.queue.max_result) {
            outcome = Err(*failure);
        }
    }
    match &mut outcome {
        Ok(value) => redactor.value(value),
        Err(failure) => redactor.failure(failure),
    }
    drop(runtime);
    show(&args, &id, outcome)
}

/// Reads the job (bounded by `queue.max_payload`), decodes and validates it, and checks
/// its servers against `config`; the error is the message for the user.
fn read_job(config: &Config, file: &Path) -> Result<Job, String> {
    let limit = config.queue.max_payload;
    let mut bytes = Vec::new();
    let read = if file == Path::new("-") {
        std::io::stdin()
            .lock()
            .take(limit as u64 + 1)
            .read_to_end(&mut bytes)
    } else {
        std::fs::File::open(file).and_then(|f| f.take(limit as u64 + 1).read_to_end(&mut bytes))
    };
    let name = if file == Path::new("-") {
        "stdin".to_string()
    } else {
        file.display().to_string()
    };
    read.map_err(|e| format!("cannot read the job from {name}: {e}"))?;
    if bytes.len() > limit {
        return Err(format!(
            "the job in {name} is more than {limit} bytes, the limit (queue.max_payload)"
        ));
    }
    // A fresh id whatever the file says: a job's id names its attachment folder, and
    // a run must never touch a queued job's (it would remove it).
    let job = Job::from_json(&bytes)
        .map(|mut job| {
            job.id = mcpq_shared::job::JobId::generate();
            job
        })
        .map_err(|e| format!("{name}: {e}"))?;
    job.check_servers(config.server_names())
        .map_err(|e| format!("{name}: {e}"))?;
    Ok(job)
}

/// Runs `job` with servers of its own, stopped by SIGINT/SIGTERM; stops every server
/// before returning.
async fn run(
    config: &Config,
    job: &Job,
    metrics: mcpq_shared::metrics::Metrics,
) -> Result<Value, JobFailure> {
    let supervisor = Supervisor::with_metrics(health_policy(&config.defaults), metrics);
    let pool = McpPool::new(config, supervisor.clone());
    let templates = TemplateSandbox::new(supervisor.clone());
    let cancel = CancellationToken::new();
    let stopper = stop_on_signals(cancel.clone());
    let outcome = mcpq_shared::runner::run_job(job, config, &pool, &templates, &cancel, None).await;
    let stopped = cancel.is_cancelled();
    stopper.abort();
    let _ = tokio::time::timeout(max_stop_time(config.max_kill_grace()), pool.shutdown()).await;
    templates.stop_idle();
    supervisor.kill_all();
    match outcome {
        // However the cut-off call failed, the job was stopped by the signal.
        Err(_) if stopped => Err(JobFailure::new(
            FailureKind::Cancelled,
            "stopped by a signal (SIGINT or SIGTERM)",
            false,
        )),
        other => other,
    }
}

/// Cancels `cancel` at the first SIGINT or SIGTERM. The handlers are installed before
/// this returns, so a signal that comes at once is not lost.
fn stop_on_signals(cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    );
    tokio::spawn(async move {
        let (Ok(mut int), Ok(mut term)) = handlers else {
            tracing::warn!("cannot install the signal handlers; stop the job with SIGKILL");
            return;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        eprintln!("mcpq run: stopping the job and its servers");
        cancel.cancel();
    })
}

/// Prints the outcome as `mcpq wait` does; returns its exit status.
fn show(args: &RunArgs, id: &str, outcome: Result<Value, JobFailure>) -> ExitCode {
    match outcome {
        Ok(result) => {
            if args.json {
                print_json(
                    "result",
                    json!({"id": id, "status": "succeeded", "result": result}),
                );
            } else {
                print_line(&result_text(&result));
            }
            ExitCode::SUCCESS
        }
        Err(failure) => {
            let cancelled = failure.kind == FailureKind::Cancelled;
            let status = if cancelled { "cancelled" } else { "dead" };
            if args.json {
                print_json(
                    "result",
                    json!({"id": id, "status": status, "error": failure}),
                );
            }
            let kind = if cancelled {
                CliErrorKind::JobCancelled
            } else {
                CliErrorKind::JobFailed
            };
            let err = CliError::new(kind, failure_text(id, &failure));
            report(args, &err);
            ExitCode::from(EXIT_JOB_FAILED)
        }
    }
}

/// Prints an error on stderr (`mcpq run: MESSAGE`, escaped; one JSON line under
/// `--json`) and returns its exit code.
fn report(args: &RunArgs, err: &CliError) -> ExitCode {
    if args.json {
        eprintln!("{}", err.to_json());
    } else {
        eprintln!(
            "{}",
            escape(&format!("mcpq run: {}", err.message), Newlines::Keep)
        );
    }
    ExitCode::from(err.exit_code())
}
