//! `AnswerLimit`: the largest message a stdio MCP server may send us.
//!
//! rmcp reads a stdio server line by line and, past its own cap (16 MiB), drops the
//! line with a log message and keeps the connection open: the caller waiting for that
//! answer is never told and waits out its whole `call_timeout`, and the job is then
//! retried into the same wall. [`LimitedLines`] sits between the server's stdout and
//! rmcp and counts the bytes of the line being read. Guarantees:
//! - No line longer than the limit ever reaches rmcp: the read that would cross it
//!   fails (nothing of it is handed on), so rmcp never buffers more than the limit.
//! - That failure ends the session's stream (rmcp treats a read error as the end of
//!   the transport): every call still waiting on it fails at once, and the session,
//!   no longer connected, is retired by its owner (the pool or the job).
//! - [`AnswerLimit::tripped`] says so, so the caller reports `result_too_large` naming
//!   the limit instead of a vague closed connection.
//!
//! The limit is `queue.max_result`: an answer bigger than a whole job's result cannot
//! be stored anyway.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

/// The limit on one message from a server, and whether a message went past it.
#[derive(Debug, Clone)]
pub struct AnswerLimit {
    /// Largest line (one JSON-RPC message) in bytes, newline excluded.
    pub bytes: usize,
    tripped: Arc<AtomicBool>,
}

impl AnswerLimit {
    /// A limit of `bytes` per message.
    pub fn new(bytes: usize) -> Self {
        AnswerLimit {
            bytes,
            tripped: Arc::default(),
        }
    }

    /// True once the server sent a message longer than the limit (the stream is then
    /// closed).
    pub fn tripped(&self) -> bool {
        self.tripped.load(Ordering::SeqCst)
    }

    /// Marks the limit as exceeded (an HTTP body over it).
    pub fn trip(&self) {
        self.tripped.store(true, Ordering::SeqCst);
    }
}

/// An [`AsyncRead`] that fails, for good, when a line grows past its [`AnswerLimit`].
#[derive(Debug)]
pub struct LimitedLines<R> {
    inner: R,
    limit: AnswerLimit,
    /// Bytes of the current (unfinished) line handed on so far.
    line: usize,
}

impl<R> LimitedLines<R> {
    /// Wraps `inner` (a server's stdout).
    pub fn new(inner: R, limit: AnswerLimit) -> Self {
        LimitedLines {
            inner,
            limit,
            line: 0,
        }
    }

    fn too_long(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the server sent a message of more than {} bytes (queue.max_result); the session is closed",
                self.limit.bytes
            ),
        )
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for LimitedLines<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.limit.tripped() {
            return Poll::Ready(Err(this.too_long()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        let mut line = this.line;
        let mut over = false;
        for chunk in buf.filled()[before..].split_inclusive(|b| *b == b'\n') {
            let ends = chunk.last() == Some(&b'\n');
            let len = chunk.len() - usize::from(ends);
            line = line.saturating_add(len);
            if line > this.limit.bytes {
                over = true;
                break;
            }
            if ends {
                line = 0;
            }
        }
        if over {
            // Hand on nothing of this read: rmcp never holds more than the limit.
            buf.set_filled(before);
            this.limit.trip();
            return Poll::Ready(Err(this.too_long()));
        }
        this.line = line;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn lines_within_the_limit_pass_and_a_longer_one_fails_the_stream() {
        let data = b"12345\n1234567890\nabc\n".to_vec();
        let limit = AnswerLimit::new(10);
        let mut ok = LimitedLines::new(&data[..], limit.clone());
        let mut out = Vec::new();
        ok.read_to_end(&mut out).await.expect("every line fits");
        assert_eq!(out, data);
        assert!(!limit.tripped());

        let long = b"12345\n12345678901\nabc\n".to_vec();
        let limit = AnswerLimit::new(10);
        let mut reader = LimitedLines::new(&long[..], limit.clone());
        let err = reader
            .read_to_end(&mut Vec::new())
            .await
            .expect_err("an 11-byte line");
        assert!(err.to_string().contains("more than 10 bytes"), "{err}");
        assert!(limit.tripped());
        // And it stays failed.
        assert!(reader.read(&mut [0u8; 4]).await.is_err());
    }

    #[tokio::test]
    async fn a_line_split_over_many_reads_is_counted_whole() {
        let (mut tx, rx) = tokio::io::duplex(4);
        let limit = AnswerLimit::new(8);
        let mut reader = LimitedLines::new(rx, limit.clone());
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let _ = tx.write_all(b"abcdefgh\nabcdefghi\n").await;
        });
        let err = reader
            .read_to_end(&mut Vec::new())
            .await
            .expect_err("9 bytes");
        assert!(limit.tripped(), "{err}");
        writer.abort();
    }
}
