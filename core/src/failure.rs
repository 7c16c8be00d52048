//! `JobFailure` and `FailureKind`: why a job failed, as stored in Redis and shown to users.
//!
//! Every kind the worker (or a Lua script) emits is one [`FailureKind`] variant, named by
//! the same snake_case string that is stored in the job's `error` and attempt records
//! and shown by `mcpq status` / `mcpq result` / `mcpq dlq`. The list is
//! [`FailureKind::ALL`]; the README's "Errors" table is checked against it by
//! `failure::tests::the_readme_error_table_lists_exactly_the_emitted_kinds`, so the
//! documentation cannot drift from the code again.
//!
//! # Guarantees
//! - A stored record reads back identically: a kind serializes to the string it always
//!   had (`failure::tests::every_kind_round_trips_through_its_stored_name`).
//! - A kind this build does not know (written by a newer worker, or by hand) never fails
//!   the read: it is kept verbatim as [`FailureKind::Other`] and written back unchanged
//!   (`failure::tests::an_unknown_kind_is_kept_verbatim`). A `#[serde(other)]` catch-all
//!   would lose the name, so `mcpq status` could no longer show it and a requeue would
//!   rewrite it.
//!
//! # Caveats
//! Whether a *particular* failure is retried is decided where it happens (the
//! `retryable` field), not by its kind: [`FailureKind::retryable`] is the usual answer,
//! and [`Retryable::Depends`] marks the kinds where it varies with the cause.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Whether a kind of failure is retried (when attempts are left).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retryable {
    /// Always: another attempt could succeed.
    Yes,
    /// Never: the job goes to the dead-letter set at once.
    No,
    /// It depends on the cause (documented on the kind).
    Depends,
}

impl Retryable {
    /// The word used in the README's "Errors" table: `yes`, `no` or `depends`.
    pub fn as_str(self) -> &'static str {
        match self {
            Retryable::Yes => "yes",
            Retryable::No => "no",
            Retryable::Depends => "depends",
        }
    }
}

/// A stable, machine-readable class of failure. Stored as its snake_case name
/// ([`FailureKind::as_str`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum FailureKind {
    /// `tool_error`: a tool answered with `isError: true`. Retryable.
    ToolError,
    /// `server_exited`: the MCP server process exited during a call. Retryable.
    ServerExited,
    /// `timeout`: the job's deadline passed (a call, a render, the model, SMTP, or the
    /// whole job). Retryable.
    Timeout,
    /// `spawn_failed`: the server's command could not be started (not found, not
    /// executable). Not retryable.
    SpawnFailed,
    /// `startup_failed`: the server started but its MCP handshake failed. Retryable.
    StartupFailed,
    /// `startup_timeout`: the handshake did not finish within `startup_timeout`.
    /// Retryable.
    StartupTimeout,
    /// `protocol_error`: the server broke the MCP protocol. Retryable.
    ProtocolError,
    /// `connection_closed`: the server closed its end (stdout or HTTP connection)
    /// mid-call. Retryable.
    ConnectionClosed,
    /// `result_too_large`: the job's result or one server answer is over
    /// `queue.max_result`. Not retryable.
    ResultTooLarge,
    /// `invalid_job`: the stored job cannot be decoded or validated (too big, bad JSON,
    /// wrong id, bad attachment data, a malformed queue entry), or one of its calls was
    /// refused before it was sent (a tool outside the server's `tools` allow-list,
    /// arguments that do not fit the tool's `inputSchema`). Not retryable.
    InvalidJob,
    /// `unknown_server`: the job names a server this worker's config does not have.
    /// Not retryable.
    UnknownServer,
    /// `template_error`: a template failed to render (bad reference, out of fuel, over
    /// its output or memory limit). Not retryable, except when the render sandbox was
    /// unavailable.
    TemplateError,
    /// `llm_error`: the model API failed or answered badly. Retryable for 429, 5xx and
    /// network errors; not for other 4xx or an answer over `llm.max_response`.
    LlmError,
    /// `llm_not_configured`: the job asks a model but the worker has no `[llm]`. Not
    /// retryable.
    LlmNotConfigured,
    /// `attachment_too_large`: an email attachment, their count or total, or the
    /// attachment directory is over its limit. Not retryable.
    AttachmentTooLarge,
    /// `attachments_dir_unsafe`: the attachment root is not private to the worker's
    /// user. Not retryable (an operator must fix it).
    AttachmentsDirUnsafe,
    /// `attachment_io`: writing an attachment failed. Retryable for I/O errors.
    AttachmentIo,
    /// `smtp_error`: sending the reply failed. Retryable unless the server's answer
    /// was permanent (5xx) or the message could not be built.
    SmtpError,
    /// `smtp_not_configured`: `reply.send` is true but the worker has no `[smtp]`. Not
    /// retryable.
    SmtpNotConfigured,
    /// `no_reply_address`: the job asks for a reply but the email's `from` is not an
    /// address (a bounce from `MAILER-DAEMON`, `From: foo`, no `From`); raised when the
    /// reply is drafted, after the plan or the model ran. Not retryable.
    NoReplyAddress,
    /// `server_unhealthy`: the server is in a crash loop and refused for now.
    /// Retryable.
    ServerUnhealthy,
    /// `server_backoff`: the server is restarting after a crash and its backoff outlasts
    /// the job's deadline. Retryable.
    ServerBackoff,
    /// `pool_exhausted`: no pooled session was free before the job's deadline.
    /// Retryable.
    PoolExhausted,
    /// `rate_limited`: a streamable-HTTP MCP server answered a call with HTTP 429 (Too
    /// Many Requests) and the call could not be made again within the job (no
    /// `Retry-After`, or a second 429). Retryable.
    RateLimited,
    /// `lease_expired`: the job's worker stopped renewing its lease (written by the
    /// rescuer, `lua/rescue.lua`). Retried (a rescue, not an attempt) until
    /// `queue.max_rescues`, then dead.
    LeaseExpired,
    /// `cancelled`: stopped by `mcpq cancel` (written by `lua/cancel.lua`; inside a
    /// run it also ends the job's steps). Not retryable.
    Cancelled,
    /// `internal`: a bug in the worker (a panicked task). Retryable.
    Internal,
    /// A kind this build does not know, kept verbatim (see the module doc). Never
    /// emitted by this build; [`FailureKind::parse`] never puts a known name here.
    Other(String),
}

