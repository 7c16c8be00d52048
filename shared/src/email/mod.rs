//! Email jobs: an inbound email, instructions, and tools.
//!
//! A worker runs an email job in four steps:
//! 1. writes its attachments into a fresh per-job directory ([`attachments`]: sanitized
//!    names, size limits, nothing outside the directory);
//! 2. runs its plan (`steps`), whose templates see `email.*`, `attachments` (name,
//!    path, size, content_type), `input.instructions` and earlier steps; or, in LLM
//!    mode (`llm` and no steps), asks the model with the instructions, the email and
//!    the attachments' paths, letting it call the tools of `servers`;
//! 3. drafts the reply (`reply.text` and `reply.subject` are templates too), addressed
//!    to the sender with `In-Reply-To` and `References` from the email; if the email's
//!    `from` is not an address (a bounce, `From: foo`, no `From`), the job fails here,
//!    permanently (`no_reply_address`): the plan has run, and a job without `reply`
//!    succeeds;
//! 4. returns `{"summary", "actions", "attachments", "reply"}`: the last step's text
//!    (or the model's answer), every step's result (or the model's transcript), the
//!    files written, and the draft.
//!
//! Raw `.eml` messages are turned into the job's JSON by [`parse`] (`mcpq_core::job::eml`; the producer does
//! it, so a broken message is a usage error at submit).

pub mod attachment_dir;
pub mod attachments;
pub use crate::job::eml as parse;
pub mod settings;
pub mod smtp;

use serde_json::{json, Map, Value};

use crate::agent::llm::run_llm;
use crate::agent::plan::{run_plan_with_data, text_parts, PlanContext};
use crate::agent::template_sandbox::RenderError;
use crate::failure::{FailureKind, JobFailure};
use crate::job::AgentJob;

/// The email job's types live with the job model (`crate::job::email`).
pub use crate::job::email as message;
pub use crate::job::email::{Attachment, EmailJob, ReplySpec};
pub use settings::EmailSettings;

/// What templates see as `email`.
fn email_view(email: &EmailJob) -> Value {
    json!({
        "from": email.from, "to": email.to, "cc": email.cc, "subject": email.subject,
        "text": email.text, "html": email.html, "message_id": email.message_id,
        "references": email.references, "date": email.date,
    })
}

/// The user message of LLM mode: instructions, the email, the attachments' paths.
fn email_prompt(email: &EmailJob, saved: &[attachments::SavedAttachment]) -> String {
    // A message may have no sender (see `crate::job::eml`); say so rather than leave a gap.
    let from = if email.from.is_empty() {
        "(none)"
    } else {
        &email.from
    };
    let mut p = format!(
        "{}\n\n--- The email ---\nFrom: {from}\nTo: {}\n",
        email.instructions,
        email.to.join(", ")
    );
    if !email.cc.is_empty() {
        p.push_str(&format!("Cc: {}\n", email.cc.join(", ")));
    }
    p.push_str(&format!("Subject: {}\n", email.subject));
    if let Some(date) = &email.date {
        p.push_str(&format!("Date: {date}\n"));
    }
    p.push_str(&format!("\n{}\n", email.text));
    if !saved.is_empty() {
        p.push_str("\n--- Attachments (files your tools can read) ---\n");
        for a in saved {
            p.push_str(&format!(
                "{} ({}, {} bytes): {}\n",
                a.name, a.content_type, a.size, a.path
            ));
        }
    }
    p
}

