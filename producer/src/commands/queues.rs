//! `mcpq queues` (depth, rate and oldest age per queue and priority) and `mcpq queue
//! pause|resume NAME`.

use mcpq_core::cli_error::CliWarningKind;
use mcpq_core::job::queue_name_problem;
use mcpq_core::queue::queues::{self, Paused, QueueInfo};
use serde_json::json;

use crate::cli::QueueAction;
use crate::commands::Ctx;
use crate::{exit, output};

/// `mcpq queues`.
pub async fn list(ctx: &Ctx) -> anyhow::Result<u8> {
    let producer = ctx.producer().await?;
    let mut conn = producer.connection().clone();
    let all = queues::list(&mut conn, producer.keys())
        .await
        .map_err(exit::queue)?;
    if ctx.json {
        for q in &all {
            output::json_line("queue", json!(q));
        }
        return Ok(exit::OK);
    }
    let width = all.iter().map(|q| q.name.len()).max().unwrap_or(0).max(8);
    output::line(&format!(
        "{:<width$} {:>8} {:>8} {:>8} {:>10} {:>9} {:>9}  STATE",
        "QUEUE", "HIGH", "NORMAL", "LOW", "OLDEST", "THIS MIN", "LAST MIN"
    ));
    for q in &all {
        output::line(&row(q, width));
    }
    Ok(exit::OK)
}

/// One queue's line: jobs waiting by priority, the oldest one's age, jobs started this
/// minute and the one before, its state.
fn row(q: &QueueInfo, width: usize) -> String {
    let oldest = [
        q.oldest_queued_age_ms.high,
        q.oldest_queued_age_ms.normal,
        q.oldest_queued_age_ms.low,
    ]
    .into_iter()
    .flatten()
    .max()
    .map(|ms| humantime::format_duration(std::time::Duration::from_secs(ms / 1000)).to_string())
    .unwrap_or_else(|| "-".into());
    format!(
        "{:<width$} {:>8} {:>8} {:>8} {:>10} {:>9} {:>9}  {}",
        q.name,
        q.queued.high,
        q.queued.normal,
        q.queued.low,
        oldest,
        q.started_this_minute,
        q.started_last_minute,
        if q.paused { "paused" } else { "serving" }
    )
}

/// `mcpq queue pause|resume NAME`.
pub async fn act(ctx: &Ctx, action: QueueAction) -> anyhow::Result<u8> {
    let (name, pause) = match &action {
        QueueAction::Pause { name } => (name, true),
        QueueAction::Resume { name } => (name, false),
    };
    if let Some(problem) = queue_name_problem(name) {
        return Err(exit::usage(format!(
            "queue name {:?}: {problem}",
            mcpq_core::terminal::one_line(name)
        )));
    }
    let producer = ctx.producer().await?;
    let mut conn = producer.connection().clone();
    let changed = if pause {
        let (done, known) = queues::pause(&mut conn, producer.keys(), name)
            .await
            .map_err(exit::queue)?;
        if done == Paused::TooMany {
            return Err(exit::usage(format!(
                "{} queues are paused already, the most there may be: resume some first",
                queues::MAX_QUEUES
            )));
        }
        if !known {
            output::warning(
                ctx.json,
                CliWarningKind::UnknownQueue,
                &format!(
                    "no job was ever submitted to queue `{name}` (a typo?); it is paused anyway"
                ),
                "",
            );
        }
        done == Paused::Now
    } else {
        queues::resume(&mut conn, producer.keys(), name)
            .await
            .map_err(exit::queue)?
    };
    if ctx.json {
        output::json_line(
            if pause { "paused" } else { "resumed" },
            json!({"queue": name, "changed": changed}),
        );
    } else {
        output::line(&match (pause, changed) {
            (true, true) => format!("{name}: paused; workers take none of its jobs until `mcpq queue resume {name}` (running jobs finish)"),
            (true, false) => format!("{name}: was paused already"),
            (false, true) => format!("{name}: resumed"),
            (false, false) => format!("{name}: was not paused"),
        });
    }
    Ok(exit::OK)
}
