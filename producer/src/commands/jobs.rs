//! `mcpq jobs`: jobs newest first, all or one batch's, filtered by status.

use mcpq_core::queue::listing::{self, JobFilter};
use mcpq_core::terminal::one_line;
use serde_json::json;

use crate::cli::JobsArgs;
use crate::commands::Ctx;
use crate::{exit, output};

pub async fn run(ctx: &Ctx, args: JobsArgs) -> anyhow::Result<u8> {
    let producer = ctx.producer().await?;
    let mut conn = producer.connection().clone();
    let filter = JobFilter {
        status: args.status,
        batch: args.batch.clone(),
        queue: args.queue.clone(),
    };
    let jobs = listing::list_jobs(&mut conn, producer.keys(), &filter, args.limit)
        .await
        .map_err(exit::queue)?;
    for job in &jobs {
        if ctx.json {
            output::json_line("job", json!(job));
        } else {
            let mut line = format!(
                "{}  {:<9}  {:<5}  {}  attempts {}",
                one_line(&job.id),
                one_line(&job.status),
                one_line(&job.kind),
                job.submitted_at.map(output::time).unwrap_or_default(),
                job.attempts
            );
            if let Some(kind) = &job.error_kind {
                line.push_str(&format!("  [{}]", one_line(kind)));
            }
            if job.queue != mcpq_core::job::DEFAULT_QUEUE {
                line.push_str(&format!("  queue {}", one_line(&job.queue)));
            }
            if let Some(batch) = &job.batch {
                line.push_str(&format!("  batch {}", one_line(batch)));
            }
            output::line(&line);
        }
    }
    if jobs.is_empty() && !ctx.json {
        output::eline("mcpq: no jobs match");
    }
    Ok(exit::OK)
}
