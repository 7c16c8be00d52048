//! `mcpq webhooks list|retry`: completion webhook deliveries (`queue::webhooks`).

use mcpq_core::cli_error::CliErrorKind;
use mcpq_core::queue::webhooks::{self, Retried};
use mcpq_core::terminal::one_line;
use serde_json::json;

use crate::cli::WebhooksAction;
use crate::commands::Ctx;
use crate::{exit, output};

pub async fn run(ctx: &Ctx, action: WebhooksAction) -> anyhow::Result<u8> {
    let producer = ctx.producer().await?;
    let keys = producer.keys();
    let mut conn = producer.connection().clone();
    match action {
        WebhooksAction::List { failed, limit } => {
            let (deliveries, total) = webhooks::list(&mut conn, keys, failed, limit)
                .await
                .map_err(exit::queue)?;
            if ctx.json {
                for d in &deliveries {
                    output::json_line("webhook", json!(d));
                }
                output::json_line(
                    "webhook_total",
                    json!({"total": total, "shown": deliveries.len(), "failed_only": failed}),
                );
            } else {
                for d in &deliveries {
                    let answer = match (&d.last_status, &d.last_response) {
                        (_, Some(r)) => one_line(r).chars().take(120).collect::<String>(),
                        (Some(s), None) => format!("HTTP {s}"),
                        (None, None) => "-".to_string(),
                    };
                    output::line(&format!(
                        "{}  {}  {}  {} attempt(s)  {} {}  {}  {}",
                        one_line(&d.id),
                        output::time(d.created_at.unwrap_or(0)),
                        one_line(&d.state),
                        d.attempts,
                        one_line(&d.kind),
                        one_line(&d.status),
                        one_line(&d.target),
                        answer
                    ));
                }
                let what = if failed { "failed webhook" } else { "webhook" };
                output::eline(&format!(
                    "{what} deliveries: {total}, {} shown",
                    deliveries.len()
                ));
            }
        }
        WebhooksAction::Retry { id } => {
            match webhooks::retry(&mut conn, keys, &id)
                .await
                .map_err(exit::queue)?
            {
                Retried::Yes => {}
                Retried::NotEnded(state) => {
                    return Err(exit::error(
                        CliErrorKind::UnknownDelivery,
                        format!(
                            "webhook delivery {} is {}, not failed or gone: nothing to retry",
                            one_line(&id),
                            one_line(&state)
                        ),
                    ))
                }
                Retried::Unknown => {
                    return Err(exit::error(
                        CliErrorKind::UnknownDelivery,
                        format!(
                            "no webhook delivery {} in namespace `{}` (expired after webhooks.retention?)",
                            one_line(&id),
                            ctx.config.namespace
                        ),
                    ))
                }
            }
            if ctx.json {
                output::json_line("webhook_retried", json!({"id": id}));
            } else {
                output::line(&format!("{}: pending again", one_line(&id)));
            }
        }
    }
    Ok(exit::OK)
}
