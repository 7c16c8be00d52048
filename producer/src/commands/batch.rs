//! `mcpq batch`: many jobs as one. Submit a JSON lines file (streamed: checked whole in
//! a first pass, enqueued in a second, 500 jobs per script call), follow it, export its
//! results in input order, cancel it, list batches.
//!
//! The rules of a line and both passes are `mcpq_core::queue::batch_input`'s (shared
//! with `POST /v1/batches`), memory bounded whatever the file's size. The input is first
//! copied to a private temporary file: it is read twice, and a pipe, a FIFO or a file
//! that changes meanwhile must read the same both times. `--idempotency-key` names the
//! whole batch.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mcpq_core::cli_error::{CliError, CliErrorKind};
use mcpq_core::job::{Job, JobId};
use mcpq_core::queue::batch::{self, BatchCreated, BatchSpec, BatchStatus};
use mcpq_core::queue::control::{self, Cancelled};
use mcpq_core::queue::enqueue::Producer;
use mcpq_core::queue::Keys;
use mcpq_core::terminal::one_line;
use serde_json::{json, Value};

use crate::cli::{BatchAction, BatchResultsArgs, BatchSubmitArgs};
use crate::commands::submit::{read_source, EmailPlan};
use crate::commands::Ctx;
use crate::mailbox;
use crate::{exit, output};
use mcpq_core::lines::Lines;
use mcpq_core::queue::batch_input::{self, Checked, EnqueueError, Enqueued, LineRules};

/// How often `wait` reads the counts.
const POLL: Duration = Duration::from_millis(500);
/// How often `wait` prints a line when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(5);
/// Cancels in flight at once.
const CANCEL_PARALLEL: usize = 64;

pub async fn run(ctx: &Ctx, action: BatchAction) -> anyhow::Result<u8> {
    match action {
        BatchAction::Submit(args) => submit(ctx, *args).await,
        BatchAction::Status(args) => status(ctx, &args.id).await,
        BatchAction::Wait(args) => wait(ctx, &args.id, args.timeout).await,
        BatchAction::Results(args) => results(ctx, args).await,
        BatchAction::Cancel(args) => cancel(ctx, &args.id).await,
        BatchAction::List { limit } => list(ctx, limit).await,
    }
}

/// What a line must satisfy: the config's servers, `queue.max_payload`.
fn rules(ctx: &Ctx) -> LineRules {
    LineRules {
        servers: ctx.config.server_names().map(str::to_string).collect(),
        max_payload: ctx.config.queue.max_payload,
        webhooks: ctx.config.webhooks.clone(),
    }
}

/// Copies the input (`-`: standard input) to a private temporary file (mode 0600,
/// removed when the returned guard drops): both passes then read the same bytes.
fn spool_input(path: &Path) -> anyhow::Result<tempfile::TempPath> {
    let mut spool = tempfile::NamedTempFile::new()
        .map_err(|e| anyhow::anyhow!("cannot make a temporary copy of the input: {e}"))?;
    let copied = if path.as_os_str() == "-" {
        std::io::copy(&mut std::io::stdin().lock(), &mut spool)
    } else {
        File::open(path).and_then(|mut f| std::io::copy(&mut f, &mut spool))
    };
    copied.map_err(|e| exit::usage(format!("cannot read {}: {e}", path.display())))?;
    Ok(spool.into_temp_path())
}

/// The lines of the spooled input, each at most `queue.max_payload` bytes.
fn reader(ctx: &Ctx, path: &Path) -> anyhow::Result<Lines<BufReader<File>>> {
    Lines::open(path, ctx.config.queue.max_payload)
        .map_err(|e| exit::usage(format!("cannot read {}: {e}", path.display())))
}

