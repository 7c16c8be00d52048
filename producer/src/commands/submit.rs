//! `mcpq submit`: build a job (file, stdin or flags), validate it against the config's
//! servers, record and push it, print its id. Nothing is written to Redis unless the job
//! is valid.

use std::io::Read;

use mcpq_core::cli_error::{CliErrorKind, CliWarningKind};
use mcpq_core::config::email::EmailSettings;
use mcpq_core::job::eml::parse_eml;
use mcpq_core::job::{Attachment, Job, JobPayload, PlanStep, ReplySpec};
use serde_json::{json, Map, Value};

use crate::cli::{EmailArgs, EmailPlanArgs, SubmitArgs, SubmitKind};
use crate::commands::{wait, Ctx};
use crate::{attach, exit, output};

/// How long `submit --wait` waits beyond the job's own timeout for a worker to pick it up.
const WAIT_SLACK: std::time::Duration = std::time::Duration::from_secs(60);

/// Reads a job file, `.eml`, `--steps @FILE` or `--then FILE` (`-`: stdin), at most `limit` bytes
/// (`queue.max_payload`: no job can be bigger), so `/dev/zero` cannot grow the producer.
pub fn read_source(path: &std::path::Path, limit: usize) -> anyhow::Result<Vec<u8>> {
    let (what, reader): (String, Box<dyn Read>) = if path.as_os_str() == "-" {
        ("stdin".to_string(), Box::new(std::io::stdin()))
    } else {
        let file = std::fs::File::open(path).map_err(|e| {
            exit::invalid_job(format!("cannot read job file {}: {e}", path.display()))
        })?;
        (path.display().to_string(), Box::new(file))
    };
    let mut buf = Vec::new();
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| exit::invalid_job(format!("cannot read {what}: {e}")))?;
    if buf.len() > limit {
        return Err(exit::invalid_job(format!(
            "{what} is more than {limit} bytes; the limit (queue.max_payload) is {limit}"
        )));
    }
    Ok(buf)
}

/// `mcpq submit email`: the raw message parsed here, so a broken one is a usage error.
fn email_job(args: &EmailArgs, limit: usize) -> anyhow::Result<Job> {
    let raw = read_source(&args.eml, limit)?;
    let plan = EmailPlan::from_args(&args.plan, limit)?;
    plan.job(&raw)
        .map_err(|e| exit::invalid_job(format!("{}: {e}", args.eml.display())))
}

/// An email job's plan, read once (`--steps @FILE`), for one message or a mailbox's.
pub struct EmailPlan<'a> {
    args: &'a EmailPlanArgs,
    steps: Vec<PlanStep>,
}

impl<'a> EmailPlan<'a> {
    /// Reads and parses `--steps` (exit 2 when it is missing or not a JSON array of steps).
    pub fn from_args(args: &'a EmailPlanArgs, limit: usize) -> anyhow::Result<Self> {
        let Some(steps) = &args.steps else {
            return Err(exit::usage(
                "--steps is required for email jobs: a JSON array of steps, or @FILE",
            ));
        };
        let steps_text = match steps.strip_prefix('@') {
            Some(file) => String::from_utf8_lossy(&read_source(std::path::Path::new(file), limit)?)
                .into_owned(),
            None => steps.clone(),
        };
        let steps = serde_json::from_str::<Vec<PlanStep>>(&steps_text).map_err(|e| {
            exit::invalid_job(format!("--steps must be a JSON array of steps: {e}"))
        })?;
        Ok(EmailPlan { args, steps })
    }

    /// The email job for one raw message, or why the message cannot be read.
    pub fn job(&self, raw: &[u8]) -> Result<Job, String> {
        let mut email = parse_eml(raw).map_err(|e| e.to_string())?;
        email.steps = self.steps.clone();
        email.instructions = self.args.instructions.clone();
        email.servers = self.args.servers.clone();
        email.reply = self.args.reply_text.as_ref().map(|text| ReplySpec {
            text: text.clone(),
            subject: self.args.reply_subject.clone(),
            send: self.args.send_reply,
        });
        Ok(Job::email(email, Default::default()))
    }
}

/// Fills in the email job's attachment files: a JSON `path` only under `--attach-root`
/// (see [`crate::attach`]), then the `--attach` files; checks the `[email]` limits of the
/// config (count, per file, per job) before reading anything big.
fn attach_files(job: &mut Job, args: &SubmitArgs, limits: &EmailSettings) -> anyhow::Result<()> {
    use base64::Engine;
    let engine = base64::engine::general_purpose::STANDARD;
    let JobPayload::Email(email) = &mut job.payload else {
        if !args.attach.is_empty() {
            return Err(exit::usage(
                "--attach is for email jobs only (mcpq submit email ... or a job file of kind email)",
            ));
        }
        return Ok(());
    };
    for file in &args.attach {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "attachment".to_string());
        email.attachments.push(Attachment {
            content_type: attach::content_type(&name).to_string(),
            name,
            content_base64: None,
            path: Some(file.to_string_lossy().into_owned()),
        });
    }
    let count = email.attachments.len();
    if count > limits.max_attachments {
        return Err(exit::invalid_job(format!(
            "the job has {count} attachments; the limit (email.max_attachments) is {}",
            limits.max_attachments
        )));
    }
    let from_flags = count - args.attach.len();
    let mut total = 0u64;
    for (i, a) in email.attachments.iter_mut().enumerate() {
        let field = format!("payload.attachments[{i}]");
        let left = limits.max_attachments_total.saturating_sub(total);
        let (limit, key) = if limits.max_attachment <= left {
            (limits.max_attachment, "email.max_attachment")
        } else {
            (left, "email.max_attachments_total, what is left of it")
        };
        if let Some(path) = a.path.take() {
            let (real, symlinks) = if i >= from_flags {
                (std::path::PathBuf::from(&path), attach::Symlinks::Follow)
            } else {
                let root = args.attach_root.as_deref().ok_or_else(|| {
                    exit::invalid_job(format!("{field}.path: {}", attach::HOW_TO_ATTACH))
                })?;
                let real = attach::resolve_under(root, &path, &format!("{field}.path"))?;
                (real, attach::Symlinks::Refuse)
            };
            let field = format!("{field} ({:?})", a.name);
            let bytes = attach::read_file(&real, symlinks, limit, key, &field)?;
            a.content_base64 = Some(engine.encode(&bytes));
        }
        let size = a.decoded_len() as u64;
        if size > limits.max_attachment {
            return Err(exit::invalid_job(format!(
                "{field} ({:?}) is {size} bytes; the limit (email.max_attachment) is {}",
                a.name, limits.max_attachment
            )));
        }
        total += size;
        if total > limits.max_attachments_total {
            return Err(exit::invalid_job(format!(
                "the attachments add up to more than {} bytes (email.max_attachments_total)",
                limits.max_attachments_total
            )));
        }
    }
    Ok(())
}

