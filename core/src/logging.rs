//! The binaries' logging (`mcpq-worker`, `mcpq-serve`; feature `logging`): never blocks
//! the runtime, and says what it had to drop.
//!
//! Each log line is formatted by `tracing-subscriber` on the thread that logs it, then
//! handed to [`LogSink`]: a bounded queue ([`BUFFERED_LINES`]) drained by one dedicated
//! thread that writes to stderr. Logging is a `try_send`: if whatever reads our stderr
//! stops reading, the writer thread blocks, the queue fills, and further lines are
//! dropped and counted instead of stalling jobs. As soon as the sink accepts a write
//! again, the writer thread itself reports how many lines were dropped. Every dropped
//! line is also counted in `mcpq_log_lines_dropped_total` once the worker's metrics
//! exist ([`LogGuard::count_drops_in`]).
//!
//! MCP servers never write to this stream: each has its own stderr pipe (the worker's
//! supervisor).
//!
//! What goes in a line comes partly from outside (a tool's error text, a server's
//! stderr, a model's answer), so:
//! - in the text format every field and message has its control characters escaped
//!   (`\n`, `\r`, `\t`, `\u{1b}`...; [`escape_control`]): one event is always one
//!   line, and a message cannot forge a line of its own or drive the terminal. The JSON
//!   format escapes them already;
//! - once the config is loaded ([`LogGuard::set_redactor`]), every line, in both
//!   formats, goes through the binary's [`Redact`] (the worker's replaces the secrets it
//!   read by `[REDACTED]`).
//!
//! Why not `tracing-appender`'s non-blocking lossy writer (weighed for issue #12): it
//! counts only the lines dropped at a full queue, swallows a failed write to stderr
//! without counting it, and says nothing when the output recovers. Keeping our "dropped
//! N lines" report on top of it would take a writer around stderr that shares the
//! appender's counter (which exists only once the appender owns that writer) and
//! remembers what it already reported, plus the redacting writer in front: as much code
//! as the queue below, two more crates (tracing-appender, crossbeam-channel), and no
//! simpler test. So the queue stays.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};

use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{DefaultFields, Writer};
use tracing_subscriber::fmt::{FormatFields, MakeWriter};
use tracing_subscriber::EnvFilter;

/// Lines held while the sink is slow; past that, lines are dropped (and counted).
pub const BUFFERED_LINES: usize = 16 * 1024;

/// What a binary removes from every log line before it is written (secrets).
pub trait Redact: Send + Sync {
    /// `line` with what must not be logged replaced.
    fn redact<'a>(&self, line: &'a [u8]) -> std::borrow::Cow<'a, [u8]>;
}

/// Called once per dropped line (a metric's counter).
type DropCounter = Box<dyn Fn() + Send + Sync>;

/// Output format of log lines.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Lines dropped: those not yet reported in the log, and the metric of all of them.
#[derive(Default)]
struct Drops {
    /// Dropped since the last "dropped N log lines" note.
    pending: AtomicU64,
    /// Every drop, once the binary's metrics exist.
    total: OnceLock<DropCounter>,
}

impl Drops {
    fn one(&self) {
        self.pending.fetch_add(1, Ordering::Relaxed);
        if let Some(total) = self.total.get() {
            total();
        }
    }
}

/// The sending side; cheap to clone, never blocks.
#[derive(Clone)]
pub struct LogSink {
    tx: SyncSender<Vec<u8>>,
    dropped: Arc<Drops>,
    redactor: Arc<OnceLock<Arc<dyn Redact>>>,
}

impl Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let line = match self.redactor.get() {
            Some(redactor) => redactor.redact(buf).into_owned(),
            None => buf.to_vec(),
        };
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.one();
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
    redactor: Arc<OnceLock<Arc<dyn Redact>>>,
    dropped: Arc<Drops>,
}

impl LogGuard {
    /// From now on, every line has `redactor`'s secrets replaced (set once, when the
    /// config is loaded; a second call changes nothing).
    pub fn set_redactor(&self, redactor: Arc<dyn Redact>) {
        let _ = self.redactor.set(redactor);
    }

    /// From now on, every dropped line also calls `count` (a metric such as the worker's
    /// `mcpq_log_lines_dropped_total`; set once, a second call changes nothing).
    pub fn count_drops_with(&self, count: impl Fn() + Send + Sync + 'static) {
        let _ = self.dropped.total.set(Box::new(count));
    }
}

