//! `mcpq status ID`.

use crate::commands::{parse_id, status_record, Ctx};
use crate::{exit, output};

pub async fn run(ctx: &Ctx, id: &str) -> anyhow::Result<u8> {
    let id = parse_id(id)?;
    let producer = ctx.producer().await?;
    // The status fields only: the result is never loaded to print a status.
    let record = status_record(ctx, producer.store(), &id).await?;
    if ctx.json {
        output::json_line("status", output::status_json(&record));
    } else {
        output::line(&output::status_text(&record));
    }
    Ok(exit::OK)
}