/// A mailbox as a spooled JSON lines file of email jobs, each message's job running
/// `plan`: line N is message N (an empty line where a message cannot be read; each such
/// message is reported). Returns the spool and the number of bad messages.
fn spool_mailbox(
    ctx: &Ctx,
    path: &Path,
    plan: &EmailPlan<'_>,
) -> anyhow::Result<(tempfile::TempPath, u64)> {
    let mut spool = BufWriter::new(
        tempfile::NamedTempFile::new()
            .map_err(|e| anyhow::anyhow!("cannot make a temporary file: {e}"))?,
    );
    let mut invalid = 0u64;
    let mut number = 0u64;
    mailbox::messages(path, ctx.config.queue.max_payload, |label, raw| {
        number += 1;
        let job = raw.and_then(|raw| plan.job(&raw));
        let line = match job {
            Ok(job) => {
                let mut value = job.to_value();
                // The batch gives its jobs their ids.
                if let Some(obj) = value.as_object_mut() {
                    obj.remove("id");
                }
                value.to_string()
            }
            Err(problem) => {
                invalid += 1;
                report_invalid(ctx, "message", number, Some(&label), &problem);
                String::new()
            }
        };
        writeln!(spool, "{line}").map_err(|e| anyhow::anyhow!("cannot write the spool: {e}"))
    })?;
    let spool = spool
        .into_inner()
        .map_err(|e| anyhow::anyhow!("cannot write the spool: {e}"))?;
    Ok((spool.into_temp_path(), invalid))
}

/// Reports one bad input item (a line, or a mailbox's message) on stderr: `line N:
/// reason`, or under `--json` an `invalid_job` error object with `"line": N` (the
/// message's number for a mailbox).
fn report_invalid(ctx: &Ctx, unit: &str, number: u64, label: Option<&str>, problem: &str) {
    let name = label
        .map(|l| format!(" ({})", one_line(l)))
        .unwrap_or_default();
    let message = format!("{unit} {number}{name}: {}", one_line(problem));
    let error = CliError::new(CliErrorKind::InvalidJob, message).at_line(number);
    output::error(ctx.json, &error, "");
}

/// First pass: every line checked, each bad one reported as a `unit` ("line", or
/// "message" for a mailbox); nothing kept but counts.
fn check_all(ctx: &Ctx, path: &Path, unit: &str) -> anyhow::Result<Checked> {
    let mut lines = reader(ctx, path)?;
    batch_input::check_lines(&mut lines, &rules(ctx), |number, problem| {
        report_invalid(ctx, unit, number, None, problem)
    })
    .map_err(|e| exit::usage(format!("cannot read {}: {e}", path.display())))
}

/// The final job: a job file, with `input.batch` set to a placeholder the worker fills
/// in with the counts when it starts it.
fn final_job(ctx: &Ctx, path: &Path, text: &[u8], batch: JobId) -> anyhow::Result<Job> {
    let mut value: Value = serde_json::from_slice(text)
        .map_err(|e| exit::usage(format!("--then {}: {e}", path.display())))?;
    let input = value
        .get_mut("payload")
        .and_then(|p| p.as_object_mut())
        .ok_or_else(|| {
            exit::usage(format!(
                "--then {}: not an agent job (a JSON object with a payload)",
                path.display()
            ))
        })?
        .entry("input")
        .or_insert_with(|| json!({}));
    let Some(input) = input.as_object_mut() else {
        return Err(exit::usage(format!(
            "--then {}: payload.input must be an object",
            path.display()
        )));
    };
    input.insert(
        "batch".to_string(),
        json!({"id": batch.to_string(), "total": 0, "succeeded": 0, "dead": 0,
               "cancelled": 0, "pending": 0}),
    );
    let bytes = serde_json::to_vec(&value)?;
    let job = Job::from_json_or_id(&bytes, batch.nth_member(u64::MAX - 1))
        .map_err(|e| e.to_string())
        .and_then(|job| rules(ctx).check(job))
        .map_err(|e| exit::usage(format!("--then {}: {e}", path.display())))?;
    if !matches!(job.payload, mcpq_core::job::JobPayload::Agent(_)) {
        return Err(exit::usage(format!(
            "--then {}: the final job must be an agent job",
            path.display()
        )));
    }
    Ok(job)
}