/// `text` with every control character escaped: `\n`, `\r`, `\t`, others (ESC, DEL,
/// C1, the Unicode line and paragraph separators) as `\u{..}`.
pub fn escape_control(text: &str) -> std::borrow::Cow<'_, str> {
    let needs = |c: char| c.is_control() || c == '\u{2028}' || c == '\u{2029}';
    if !text.chars().any(needs) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The text format's fields: tracing-subscriber's default layout, with control
/// characters escaped ([`escape_control`]).
struct EscapedFields;

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> std::fmt::Result {
        let mut raw = String::new();
        DefaultFields::new().format_fields(Writer::new(&mut raw), fields)?;
        writer.write_str(&escape_control(&raw))
    }
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

fn writer_thread(
    program: &'static str,
    rx: Receiver<Vec<u8>>,
    dropped: Arc<Drops>,
    mut out: impl Write,
) {
    while let Ok(line) = rx.recv() {
        if out.write_all(&line).is_err() {
            // The sink is gone (closed pipe): count, keep draining so senders never block.
            dropped.one();
            continue;
        }
        // The sink accepted a write: it has recovered, so say what was lost meanwhile.
        let lost = dropped.pending.swap(0, Ordering::Relaxed);
        if lost > 0 {
            let note =
                format!("{program}: dropped {lost} log lines while the log output was blocked\n");
            if out.write_all(note.as_bytes()).is_err() {
                // Counted in the total already: only the note is owed again.
                dropped.pending.fetch_add(lost, Ordering::Relaxed);
            }
        }
        let _ = out.flush();
    }
}

/// Installs the global subscriber for `program` (named in the "dropped N lines" note),
/// filtered by `MCPQ_LOG` or `RUST_LOG`, else by `default_filter`. Keep the guard alive
/// until exit.
pub fn init(program: &'static str, format: LogFormat, default_filter: &str) -> LogGuard {
    let (tx, rx) = sync_channel::<Vec<u8>>(BUFFERED_LINES);
    let dropped = Arc::new(Drops::default());
    let thread_dropped = dropped.clone();
    let thread = std::thread::Builder::new()
        .name("mcpq-log-writer".to_string())
        .spawn(move || writer_thread(program, rx, thread_dropped, std::io::stderr()))
        .ok();
    let redactor: Arc<OnceLock<Arc<dyn Redact>>> = Arc::default();
    let sink = LogSink {
        tx: tx.clone(),
        dropped: dropped.clone(),
        redactor: redactor.clone(),
    };
    let filter = EnvFilter::try_from_env("MCPQ_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new(default_filter));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(sink)
        .with_ansi(ansi)
        .with_target(false);
    match format {
        LogFormat::Text => builder.fmt_fields(EscapedFields).init(),
        LogFormat::Json => builder.json().init(),
    }
    LogGuard {
        tx: Some(tx),
        thread,
        redactor,
        dropped,
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
    fn control_characters_are_escaped_so_a_message_stays_on_one_line() {
        let forged = "boom\n2026-01-01T00:00:00Z  INFO job succeeded job=FORGED\r\u{1b}]0;x\u{7}";
        let escaped = escape_control(forged);
        assert!(!escaped.contains('\n') && !escaped.contains('\r') && !escaped.contains('\u{1b}'));
        assert_eq!(
            escaped,
            "boom\\n2026-01-01T00:00:00Z  INFO job succeeded job=FORGED\\r\\u{1b}]0;x\\u{7}"
        );
        assert!(matches!(
            escape_control("plain"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn a_blocked_sink_drops_lines_without_blocking_and_reports_them_on_recovery() {
        let (tx, rx) = sync_channel::<Vec<u8>>(4);
        let dropped = Arc::new(Drops::default());
        let total = Arc::new(AtomicU64::new(0));
        let counted = total.clone();
        let _ = dropped.total.set(Box::new(move || {
            counted.fetch_add(1, Ordering::Relaxed);
        }));
        let open = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let out = Arc::new(std::sync::Mutex::new(Vec::new()));
        let gate = Gate {
            open: open.clone(),
            out: out.clone(),
        };
        let d = dropped.clone();
        let thread = std::thread::spawn(move || writer_thread("test", rx, d, gate));
        let mut sink = LogSink {
            tx,
            dropped,
            redactor: Arc::default(),
        };
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
        assert_eq!(
            total.load(Ordering::Relaxed),
            (100 - kept) as u64,
            "the metric counts every drop"
        );
        assert!(text.contains("after recovery"));
    }
}
