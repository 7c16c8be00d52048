//! A batch's input: JSON lines, checked whole in a first pass, enqueued in a second.
//! Shared by `mcpq batch submit` and `POST /v1/batches`, so both apply the same rules.
//!
//! The rules of a line: one job envelope with no `id` (the batch gives its jobs their
//! ids, derived from its own: a line the queue could skip as "known" would leave its
//! batch waiting for ever) and no `options.idempotency_key` (a key names the whole
//! batch); servers the config knows; at most `queue.max_payload` bytes. Blank lines are
//! skipped; a UTF-8 BOM is ignored.
//!
//! Guarantees:
//! - Memory stays bounded whatever the input's size: a line is read with a cap
//!   ([`Lines`]), and at most two chunks of jobs are held at once (one parsed while the
//!   one before is in Redis), each at most [`BATCH`] jobs or [`CHUNK_BYTES`].
//! - The second pass enqueues no more jobs than the first counted, and the same lines:
//!   the input must not change between passes (callers spool it to a private file).
//! - [`Fingerprint`] tells a re-run with the same idempotency key whether it reads the
//!   same jobs.

use std::collections::BTreeSet;
use std::io::BufRead;

use super::enqueue::{Producer, Submitted, BATCH};
use super::QueueError;
use crate::job::{Job, JobId};
use crate::lines::{Line, Lines};

/// A chunk is sent once its jobs' lines add up to this many bytes, even below [`BATCH`]
/// jobs (one script call stays far below Redis's 1 GB query buffer).
pub const CHUNK_BYTES: usize = 8 << 20;

/// What a line must satisfy besides being a job.
#[derive(Debug, Clone)]
pub struct LineRules {
    /// The servers a job may name.
    pub servers: BTreeSet<String>,
    /// `queue.max_payload`.
    pub max_payload: usize,
}

impl LineRules {
    /// A line as a batch's job with id `id`, or why it is not one.
    pub fn job(&self, text: &[u8], id: JobId) -> Result<Job, String> {
        let text = text.strip_prefix(b"\xef\xbb\xbf").unwrap_or(text); // a UTF-8 BOM
        let job = Job::from_json_or_id(text, id).map_err(|e| e.to_string())?;
        if job.id != id {
            return Err("a batch's jobs get their ids from the batch: leave `id` out".to_string());
        }
        if job.options.idempotency_key.is_some() {
            return Err(
                "leave options.idempotency_key out: an idempotency key names the whole batch"
                    .to_string(),
            );
        }
        self.check(job)
    }

    /// A parsed job checked against the config: its servers and its size.
    pub fn check(&self, job: Job) -> Result<Job, String> {
        job.check_servers(self.servers.iter().map(String::as_str))
            .map_err(|e| e.to_string())?;
        let size = job.to_json().len();
        if size > self.max_payload {
            return Err(format!(
                "the job is {size} bytes; the limit (queue.max_payload) is {}",
                self.max_payload
            ));
        }
        Ok(job)
    }
}

/// FNV-1a, 64 bits: the fingerprint of a batch's input (not a defence against anyone,
/// only a check that a re-run with the same key reads the same jobs).
#[derive(Debug, Clone, Copy)]
pub struct Fingerprint(u64);

impl Default for Fingerprint {
    fn default() -> Self {
        Fingerprint(0xcbf2_9ce4_8422_2325)
    }
}

