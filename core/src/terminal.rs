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

use std::borrow::Cow;

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