fn progress_bar(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(&format!(
        "{what} [{{bar:30}}] {{pos}}/{{len}} {{percent}}% {{per_sec}} ETA {{eta}} {{msg}}"
    )) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Second pass: the valid lines as jobs, a chunk in Redis while the next is parsed.
async fn enqueue_all(
    ctx: &Ctx,
    producer: &Producer,
    path: &Path,
    batch_id: &str,
    member_base: JobId,
    total: u64,
) -> anyhow::Result<Enqueued> {
    let mut lines = reader(ctx, path)?;
    let bar = progress_bar(total, "enqueue");
    let done = batch_input::enqueue_lines(
        producer,
        &mut lines,
        &rules(ctx),
        batch_id,
        member_base,
        total,
        |n| bar.inc(n),
    )
    .await
    .map_err(|e| match e {
        EnqueueError::Queue(e) => exit::queue(e),
        EnqueueError::Read(e) => exit::usage(format!("cannot read {}: {e}", path.display())),
        other => anyhow::anyhow!(other),
    })?;
    bar.finish_and_clear();
    Ok(done)
}

async fn submit(ctx: &Ctx, args: BatchSubmitArgs) -> anyhow::Result<u8> {
    // The batch's own callback, checked before anything is read.
    let callback = args.callback.callback();
    if let Some(c) = &callback {
        ctx.config
            .webhooks
            .check_callback(c, "--callback")
            .map_err(|e| exit::invalid_job(e.to_string()))?;
    }
    let (spool, unit, unreadable) = if args.email.steps.is_some() {
        let plan = EmailPlan::from_args(&args.email, ctx.config.queue.max_payload)?;
        let (spool, unreadable) = spool_mailbox(ctx, &args.file, &plan)?;
        (spool, "message", unreadable)
    } else {
        (spool_input(&args.file)?, "line", 0)
    };
    let path = spool.to_path_buf();
    let mut checked = check_all(ctx, &path, unit)?;
    checked.invalid += unreadable;
    if checked.invalid > 0 && !args.skip_invalid {
        return Err(exit::invalid_job(format!(
            "{} invalid {unit}(s), listed above: nothing submitted (fix them, or pass --skip-invalid to submit the {} valid ones)",
            checked.invalid, checked.valid
        )));
    }
    let producer = ctx.producer().await?;
    let fresh = producer.fresh_batch_id(args.idempotency_key.as_deref());
    let mut fingerprint = checked.fingerprint;
    let then = match &args.then {
        Some(path) => {
            let text = read_source(path, ctx.config.queue.max_payload)?;
            // The file as given (the job built from it holds this run's fresh ids).
            fingerprint.add(&text);
            Some(final_job(ctx, path, &text, fresh)?)
        }
        None => None,
    };
    let spec = BatchSpec {
        id: fresh,
        total: checked.valid,
        fingerprint: fingerprint.hex(),
        source: args.file.display().to_string(),
        idempotency_key: args.idempotency_key.clone(),
        then: then.as_ref(),
        callback,
    };
    let (batch_id, resumed) = match producer.create_batch(&spec).await.map_err(exit::queue)? {
        BatchCreated::New(id) => (id, false),
        BatchCreated::Resumed(id) => (id, true),
        BatchCreated::KeyUsedForOtherInput(id) => {
            return Err(exit::usage(format!(
                "idempotency key {:?} names batch {id}, made from other input: nothing submitted (use another key for other input)",
                args.idempotency_key.as_deref().unwrap_or("")
            )))
        }
        BatchCreated::IdTaken(id) => {
            return Err(exit::usage(format!(
                "a batch or job with id {id} exists already: nothing submitted"
            )))
        }
    };
    let base: JobId = batch_id
        .parse()
        .map_err(|e| anyhow::anyhow!("batch id {batch_id}: {e}"))?;
    let done = enqueue_all(ctx, &producer, &path, &batch_id, base, checked.valid).await?;
    // The final job is the batch's own (a re-run made none of its own).
    let then_id = if resumed {
        let mut conn = producer.connection().clone();
        batch::status(&mut conn, producer.keys(), &batch_id)
            .await
            .map_err(exit::queue)?
            .and_then(|s| s.then)
    } else {
        then.as_ref().map(|j| j.id.to_string())
    };
    if ctx.json {
        output::json_line(
            "batch",
            json!({"id": batch_id, "total": checked.valid, "enqueued": done.created,
                   "existing": done.existing, "deduplicated": done.deduplicated,
                   "invalid_skipped": checked.invalid, "resumed": resumed,
                   "then": then_id}),
        );
    } else {
        output::line(&batch_id);
        output::eline(&format!(
            "mcpq: batch {batch_id}: {} job(s), {} enqueued now{}{}{}",
            checked.valid,
            done.created,
            if done.existing > 0 {
                format!(", {} already there (a re-run)", done.existing)
            } else {
                String::new()
            },
            if done.deduplicated > 0 {
                format!(
                    ", {} matched an earlier job's idempotency key",
                    done.deduplicated
                )
            } else {
                String::new()
            },
            if checked.invalid > 0 {
                format!(", {} invalid {unit}(s) skipped", checked.invalid)
            } else {
                String::new()
            },
        ));
    }
    if args.wait {
        return wait(ctx, &batch_id, args.timeout).await;
    }
    Ok(exit::OK)
}

/// The batch's status, or exit 2 when there is none.
async fn read_status(
    ctx: &Ctx,
    conn: &mut mcpq_core::queue::Conn,
    keys: &Keys,
    id: &str,
) -> anyhow::Result<BatchStatus> {
    batch::status(conn, keys, id)
        .await
        .map_err(exit::queue)?
        .ok_or_else(|| {
            exit::unknown_job(format!(
                "no batch {} in namespace `{}`",
                one_line(id),
                ctx.config.namespace
            ))
        })
}

/// Jobs ended per second since the batch was made, and the seconds left at that rate.
fn rate_and_eta(s: &BatchStatus) -> (f64, Option<u64>) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let end = s.finished_at.unwrap_or(now);
    let secs = end.saturating_sub(s.created_at) as f64 / 1000.0;
    let rate = if secs > 0.0 {
        s.done() as f64 / secs
    } else {
        0.0
    };
    let eta = (rate > 0.0 && s.pending > 0).then(|| (s.pending as f64 / rate).ceil() as u64);
    (rate, eta)
}

