//! How a job's outcome reads in a terminal: a result as text (a plan's steps, a model's
//! answer, an email's summary and reply) and a failure as one line plus the server's
//! stderr tail. Shared by `mcpq result`/`wait` and `mcpq-worker run` (`mcpq run`), so a
//! job run in-process reads exactly as one run by a worker.
//!
//! Text from outside (server names, tool output, messages) is escaped where it must
//! stay on one line; the caller prints through [`crate::terminal`], which escapes the
//! rest.

use serde_json::Value;

use crate::failure::{FailureKind, JobFailure};
use crate::terminal::one_line;

/// A result as readable text: a plan's steps, a model's answer, an email's summary and
/// reply (`--json` gives everything).
pub fn result_text(result: &Value) -> String {
    if let Some(answer) = result.get("answer") {
        let mut s = answer
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| answer.to_string());
        s.push_str(&format!(
            "\n({} model call(s), {} tool call(s), stop: {}; --json for the transcript)",
            result["steps"],
            result["tool_calls"],
            result["stop_reason"].as_str().unwrap_or("?")
        ));
        return s;
    }
    if let Some(summary) = result.get("summary") {
        let mut s = format!("summary: {}", summary.as_str().unwrap_or_default());
        for a in result["attachments"].as_array().into_iter().flatten() {
            s.push_str(&format!(
                "\nattachment: {} ({} bytes) {}",
                one_line(a["name"].as_str().unwrap_or("?")),
                a["size"],
                one_line(a["path"].as_str().unwrap_or(""))
            ));
        }
        if let Some(reply) = result.get("reply").filter(|r| r.is_object()) {
            s.push_str(&format!(
                "\nreply ({}) to {}: {}\n{}",
                if reply["sent"] == true {
                    "sent"
                } else {
                    "draft"
                },
                reply["to"],
                one_line(reply["subject"].as_str().unwrap_or_default()),
                indent(reply["text"].as_str().unwrap_or_default())
            ));
        }
        return s;
    }
    let Some(steps) = result.as_array() else {
        return serde_json::to_string_pretty(result).unwrap_or_default();
    };
    let mut out = Vec::new();
    for step in steps {
        let head = format!(
            "step {} {}/{}:",
            step["step"],
            step["server"].as_str().unwrap_or("?"),
            step["tool"].as_str().unwrap_or("?")
        );
        let texts: Vec<String> = step["result"]["content"]
            .as_array()
            .map(|c| {
                c.iter()
                    .map(|item| match item.get("text").and_then(Value::as_str) {
                        Some(t) => t.to_string(),
                        None => item.to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let body = match (
            texts.len(),
            step["result"].get("structuredContent"),
            step.get("error"),
        ) {
            (_, _, Some(e)) => format!(
                "failed (continue_on_error) [{}] {}",
                one_line(e["kind"].as_str().unwrap_or("?")),
                one_line(e["message"].as_str().unwrap_or(""))
            ),
            (0, Some(sc), _) => sc.to_string(),
            (0, None, _) => "(empty)".to_string(),
            _ => texts.join("\n"),
        };
        if body.contains('\n') {
            out.push(format!("{head}\n{}", indent(&body)));
        } else {
            out.push(format!("{head} {body}"));
        }
    }
    out.join("\n")
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A failure as text for stderr, with the server's stderr tail.
pub fn failure_text(id: &str, f: &JobFailure) -> String {
    let verb = if f.kind == FailureKind::Cancelled {
        "was"
    } else {
        "failed"
    };
    let mut s = format!(
        "job {} {verb} [{}]: {}",
        one_line(id),
        one_line(f.kind.as_str()),
        one_line(&f.message)
    );
    if let Some(tail) = &f.stderr_tail {
        s.push_str(&format!(
            "\n--- server stderr (last lines) ---\n{}",
            tail.trim_end()
        ));
    }
    s
}
