//! Raw RFC 5322 messages (`.eml`) into an [`EmailJob`], with mail-parser: multipart
//! (nested too), base64 and quoted-printable, non-UTF-8 charsets, encoded-word subjects
//! and file names, attached messages.
//!
//! What is kept: `From`, `To`, `Cc`, `Subject`, `Date`, `Message-ID`, `References`
//! (with `In-Reply-To`), the first text and HTML bodies (an HTML-only message gets its
//! text from the HTML), and every attachment (inline images and the parts of a bounce
//! included) with its declared name and type.
//!
//! Messages are taken as mail servers deliver them: a bounce from `MAILER-DAEMON`, a
//! `From` that is missing, empty or not an address (`From: foo`), `To:
//! undisclosed-recipients:;`, raw 8-bit headers in no declared charset. `from` is then
//! what there is (see [`parse_eml`]); only a reply, which needs an address, fails, when
//! the worker drafts it. Only a text that is not a message at all (no standard header
//! field at its start) is refused, with an error that says so.

use base64::Engine;
use mail_parser::{Address, HeaderName, HeaderValue, Message, MessageParser, MimeHeaders};

use super::email::{Attachment, EmailJob};
use crate::terminal;

/// Why a raw message was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("cannot read the email: {0}")]
pub struct ParseError(pub String);

/// The longest `from` kept from the raw text of a `From` header that holds no address,
/// in bytes: RFC 5322's line limit (998), since a sender is meant to fit on one line;
/// longer text is cut and ends with `…`.
pub const MAX_RAW_FROM: usize = 998;

/// Characters a display name may not hold unquoted (RFC 5322 `specials` but `.`, which
/// the obsolete phrase syntax allows and senders write unquoted: `Ana S. <a@b.c>`).
const NAME_SPECIALS: &[char] = &['(', ')', '<', '>', '[', ']', ':', ';', '@', '\\', ',', '"'];

/// `Name <address>` (the name quoted if it needs it, so `"Doe, John" <j@x.org>` reads
/// back as one mailbox), or the bare address; entries without an address are skipped.
fn addresses(a: Option<&Address<'_>>) -> Vec<String> {
    a.map(|a| {
        a.iter()
            .filter_map(|addr| {
                let address = addr.address()?;
                Some(match addr.name() {
                    Some(name) if name.contains(NAME_SPECIALS) => {
                        let quoted = name.replace('\\', "\\\\").replace('"', "\\\"");
                        format!("\"{quoted}\" <{address}>")
                    }
                    Some(name) if !name.is_empty() => format!("{name} <{address}>"),
                    _ => address.to_string(),
                })
            })
            .collect()
    })
    .unwrap_or_default()
}

/// `from`: the first address of `From`; else the header's raw text (a bounce's
/// `MAILER-DAEMON`, `foo`), see [`raw_header_text`]; else `""` (no `From`, or an
/// empty one).
fn sender(message: &Message<'_>) -> String {
    if let Some(first) = addresses(message.from()).into_iter().next() {
        return first;
    }
    message
        .headers()
        .iter()
        .find(|h| h.name == HeaderName::From)
        .and_then(|h| {
            let (start, end) = (h.offset_start as usize, h.offset_end as usize);
            message.raw_message.get(start..end)
        })
        .map(raw_header_text)
        .unwrap_or_default()
}

/// A raw header value as one line of text: unfolded, invalid UTF-8 replaced (a header
/// in 8-bit bytes of no declared charset), control characters escaped (`\u{1b}`), at
/// most [`MAX_RAW_FROM`] bytes.
fn raw_header_text(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let unfolded = text
        .split(['\r', '\n'])
        .map(|line| line.trim_matches([' ', '\t']))
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let escaped = terminal::one_line(&unfolded);
    if escaped.len() <= MAX_RAW_FROM {
        return escaped.into_owned();
    }
    let mut end = MAX_RAW_FROM - '…'.len_utf8();
    while !escaped.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &escaped[..end])
}

