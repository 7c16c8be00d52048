//! Printing: data to stdout (text or JSON lines with a "type" field), messages to stderr.
//! A closed stdout (`mcpq status ID | head`) is not an error. Every human line is
//! escaped for the terminal ([`mcpq_core::terminal`]); JSON lines are safe as they are.
//! Errors and warnings go to stderr through [`error`] and [`warning`]: under `--json`
//! each is one JSON line (see [`mcpq_core::cli_error`]), nothing else.

use std::io::Write;

use mcpq_core::terminal::{escape, one_line, Newlines};

use mcpq_core::cli_error::{CliError, CliWarningKind};
use mcpq_core::queue::{JobRecord, JobStatus};

use serde_json::{json, Value};

/// One human line (or body of lines) and one JSON object on stdout:
/// [`mcpq_core::terminal`]'s writers, shared with `mcpq-worker check`.
pub use mcpq_core::terminal::{print_json as json_line, print_line as line};

/// Writes a message to stderr, control characters escaped.
pub fn eline(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{}", escape(text, Newlines::Keep));
}

/// The program's prefix on most text-mode error lines (`mcpq: no job ...`); JSON
/// messages never carry it.
pub const PREFIX: &str = "mcpq: ";

/// Reports a command's error on stderr: `{prefix}{message}` escaped for the terminal,
/// or under `--json` the one line `{"type":"error","kind":...,"message":...}`.
pub fn error(json: bool, err: &CliError, prefix: &str) {
    if json {
        json_eline(&err.to_json());
    } else {
        eline(&format!("{prefix}{}", err.message));
    }
}

/// Reports a warning (the command goes on) on stderr, like [`error`].
pub fn warning(json: bool, kind: CliWarningKind, message: &str, prefix: &str) {
    if json {
        json_eline(&kind.to_json(message));
    } else {
        eline(&format!("{prefix}{message}"));
    }
}

/// Writes one JSON line (already escaped) to stderr.
fn json_eline(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

fn ms(t: Option<u64>) -> String {
    match t {
        Some(ms) => humantime::format_rfc3339_millis(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
        )
        .to_string(),
        None => "-".to_string(),
    }
}

/// The status of a record, as text lines.
pub fn status_text(r: &JobRecord) -> String {
    let mut s = format!("{}  {}  {}", one_line(&r.id), one_line(&r.kind), r.status);
    s.push_str(&format!("\n  submitted {}", ms(r.submitted_at)));
    s.push_str(&format!(
        "\n  priority  {}, attempts {} of at most {} ({} failed)",
        one_line(&r.priority),
        r.attempts,
        r.max_attempts,
        r.failures
    ));
    if r.started_at.is_some() {
        s.push_str(&format!(
            "\n  started   {} by {} (attempt {})",
            ms(r.started_at),
            one_line(r.worker.as_deref().unwrap_or("?")),
            r.attempts
        ));
    }
    if r.next_run_at.is_some() {
        let label = if r.status == JobStatus::Scheduled {
            "runs at  "
        } else {
            "retry at "
        };
        s.push_str(&format!("\n  {label} {}", ms(r.next_run_at)));
    }
    if let (Some(a), Some(b)) = (r.started_at, r.finished_at) {
        s.push_str(&format!(
            "\n  finished  {} ({} ms after the last start)",
            ms(r.finished_at),
            b.saturating_sub(a)
        ));
    }
    if let Some(p) = &r.progress {
        let total = p.total.map(|t| format!("/{t}")).unwrap_or_default();
        s.push_str(&format!(
            "\n  progress  {}{total} {}",
            p.progress,
            one_line(p.message.as_deref().unwrap_or(""))
        ));
    }
    if let Some(e) = &r.error {
        s.push_str(&format!(
            "\n  error     [{}] {}",
            one_line(e.kind.as_str()),
            one_line(&e.message)
        ));
    }
    if r.stale_writes > 0 {
        s.push_str(&format!(
            "\n  rejected  {} late write(s) of older attempts",
            r.stale_writes
        ));
    }
    if r.rescues > 0 {
        s.push_str(&format!(
            "\n  rescued   {} time(s) after its worker died (not counted as failures)",
            r.rescues
        ));
    }
    for p in &r.problems {
        s.push_str(&format!("\n  corrupt   {}", one_line(p)));
    }
    for a in &r.history {
        s.push_str(&format!(
            "\n  attempt {}  {}  {} ms  {}  on {}",
            a.attempt,
            ms(Some(a.started_at)),
            a.ended_at.saturating_sub(a.started_at),
            one_line(&a.outcome),
            one_line(&a.worker)
        ));
        if let Some(e) = &a.error {
            s.push_str(&format!(
                ": [{}] {}",
                one_line(e.kind.as_str()),
                one_line(&e.message)
            ));
        }
    }
    s
}

/// A record's status fields as JSON (no result body).
pub fn status_json(r: &JobRecord) -> Value {
    json!({
        "id": r.id, "kind": r.kind, "status": r.status, "priority": r.priority,
        "attempts": r.attempts, "failures": r.failures, "max_attempts": r.max_attempts,
        "worker": r.worker, "submitted_at": r.submitted_at, "started_at": r.started_at,
        "finished_at": r.finished_at, "next_run_at": r.next_run_at, "error": r.error,
        "stale_writes": r.stale_writes, "rescues": r.rescues, "history": r.history,
        "problems": r.problems, "progress": r.progress,
    })
}

/// How a job's outcome reads in a terminal: in core, shared with `mcpq-worker run`
/// (which `mcpq run` runs).
pub use mcpq_core::outcome_text::{failure_text, result_text};

/// A time (ms since the Unix epoch) as RFC 3339, or `-`.
pub fn time(t: u64) -> String {
    ms(Some(t))
}
