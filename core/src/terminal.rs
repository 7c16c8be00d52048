//! Text from outside, made safe for a terminal.
//!
//! Results, error messages, email subjects, server stderr and worker names come from
//! tools, servers, models and other producers: any of them may hold escape sequences
//! (`ESC[2J` clears the screen, `ESC]0;...BEL` sets the title, `ESC]52;c;...` writes the
//! clipboard) or a newline followed by a forged line. Guarantee: every human (non-JSON)
//! line `mcpq` and `mcpq-worker check` print goes through [`escape`], so no control character (C0, DEL, C1) and
//! no bidirectional override reaches the terminal raw; each is shown as `\u{1b}`-style
//! text. Newlines are kept only where the caller's layout puts a multi-line body
//! ([`Newlines::Keep`]); a one-line field ([`one_line`]) shows them as `\n`.
//! JSON output needs none of this: serde escapes every control character in strings.
//!
//! [`print_line`] and [`print_json`] are how both binaries write their stdout, so the
//! guarantee and the handling of a closed pipe (`mcpq jobs | head`: exit 0, quietly) live
//! in one place.

use std::borrow::Cow;
use std::io::Write;

use serde_json::{json, Value};

/// Whether `\n` (and `\t`) may stay as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Newlines {
    /// A multi-line body: keep `\n` and `\t`, escape the rest.
    Keep,
    /// One line: escape `\n` too.
    Escape,
}

/// True for characters a terminal may act on or that reorder text on screen.
fn dangerous(c: char, newlines: Newlines) -> bool {
    match c {
        '\n' | '\t' => newlines == Newlines::Escape,
        // Bidirectional embeddings, overrides and isolates (the "Trojan Source" set).
        '\u{061c}'
        | '\u{200e}'
        | '\u{200f}'
        | '\u{202a}'..='\u{202e}'
        | '\u{2066}'..='\u{2069}' => true,
        c => c.is_control(),
    }
}

/// `text` with every dangerous character replaced by its `\u{..}` form (`\n` for a
/// newline in one-line mode).
pub fn escape(text: &str, newlines: Newlines) -> Cow<'_, str> {
    if !text.chars().any(|c| dangerous(c, newlines)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\n' if dangerous(c, newlines) => out.push_str("\\n"),
            c if dangerous(c, newlines) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A one-line field: [`escape`] with newlines escaped too.
pub fn one_line(text: &str) -> Cow<'_, str> {
    escape(text, Newlines::Escape)
}

/// Writes one human line (or a body of lines) to stdout, control characters escaped
/// (newlines kept); a closed stdout ends the process quietly with 0.
pub fn print_line(text: &str) {
    write_stdout(&escape(text, Newlines::Keep));
}

/// Writes one JSON object with `"type": kind` first, then `fields`, as one line on
/// stdout (serde escapes every control character).
pub fn print_json(kind: &str, fields: Value) {
    let mut obj = serde_json::Map::new();
    obj.insert("type".to_string(), json!(kind));
    if let Value::Object(map) = fields {
        obj.extend(map);
    }
    write_stdout(&Value::Object(obj).to_string());
}

/// Writes `text` and a newline to stdout as it is; a broken pipe exits 0.
fn write_stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{text}").and_then(|_| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_and_forged_lines_are_shown_not_obeyed() {
        let hostile =
            "a\u{1b}[2Jb\u{1b}]0;title\u{7}c\u{1b}]52;c;ZXZpbA==\u{7}\u{9b}31m\r\u{7f}\u{202e}";
        let safe = escape(hostile, Newlines::Keep);
        assert!(!safe.chars().any(|c| c.is_control()), "{safe}");
        assert_eq!(
            safe,
            "a\\u{1b}[2Jb\\u{1b}]0;title\\u{7}c\\u{1b}]52;c;ZXZpbA==\\u{7}\\u{9b}31m\\u{d}\\u{7f}\\u{202e}"
        );
        assert_eq!(escape("two\nlines\tok", Newlines::Keep), "two\nlines\tok");
        assert_eq!(
            one_line("oops\n2026-01-01 INFO job succeeded job=FORGED"),
            "oops\\n2026-01-01 INFO job succeeded job=FORGED"
        );
        assert!(matches!(one_line("plain text ✓"), Cow::Borrowed(_)));
    }
}