/// True if the message starts with at least one standard header field (`From`, `To`,
/// `Subject`, `Date`, `Received`, `Content-Type`, ...): mail-parser makes a message of
/// any text (a line `hello world` becomes a header named so, a file with a blank first
/// line a body), so this is what tells a message from something else.
fn has_a_standard_header(message: &Message<'_>) -> bool {
    message
        .headers()
        .iter()
        .any(|h| !matches!(h.name, HeaderName::Other(_)))
}

fn ids(v: &HeaderValue<'_>) -> Vec<String> {
    match v {
        HeaderValue::Text(t) => vec![t.to_string()],
        HeaderValue::TextList(l) => l.iter().map(|t| t.to_string()).collect(),
        _ => Vec::new(),
    }
}

/// Parses `raw` into an email job payload (instructions and servers left empty).
///
/// `from` is the first address of `From` (`Name <address>`); if `From` holds none, its
/// raw text (one line, lossy UTF-8, control characters escaped, at most
/// [`MAX_RAW_FROM`] bytes); with no `From` or an empty one, `""`. Fails only when `raw`
/// is not a message: no standard header field at its start.
pub fn parse_eml(raw: &[u8]) -> Result<EmailJob, ParseError> {
    let not_a_message = || {
        ParseError(
            "not an RFC 5322 message: it starts with no standard header field (From, To, \
             Subject, Date, Received, Content-Type, ...); give the raw message as a mail \
             server delivers it (an .eml file)"
                .to_string(),
        )
    };
    let message = MessageParser::default()
        .parse(raw)
        .filter(has_a_standard_header)
        .ok_or_else(not_a_message)?;
    let from = sender(&message);
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
    }

    #[test]
    fn a_message_without_a_from_address_is_kept_with_what_its_from_says() {
        let e = parse_eml(&corpus("13-no-from.eml")).expect("no From header");
        assert_eq!(e.from, "");
        assert_eq!(e.subject, "Who sent this?");

        let e = parse_eml(&corpus("15-from-not-an-address.eml")).expect("From: foo");
        assert_eq!(e.from, "foo");
        assert_eq!(e.text.trim(), "The nightly build finished.");

        let e = parse_eml(&corpus("16-from-empty.eml")).expect("From:");
        assert_eq!(e.from, "");
        assert_eq!(e.message_id.as_deref(), Some("empty-from-16@example.com"));
    }

    #[test]
    fn a_bounce_keeps_its_report_and_the_returned_message() {
        let e = parse_eml(&corpus("14-bounce-dsn.eml")).expect("DSN");
        assert_eq!(e.from, "MAILER-DAEMON");
        assert_eq!(e.to, ["alerts@example.com"]);
        assert_eq!(e.subject, "Undelivered Mail Returned to Sender");
        assert!(
            e.text.contains("Recipient address rejected: User unknown"),
            "{}",
            e.text
        );
        let types: Vec<&str> = e
            .attachments
            .iter()
            .map(|a| a.content_type.as_str())
            .collect();
        assert_eq!(types, ["message/delivery-status", "message/rfc822"]);
        let engine = base64::engine::general_purpose::STANDARD;
        let decode = |a: &Attachment| {
            let b64 = a.content_base64.as_deref().expect("inline content");
            String::from_utf8(engine.decode(b64).expect("base64")).expect("utf-8")
        };
        assert!(decode(&e.attachments[0]).contains("Status: 5.1.1"));
        let returned = decode(&e.attachments[1]);
        assert!(
            returned.contains("Message-Id: <weekly-48@example.com>"),
            "{returned}"
        );
        assert!(
            returned.contains("The weekly report is ready."),
            "{returned}"
        );
    }

    #[test]
    fn undisclosed_recipients_leave_to_empty() {
        let e = parse_eml(&corpus("17-undisclosed-recipients.eml")).expect("undisclosed");
        assert_eq!(e.from, "Newsletter <news@lists.example.org>");
        assert!(e.to.is_empty(), "{:?}", e.to);
        assert_eq!(e.subject, "November news");
    }

    #[test]
    fn raw_8bit_headers_in_no_declared_charset_become_lossy_utf8() {
        let raw = corpus("18-8bit-unknown-charset.eml");
        assert!(
            std::str::from_utf8(&raw).is_err(),
            "the file must not be UTF-8"
        );
        let e = parse_eml(&raw).expect("8-bit");
        assert_eq!(e.from, "J\u{fffd}rg M\u{fffd}ller <joerg@example.de>");
        assert!(
            e.subject.starts_with("Pr\u{fffd}fbericht f\u{fffd}r M"),
            "{}",
            e.subject
        );
        assert!(e.text.starts_with("Der Bericht f"), "{}", e.text);
        // The same bytes in a From that holds no address: its raw text, lossy.
        let e = parse_eml(b"From: J\xf6rg\r\nSubject: x\r\n\r\nbody").expect("8-bit raw");
        assert_eq!(e.from, "J\u{fffd}rg");
    }

    #[test]
    fn an_html_only_message_gets_its_text_from_the_html() {
        let e = parse_eml(&corpus("19-html-only.eml")).expect("html only");
        assert!(e.html.contains("<b>#1042</b>"), "{}", e.html);
        assert!(e.html.contains("https://shop.example/t/1042"), "{}", e.html);
        assert_eq!(e.text, "Order #1042 has shipped.\nTrack it here.\n");
    }

    #[test]
    fn a_raw_from_is_one_escaped_bounded_line() {
        let e =
            parse_eml(b"From: Build\r\n\tBot \x1b[2J\r\nSubject: x\r\n\r\nbody").expect("parse");
        assert_eq!(e.from, "Build Bot \\u{1b}[2J");
        let mut raw = b"From: ".to_vec();
        raw.extend(std::iter::repeat_n(b'x', 5000));
        raw.extend(b"\r\n\r\nbody");
        let e = parse_eml(&raw).expect("long From");
        assert!(e.from.len() <= MAX_RAW_FROM, "{}", e.from.len());
        assert!(e.from.ends_with("x…"), "{}", e.from);
        // A null sender, as some bounces write it.
        let e = parse_eml(b"From: <>\r\nSubject: x\r\n\r\nbody").expect("From: <>");
        assert_eq!(e.from, "<>");
    }

    #[test]
    fn names_that_need_quotes_are_quoted_so_the_address_reads_back() {
        let e = parse_eml(
            b"From: \"Doe, John\" <j@x.org>\r\nTo: \"a \\\"b\\\" c\" <a@b.c>, Ana S. <s@b.c>\r\n\r\nx",
        )
        .expect("parse");
        assert_eq!(e.from, "\"Doe, John\" <j@x.org>");
        assert_eq!(e.to, ["\"a \\\"b\\\" c\" <a@b.c>", "Ana S. <s@b.c>"]);
        // A group's addresses count; the first address wins over text without one.
        let e = parse_eml(b"From: team: a@b.c, d@e.f;\r\n\r\nx").expect("group");
        assert_eq!(e.from, "a@b.c");
        let e = parse_eml(b"From: foo, Ana <a@b.c>\r\n\r\nx").expect("mixed");
        assert_eq!(e.from, "Ana <a@b.c>");
    }

    #[test]
    fn what_is_not_a_message_is_refused_with_a_clear_error() {
        let readme = corpus("README.md");
        for raw in [
            &b""[..],
            b"hello world",
            b"hello world\r\n",
            b"\r\n\r\njust a body",
            b"\x00\x01\x02\xff garbage",
            &readme,
        ] {
            let err = parse_eml(raw).expect_err("not a message");
            assert!(
                err.to_string().contains("no standard header field"),
                "{:?}: {err}",
                String::from_utf8_lossy(raw)
            );
        }
        // One standard header is enough.
        assert!(parse_eml(b"Subject: only this\r\n\r\nbody").is_ok());
    }
}
