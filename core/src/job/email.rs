//! The payload of an `email` job: an inbound email, what to do with it, and the reply.
//!
//! ```json
//! {"kind": "email", "payload": {
//!   "from": "Ana <ana@example.com>", "to": ["inbox@example.com"], "subject": "Invoice 42",
//!   "text": "Please file the attached invoice.",
//!   "attachments": [{"name": "invoice.pdf", "content_type": "application/pdf",
//!                    "content_base64": "JVBERi0..."}],
//!   "instructions": "File the invoice and confirm.",
//!   "servers": ["filesystem"],
//!   "steps": [{"name": "read", "server": "filesystem", "tool": "get_file_info",
//!              "arguments": {"path": "{{ attachments[0].path }}"}}],
//!   "reply": {"text": "Filed {{ attachments[0].name }} ({{ attachments[0].size }} bytes).",
//!             "send": false}
//! }}
//! ```
//!
//! `mcpq submit email --eml message.eml` builds this from a raw RFC 5322 message
//! ([`super::parse`]). In a JSON job an attachment may give a `path` instead of
//! `content_base64`: the producer (`mcpq submit`) reads the file and inlines it; a
//! worker never reads a path a job names.

use serde::{Deserialize, Serialize};

use super::PlanStep;

/// Payload of an `email` job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EmailJob {
    /// Sender: `Name <address>` or an address; for a message whose `From` holds no
    /// address (a bounce's `MAILER-DAEMON`, `foo`), the header's text; `""` for none. A
    /// reply needs an address here (a job with `reply` fails `no_reply_address`
    /// otherwise). May be left out (`""`); always written, for readers that need it.
    #[serde(default)]
    pub from: String,
    /// Recipients.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<String>,
    /// Copied recipients.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cc: Vec<String>,
    /// Subject line.
    #[serde(default)]
    pub subject: String,
    /// Plain-text body.
    #[serde(default)]
    pub text: String,
    /// HTML body, if any.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub html: String,
    /// The message's `Message-ID` (without angle brackets), for the reply's headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// Its `References` (ids without angle brackets).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<String>,
    /// Its `Date`, as written (RFC 3339 when parsed by mcpq).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    /// Attached files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
    /// What the agent should do with the email (templates see it as
    /// `input.instructions`).
    pub instructions: String,
    /// Servers the agent may use (each must be configured on the worker).
    #[serde(default)]
    pub servers: Vec<String>,
    /// Plan mode: tool calls with templates over `email.*` and `attachments`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<PlanStep>,
    /// LLM mode (when there are no `steps`): the model gets the instructions, the email
    /// and the attachment list with paths, and may call the tools of `servers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm: Option<super::LlmOptions>,
    /// A reply to draft (and send, with `send` and an `[smtp]` config).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<ReplySpec>,
}

/// One attached file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Attachment {
    /// The file name the sender gave (sanitized before it touches a disk).
    pub name: String,
    /// MIME type, e.g. `application/pdf`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub content_type: String,
    /// The content, base64 (standard alphabet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_base64: Option<String>,
    /// Producer side only: a file to read and inline as `content_base64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// The reply to draft.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ReplySpec {
    /// Body; a template over `email.*`, `attachments`, `input.instructions` and the
    /// plan's named steps (in LLM mode: `answer`, the model's answer).
    pub text: String,
    /// Subject (default `Re: ` + the email's subject); a template too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Deliver it over SMTP (needs `[smtp]` in the worker's config).
    #[serde(default)]
    pub send: bool,
}

impl Attachment {
    /// Decoded size in bytes, computed from the base64 length (no decoding).
    pub fn decoded_len(&self) -> usize {
        let b64 = self.content_base64.as_deref().unwrap_or("");
        let clean = b64.bytes().filter(|b| !b.is_ascii_whitespace()).count();
        let pad = b64
            .bytes()
            .rev()
            .filter(|b| !b.is_ascii_whitespace())
            .take(2)
            .filter(|&b| b == b'=')
            .count();
        (clean / 4 * 3).saturating_sub(pad)
    }
}
