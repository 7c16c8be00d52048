//! `mcpq status ID`.

use crate::commands::{parse_id, Ctx};
use crate::{exit, output};

pub async fn run(ctx: &Ctx, id: &str) -> anyhow::Result<u8> {
    let id = parse_id(id)?;
    let producer = ctx.producer().await?;
    let Some(record) = producer.store().get(&id).await.map_err(exit::queue)? else {
        return Err(exit::usage(format!(
            "no job {id} in namespace `{}`",
            ctx.config.namespace
        )));
    };
    if ctx.json {
        output::json_line("status", output::status_json(&record));
    } else {
        output::line(&output::status_text(&record));
    }
    Ok(exit::OK)
}
