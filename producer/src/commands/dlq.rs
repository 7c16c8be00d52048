//! `mcpq dlq list|show|requeue|purge`: the dead-letter set.

use mcpq_core::queue::control;
use serde_json::json;

use crate::cli::DlqAction;
use crate::commands::Ctx;
use crate::{exit, output};
use mcpq_core::terminal::one_line;

pub async fn run(ctx: &Ctx, action: DlqAction) -> anyhow::Result<u8> {
    let producer = ctx.producer().await?;
    let keys = producer.keys();
    let mut conn = producer.connection().clone();
    match action {
        DlqAction::List { limit } => {
            let (jobs, total) = control::dead_list(&mut conn, keys, limit)
                .await
                .map_err(exit::queue)?;
            if ctx.json {
                for job in &jobs {
                    output::json_line("dead", json!(job));
                }
                output::json_line("dead_total", json!({"total": total, "shown": jobs.len()}));
            } else {
                for job in &jobs {
                    output::line(&format!(
                        "{}  {}  {}  {} attempt(s)  [{}] {}",
                        one_line(&job.id),
                        output::time(job.died_at),
                        one_line(&job.kind),
                        job.attempts,
                        one_line(&job.error_kind),
                        one_line(first_line(&job.error))
                    ));
                }
                output::eline(&format!("{} dead job(s), {} shown", total, jobs.len()));
            }
        }
        DlqAction::Show(arg) => {
            // Any text: a malformed queue entry is dead-lettered under its own name.
            let record = control::dead_show(&mut conn, keys, &arg.id)
                .await
                .map_err(exit::queue)?
                .ok_or_else(|| {
                    exit::unknown_job(format!(
                        "no job {} in namespace `{}`",
                        arg.id, ctx.config.namespace
                    ))
                })?;
            if ctx.json {
                let mut v = output::status_json(&record);
                v["payload"] = json!(record.payload);
                output::json_line("dead_job", v);
            } else {
                output::line(&output::status_text(&record));
                if let Some(tail) = record.error.as_ref().and_then(|e| e.stderr_tail.as_deref()) {
                    output::line(&format!(
                        "--- server stderr (last lines) ---\n{}",
                        tail.trim_end()
                    ));
                }
                output::line(&format!(
                    "--- payload ---\n{}",
                    record.payload.as_deref().unwrap_or("(none)")
                ));
            }
        }
        DlqAction::Requeue { id: Some(id), .. } => {
            match control::requeue(&mut conn, keys, &id)
                .await
                .map_err(exit::queue)?
            {
                control::Requeued::Yes => {}
                control::Requeued::NotDead => {
                    return Err(exit::unknown_job(format!(
                        "job {id} is not in the dead-letter set"
                    )))
                }
                control::Requeued::NoPayload => {
                    return Err(exit::invalid_job(format!(
                        "{id} is a malformed queue entry with no payload: nothing could run; remove it with mcpq dlq purge"
                    )))
                }
            }
            if ctx.json {
                output::json_line("requeued", json!({"ids": [id], "count": 1}));
            } else {
                output::line(&format!("{id}: requeued"));
            }
        }
        DlqAction::Requeue { id: None, .. } => {
            let n = control::requeue_all(&mut conn, keys)
                .await
                .map_err(exit::queue)?;
            if ctx.json {
                output::json_line("requeued", json!({"count": n}));
            } else {
                output::line(&format!("requeued {n} dead job(s)"));
            }
        }
        DlqAction::Purge { older_than } => {
            let n = control::purge_dead(&mut conn, keys, older_than)
                .await
                .map_err(exit::queue)?;
            if ctx.json {
                output::json_line("purged", json!({"count": n}));
            } else {
                output::line(&format!("purged {n} dead job(s)"));
            }
        }
    }
    Ok(exit::OK)
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}
