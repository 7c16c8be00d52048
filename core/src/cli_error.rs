//! What the command lines (`mcpq`, and `mcpq-worker check` which `mcpq servers check`
//! runs) report when a command fails: a small set of stable kinds, the exit code of
//! each, and the one-line JSON form they take on stderr under `--json`.
//!
//! A script cannot tell a bad job from a Redis outage by parsing prose, so under
//! `--json` every error is exactly one line on stderr,
//! `{"type":"error","kind":"redis","message":"cannot reach Redis at ..."}`, and every
//! warning (the command still succeeds) one `{"type":"warning","kind":...,"message":...}`.
//!
//! # Guarantees
//! - Each [`CliErrorKind`] has one exit code ([`CliErrorKind::exit_code`]); text mode and
//!   `--json` exit with the same code (`tests/e2e/json_errors.rs`).
//! - The kinds are stable: new ones may be added, none is renamed. The README's table
//!   ("Errors under `--json`") lists exactly [`CliErrorKind::ALL`] and
//!   [`CliWarningKind::ALL`] with their exit codes, checked by
//!   `tests::the_readme_cli_error_table_lists_exactly_the_kinds`.
//! - `message` is the text mode's message without the program's `mcpq: ` prefix (secrets
//!   already redacted where text mode redacts them); serde escapes every control
//!   character, so a message can never break the line or reach a terminal raw.
//! - `line` (1-based) is present only when the error is about one line of an input
//!   ([`CliError::at_line`]); otherwise the field is left out.
//!
//! Not the same list as [`crate::failure::FailureKind`]: those say why a *job* failed and
//! are stored with it (`"error": {"kind": ...}` in a `result` or `status` line on
//! stdout); these say why a *command* failed (`job_failed` wraps a dead job's failure).

use std::fmt;

/// Exit code: the job succeeded / the command did what it says.
pub const EXIT_OK: u8 = 0;
/// Exit code: the job is dead (failed for good) or was cancelled.
pub const EXIT_JOB_FAILED: u8 = 1;
/// Exit code: usage or input error; nothing was enqueued.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: Redis cannot be reached, or refused the command (out of memory, an ACL,
/// read-only replica...), or holds data mcpq cannot read: the environment, not the job.
pub const EXIT_REDIS: u8 = 3;
/// Exit code: the job has not finished (yet).
pub const EXIT_NOT_FINISHED: u8 = 4;

/// Why a command failed: what a script branches on. One kind per situation, each with
/// one exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CliErrorKind {
    /// Bad flags or arguments: clap's own errors, a malformed job id, an unknown server
    /// name given to `servers check`, nothing to submit.
    Usage,
    /// The job given cannot be read, parsed or validated (JSON, flags, `.eml`,
    /// attachments, unknown server, over `queue.max_payload`); nothing was enqueued. Also
    /// a dead entry that `dlq requeue` cannot run (it has no payload).
    InvalidJob,
    /// The job gives an `id` that a job in the namespace has already; nothing enqueued.
    DuplicateId,
    /// No job with that id in the namespace (`dlq show`/`requeue`: in the dead-letter
    /// set): never submitted, expired, or another namespace.
    UnknownJob,
    /// No webhook delivery with that id (`webhooks retry`: none that failed or is gone):
    /// never made, expired (`webhooks.retention`), or another namespace.
    UnknownDelivery,
    /// The setup is wrong: the config file cannot be read or is invalid, the variable
    /// `redis_password_env` names is not set, `mcpq-worker` cannot be started.
    Config,
    /// Redis cannot be reached, or refused the command (out of memory, ACL, read-only).
    Redis,
    /// A record in Redis was not written by mcpq (wrong type, unknown status).
    CorruptRecord,
    /// The job has not finished: queued, running, or failed and waiting to retry
    /// (`result`), or `wait` timed out.
    NotFinished,
    /// The job is dead: it failed for good (its failure is in the message).
    JobFailed,
    /// The job was cancelled.
    JobCancelled,
    /// A bug or a broken host (the async runtime could not start).
    Internal,
}

impl CliErrorKind {
    /// Every kind, in the README's order.
    pub const ALL: [CliErrorKind; 12] = [
        CliErrorKind::Usage,
        CliErrorKind::InvalidJob,
        CliErrorKind::DuplicateId,
        CliErrorKind::UnknownJob,
        CliErrorKind::UnknownDelivery,
        CliErrorKind::Config,
        CliErrorKind::Redis,
        CliErrorKind::CorruptRecord,
        CliErrorKind::NotFinished,
        CliErrorKind::JobFailed,
        CliErrorKind::JobCancelled,
        CliErrorKind::Internal,
    ];