impl FailureKind {
    /// Every kind this build emits, in the README's order.
    pub const ALL: [FailureKind; 27] = [
        FailureKind::ToolError,
        FailureKind::ServerExited,
        FailureKind::Timeout,
        FailureKind::SpawnFailed,
        FailureKind::StartupFailed,
        FailureKind::StartupTimeout,
        FailureKind::ProtocolError,
        FailureKind::ConnectionClosed,
        FailureKind::ResultTooLarge,
        FailureKind::InvalidJob,
        FailureKind::UnknownServer,
        FailureKind::TemplateError,
        FailureKind::LlmError,
        FailureKind::LlmNotConfigured,
        FailureKind::AttachmentTooLarge,
        FailureKind::AttachmentsDirUnsafe,
        FailureKind::AttachmentIo,
        FailureKind::SmtpError,
        FailureKind::SmtpNotConfigured,
        FailureKind::NoReplyAddress,
        FailureKind::ServerUnhealthy,
        FailureKind::ServerBackoff,
        FailureKind::PoolExhausted,
        FailureKind::RateLimited,
        FailureKind::LeaseExpired,
        FailureKind::Cancelled,
        FailureKind::Internal,
    ];

    /// The stored name.
    pub fn as_str(&self) -> &str {
        match self {
            FailureKind::ToolError => "tool_error",
            FailureKind::ServerExited => "server_exited",
            FailureKind::Timeout => "timeout",
            FailureKind::SpawnFailed => "spawn_failed",
            FailureKind::StartupFailed => "startup_failed",
            FailureKind::StartupTimeout => "startup_timeout",
            FailureKind::ProtocolError => "protocol_error",
            FailureKind::ConnectionClosed => "connection_closed",
            FailureKind::ResultTooLarge => "result_too_large",
            FailureKind::InvalidJob => "invalid_job",
            FailureKind::UnknownServer => "unknown_server",
            FailureKind::TemplateError => "template_error",
            FailureKind::LlmError => "llm_error",
            FailureKind::LlmNotConfigured => "llm_not_configured",
            FailureKind::AttachmentTooLarge => "attachment_too_large",
            FailureKind::AttachmentsDirUnsafe => "attachments_dir_unsafe",
            FailureKind::AttachmentIo => "attachment_io",
            FailureKind::SmtpError => "smtp_error",
            FailureKind::SmtpNotConfigured => "smtp_not_configured",
            FailureKind::NoReplyAddress => "no_reply_address",
            FailureKind::ServerUnhealthy => "server_unhealthy",
            FailureKind::ServerBackoff => "server_backoff",
            FailureKind::PoolExhausted => "pool_exhausted",
            FailureKind::RateLimited => "rate_limited",
            FailureKind::LeaseExpired => "lease_expired",
            FailureKind::Cancelled => "cancelled",
            FailureKind::Internal => "internal",
            FailureKind::Other(name) => name,
        }
    }

