//! `mcpq submit`: build a job (file, stdin or flags), validate it against the config's
//! servers, record and push it, print its id. Nothing is written to Redis unless the job
//! is valid.

use std::io::Read;

use mcpq_shared::email::parse::parse_eml;
use mcpq_shared::email::{EmailSettings, ReplySpec};
use mcpq_shared::job::{Job, JobPayload, PlanStep};
use serde_json::{json, Map, Value};

use crate::cli::{EmailArgs, SubmitArgs, SubmitKind};
use crate::commands::{wait, Ctx};
use crate::{exit, output};

/// How long `submit --wait` waits beyond the job's own timeout for a worker to pick it up.
const WAIT_SLACK: std::time::Duration = std::time::Duration::from_secs(60);

fn read_source(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| exit::usage(format!("cannot read the job from stdin: {e}")))?;
        Ok(buf)
    } else {
        std::fs::read(path)
            .map_err(|e| exit::usage(format!("cannot read job file {}: {e}", path.display())))
    }
}

/// `mcpq submit email`: the raw message parsed here, so a broken one is a usage error.
fn email_job(args: &EmailArgs) -> anyhow::Result<Job> {
    let raw = read_source(&args.eml)?;
    let mut email =
        parse_eml(&raw).map_err(|e| exit::usage(format!("{}: {e}", args.eml.display())))?;
    let steps_text = match args.steps.strip_prefix('@') {
        Some(file) => {
            String::from_utf8_lossy(&read_source(std::path::Path::new(file))?).into_owned()
        }
        None => args.steps.clone(),
    };
    email.steps = serde_json::from_str::<Vec<PlanStep>>(&steps_text)
        .map_err(|e| exit::usage(format!("--steps must be a JSON array of steps: {e}")))?;
    email.instructions = args.instructions.clone();
    email.servers = args.servers.clone();
    email.reply = args.reply_text.as_ref().map(|text| ReplySpec {
        text: text.clone(),
        subject: args.reply_subject.clone(),
        send: args.send_reply,
    });
    Ok(Job::email(email, Default::default()))
}

/// Reads the files of attachments given by `path` (relative to `base`) into
/// `content_base64`, and checks the size limits of the config's `[email]`.
fn inline_attachments(
    job: &mut Job,
    base: &std::path::Path,
    limits: &EmailSettings,
) -> anyhow::Result<()> {
    use base64::Engine;
    let JobPayload::Email(email) = &mut job.payload else {
        return Ok(());
    };
    let mut total = 0u64;
    for (i, a) in email.attachments.iter_mut().enumerate() {
        if let Some(path) = a.path.take() {
            let full = base.join(&path);
            let bytes = std::fs::read(&full).map_err(|e| {
                exit::usage(format!(
                    "payload.attachments[{i}].path: cannot read {}: {e}",
                    full.display()
                ))
            })?;
            a.content_base64 = Some(base64::engine::general_purpose::STANDARD.encode(&bytes));
        }
        let size = a.decoded_len() as u64;
        total += size;
        if size > limits.max_attachment {
            return Err(exit::usage(format!(
                "payload.attachments[{i}] ({:?}) is {size} bytes; the limit (email.max_attachment) is {}",
                a.name, limits.max_attachment
            )));
        }
        if total > limits.max_attachments_total {
            return Err(exit::usage(format!(
                "the attachments add up to more than {} bytes (email.max_attachments_total)",
                limits.max_attachments_total
            )));
        }
    }
    Ok(())
}

fn build(args: &SubmitArgs, limits: &EmailSettings) -> anyhow::Result<Job> {
    let mut job = match (&args.kind, &args.file) {
        (Some(SubmitKind::Agent(a)), _) => {
            let arguments: Map<String, Value> = serde_json::from_str(&a.args)
                .map_err(|e| exit::usage(format!("--args must be a JSON object: {e}")))?;
            Job::agent(
                vec![PlanStep {
                    name: None,
                    server: a.server.clone(),
                    tool: a.tool.clone(),
                    arguments,
                    continue_on_error: false,
                }],
                Default::default(),
            )
        }
        (Some(SubmitKind::Email(e)), _) => email_job(e)?,
        (None, Some(path)) => {
            let text = read_source(path)?;
            Job::from_json(&text).map_err(|e| exit::usage(e.to_string()))?
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
    let base = match &args.file {
        Some(p) if p.as_os_str() != "-" => p.parent().map(|d| d.to_path_buf()).unwrap_or_default(),
        _ => std::path::PathBuf::from("."),
    };
    inline_attachments(&mut job, &base, limits)?;
    job.validate().map_err(|e| exit::usage(e.to_string()))?;
    Ok(job)
}

pub async fn run(ctx: &Ctx, args: SubmitArgs) -> anyhow::Result<u8> {
    let job = build(&args, &ctx.config.email)?;
    job.check_servers(ctx.config.server_names()).map_err(|e| {
        let hint = if ctx.config.servers.is_empty() {
            " (no config with [servers] was loaded: pass --config or set MCPQ_CONFIG)"
        } else {
            ""
        };
        exit::usage(format!("{e}{hint}"))
    })?;
    let producer = ctx.producer().await?;
    let submitted = producer.submit(&job).await.map_err(exit::queue)?;
    let id = submitted.id.clone();
    if submitted.duplicate_id {
        return Err(exit::usage(format!(
            "a job with id {id} exists already: nothing enqueued (leave `id` out to get a fresh one, or use an idempotency key to make a resubmit return the first job)"
        )));
    }
    if !submitted.created {
        eprintln!(
            "mcpq: idempotency key {:?} was already used by job {id} (within queue.idempotency_ttl): nothing enqueued",
            job.options.idempotency_key.as_deref().unwrap_or("")
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
        let timeout = job
            .options
            .timeout
            .unwrap_or(ctx.config.defaults.job_timeout)
            + WAIT_SLACK;
        return wait::run(ctx, &id, timeout).await;
    }
    Ok(exit::OK)
}
