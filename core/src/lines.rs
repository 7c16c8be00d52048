//! Lines of an input, each bounded: a line longer than the limit is skipped to its end
//! and reported as [`Line::TooLong`], never held whole. A batch's JSON lines are read
//! with it (`mcpq batch submit`, `POST /v1/batches`: [`crate::queue::batch_input`]), and
//! the CLI's mbox reader its messages' lines.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

/// One line of the input: bytes without the newline, or `TooLong` (the rest of that
/// line was skipped).
pub enum Line {
    /// The line's bytes.
    Text(Vec<u8>),
    /// Longer than the limit.
    TooLong,
}

/// Reads lines of at most `limit` bytes; a longer line is skipped to its end.
pub struct Lines<R> {
    reader: R,
    limit: usize,
    number: u64,
}

impl Lines<BufReader<File>> {
    /// The lines of the file at `path`.
    pub fn open(path: &Path, limit: usize) -> std::io::Result<Self> {
        let file = File::open(path)?;
        Ok(Lines::new(BufReader::with_capacity(256 << 10, file), limit))
    }
}

impl<R: BufRead> Lines<R> {
    /// Lines of `reader`, each at most `limit` bytes.
    pub fn new(reader: R, limit: usize) -> Self {
        Lines {
            reader,
            limit,
            number: 0,
        }
    }

    /// The next line and its number (from 1), `None` at the end.
    pub fn next_line(&mut self) -> std::io::Result<Option<(u64, Line)>> {
        let mut buf = Vec::new();
        let mut too_long = false;
        loop {
            let available = self.reader.fill_buf()?;
            if available.is_empty() {
                if buf.is_empty() && !too_long {
                    return Ok(None);
                }
                break;
            }
            let (chunk, found) = match available.iter().position(|b| *b == b'\n') {
                Some(at) => (&available[..at], Some(at)),
                None => (available, None),
            };
            if !too_long {
                if buf.len() + chunk.len() > self.limit {
                    too_long = true;
                    buf = Vec::new();
                } else {
                    buf.extend_from_slice(chunk);
                }
            }
            let used = found.map_or(chunk.len(), |at| at + 1);
            self.reader.consume(used);
            if found.is_some() {
                break;
            }
        }
        self.number += 1;
        Ok(Some((
            self.number,
            if too_long {
                Line::TooLong
            } else {
                Line::Text(buf)
            },
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_lines(text: &[u8], limit: usize) -> Vec<(u64, Option<Vec<u8>>)> {
        let mut lines = Lines::new(text, limit);
        let mut out = Vec::new();
        while let Some((n, line)) = lines.next_line().expect("read") {
            out.push((
                n,
                match line {
                    Line::Text(t) => Some(t),
                    Line::TooLong => None,
                },
            ));
        }
        out
    }

    #[test]
    fn lines_are_numbered_and_a_line_over_the_limit_is_skipped_not_buffered() {
        let text = b"ab\n\n0123456789\nlast";
        assert_eq!(
            all_lines(text, 5),
            vec![
                (1, Some(b"ab".to_vec())),
                (2, Some(Vec::new())),
                (3, None),
                (4, Some(b"last".to_vec())),
            ]
        );
        assert_eq!(all_lines(b"x\n", 5), vec![(1, Some(b"x".to_vec()))]);
        assert!(all_lines(b"", 5).is_empty());
    }
}
