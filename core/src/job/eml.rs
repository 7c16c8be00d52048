//! Raw RFC 5322 messages (`.eml`) into an [`EmailJob`], with mail-parser: multipart
//! (nested too), base64 and quoted-printable, non-UTF-8 charsets, encoded-word subjects
//! and file names, attached messages.
//!
//! What is kept: `From`, `To`, `Cc`, `Subject`, `Date`, `Message-ID`, `References`
//! (with `In-Reply-To`), the first text and HTML bodies, and every attachment (inline
//! images included) with its declared name and type. A message with no `From` or with
//! nothing parseable is an error that says so.

use base64::Engine;
use mail_parser::{Address, HeaderValue, MessageParser, MimeHeaders};

use super::email::{Attachment, EmailJob};

/// Why a raw message was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("cannot read the email: {0}")]
pub struct ParseError(pub String);

fn addresses(a: Option<&Address<'_>>) -> Vec<String> {
    a.map(|a| {
        a.iter()
            .filter_map(|addr| {
                let address = addr.address()?;
                Some(match addr.name() {
                    Some(name) if !name.is_empty() => format!("{name} <{address}>"),
                    _ => address.to_string(),
                })
            })
            .collect()
    })
    .unwrap_or_default()
}

fn ids(v: &HeaderValue<'_>) -> Vec<String> {
    match v {
        HeaderValue::Text(t) => vec![t.to_string()],
        HeaderValue::TextList(l) => l.iter().map(|t| t.to_string()).collect(),
        _ => Vec::new(),
    }
}

/// Parses `raw` into an email job payload (instructions and servers left empty).
pub fn parse_eml(raw: &[u8]) -> Result<EmailJob, ParseError> {
    let message = MessageParser::default()
        .parse(raw)
        .ok_or_else(|| ParseError("not an RFC 5322 message (no headers found)".to_string()))?;
    let from = addresses(message.from())
        .into_iter()
        .next()
        .ok_or_else(|| ParseError("the message has no From address".to_string()))?;
    let mut references = ids(message.references());
    for id in ids(message.in_reply_to()) {
        if !references.contains(&id) {
            references.push(id);
        }
    }
    let engine = base64::engine::general_purpose::STANDARD;
    let attachments = message
        .attachments()
        .enumerate()
        .map(|(i, part)| {
            let content_type = part
                .content_type()
                .map(|ct| match ct.subtype() {
                    Some(sub) => format!("{}/{}", ct.ctype(), sub),
                    None => ct.ctype().to_string(),
                })
                .unwrap_or_default();
            let name = part
                .attachment_name()
                .map(str::to_string)
                .unwrap_or_else(|| format!("attachment-{}", i + 1));
            // An attached message keeps its raw form (a .eml inside the email).
            let bytes: &[u8] = match part.message() {
                Some(inner) => inner.raw_message(),
                None => part.contents(),
            };
            Attachment {
                name,
                content_type,
                content_base64: Some(engine.encode(bytes)),
                path: None,
            }
        })
        .collect();
    Ok(EmailJob {
        from,
        to: addresses(message.to()),
        cc: addresses(message.cc()),
        subject: message.subject().unwrap_or_default().to_string(),
        text: message
            .body_text(0)
            .map(|t| t.into_owned())
            .unwrap_or_default(),
        html: message
            .body_html(0)
            .map(|t| t.into_owned())
            .unwrap_or_default(),
        message_id: message.message_id().map(str::to_string),
        references,
        date: message.date().map(|d| d.to_rfc3339()),
        attachments,
        ..EmailJob::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/data/eml")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn names(e: &EmailJob) -> Vec<&str> {
        e.attachments.iter().map(|a| a.name.as_str()).collect()
    }

    #[test]
    fn the_corpus_parses_as_expected() {
        let e = parse_eml(&corpus("02-alternative.eml")).expect("alternative");
        assert_eq!(e.from, "Billing <billing@shop.example>");
        assert_eq!(e.to, ["Ana Silva <ana@example.com>", "ops@example.com"]);
        assert_eq!(e.cc, ["audit@example.com"]);
        assert_eq!(e.text.trim(), "Total: 12.50 EUR");
        assert!(e.html.contains("<b>12.50 EUR</b>"));

        let e = parse_eml(&corpus("03-nested.eml")).expect("nested");
        assert_eq!(names(&e), ["invoice-42.pdf"]);
        assert_eq!(e.attachments[0].content_type, "application/pdf");
        assert_eq!(e.message_id.as_deref(), Some("nested-3@example.org"));
        assert_eq!(
            e.references,
            ["thread-0@example.org", "thread-1@example.org"]
        );

        let e = parse_eml(&corpus("04-latin1-quoted-printable.eml")).expect("latin1");
        assert_eq!(e.subject, "Café für das Büro");
        assert!(e.from.starts_with("José Müller"), "{}", e.from);
        assert!(e.text.contains("Grüße aus München"), "{}", e.text);

        let e = parse_eml(&corpus("05-utf8-subject-rfc2231-name.eml")).expect("utf8");
        assert_eq!(e.subject, "日本の請求書 ✓");
        assert_eq!(names(&e), ["請求書.txt"]);

        let e = parse_eml(&corpus("06-inline-image.eml")).expect("inline");
        assert_eq!(names(&e), ["logo.png"]);

        let e = parse_eml(&corpus("08-malicious-filename.eml")).expect("evil");
        assert_eq!(e.attachments.len(), 3);
        assert_eq!(
            e.attachments[0].name, "../../etc/passwd",
            "kept as sent; sanitized on disk"
        );

        let e = parse_eml(&corpus("11-forwarded-message.eml")).expect("fwd");
        assert_eq!(e.attachments.len(), 1);

        let e = parse_eml(&corpus("12-duplicate-names.eml")).expect("dup");
        assert_eq!(names(&e), ["notes.txt", "notes.txt"]);

        let _ = parse_eml(&corpus("10-broken-boundary.eml")).expect("lenient on a broken boundary");

        let err = parse_eml(&corpus("13-no-from.eml")).expect_err("no From");
        assert!(err.to_string().contains("no From address"), "{err}");
        assert!(parse_eml(b"").is_err());
    }
}
