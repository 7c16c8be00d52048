//! `mcpq cancel ID`.

use mcpq_core::queue::control::{cancel, Cancelled};
use serde_json::json;

use crate::commands::{parse_id, Ctx};
use crate::{exit, output};

pub async fn run(ctx: &Ctx, id: &str) -> anyhow::Result<u8> {
    let id = parse_id(id)?.to_string();
    let producer = ctx.producer().await?;
    let mut conn = producer.connection().clone();
    let done = cancel(&mut conn, producer.keys(), producer.settings(), &id)
        .await
        .map_err(exit::queue)?;
    let (cancelled, text, status) = match &done {
        Cancelled::BeforeRunning => (true, "cancelled before it ran".to_string(), "cancelled"),
        Cancelled::WhileRunning => (
            true,
            "cancelled while running; its worker is stopping it".to_string(),
            "cancelled",
        ),
        Cancelled::AlreadyFinished(s) => {
            (false, format!("already {s}: nothing to cancel"), s.as_str())
        }
        Cancelled::Unknown => {
            return Err(exit::unknown_job(format!(
                "no job {id} in namespace `{}`",
                ctx.config.namespace
            )))
        }
    };
    if ctx.json {
        output::json_line(
            "cancel",
            json!({"id": id, "cancelled": cancelled, "status": status, "was_running": done == Cancelled::WhileRunning}),
        );
    } else {
        output::line(&format!("{id}: {text}"));
    }
    Ok(exit::OK)
}
