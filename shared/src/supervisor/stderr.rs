//! Draining a server's stderr: always read, never shared, never blocking.
//!
//! A child's stderr is its own pipe. One task per child reads it until EOF, forwards each
//! line to `tracing` at debug level (with the server name), and keeps the last
//! [`TAIL_CAPACITY`] bytes in a ring buffer that errors quote. A server that writes
//! 100 MB to stderr costs copies, never a blocked child: the reader does not wait on
//! anything but the pipe.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes of stderr kept per server.
pub const TAIL_CAPACITY: usize = 64 * 1024;

/// Bytes of the tail quoted in a job error (the most recent ones).
pub const TAIL_IN_ERRORS: usize = 8 * 1024;

/// The last bytes a server wrote to stderr. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct StderrTail {
    inner: Arc<Mutex<Tail>>,
}

#[derive(Debug, Default)]
struct Tail {
    bytes: VecDeque<u8>,
    total: u64,
    closed: bool,
}

impl StderrTail {
    fn push(&self, chunk: &[u8]) {
        let mut tail = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        tail.total += chunk.len() as u64;
        let chunk = &chunk[chunk.len().saturating_sub(TAIL_CAPACITY)..];
        let overflow = (tail.bytes.len() + chunk.len()).saturating_sub(TAIL_CAPACITY);
        tail.bytes.drain(..overflow);
        tail.bytes.extend(chunk);
    }

    fn close(&self) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
    }

    /// True once the child closed its stderr (usually: it exited).
    pub fn is_closed(&self) -> bool {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).closed
    }

    /// Waits up to `within` for the child's stderr to reach EOF, so that a tail read
    /// after the child exited includes its last words. Bounded: a grandchild may keep
    /// the pipe open after the child is gone.
    pub async fn wait_closed(&self, within: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while !self.is_closed() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        true
    }

    /// Total bytes read so far.
    pub fn total_bytes(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).total
    }

    /// The last `max` bytes as text (lossy UTF-8), starting at a line boundary when one
    /// is near, with a note of how much came before.
    pub fn text(&self, max: usize) -> String {
        let tail = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let start = tail.bytes.len().saturating_sub(max);
        let bytes: Vec<u8> = tail.bytes.iter().skip(start).copied().collect();
        let omitted = tail.total - bytes.len() as u64;
        drop(tail);
        let mut text = String::from_utf8_lossy(&bytes).into_owned();
        if omitted > 0 {
            if let Some(nl) = text.find('\n').filter(|&i| i < 200) {
                text.drain(..=nl);
            }
            text = format!("[{omitted} earlier bytes omitted]\n{text}");
        }
        text
    }

    /// [`StderrTail::text`] with [`TAIL_IN_ERRORS`] bytes, or `None` when empty.
    pub fn for_error(&self) -> Option<String> {
        let text = self.text(TAIL_IN_ERRORS);
        (!text.trim().is_empty()).then_some(text)
    }
}

/// Starts the task that drains `stderr` until EOF.
pub(crate) fn drain(
    server: String,
    pid: u32,
    mut stderr: impl AsyncRead + Unpin + Send + 'static,
) -> StderrTail {
    let tail = StderrTail::default();
    let out = tail.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        let mut line = Vec::new();
        loop {
            match stderr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    tail.push(&buf[..n]);
                    if tracing::enabled!(tracing::Level::DEBUG) {
                        for &b in &buf[..n] {
                            if b == b'\n' || line.len() >= 4096 {
                                tracing::debug!(server = %server, pid, "stderr: {}", String::from_utf8_lossy(&line));
                                line.clear();
                            } else {
                                line.push(b);
                            }
                        }
                    }
                }
            }
        }
        if !line.is_empty() {
            tracing::debug!(server = %server, pid, "stderr: {}", String::from_utf8_lossy(&line));
        }
        tail.close();
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_last_bytes() {
        let t = StderrTail::default();
        for i in 0..10_000 {
            t.push(format!("line {i}\n").as_bytes());
        }
        assert_eq!(
            t.total_bytes(),
            (0..10_000)
                .map(|i| format!("line {i}\n").len() as u64)
                .sum::<u64>()
        );
        let text = t.text(100);
        assert!(text.ends_with("line 9999\n"), "{text}");
        assert!(text.starts_with('['), "{text}");
        assert!(t.inner.lock().expect("lock").bytes.len() <= TAIL_CAPACITY);
    }

    #[test]
    fn a_huge_chunk_keeps_its_end() {
        let t = StderrTail::default();
        let mut big = vec![b'x'; TAIL_CAPACITY * 3];
        big.extend_from_slice(b"END");
        t.push(&big);
        assert!(t.text(10).ends_with("END"));
        assert_eq!(t.inner.lock().expect("lock").bytes.len(), TAIL_CAPACITY);
    }

    #[test]
    fn empty_tail_is_none() {
        assert_eq!(StderrTail::default().for_error(), None);
    }
}
