//! `mcpq wait ID --timeout D`: poll the job's record until it finishes or D passes.
//!
//! Polling starts at 20 ms and backs off to 250 ms: quick jobs return quickly, long ones
//! cost one cheap read of the status fields every quarter second; the result (which may
//! be megabytes) is read once, at the end.

use std::time::Duration;

use mcpq_core::backoff::Backoff;
use tokio::time::Instant;

use crate::commands::{parse_id, record, result, status_record, Ctx};

const FIRST_POLL: Duration = Duration::from_millis(20);
const MAX_POLL: Duration = Duration::from_millis(250);

pub async fn run(ctx: &Ctx, id: &str, timeout: Duration) -> anyhow::Result<u8> {
    let id = parse_id(id)?;
    let producer = ctx.producer().await?;
    let deadline = Instant::now() + timeout;
    let mut pause = Backoff::new(FIRST_POLL, MAX_POLL);
    loop {
        let status = status_record(ctx, producer.store(), &id).await?;
        if status.status.is_finished() || Instant::now() >= deadline {
            let record = record(ctx, producer.store(), &id).await?;
            let gave_up = format!(
                "gave up waiting after {}",
                mcpq_core::duration::format(timeout)
            );
            // Said only if the job is still unfinished now (it may have finished since
            // the status was read).
            return Ok(result::show(ctx, &record, Some(&gave_up)));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::time::sleep(pause.advance().min(left)).await;
    }
}