fn status_json(s: &BatchStatus) -> Value {
    let (rate, eta) = rate_and_eta(s);
    let mut v = serde_json::to_value(s).unwrap_or_else(|_| json!({}));
    if let Some(obj) = v.as_object_mut() {
        obj.insert("done".to_string(), json!(s.done()));
        obj.insert(
            "rate_per_sec".to_string(),
            json!((rate * 10.0).round() / 10.0),
        );
        obj.insert("eta_secs".to_string(), json!(eta));
        obj.insert("finished".to_string(), json!(s.is_finished()));
    }
    v
}

fn status_text(s: &BatchStatus) -> String {
    let (rate, eta) = rate_and_eta(s);
    let mut text = format!(
        "{}  {}/{} done ({:.1} %): {} succeeded, {} dead, {} cancelled, {} pending",
        s.id,
        s.done(),
        s.total,
        s.percent(),
        s.succeeded,
        s.dead,
        s.cancelled,
        s.pending
    );
    text.push_str(&format!(
        "\n  rate {rate:.1} jobs/s{}",
        match (s.finished_at, eta) {
            (Some(_), _) => ", finished".to_string(),
            (None, Some(eta)) => format!(
                ", ETA {}",
                mcpq_core::duration::format(Duration::from_secs(eta))
            ),
            (None, None) => String::new(),
        }
    ));
    text.push_str(&format!(
        "\n  made {} from {}, {} enqueued",
        output::time(s.created_at),
        one_line(&s.source),
        s.enqueued
    ));
    if let Some(then) = &s.then {
        text.push_str(&format!("\n  final job {then}"));
    }
    text
}