fn build(args: &SubmitArgs, limits: &EmailSettings, max_payload: usize) -> anyhow::Result<Job> {
    let mut job = match (&args.kind, &args.file) {
        (Some(SubmitKind::Agent(a)), _) => {
            let arguments: Map<String, Value> = serde_json::from_str(&a.args)
                .map_err(|e| exit::invalid_job(format!("--args must be a JSON object: {e}")))?;
            Job::agent(
                vec![PlanStep {
                    name: None,
                    server: a.server.clone(),
                    tool: a.tool.clone(),
                    arguments,
                    continue_on_error: false,
                    literal_arguments: false,
                    keep_tool_errors: false,
                }],
                Default::default(),
            )
        }
        (Some(SubmitKind::Email(e)), _) => email_job(e, max_payload)?,
        (None, Some(path)) => {
            let text = read_source(path, max_payload)?;
            Job::from_json(&text).map_err(|e| exit::invalid_job(e.to_string()))?
        }
        (None, None) => {
            return Err(exit::usage(
                "nothing to submit: give a job file, `-` for stdin, or `agent --server S --tool T` (see mcpq submit --help)",
            ))
        }
    };
    let o = &args.options;
    if let Some(t) = o.timeout {
        job.options.timeout = Some(t);
    }
    if let Some(n) = o.max_attempts {
        job.options.max_attempts = n;
    }
    if let Some(p) = o.priority {
        job.options.priority = p;
    }
    if let Some(k) = &o.idempotency_key {
        job.options.idempotency_key = Some(k.clone());
    }
    if let Some(q) = &o.queue {
        job.options.queue = q.clone();
    }
    if let Some(delay) = o.delay {
        job.options.run_at = Some(std::time::SystemTime::now() + delay);
    }
    if let Some(at) = o.at {
        job.options.run_at = Some(at);
    }
    if let Some(callback) = o.callback.callback() {
        job.options.callback = Some(callback);
    }
    attach_files(&mut job, args, limits)?;
    job.validate()
        .and_then(|()| job.check_submitted())
        .map_err(|e| exit::invalid_job(e.to_string()))?;
    Ok(job)
}

pub async fn run(ctx: &Ctx, args: SubmitArgs) -> anyhow::Result<u8> {
    let job = build(&args, &ctx.config.email, ctx.config.queue.max_payload)?;
    job.check_servers(ctx.config.server_names()).map_err(|e| {
        let hint = if ctx.config.servers.is_empty() {
            " (no config with [servers] was loaded: pass --config or set MCPQ_CONFIG)"
        } else {
            ""
        };
        exit::invalid_job(format!("{e}{hint}"))
    })?;
    ctx.config
        .webhooks
        .check_job(&job)
        .map_err(|e| exit::invalid_job(e.to_string()))?;
    let producer = ctx.producer().await?;
    let submitted = producer.submit(&job).await.map_err(exit::queue)?;
    let id = submitted.id.clone();
    if submitted.duplicate_id {
        return Err(exit::error(CliErrorKind::DuplicateId, format!(
            "a job with id {id} exists already: nothing enqueued (leave `id` out to get a fresh one, or use an idempotency key to make a resubmit return the first job)"
        )));
    }
    if !submitted.created {
        output::warning(
            ctx.json,
            CliWarningKind::IdempotencyKeyUsed,
            &format!(
                "idempotency key {:?} was already used by job {id} (within queue.idempotency_ttl): nothing enqueued",
                job.options.idempotency_key.as_deref().unwrap_or("")
            ),
            output::PREFIX,
        );
    }
    if ctx.json {
        output::json_line(
            "submitted",
            json!({"id": id, "kind": job.kind(), "created": submitted.created}),
        );
    } else {
        output::line(&id);
    }
    if args.wait {
        // A delayed job is waited for through its delay too.
        let delay = job
            .options
            .run_at
            .and_then(|at| at.duration_since(std::time::SystemTime::now()).ok())
            .unwrap_or_default();
        let timeout = job
            .options
            .timeout
            .unwrap_or(ctx.config.defaults.job_timeout)
            + WAIT_SLACK
            + delay;
        return wait::run(ctx, &id, timeout).await;
    }
    Ok(exit::OK)
}