impl Fingerprint {
    /// Adds one line (and its end).
    pub fn add(&mut self, bytes: &[u8]) {
        for b in bytes.iter().chain(std::iter::once(&b'\n')) {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// As stored with the batch.
    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

/// What the first pass found.
#[derive(Debug, Clone, Copy, Default)]
pub struct Checked {
    /// Lines that are jobs.
    pub valid: u64,
    /// Lines that are not.
    pub invalid: u64,
    /// The valid lines' fingerprint.
    pub fingerprint: Fingerprint,
}

/// First pass: every line checked; `report(line number, problem)` for each bad one;
/// nothing kept but counts.
pub fn check_lines<R: BufRead>(
    lines: &mut Lines<R>,
    rules: &LineRules,
    mut report: impl FnMut(u64, &str),
) -> std::io::Result<Checked> {
    let mut checked = Checked::default();
    // The ids a batch would give; only their absence from the line is checked here.
    let placeholder = JobId::generate();
    while let Some((number, line)) = lines.next_line()? {
        let problem = match &line {
            Line::TooLong => Some(format!(
                "the line is longer than queue.max_payload ({} bytes)",
                rules.max_payload
            )),
            Line::Text(text) if text.iter().all(u8::is_ascii_whitespace) => continue,
            Line::Text(text) => rules.job(text, placeholder.nth_member(checked.valid)).err(),
        };
        match (problem, line) {
            (Some(problem), _) => {
                checked.invalid += 1;
                report(number, &problem);
            }
            (None, Line::Text(text)) => {
                checked.valid += 1;
                checked.fingerprint.add(&text);
            }
            (None, Line::TooLong) => {}
        }
    }
    Ok(checked)
}

/// What the second pass did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Enqueued {
    /// Jobs enqueued now.
    pub created: u64,
    /// Jobs already there (a re-run of the same batch).
    pub existing: u64,
    /// Jobs an earlier job's idempotency key stood for.
    pub deduplicated: u64,
}

impl Enqueued {
    fn count(&mut self, answers: &[Submitted]) {
        for a in answers {
            if a.created {
                self.created += 1;
            } else if a.duplicate_id {
                self.existing += 1;
            } else {
                self.deduplicated += 1;
            }
        }
    }
}

/// Why the second pass stopped.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    /// The input could not be read.
    #[error("cannot read the input: {0}")]
    Read(#[from] std::io::Error),
    /// Redis failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// A chunk's task died (a bug).
    #[error("enqueueing a chunk failed: {0}")]
    Task(String),
}

/// A chunk being enqueued while the next is parsed.
type InFlight = tokio::task::JoinHandle<Result<Vec<Submitted>, QueueError>>;

/// Waits for the chunk in flight, if any, and counts its answers.
async fn settle(
    in_flight: Option<InFlight>,
    done: &mut Enqueued,
    progress: &mut impl FnMut(u64),
) -> Result<(), EnqueueError> {
    if let Some(chunk) = in_flight {
        let answers = chunk
            .await
            .map_err(|e| EnqueueError::Task(e.to_string()))??;
        done.count(&answers);
        progress(answers.len() as u64);
    }
    Ok(())
}

/// Second pass: the valid lines as jobs of batch `batch_id` (member ids from
/// `member_base`), at most `total`, a chunk in Redis while the next is parsed;
/// `progress(n)` after each chunk. Reads `lines` with blocking I/O: a server runs this
/// on a blocking thread.
pub async fn enqueue_lines<R: BufRead>(
    producer: &Producer,
    lines: &mut Lines<R>,
    rules: &LineRules,
    batch_id: &str,
    member_base: JobId,
    total: u64,
    mut progress: impl FnMut(u64),
) -> Result<Enqueued, EnqueueError> {
    let mut done = Enqueued::default();
    let mut ordinal = 0u64;
    let mut chunk: Vec<(Job, u64)> = Vec::with_capacity(BATCH);
    let mut chunk_bytes = 0usize;
    let mut in_flight: Option<InFlight> = None;
    loop {
        let next = lines.next_line()?;
        if let Some((number, Line::Text(text))) = &next {
            if text.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            // Lines that failed the first pass fail again and are skipped (skip
            // invalid); the spooled copy cannot change, and no more than `total` are
            // enqueued.
            if ordinal < total {
                if let Ok(job) = rules.job(text, member_base.nth_member(ordinal)) {
                    ordinal += 1;
                    chunk_bytes += text.len();
                    chunk.push((job, *number));
                }
            }
        }
        if chunk.len() == BATCH
            || chunk_bytes >= CHUNK_BYTES
            || (next.is_none() && !chunk.is_empty())
        {
            chunk_bytes = 0;
            settle(in_flight.take(), &mut done, &mut progress).await?;
            let jobs = std::mem::replace(&mut chunk, Vec::with_capacity(BATCH));
            let producer = producer.clone();
            let batch_id = batch_id.to_string();
            in_flight = Some(tokio::spawn(async move {
                producer.submit_to_batch(&batch_id, &jobs).await
            }));
        }
        if next.is_none() {
            break;
        }
    }
    settle(in_flight.take(), &mut done, &mut progress).await?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_tells_inputs_apart() {
        let of = |lines: &[&[u8]]| {
            let mut f = Fingerprint::default();
            for l in lines {
                f.add(l);
            }
            f.hex()
        };
        assert_eq!(of(&[b"a", b"b"]), of(&[b"a", b"b"]));
        assert_ne!(of(&[b"a", b"b"]), of(&[b"b", b"a"]));
        assert_ne!(of(&[b"ab"]), of(&[b"a", b"b"]));
    }

    #[test]
    fn a_line_with_an_id_or_a_key_or_an_unknown_server_is_refused() {
        let rules = LineRules {
            servers: ["echo".to_string()].into(),
            max_payload: 1 << 20,
        };
        let id = JobId::generate();
        let ok = br#"{"kind":"agent","payload":{"steps":[{"server":"echo","tool":"t","arguments":{}}]}}"#;
        assert!(rules.job(ok, id).is_ok());
        let with_id = br#"{"id":"01JDX6Q6T3N7Z8YV1K0W2M4C5B","kind":"agent","payload":{"steps":[{"server":"echo","tool":"t","arguments":{}}]}}"#;
        assert!(rules.job(with_id, id).is_err());
        let keyed = br#"{"kind":"agent","payload":{"steps":[{"server":"echo","tool":"t","arguments":{}}]},"options":{"idempotency_key":"k"}}"#;
        assert!(rules.job(keyed, id).is_err());
        let other = br#"{"kind":"agent","payload":{"steps":[{"server":"nope","tool":"t","arguments":{}}]}}"#;
        assert!(rules.job(other, id).is_err());
    }
}