async fn status(ctx: &Ctx, id: &str) -> anyhow::Result<u8> {
    let producer = ctx.producer().await?;
    let mut conn = producer.connection().clone();
    let s = read_status(ctx, &mut conn, producer.keys(), id).await?;
    if ctx.json {
        output::json_line("batch_status", status_json(&s));
    } else {
        output::line(&status_text(&s));
    }
    Ok(exit::OK)
}

async fn wait(ctx: &Ctx, id: &str, timeout: Duration) -> anyhow::Result<u8> {
    let producer = ctx.producer().await?;
    let mut conn = producer.connection().clone();
    let keys = producer.keys().clone();
    let deadline = Instant::now() + timeout;
    let mut s = read_status(ctx, &mut conn, &keys, id).await?;
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let bar = (tty && !ctx.json).then(|| progress_bar(s.total, "jobs"));
    let mut last_plain: Option<Instant> = None;
    loop {
        if ctx.json {
            output::json_line("batch_progress", status_json(&s));
        } else if let Some(bar) = &bar {
            bar.set_position(s.done());
            bar.set_message(format!("{} dead, {} cancelled", s.dead, s.cancelled));
        } else if last_plain.is_none_or(|t| t.elapsed() >= PLAIN_EVERY) || s.is_finished() {
            let (rate, _) = rate_and_eta(&s);
            output::eline(&format!(
                "mcpq: batch {}: {}/{} done ({:.0} %), {} dead, {} cancelled, {rate:.1} jobs/s",
                s.id,
                s.done(),
                s.total,
                s.percent(),
                s.dead,
                s.cancelled
            ));
            last_plain = Some(Instant::now());
        }
        if s.is_finished() {
            break;
        }
        if Instant::now() >= deadline {
            if let Some(bar) = &bar {
                bar.abandon();
            }
            return Err(exit::error(
                CliErrorKind::NotFinished,
                format!(
                    "batch {}: {} job(s) still pending after {}",
                    s.id,
                    s.pending,
                    mcpq_core::duration::format(timeout)
                ),
            ));
        }
        tokio::time::sleep(POLL.min(deadline.saturating_duration_since(Instant::now()))).await;
        s = read_status(ctx, &mut conn, &keys, id).await?;
    }
    if let Some(bar) = &bar {
        bar.finish();
    }
    if !ctx.json {
        output::line(&status_text(&s));
    }
    if s.dead + s.cancelled > 0 {
        return Err(exit::error(
            CliErrorKind::JobFailed,
            format!(
                "batch {}: {} job(s) dead, {} cancelled (`mcpq batch results {}` has their errors)",
                s.id, s.dead, s.cancelled, s.id
            ),
        ));
    }
    Ok(exit::OK)
}

async fn results(ctx: &Ctx, args: BatchResultsArgs) -> anyhow::Result<u8> {
    let producer = ctx.producer().await?;
    let mut conn = producer.connection().clone();
    let keys = producer.keys().clone();
    let s = read_status(ctx, &mut conn, &keys, &args.id).await?;
    let mut out: Box<dyn Write> = match &args.out {
        Some(path) => {
            Box::new(BufWriter::new(File::create(path).map_err(|e| {
                exit::usage(format!("cannot write {}: {e}", path.display()))
            })?))
        }
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    let bar = args
        .out
        .is_some()
        .then(|| progress_bar(s.enqueued, "results"));
    let mut start = 0;
    let mut written = 0u64;
    loop {
        let ids = batch::member_ids(&mut conn, &keys, &args.id, start, batch::PAGE)
            .await
            .map_err(exit::queue)?;
        if ids.is_empty() {
            break;
        }
        start += ids.len();
        for row in batch::member_results(&mut conn, &keys, &args.id, &ids)
            .await
            .map_err(exit::queue)?
        {
            let line = serde_json::to_string(&row)?;
            if let Err(e) = writeln!(out, "{line}") {
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    return Ok(exit::OK);
                }
                return Err(anyhow::anyhow!("cannot write the results: {e}"));
            }
            written += 1;
        }
        if let Some(bar) = &bar {
            bar.set_position(written);
        }
    }
    out.flush()
        .map_err(|e| anyhow::anyhow!("cannot write the results: {e}"))?;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    if let Some(path) = &args.out {
        if ctx.json {
            output::json_line(
                "batch_results",
                json!({"id": args.id, "lines": written, "out": path}),
            );
        } else {
            output::eline(&format!(
                "mcpq: {written} line(s) written to {}",
                path.display()
            ));
        }
    }
    Ok(exit::OK)
}