    /// The kind stored as `name`; an unknown name is kept as [`FailureKind::Other`].
    pub fn parse(name: &str) -> FailureKind {
        FailureKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
            .unwrap_or_else(|| FailureKind::Other(name.to_string()))
    }

    /// Whether failures of this kind are usually retried (see each variant's doc).
    pub fn retryable(&self) -> Retryable {
        match self {
            FailureKind::ToolError
            | FailureKind::ServerExited
            | FailureKind::Timeout
            | FailureKind::StartupFailed
            | FailureKind::StartupTimeout
            | FailureKind::ProtocolError
            | FailureKind::ConnectionClosed
            | FailureKind::AttachmentIo
            | FailureKind::ServerUnhealthy
            | FailureKind::ServerBackoff
            | FailureKind::PoolExhausted
            | FailureKind::RateLimited
            | FailureKind::Internal => Retryable::Yes,
            FailureKind::SpawnFailed
            | FailureKind::ResultTooLarge
            | FailureKind::InvalidJob
            | FailureKind::UnknownServer
            | FailureKind::LlmNotConfigured
            | FailureKind::AttachmentTooLarge
            | FailureKind::AttachmentsDirUnsafe
            | FailureKind::SmtpNotConfigured
            | FailureKind::NoReplyAddress
            | FailureKind::Cancelled => Retryable::No,
            FailureKind::TemplateError
            | FailureKind::LlmError
            | FailureKind::SmtpError
            | FailureKind::LeaseExpired
            | FailureKind::Other(_) => Retryable::Depends,
        }
    }
}

// Equality is by stored name, so `Other("timeout")` (which `parse` never builds) still
// equals `Timeout`.
impl PartialEq for FailureKind {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for FailureKind {}

impl std::hash::Hash for FailureKind {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for FailureKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for FailureKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Ok(FailureKind::parse(&name))
    }
}

/// Why a job failed, as stored and shown to users.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobFailure {
    /// A stable machine-readable class (see [`FailureKind`]).
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub kind: FailureKind,
    /// The human message.
    pub message: String,
    /// Index of the plan step that failed, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<usize>,
    /// The server involved, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// The tool involved, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// The last lines the server wrote to stderr.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr_tail: Option<String>,
    /// Whether trying again could succeed (crash, timeout) or not (bad input).
    pub retryable: bool,
}

