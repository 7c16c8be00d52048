//! `mcpq schedules`: the configured cron schedules with their last and next run.
//!
//! The definitions come from the config (`[schedules.NAME]`), the last runs from Redis
//! (`{ns}:schedules`, written by the workers); the next run is computed here, with this
//! machine's clock.

use mcpq_core::job::run_at;
use mcpq_core::queue::schedules::{last_runs, LastRun};
use mcpq_core::terminal::one_line;
use serde_json::{json, Value};

use crate::commands::Ctx;
use crate::{exit, output};

fn time(ms: i64) -> String {
    run_at::format(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64))
}

pub async fn run(ctx: &Ctx) -> anyhow::Result<u8> {
    let schedules = ctx.config.resolved_schedules();
    if schedules.is_empty() && !ctx.json {
        output::line("no schedules configured ([schedules.NAME] in the config)");
        return Ok(exit::OK);
    }
    let producer = ctx.producer().await?;
    let mut conn = producer.connection().clone();
    let names: Vec<&str> = schedules.iter().map(|s| s.name.as_str()).collect();
    let last = last_runs(&mut conn, producer.keys(), &names)
        .await
        .map_err(exit::queue)?;
    let now = mcpq_core::queue::results::now_ms() as i64;
    for s in &schedules {
        let next = s.next_after(now);
        let (last_json, last_text) = match last.get(&s.name).unwrap_or(&LastRun::Never) {
            LastRun::Never => (Value::Null, "never".to_string()),
            LastRun::Fired(f) => (
                json!({"tick": f.tick, "at": time(f.tick), "job": f.job}),
                format!("{} (job {})", time(f.tick), one_line(&f.job)),
            ),
            LastRun::Unreadable(why) => (
                json!({"problem": why}),
                format!("unreadable ({})", one_line(why)),
            ),
        };
        if ctx.json {
            output::json_line(
                "schedule",
                json!({
                    "name": s.name,
                    "cron": s.pattern,
                    "timezone": s.timezone.name(),
                    "catch_up": s.catch_up.as_str(),
                    "last_run": last_json,
                    "next_run": next.map(|t| json!({"tick": t, "at": time(t)})),
                }),
            );
        } else {
            output::line(&format!(
                "{}  cron \"{}\" {}  catch_up {}\n  last  {}\n  next  {}",
                one_line(&s.name),
                one_line(&s.pattern),
                s.timezone.name(),
                s.catch_up.as_str(),
                last_text,
                next.map(time).unwrap_or_else(|| "none".into())
            ));
        }
    }
    Ok(exit::OK)
}
