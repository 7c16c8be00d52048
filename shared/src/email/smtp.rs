//! Sending reply drafts over SMTP, with lettre.
//!
//! ```toml
//! [smtp]
//! host = "smtp.example.com"
//! port = 587                     # default: 25 (none), 587 (starttls), 465 (tls)
//! security = "starttls"          # none | starttls | tls
//! username = "bot@example.com"   # optional: AUTH only with a username
//! password_env = "MCPQ_SMTP_PASSWORD"   # the password is read from this env var
//! from = "Support <bot@example.com>"
//! timeout = "30s"
//! ```
//!
//! The reply goes to the email's sender with `In-Reply-To` (the email's Message-ID)
//! and `References` (its references, then its Message-ID), so mail clients thread it.
//!
//! Caveat (at least once): if a worker dies after the server accepted the reply but
//! before the job's outcome is stored, the job runs again and the reply is sent again.

use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

pub use crate::config::email::{Security, SmtpSettings};

/// Why a reply was not sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SmtpError {
    /// An address or header could not be used.
    #[error("cannot build the reply: {0}")]
    Build(String),
    /// The server refused or could not be reached.
    #[error("SMTP {host}:{port}: {source}")]
    Send {
        /// Server.
        host: String,
        /// Port.
        port: u16,
        /// What lettre said.
        source: lettre::transport::smtp::Error,
    },
}

impl SmtpError {
    /// False for permanent refusals (5xx) and bad addresses; true for the rest.
    pub fn is_retryable(&self) -> bool {
        match self {
            SmtpError::Build(_) => false,
            SmtpError::Send { source, .. } => !source.is_permanent(),
        }
    }
}

/// The reply to send.
#[derive(Debug, Clone)]
pub struct Reply<'a> {
    /// Recipients.
    pub to: &'a [String],
    /// Subject.
    pub subject: &'a str,
    /// Plain-text body.
    pub text: &'a str,
    /// The Message-ID it answers (without angle brackets).
    pub in_reply_to: Option<&'a str>,
    /// References (without angle brackets).
    pub references: &'a [String],
}

/// The longest text [`is_mailbox`] parses, in bytes: RFC 5322's line limit (998). A
/// sender longer than a header line is not an address we reply to, and a job's `from`
/// may be megabytes: lettre's parser took 0.16 s on 1 MiB of `a.a.a.` (release build;
/// 6 s in a debug one), 0.1 ms on 998 bytes.
pub const MAX_MAILBOX_LEN: usize = 998;

/// True if `text` is one mailbox, `Name <user@domain>` or `user@domain`, read as
/// [`send`] reads a recipient: a reply drafted to it can also be sent. `foo`,
/// `MAILER-DAEMON`, `<>`, `""` and text over [`MAX_MAILBOX_LEN`] are not.
pub fn is_mailbox(text: &str) -> bool {
    text.len() <= MAX_MAILBOX_LEN && text.parse::<Mailbox>().is_ok()
}

fn bracket(id: &str) -> String {
    format!("<{}>", id.trim_matches(|c| c == '<' || c == '>'))
}

/// Sends `reply`; returns the Message-ID it was sent with.
pub async fn send(settings: &SmtpSettings, reply: &Reply<'_>) -> Result<String, SmtpError> {
    let build = |e: String| SmtpError::Build(e);
    let from: Mailbox = settings
        .from
        .parse()
        .map_err(|e| build(format!("smtp.from {:?}: {e}", settings.from)))?;
    let domain = from.email.domain().to_string();
    let message_id = format!("<{}@{domain}>", ulid::Ulid::generate());
    let mut builder = Message::builder()
        .from(from)
        .subject(reply.subject)
        .message_id(Some(message_id.clone()));
    for to in reply.to {
        let mailbox: Mailbox = to
            .parse()
            .map_err(|e| build(format!("recipient {to:?}: {e}")))?;
        builder = builder.to(mailbox);
    }
    if let Some(id) = reply.in_reply_to {
        builder = builder.in_reply_to(bracket(id));
    }
    if !reply.references.is_empty() {
        let refs: Vec<String> = reply.references.iter().map(|r| bracket(r)).collect();
        builder = builder.references(refs.join(" "));
    }
    let message = builder
        .body(reply.text.to_string())
        .map_err(|e| build(e.to_string()))?;
    let port = settings.port.unwrap_or(match settings.security {
        Security::None => 25,
        Security::Starttls => 587,
        Security::Tls => 465,
    });
    let send_err = |source| SmtpError::Send {
        host: settings.host.clone(),
        port,
        source,
    };
    let mut transport = match settings.security {
        Security::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&settings.host),
        Security::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&settings.host)
            .map_err(send_err)?,
        Security::Tls => {
            AsyncSmtpTransport::<Tokio1Executor>::relay(&settings.host).map_err(send_err)?
        }
    }
    .port(port)
    .timeout(Some(settings.timeout));
    if let Some(user) = &settings.username {
        let password = settings
            .password_env
            .as_ref()
            .and_then(|var| std::env::var(var).ok())
            .unwrap_or_default();
        transport = transport.credentials(Credentials::new(user.clone(), password));
    }
    transport.build().send(message).await.map_err(send_err)?;
    Ok(message_id
        .trim_matches(|c| c == '<' || c == '>')
        .to_string())
}