impl JobFailure {
    /// A failure with no step, server or tool.
    pub fn new(kind: FailureKind, message: impl Into<String>, retryable: bool) -> Self {
        JobFailure {
            kind,
            message: message.into(),
            step: None,
            server: None,
            tool: None,
            stderr_tail: None,
            retryable,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use super::*;

    fn names(kinds: &[FailureKind]) -> BTreeSet<String> {
        kinds.iter().map(|k| k.as_str().to_string()).collect()
    }

    fn read(relative: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
    }

    /// What `expected` lacks and what it has in excess of `found`, for a message.
    fn diff(expected: &BTreeSet<String>, found: &BTreeSet<String>) -> String {
        let missing: Vec<_> = expected.difference(found).collect();
        let extra: Vec<_> = found.difference(expected).collect();
        format!("missing {missing:?}, not emitted {extra:?}")
    }

    #[test]
    fn every_kind_round_trips_through_its_stored_name() {
        for kind in FailureKind::ALL {
            let json = serde_json::to_string(&kind).expect("serializes");
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            let back: FailureKind = serde_json::from_str(&json).expect("reads back");
            assert_eq!(back, kind);
            assert!(
                !matches!(back, FailureKind::Other(_)),
                "{kind} parsed as Other"
            );
        }
        assert_eq!(names(&FailureKind::ALL).len(), FailureKind::ALL.len());
    }

    #[test]
    fn a_stored_record_reads_back_identically() {
        let stored = r#"{"kind":"server_exited","message":"boom","step":1,"server":"s","tool":"t","stderr_tail":"oops","retryable":true}"#;
        let failure: JobFailure = serde_json::from_str(stored).expect("reads");
        assert_eq!(failure.kind, FailureKind::ServerExited);
        assert_eq!(serde_json::to_string(&failure).expect("writes"), stored);
        // As written by the Lua scripts (cjson orders keys its own way).
        let lua = r#"{"retryable":false,"message":"m","kind":"lease_expired"}"#;
        let failure: JobFailure = serde_json::from_str(lua).expect("reads");
        assert_eq!(failure.kind, FailureKind::LeaseExpired);
    }

    #[test]
    fn an_unknown_kind_is_kept_verbatim() {
        let stored = r#"{"kind":"quantum_flux","message":"m","retryable":false}"#;
        let failure: JobFailure = serde_json::from_str(stored).expect("an unknown kind reads");
        assert_eq!(failure.kind, FailureKind::Other("quantum_flux".to_string()));
        assert_eq!(failure.kind.to_string(), "quantum_flux");
        assert_eq!(serde_json::to_string(&failure).expect("writes"), stored);
        assert_eq!(FailureKind::Other("timeout".into()), FailureKind::Timeout);
    }

    #[test]
    fn the_lua_scripts_write_only_known_kinds() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/queue/lua");
        let mut written = BTreeSet::new();
        for entry in std::fs::read_dir(&dir).expect("the lua dir") {
            let path = entry.expect("an entry").path();
            let text = std::fs::read_to_string(&path).expect("a script");
            for part in text.split("kind = '").skip(1) {
                let name = part.split('\'').next().unwrap_or_default();
                let kind = FailureKind::parse(name);
                assert!(
                    !matches!(kind, FailureKind::Other(_)),
                    "{} writes kind `{name}`, which is not a FailureKind",
                    path.display()
                );
                written.insert(name.to_string());
            }
        }
        let expected: BTreeSet<String> = ["cancelled", "invalid_job", "lease_expired"]
            .map(String::from)
            .into();
        assert_eq!(written, expected);
    }

    /// The README's "Errors" section has a table `| kind | when | retried |` whose rows
    /// must be exactly [`FailureKind::ALL`], with the retried column matching
    /// [`FailureKind::retryable`].
    #[test]
    fn the_readme_error_table_lists_exactly_the_emitted_kinds() {
        let readme = read("../README.md");
        let section = readme
            .split("\n### Errors\n")
            .nth(1)
            .expect("README.md has a `### Errors` section")
            .split("\n#")
            .next()
            .unwrap_or_default();
        let mut documented = BTreeSet::new();
        for line in section.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let name = cells[1].trim_matches('`');
            let retried = cells.get(3).copied().unwrap_or_default();
            let kind = FailureKind::parse(name);
            // An unknown name is reported below, with the whole difference.
            if !matches!(kind, FailureKind::Other(_)) {
                assert_eq!(
                    retried,
                    kind.retryable().as_str(),
                    "README.md, Errors: `{name}` says retried = `{retried}`"
                );
            }
            assert!(documented.insert(name.to_string()), "`{name}` listed twice");
        }
        let emitted = names(&FailureKind::ALL);
        assert_eq!(
            documented,
            emitted,
            "README.md's Errors table drifted from FailureKind::ALL: {}",
            diff(&emitted, &documented)
        );
    }

    /// Every kind GUARANTEES.md's "Limits" tables name (a backticked lowercase word in
    /// the "when exceeded" column) is an emitted kind.
    #[test]
    fn the_kinds_named_in_the_limits_tables_are_emitted_kinds() {
        let guarantees = read("../docs/GUARANTEES.md");
        let limits = guarantees
            .split("\n## Limits\n")
            .nth(1)
            .expect("docs/GUARANTEES.md has a `## Limits` section")
            .split("\n## ")
            .next()
            .unwrap_or_default();
        let mut named = BTreeSet::new();
        for line in limits.lines().filter(|l| l.starts_with('|')) {
            let when = line.trim_end_matches('|').rsplit('|').next().unwrap_or("");
            for (i, word) in when.split('`').enumerate() {
                // A lone lowercase word that is not a job status (`dead`).
                let looks_like_a_kind = !word.is_empty()
                    && word.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                    && crate::queue::JobStatus::parse(word).is_none();
                if i % 2 == 1 && looks_like_a_kind {
                    named.insert(word.to_string());
                }
            }
        }
        let emitted = names(&FailureKind::ALL);
        let unknown: Vec<_> = named.difference(&emitted).collect();
        assert!(
            unknown.is_empty(),
            "docs/GUARANTEES.md's Limits tables name kinds that are not emitted: {unknown:?}"
        );
        for kind in [
            "invalid_job",
            "result_too_large",
            "lease_expired",
            "timeout",
        ] {
            assert!(
                named.contains(kind),
                "the Limits tables no longer name `{kind}`"
            );
        }
    }
}
