//! `mcpq status ID`.

use crate::commands::{parse_id, record, Ctx};
use crate::{exit, output};

pub async fn run(ctx: &Ctx, id: &str) -> anyhow::Result<u8> {
    let id = parse_id(id)?;
    let producer = ctx.producer().await?;
    let record = record(ctx, producer.store(), &id).await?;
    if ctx.json {
        output::json_line("status", output::status_json(&record));
    } else {
        output::line(&output::status_text(&record));
    }
    Ok(exit::OK)
}