    /// The `kind` string in the JSON line.
    pub fn as_str(self) -> &'static str {
        match self {
            CliErrorKind::Usage => "usage",
            CliErrorKind::InvalidJob => "invalid_job",
            CliErrorKind::DuplicateId => "duplicate_id",
            CliErrorKind::UnknownJob => "unknown_job",
            CliErrorKind::UnknownDelivery => "unknown_delivery",
            CliErrorKind::Config => "config",
            CliErrorKind::Redis => "redis",
            CliErrorKind::CorruptRecord => "corrupt_record",
            CliErrorKind::NotFinished => "not_finished",
            CliErrorKind::JobFailed => "job_failed",
            CliErrorKind::JobCancelled => "job_cancelled",
            CliErrorKind::Internal => "internal",
        }
    }

    /// The process's exit code for this kind, the same in text mode and under `--json`.
    /// (`internal` exits 1 as it always has; `mcpq-worker check` has its own meaning for
    /// 1, a server that failed its check, which is reported on stdout, not as an error.)
    pub fn exit_code(self) -> u8 {
        match self {
            CliErrorKind::Usage
            | CliErrorKind::InvalidJob
            | CliErrorKind::DuplicateId
            | CliErrorKind::UnknownJob
            | CliErrorKind::UnknownDelivery
            | CliErrorKind::Config => EXIT_USAGE,
            CliErrorKind::Redis | CliErrorKind::CorruptRecord => EXIT_REDIS,
            CliErrorKind::NotFinished => EXIT_NOT_FINISHED,
            CliErrorKind::JobFailed | CliErrorKind::JobCancelled | CliErrorKind::Internal => {
                EXIT_JOB_FAILED
            }
        }
    }
}

impl fmt::Display for CliErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something worth saying that does not fail the command (exit 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CliWarningKind {
    /// `submit` with an idempotency key already used: the first job's id is printed and
    /// nothing is enqueued (`"created": false` on stdout).
    IdempotencyKeyUsed,
    /// `servers` without any configured server: nothing to list.
    NoServersConfigured,
    /// `queue pause` of a queue no job was ever submitted to (a typo?): paused anyway.
    UnknownQueue,
}

impl CliWarningKind {
    /// Every warning kind, in the README's order.
    pub const ALL: [CliWarningKind; 3] = [
        CliWarningKind::IdempotencyKeyUsed,
        CliWarningKind::NoServersConfigured,
        CliWarningKind::UnknownQueue,
    ];

    /// The `kind` string in the JSON line.
    pub fn as_str(self) -> &'static str {
        match self {
            CliWarningKind::IdempotencyKeyUsed => "idempotency_key_used",
            CliWarningKind::NoServersConfigured => "no_servers_configured",
            CliWarningKind::UnknownQueue => "unknown_queue",
        }
    }

    /// The warning as one JSON line: `{"type":"warning","kind":...,"message":...}`.
    pub fn to_json(self, message: &str) -> String {
        json_line("warning", self.as_str(), message, None)
    }
}

/// A command's error: its kind (which decides the exit code), the message text mode
/// prints after `mcpq: `, and the input line it is about, if any.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    /// Why the command failed.
    pub kind: CliErrorKind,
    /// What happened and what to do next (secrets already redacted).
    pub message: String,
    /// The 1-based line of the input the error is about (a batch of jobs, one a line).
    pub line: Option<u64>,
}

impl CliError {
    /// An error of `kind`, about no line in particular.
    pub fn new(kind: CliErrorKind, message: impl Into<String>) -> CliError {
        CliError {
            kind,
            message: message.into(),
            line: None,
        }
    }

    /// The same error, about input line `line` (1-based).
    pub fn at_line(mut self, line: u64) -> CliError {
        self.line = Some(line);
        self
    }

    /// The exit code of its kind.
    pub fn exit_code(&self) -> u8 {
        self.kind.exit_code()
    }

    /// The error as one JSON line: `{"type":"error","kind":...,"message":...,"line":N}`
    /// (`line` only when known).
    pub fn to_json(&self) -> String {
        json_line("error", self.kind.as_str(), &self.message, self.line)
    }
}

/// One stderr line, fields in this order (`type` first, as a reader scanning for it
/// expects; `line` left out when unknown).
#[derive(serde::Serialize)]
struct JsonLine<'a> {
    #[serde(rename = "type")]
    kind_of_line: &'a str,
    kind: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<u64>,
}

