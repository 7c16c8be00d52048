//! `mcpq queues` (depth, rate and oldest age per queue and priority) and `mcpq queue
//! pause|resume NAME`.

use mcpq_core::job::queue_name_problem;
use mcpq_core::queue::queues::{self, QueueInfo};
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
    output::line(&format!(
        "{:<24} {:>8} {:>8} {:>8} {:>10} {:>12}  state",
        "QUEUE", "HIGH", "NORMAL", "LOW", "OLDEST", "STARTED/MIN"
    ));
    for q in &all {
        output::line(&row(q));
    }
    Ok(exit::OK)
}

fn row(q: &QueueInfo) -> String {
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
        "{:<24} {:>8} {:>8} {:>8} {:>10} {:>12}  {}",
        q.name,
        q.queued.high,
        q.queued.normal,
        q.queued.low,
        oldest,
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
        queues::pause(&mut conn, producer.keys(), name).await
    } else {
        queues::resume(&mut conn, producer.keys(), name).await
    }
    .map_err(exit::queue)?;
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