async fn cancel(ctx: &Ctx, id: &str) -> anyhow::Result<u8> {
    let producer = ctx.producer().await?;
    let mut conn = producer.connection().clone();
    let keys = producer.keys().clone();
    let settings = producer.settings().clone();
    let s = read_status(ctx, &mut conn, &keys, id).await?;
    // The final job first: cancelling the last jobs must not release it.
    if let Some(then) = &s.then {
        control::cancel(&mut conn, &keys, &settings, then)
            .await
            .map_err(exit::queue)?;
    }
    let (mut stopped, mut already) = (0u64, 0u64);
    let mut start = 0;
    loop {
        let ids = batch::member_ids(&mut conn, &keys, id, start, batch::PAGE)
            .await
            .map_err(exit::queue)?;
        if ids.is_empty() {
            break;
        }
        start += ids.len();
        // Only jobs whose record names this batch: the list may hold anything.
        let ids = batch::belonging(&mut conn, &keys, id, &ids)
            .await
            .map_err(exit::queue)?;
        for group in ids.chunks(CANCEL_PARALLEL) {
            let answers = futures::future::join_all(group.iter().map(|job| {
                let mut conn = conn.clone();
                let keys = &keys;
                let settings = &settings;
                async move { control::cancel(&mut conn, keys, settings, job).await }
            }))
            .await;
            for answer in answers {
                match answer.map_err(exit::queue)? {
                    Cancelled::BeforeRunning | Cancelled::WhileRunning => stopped += 1,
                    Cancelled::AlreadyFinished(_) | Cancelled::Unknown => already += 1,
                }
            }
        }
    }
    // Jobs a cut-short submit never enqueued will not come: they count as cancelled.
    let never_enqueued = batch::seal(&mut conn, &keys, id)
        .await
        .map_err(exit::queue)?;
    if ctx.json {
        output::json_line(
            "batch_cancelled",
            json!({"id": id, "cancelled": stopped, "already_ended": already,
                   "never_enqueued": never_enqueued}),
        );
    } else {
        output::line(&format!(
            "batch {id}: {stopped} job(s) cancelled, {already} had ended already{}",
            if never_enqueued > 0 {
                format!(", {never_enqueued} never enqueued (counted as cancelled)")
            } else {
                String::new()
            }
        ));
    }
    Ok(exit::OK)
}

async fn list(ctx: &Ctx, limit: usize) -> anyhow::Result<u8> {
    let producer = ctx.producer().await?;
    let mut conn = producer.connection().clone();
    let batches = batch::list(&mut conn, producer.keys(), limit)
        .await
        .map_err(exit::queue)?;
    for s in &batches {
        if ctx.json {
            output::json_line("batch_status", status_json(s));
        } else {
            output::line(&format!(
                "{}  {}  {}/{} done, {} dead, {} cancelled  {}",
                s.id,
                output::time(s.created_at),
                s.done(),
                s.total,
                s.dead,
                s.cancelled,
                one_line(&s.source)
            ));
        }
    }
    if batches.is_empty() && !ctx.json {
        output::eline("mcpq: no batches in this namespace");
    }
    Ok(exit::OK)
}
