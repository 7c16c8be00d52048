//! The worker's logging: never blocks the runtime, and says what it had to drop.
//!
//! Each log line is formatted by `tracing-subscriber` on the thread that logs it, then
//! handed to [`LogSink`]: a bounded queue ([`BUFFERED_LINES`]) drained by one dedicated
//! thread that writes to stderr. Logging is a `try_send`: if whatever reads our stderr
//! stops reading, the writer thread blocks, the queue fills, and further lines are
//! dropped and counted instead of stalling jobs. As soon as the sink accepts a write
//! again, the writer thread itself reports how many lines were dropped.
//!
//! MCP servers never write to this stream: each has its own stderr pipe (supervisor).

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// Lines held while the sink is slow; past that, lines are dropped (and counted).
pub const BUFFERED_LINES: usize = 16 * 1024;

/// Output format of log lines.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The sending side; cheap to clone, never blocks.
#[derive(Clone)]
pub struct LogSink {
    tx: SyncSender<Vec<u8>>,
    dropped: Arc<AtomicU64>,
}

impl Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.tx.try_send(buf.to_vec()) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogSink {
    type Writer = LogSink;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Keeps the writer thread's queue open; on drop, flushes what is queued (bounded wait).
pub struct LogGuard {
    tx: Option<SyncSender<Vec<u8>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        // Closing our sender lets the thread end once the queue is empty. Other senders
        // live in the global subscriber, so only wait a moment for the queue to drain.
        self.tx.take();
        if let Some(thread) = self.thread.take() {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
            while !thread.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
}

fn writer_thread(rx: Receiver<Vec<u8>>, dropped: Arc<AtomicU64>, mut out: impl Write) {
    while let Ok(line) = rx.recv() {
        if out.write_all(&line).is_err() {
            // The sink is gone (closed pipe): count, keep draining so senders never block.
            dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        // The sink accepted a write: it has recovered, so say what was lost meanwhile.
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            let note =
                format!("mcpq-worker: dropped {lost} log lines while the log output was blocked\n");
            if out.write_all(note.as_bytes()).is_err() {
                dropped.fetch_add(lost, Ordering::Relaxed);
            }
        }
        let _ = out.flush();
    }
}

/// Installs the global subscriber. Keep the guard alive until exit.
pub fn init(format: LogFormat) -> LogGuard {
    let (tx, rx) = sync_channel::<Vec<u8>>(BUFFERED_LINES);
    let dropped = Arc::new(AtomicU64::new(0));
    let thread_dropped = dropped.clone();
    let thread = std::thread::Builder::new()
        .name("mcpq-log-writer".to_string())
        .spawn(move || writer_thread(rx, thread_dropped, std::io::stderr()))
        .ok();
    let sink = LogSink {
        tx: tx.clone(),
        dropped,
    };
    let filter = EnvFilter::try_from_env("MCPQ_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| {
            EnvFilter::new("info,apalis=warn,apalis_core=warn,apalis_redis=warn,rmcp=warn")
        });
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(sink)
        .with_ansi(ansi)
        .with_target(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    LogGuard {
        tx: Some(tx),
        thread,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that refuses writes until `open` is set, like a pipe nobody reads.
    struct Gate {
        open: Arc<std::sync::atomic::AtomicBool>,
        out: Arc<std::sync::Mutex<Vec<u8>>>,
    }

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            while !self.open.load(Ordering::SeqCst) {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            self.out.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_blocked_sink_drops_lines_without_blocking_and_reports_them_on_recovery() {
        let (tx, rx) = sync_channel::<Vec<u8>>(4);
        let dropped = Arc::new(AtomicU64::new(0));
        let open = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let out = Arc::new(std::sync::Mutex::new(Vec::new()));
        let gate = Gate {
            open: open.clone(),
            out: out.clone(),
        };
        let d = dropped.clone();
        let thread = std::thread::spawn(move || writer_thread(rx, d, gate));
        let mut sink = LogSink { tx, dropped };
        for i in 0..100 {
            // Never blocks, although nothing is being written.
            sink.write_all(format!("line {i}\n").as_bytes())
                .expect("write");
        }
        open.store(true, Ordering::SeqCst);
        // Let the writer thread drain the queue before the next line.
        std::thread::sleep(std::time::Duration::from_millis(200));
        sink.write_all(b"after recovery\n").expect("write");
        drop(sink);
        thread.join().expect("writer thread");
        let text = String::from_utf8(out.lock().expect("lock").clone()).expect("utf8");
        let kept = text.lines().filter(|l| l.starts_with("line ")).count();
        assert!(kept <= 5, "{text}");
        let expected = format!("dropped {} log lines", 100 - kept);
        assert!(text.contains(&expected), "expected {expected:?} in {text}");
        assert!(text.contains("after recovery"));
    }
}