fn json_line(kind_of_line: &str, kind: &str, message: &str, line: Option<u64>) -> String {
    let line = JsonLine {
        kind_of_line,
        kind,
        message,
        line,
    };
    // Four plain fields: serializing cannot fail.
    serde_json::to_string(&line).expect("a JSON line of strings and a number serializes")
}

/// True when `args` (the program's arguments, without the program name) ask for `--json`:
/// the exact word `--json` before any `--` (after it every word is a value). For the
/// errors that happen before the flags are parsed: clap's own.
pub fn json_requested<S: AsRef<std::ffi::OsStr>>(args: impl IntoIterator<Item = S>) -> bool {
    args.into_iter()
        .map(|a| a.as_ref().to_owned())
        .take_while(|a| a != "--")
        .any(|a| a == "--json")
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    use serde_json::{json, Value};

    use super::*;

    #[test]
    fn an_error_is_one_line_of_json_with_control_characters_escaped() {
        let err = CliError::new(
            CliErrorKind::Redis,
            "cannot reach Redis\n\u{1b}[2J at redis://127.0.0.1:1",
        );
        let text = err.to_json();
        assert!(!text.contains('\n') && !text.contains('\u{1b}'), "{text}");
        let v: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(
            v,
            json!({"type": "error", "kind": "redis",
                   "message": "cannot reach Redis\n\u{1b}[2J at redis://127.0.0.1:1"})
        );
        assert_eq!(err.exit_code(), EXIT_REDIS);
        assert_eq!(err.to_string(), err.message, "Display is the message alone");
        assert!(
            text.starts_with(r#"{"type":"error","kind":"redis","#),
            "{text}"
        );
    }

    #[test]
    fn line_appears_only_when_known() {
        let err = CliError::new(CliErrorKind::InvalidJob, "missing field `tool`");
        let v: Value = serde_json::from_str(&err.to_json()).expect("JSON");
        assert!(v.get("line").is_none(), "{v}");
        let v: Value = serde_json::from_str(&err.at_line(7).to_json()).expect("JSON");
        assert_eq!(v["line"], 7);
        let v: Value =
            serde_json::from_str(&CliWarningKind::IdempotencyKeyUsed.to_json("m")).expect("JSON");
        assert_eq!(
            v,
            json!({"type": "warning", "kind": "idempotency_key_used", "message": "m"})
        );
    }

    #[test]
    fn json_is_requested_only_by_the_exact_flag_before_a_double_dash() {
        assert!(json_requested(["status", "--json", "X"]));
        assert!(json_requested(["--json", "submit", "--frobnicate"]));
        assert!(!json_requested(["status", "X"]));
        assert!(!json_requested(["servers", "check", "--", "--json"]));
        assert!(!json_requested(["submit", "--idempotency-key=--json"]));
        assert!(!json_requested(["--jsonx"]));
    }

    /// README.md's "Errors under `--json`" section has a table `| kind | type | exit |
    /// when |` whose rows must be exactly the error and warning kinds, with the exit
    /// code of each (`-` for a warning).
    #[test]
    fn the_readme_cli_error_table_lists_exactly_the_kinds() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
        let readme = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let section = readme
            .split("\n### Errors under `--json`\n")
            .nth(1)
            .expect("README.md has a section `### Errors under `--json``")
            .split("\n#")
            .next()
            .unwrap_or_default();
        let mut documented = BTreeMap::new();
        for line in section.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let name = cells[1].trim_matches('`').to_string();
            let row = (
                cells.get(2).copied().unwrap_or_default().to_string(),
                cells.get(3).copied().unwrap_or_default().to_string(),
            );
            assert!(
                documented.insert(name.clone(), row).is_none(),
                "`{name}` listed twice"
            );
        }
        let mut emitted = BTreeMap::new();
        for kind in CliErrorKind::ALL {
            let row = ("error".to_string(), kind.exit_code().to_string());
            emitted.insert(kind.as_str().to_string(), row);
        }
        for kind in CliWarningKind::ALL {
            let row = ("warning".to_string(), "-".to_string());
            emitted.insert(kind.as_str().to_string(), row);
        }
        let names = |m: &BTreeMap<String, (String, String)>| -> BTreeSet<String> {
            m.keys().cloned().collect()
        };
        assert_eq!(
            names(&documented),
            names(&emitted),
            "README.md's `--json` error table drifted from CliErrorKind::ALL/CliWarningKind::ALL"
        );
        for (name, row) in &emitted {
            assert_eq!(
                &documented[name], row,
                "README.md, Errors under --json: `{name}` should say (type, exit) = {row:?}"
            );
        }
    }
}
