//! `mcpq wait ID --timeout D`: wait for the job to finish or D to pass
//! ([`mcpq_core::queue::Producer::wait`]: quick jobs return quickly, long ones cost one
//! cheap read of the status fields every quarter second, and the result, which may be
//! megabytes, is read once, at the end), then show it like `mcpq result`.

use std::time::Duration;

use crate::commands::{parse_id, result, Ctx};
use crate::exit;

pub async fn run(ctx: &Ctx, id: &str, timeout: Duration) -> anyhow::Result<u8> {
    let id = parse_id(id)?;
    let producer = ctx.producer().await?;
    let record = producer
        .wait(&id.to_string(), timeout)
        .await
        .map_err(exit::queue)?
        .ok_or_else(|| {
            exit::unknown_job(format!(
                "no job {id} in namespace `{}`",
                ctx.config.namespace
            ))
        })?;
    let gave_up = format!(
        "gave up waiting after {}",
        mcpq_core::duration::format(timeout)
    );
    // Said only if the job is still unfinished.
    Ok(result::show(ctx, &record, Some(&gave_up)))
}