/// Runs an email job (see the module doc). `ctx.data` carries `job`; this adds the rest.
pub async fn run_email(
    email: &EmailJob,
    job_id: &str,
    ctx: PlanContext<'_>,
) -> Result<Value, JobFailure> {
    let config = ctx.config;
    let (s, id, list) = (
        config.email.clone(),
        job_id.to_string(),
        email.attachments.clone(),
    );
    // Marks the directory finished when the job ends, however it ends (see
    // attachment_dir): the sweep never removes the files of a running job.
    let mut finished = attachment_dir::FinishGuard::new(&config.email.attachments_dir, job_id);
    finished.arm();
    let saved = tokio::task::spawn_blocking(move || attachments::materialize(&s, &id, &list))
        .await
        .map_err(|e| {
            JobFailure::new(
                FailureKind::Internal,
                format!("attachment writer panicked: {e}"),
                true,
            )
        })?;
    if matches!(saved, Err(attachments::AttachmentError::UnsafeRoot(_))) {
        // Write nothing into a directory others control.
        finished.disarm();
    }
    let saved = saved.map_err(|e| {
        let kind = match e {
            attachments::AttachmentError::TooLarge { .. }
            | attachments::AttachmentError::TooMany { .. }
            | attachments::AttachmentError::DirFull { .. } => FailureKind::AttachmentTooLarge,
            attachments::AttachmentError::Invalid { .. } => FailureKind::InvalidJob,
            attachments::AttachmentError::UnsafeRoot(_) => FailureKind::AttachmentsDirUnsafe,
            _ => FailureKind::AttachmentIo,
        };
        JobFailure::new(kind, e.to_string(), e.is_retryable())
    })?;
    let mut data = match ctx.data {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    data.insert("email".to_string(), email_view(email));
    data.insert("attachments".to_string(), json!(saved));
    let data = Value::Object(data);
    let mut input = Map::new();
    input.insert("instructions".to_string(), json!(email.instructions));
    let ctx = PlanContext { data: &data, ..ctx };
    let (summary, actions, seen) = if email.steps.is_empty() {
        let prompt = email_prompt(email, &saved);
        let options = email.llm.clone().unwrap_or_default();
        let out = run_llm(&prompt, &email.servers, &options, config.llm.as_ref(), ctx).await?;
        let answer = out["answer"].as_str().unwrap_or_default().to_string();
        let mut seen = data.clone();
        seen["answer"] = json!(answer);
        seen["input"] = Value::Object(input);
        seen["steps"] = json!({});
        (answer, out, seen)
    } else {
        let plan = AgentJob {
            steps: email.steps.clone(),
            input,
            prompt: None,
            servers: Vec::new(),
            llm: None,
        };
        let (actions, seen) = run_plan_with_data(&plan, ctx).await?;
        let summary = actions
            .as_array()
            .and_then(|steps| steps.iter().rev().find_map(|s| s.get("result")))
            .and_then(|r| serde_json::from_value(r.clone()).ok())
            .map(|r| text_parts(&r))
            .unwrap_or_default();
        (summary, actions, seen)
    };
    let mut reply =
        match &email.reply {
            Some(spec) => {
                if let Some(failure) = no_reply_address(email) {
                    return Err(failure);
                }
                Some(draft_reply(email, spec, &seen, ctx).await.map_err(|e| {
                    JobFailure::new(e.kind(), format!("reply: {e}"), e.is_retryable())
                })?)
            }
            None => None,
        };
    if let (Some(draft), Some(spec)) = (reply.as_mut(), &email.reply) {
        if spec.send {
            send_reply(email, draft, config.smtp.as_ref(), ctx.deadline).await?;
        }
    }
    Ok(json!({"summary": summary, "actions": actions, "attachments": saved, "reply": reply}))
}

/// How much of a `from` that is not an address an error quotes, in characters (the
/// whole of it may be a page of text).
const QUOTED_FROM_CHARS: usize = 120;

/// A reply goes to `email.from`: it must be an address ([`smtp::is_mailbox`], so the
/// draft can also be sent). Mail as it arrives may have none (a bounce from
/// `MAILER-DAEMON`, `From: foo`, no `From`): then this is the job's failure, not
/// retried; `None` when `from` is an address.
fn no_reply_address(email: &EmailJob) -> Option<JobFailure> {
    if smtp::is_mailbox(&email.from) {
        return None;
    }
    let what = if email.from.trim().is_empty() {
        "the email has no From address".to_string()
    } else {
        let quoted: String = email.from.chars().take(QUOTED_FROM_CHARS).collect();
        let cut = if quoted.len() < email.from.len() {
            "..."
        } else {
            ""
        };
        format!("the email's From {quoted:?}{cut} is not an address")
    };
    Some(JobFailure::new(
        FailureKind::NoReplyAddress,
        format!(
            "reply: {what}, so there is nobody to reply to (bounces and automated \
             messages often have none); submit such emails without a reply"
        ),
        false,
    ))
}

/// Sends `draft` over SMTP and marks it sent (with the Message-ID it went out with).
async fn send_reply(
    email: &EmailJob,
    draft: &mut Value,
    smtp: Option<&smtp::SmtpSettings>,
    deadline: tokio::time::Instant,
) -> Result<(), JobFailure> {
    let settings = smtp.ok_or_else(|| {
        JobFailure::new(
            FailureKind::SmtpNotConfigured,
            "reply.send is true but the worker has no [smtp] config",
            false,
        )
    })?;
    let to: Vec<String> = serde_json::from_value(draft["to"].clone()).unwrap_or_default();
    let references: Vec<String> =
        serde_json::from_value(draft["references"].clone()).unwrap_or_default();
    let reply = smtp::Reply {
        to: &to,
        subject: draft["subject"].as_str().unwrap_or_default(),
        text: draft["text"].as_str().unwrap_or_default(),
        in_reply_to: email.message_id.as_deref(),
        references: &references,
    };
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    let message_id = match tokio::time::timeout(left, smtp::send(settings, &reply)).await {
        Ok(Ok(id)) => id,
        Ok(Err(e)) => {
            return Err(JobFailure::new(
                FailureKind::SmtpError,
                e.to_string(),
                e.is_retryable(),
            ))
        }
        Err(_) => {
            return Err(JobFailure::new(
                FailureKind::Timeout,
                "sending the reply did not finish before the job's deadline",
                true,
            ))
        }
    };
    draft["sent"] = json!(true);
    draft["message_id"] = json!(message_id);
    Ok(())
}

/// The reply draft: to the sender, subject and body rendered (in one render, so they
/// share the template output limit).
async fn draft_reply(
    email: &EmailJob,
    spec: &ReplySpec,
    data: &Value,
    ctx: PlanContext<'_>,
) -> Result<Value, RenderError> {
    let templates = json!({"subject": spec.subject, "text": spec.text});
    let rendered = ctx
        .templates
        .render(&templates, data, ctx.deadline, ctx.cancel)
        .await?;
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let subject = match &spec.subject {
        Some(_) => text(&rendered["subject"]),
        None if email.subject.to_lowercase().starts_with("re:") => email.subject.clone(),
        None => format!("Re: {}", email.subject),
    };
    let mut references = email.references.clone();
    if let Some(id) = &email.message_id {
        references.push(id.clone());
    }
    Ok(json!({
        "to": [email.from], "subject": subject, "text": text(&rendered["text"]),
        "in_reply_to": email.message_id, "references": references, "send": spec.send, "sent": false,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(from: &str) -> EmailJob {
        EmailJob {
            from: from.to_string(),
            ..EmailJob::default()
        }
    }

    #[test]
    fn a_reply_needs_a_from_that_is_an_address() {
        for ok in [
            "Ana <ana@example.com>",
            "ana@example.com",
            "\"Doe, John\" <j@x.org>",
            "José Müller <jose@example.de>",
            "J\u{fffd}rg M\u{fffd}ller <joerg@example.de>",
        ] {
            assert_eq!(no_reply_address(&from(ok)), None, "{ok}");
        }
        for (bad, says) in [
            ("", "the email has no From address"),
            ("foo", "the email's From \"foo\" is not an address"),
            ("MAILER-DAEMON", "\"MAILER-DAEMON\" is not an address"),
            ("<>", "\"<>\" is not an address"),
            (
                "Mail Delivery Subsystem <MAILER-DAEMON>",
                "<MAILER-DAEMON>\" is not an address",
            ),
            ("Ana <a@b.c>, Bo <b@c.d>", "is not an address"),
        ] {
            let err = no_reply_address(&from(bad)).expect(bad);
            assert_eq!(err.kind, FailureKind::NoReplyAddress, "{bad}");
            assert!(!err.retryable, "{bad}");
            assert!(err.message.contains(says), "{bad}: {}", err.message);
            assert!(
                err.message.contains("nobody to reply to"),
                "{}",
                err.message
            );
        }
        // A long one is quoted in part, and not parsed at all.
        let long = format!("{} <a@b.c>", "x".repeat(smtp::MAX_MAILBOX_LEN));
        let err = no_reply_address(&from(&long)).expect("too long");
        assert!(err.message.len() < 400, "{}", err.message);
        assert!(err.message.contains("xxx\"... is not"), "{}", err.message);
    }
}
