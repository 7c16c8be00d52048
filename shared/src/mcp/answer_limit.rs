//! `AnswerLimit`: the largest message a stdio MCP server may send us.
//!
//! rmcp reads a stdio server line by line and, past its own cap (16 MiB), drops the
//! line with a log message and keeps the connection open: the caller waiting for that
//! answer is never told and waits out its whole `call_timeout`, and the job is then
//! retried into the same wall. [`LimitedLines`] sits between the server's stdout and
//! rmcp and counts the bytes of the line being read. Guarantees:
//! - No line longer than the limit ever reaches rmcp: rmcp gets at most the limit's
//!   worth of it, cut by a newline (it ignores a line that is not JSON), so it never
//!   buffers more than the limit.
//! - The rest of the line is read and thrown away (at most [`DISCARD_MAX`] of it:
//!   meanwhile the session's other answers wait behind it), keeping its first and
//!   last [`ENDS`] bytes. When the line ends and it is an answer (`result` or `error`,
//!   no `method`) whose JSON-RPC `id` is found there (`{"jsonrpc":"2.0","id":7,
//!   "result":...` as rmcp writes it, or `{"result":...,"jsonrpc":"2.0","id":7}` as
//!   the TypeScript SDK does), rmcp is handed a JSON-RPC error for that id instead
//!   ([`DISCARDED_CODE`], marked with this session's [`AnswerLimit::is_ours`] token):
//!   only the call it answered fails (`result_too_large`), and the session, and the
//!   other calls multiplexed on it, go on.
//! - A request or notification from the server (a top-level `method`) that long is
//!   dropped: nobody waits for it.
//! - A line that cannot be told apart (no findable `id`, an unusual member order),
//!   that ends with the stream, or that goes past [`DISCARD_MAX`] ends the session's
//!   stream instead: every call still waiting on it fails at once and the session, no
//!   longer connected, is retired by its owner (the pool or the job).
//!   [`AnswerLimit::culprit`] tells a call whether it was the only request in flight
//!   (so the one answered: `result_too_large`) or one of several, counting requests
//!   given up before their answer came (then it may be innocent, and is retried).
//!
//! The limit is `queue.max_result`: an answer bigger than a whole job's result cannot
//! be stored anyway.

use std::hash::{BuildHasher, Hasher};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

/// The JSON-RPC error code of the answer put in place of a discarded one (in the range
/// JSON-RPC leaves to implementations).
pub const DISCARDED_CODE: i32 = -32_097;

/// The most of one oversized line read and thrown away (past the limit) before the
/// stream is ended instead: a server streaming one endless line cannot keep the
/// session (and the calls behind it) busy for ever.
pub const DISCARD_MAX: u64 = 1 << 30;

/// How many bytes of each end of an oversized line are kept to find its `id`.
pub const ENDS: usize = 256;

/// The limit on one message from a server, and what went past it.
#[derive(Debug, Clone)]
pub struct AnswerLimit {
    /// Largest line (one JSON-RPC message) in bytes, newline excluded.
    pub bytes: usize,
    state: Arc<LimitState>,
}

#[derive(Debug, Default)]
struct LimitState {
    /// A message past the limit ended the stream, or an HTTP body went past it.
    tripped: AtomicBool,
    /// A message past the limit ended the (stdio) stream.
    stream_ended: AtomicBool,
    /// Requests sent and not yet answered.
    in_flight: AtomicUsize,
    /// Requests given up (timeout, cancel) before their answer came: it may still.
    abandoned: AtomicUsize,
    /// The next request's number.
    next: AtomicU64,
    /// `in_flight + abandoned` when the stream was ended, and `next` then.
    tripped_with: AtomicUsize,
    trip_seq: AtomicU64,
    /// Oversized answers replaced by an error for their call.
    discarded: AtomicU64,
    /// Marks the errors put in place of oversized answers (a server cannot guess it).
    token: u64,
}

/// A request counted as in flight on a session until dropped (as given up, unless
/// [`InFlight::answered`] was called).
#[derive(Debug)]
pub struct InFlight {
    state: Arc<LimitState>,
    seq: u64,
    answered: bool,
}

impl InFlight {
    /// The server answered the request (a result or a JSON-RPC error).
    pub fn answered(&mut self) {
        self.answered = true;
    }

    /// The request's number, for [`AnswerLimit::culprit`].
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.answered {
            self.state.abandoned.fetch_add(1, Ordering::SeqCst);
        }
        self.state.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl AnswerLimit {
    /// A limit of `bytes` per message.
    pub fn new(bytes: usize) -> Self {
        let token = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        AnswerLimit {
            bytes,
            state: Arc::new(LimitState {
                token,
                ..Default::default()
            }),
        }
    }

    /// True once a message past the limit ended the stream (stdio), or an HTTP body
    /// went past it.
    pub fn tripped(&self) -> bool {
        self.state.tripped.load(Ordering::SeqCst)
    }

    /// Marks the limit as exceeded (an HTTP body over it: the call it answered fails).
    pub fn trip(&self) {
        self.state.tripped.store(true, Ordering::SeqCst);
    }

    /// True once a message past the limit ended the (stdio) stream.
    pub fn stream_ended(&self) -> bool {
        self.state.stream_ended.load(Ordering::SeqCst)
    }

    /// True when request `seq` was sent before the stream was ended and was then the
    /// only request that could still be answered (none other in flight or given up):
    /// the oversized message was its answer.
    pub fn culprit(&self, seq: u64) -> bool {
        self.stream_ended()
            && self.state.tripped_with.load(Ordering::SeqCst) == 1
            && seq < self.state.trip_seq.load(Ordering::SeqCst)
    }

    /// How many oversized answers were thrown away and replaced by an error with
    /// [`DISCARDED_CODE`] for their call (the session went on).
    pub fn discarded(&self) -> u64 {
        self.state.discarded.load(Ordering::SeqCst)
    }

    /// True when a JSON-RPC error's `data` is this session's mark: it was put in place
    /// of an oversized answer here, not sent by the server.
    pub fn is_ours(&self, data: Option<&serde_json::Value>) -> bool {
        data.and_then(|d| d.get("mcpq_discarded"))
            .and_then(serde_json::Value::as_u64)
            == Some(self.state.token)
    }

    /// Counts a request as in flight until the guard is dropped.
    pub fn request(&self) -> InFlight {
        self.state.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight {
            seq: self.state.next.fetch_add(1, Ordering::SeqCst),
            state: self.state.clone(),
            answered: false,
        }
    }

    /// Ends the stream: notes how many requests it may have cut off.
    fn trip_stream(&self) {
        let st = &self.state;
        st.trip_seq
            .store(st.next.load(Ordering::SeqCst), Ordering::SeqCst);
        let n = st.in_flight.load(Ordering::SeqCst) + st.abandoned.load(Ordering::SeqCst);
        st.tripped_with.store(n, Ordering::SeqCst);
        st.stream_ended.store(true, Ordering::SeqCst);
        self.trip();
    }
}

/// An [`AsyncRead`] that cuts lines longer than its [`AnswerLimit`] out of a server's
/// stdout (see the module's docs).
#[derive(Debug)]
pub struct LimitedLines<R> {
    inner: R,
    limit: AnswerLimit,
    /// Bytes of the current (unfinished) line handed on so far.
    line: usize,
    /// The first [`ENDS`] bytes of the current line.
    head: Vec<u8>,
    /// While an oversized line is being thrown away: its last bytes and its length.
    discarding: Option<Discard>,
    /// Bytes read but not looked at yet (after the end of a discarded line).
    unread: Vec<u8>,
    /// Bytes to hand on before anything else (a newline, an error answer).
    out: Vec<u8>,
}

#[derive(Debug, Default)]
struct Discard {
    tail: Vec<u8>,
    skipped: u64,
}

impl Discard {
    fn take(&mut self, bytes: &[u8]) {
        self.skipped = self.skipped.saturating_add(bytes.len() as u64);
        if bytes.len() >= ENDS {
            self.tail.clear();
            self.tail.extend_from_slice(&bytes[bytes.len() - ENDS..]);
        } else {
            self.tail.extend_from_slice(bytes);
            let extra = self.tail.len().saturating_sub(ENDS);
            self.tail.drain(..extra);
        }
    }
}

impl<R> LimitedLines<R> {
    /// Wraps `inner` (a server's stdout).
    pub fn new(inner: R, limit: AnswerLimit) -> Self {
        LimitedLines {
            inner,
            limit,
            line: 0,
            head: Vec::new(),
            discarding: None,
            unread: Vec::new(),
            out: Vec::new(),
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

    /// Looks at `new`, just put in the reader's buffer: returns how many of its bytes
    /// are handed on; the rest is kept in `unread` (or thrown away).
    fn scan(&mut self, new: &[u8]) -> usize {
        let mut at = 0;
        while at < new.len() {
            if let Some(discard) = &mut self.discarding {
                let Some(end) = new[at..].iter().position(|b| *b == b'\n') else {
                    discard.take(&new[at..]);
                    keep_head(&mut self.head, &new[at..]);
                    return 0;
                };
                discard.take(&new[at..at + end]);
                keep_head(&mut self.head, &new[at..at + end]);
                self.unread
                    .splice(0..0, new[at + end + 1..].iter().copied());
                self.end_discard();
                return 0;
            }
            let rest = &new[at..];
            let (chunk, ends) = match rest.iter().position(|b| *b == b'\n') {
                Some(i) => (&rest[..i], true),
                None => (rest, false),
            };
            if self.line + chunk.len() > self.limit.bytes {
                // This line goes past the limit: hand on nothing more of it; end what
                // rmcp holds of it with a newline (not JSON: rmcp ignores it).
                // The rest of this read is looked at again in discard mode.
                self.unread.splice(0..0, new[at..].iter().copied());
                self.discarding = Some(Discard {
                    tail: Vec::new(),
                    skipped: self.line as u64,
                });
                self.out.push(b'\n');
                return at;
            }
            keep_head(&mut self.head, chunk);
            if ends {
                self.line = 0;
                self.head.clear();
                at += chunk.len() + 1;
            } else {
                self.line += chunk.len();
                at += chunk.len();
            }
        }
        new.len()
    }

    /// The oversized line has ended: an error answer for its id, or the end of the
    /// stream if it has none.
    fn end_discard(&mut self) {
        let discard = self.discarding.take().unwrap_or_default();
        let kind = message_kind(&self.head);
        let id = match kind {
            Kind::Answer => {
                request_id_at_start(&self.head).or_else(|| request_id_at_end(&discard.tail))
            }
            _ => None,
        };
        self.line = 0;
        self.head.clear();
        match (kind, id) {
            // Nobody waits for a request or a notification.
            (Kind::FromServer, _) => {}
            (_, Some(id)) => {
                self.limit.state.discarded.fetch_add(1, Ordering::SeqCst);
                let answer = serde_json::json!({
                    "jsonrpc": "2.0",
                    "id": id,
                    "error": {
                        "code": DISCARDED_CODE,
                        "message": format!(
                            "mcpq: the answer was longer than {} bytes (queue.max_result) and was thrown away",
                            self.limit.bytes
                        ),
                        "data": {"mcpq_discarded": self.limit.state.token},
                    },
                });
                self.out.extend_from_slice(answer.to_string().as_bytes());
                self.out.push(b'\n');
            }
            (_, None) => self.limit.trip_stream(),
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for LimitedLines<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if !this.out.is_empty() {
                let n = this.out.len().min(buf.remaining());
                buf.put_slice(&this.out[..n]);
                this.out.drain(..n);
                return Poll::Ready(Ok(()));
            }
            if this.limit.tripped() {
                return Poll::Ready(Err(this.too_long()));
            }
            if let Some(discard) = &this.discarding {
                if discard.skipped > DISCARD_MAX.saturating_add(this.limit.bytes as u64) {
                    this.limit.trip_stream();
                    continue;
                }
            }
            let before = buf.filled().len();
            if this.unread.is_empty() {
                match Pin::new(&mut this.inner).poll_read(cx, buf) {
                    Poll::Ready(Ok(())) => {}
                    other => return other,
                }
                if buf.filled().len() == before {
                    if this.discarding.is_some() {
                        // The stream ends inside an oversized line: it was cut short,
                        // so only an `id` at its start can be trusted.
                        if let Some(d) = &mut this.discarding {
                            d.tail.clear();
                        }
                        this.end_discard();
                        continue;
                    }
                    return Poll::Ready(Ok(())); // the end of the stream
                }
            } else {
                let n = this.unread.len().min(buf.remaining());
                buf.put_slice(&this.unread[..n]);
                this.unread.drain(..n);
            }
            let kept = this.scan(&buf.filled()[before..]);
            buf.set_filled(before + kept);
            if kept > 0 {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

fn keep_head(head: &mut Vec<u8>, bytes: &[u8]) {
    let room = ENDS.saturating_sub(head.len());
    head.extend_from_slice(&bytes[..room.min(bytes.len())]);
}

/// What a message is, from its first top-level members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// It has `result` or `error` (and no `method` before them): an answer.
    Answer,
    /// It has `method`: the server's own request or notification.
    FromServer,
    /// Not known from the bytes kept.
    Unknown,
}

fn message_kind(head: &[u8]) -> Kind {
    let mut at = skip_ws(head, 0);
    if head.get(at) != Some(&b'{') {
        return Kind::Unknown;
    }
    at += 1;
    loop {
        at = skip_ws(head, at);
        let Some((key, after)) = string_at(head, at) else {
            return Kind::Unknown;
        };
        match key {
            b"result" | b"error" => return Kind::Answer,
            b"method" => return Kind::FromServer,
            _ => {}
        }
        at = skip_ws(head, after);
        if head.get(at) != Some(&b':') {
            return Kind::Unknown;
        }
        let Some(end) = scalar_end(head, skip_ws(head, at + 1)) else {
            return Kind::Unknown;
        };
        at = skip_ws(head, end);
        if head.get(at) != Some(&b',') {
            return Kind::Unknown;
        }
        at += 1;
    }
}

/// The `id` of a JSON-RPC message from its first bytes, when it is the object's first
/// members (before any value too long to fit): `{"jsonrpc":"2.0","id":7,...`.
fn request_id_at_start(head: &[u8]) -> Option<serde_json::Value> {
    let mut at = skip_ws(head, 0);
    if head.get(at) != Some(&b'{') {
        return None;
    }
    at += 1;
    loop {
        at = skip_ws(head, at);
        let (key, after) = string_at(head, at)?;
        at = skip_ws(head, after);
        if head.get(at) != Some(&b':') {
            return None;
        }
        at = skip_ws(head, at + 1);
        let end = scalar_end(head, at)?;
        if key == b"id" {
            return id_value(&head[at..end]);
        }
        at = skip_ws(head, end);
        if head.get(at) != Some(&b',') {
            return None;
        }
        at += 1;
    }
}

/// The `id` of a JSON-RPC message from its last bytes, when it is the object's last
/// member, maybe followed by `"jsonrpc":"2.0"`: `...,"id":7}` (a number).
fn request_id_at_end(tail: &[u8]) -> Option<serde_json::Value> {
    let mut rest = trim_end(tail).strip_suffix(b"}")?;
    rest = trim_end(rest);
    if let Some(before) = rest.strip_suffix(b"\"2.0\"") {
        let before = trim_end(before).strip_suffix(b":")?;
        let before = trim_end(before).strip_suffix(b"\"jsonrpc\"")?;
        rest = trim_end(trim_end(before).strip_suffix(b",")?);
    }
    let digits = rest
        .iter()
        .rev()
        .take_while(|b| b.is_ascii_digit() || **b == b'-')
        .count();
    if digits == 0 {
        return None;
    }
    let (before, number) = rest.split_at(rest.len() - digits);
    let before = trim_end(before).strip_suffix(b":")?;
    let before = trim_end(before).strip_suffix(b"\"id\"")?;
    // A member of the outer object: a comma before it, and nothing in between.
    if !matches!(trim_end(before).last(), Some(b',') | Some(b'{')) {
        return None;
    }
    id_value(number)
}

/// A JSON-RPC id: a number or a string (anything else is no id).
fn id_value(raw: &[u8]) -> Option<serde_json::Value> {
    match serde_json::from_slice::<serde_json::Value>(raw).ok()? {
        v @ (serde_json::Value::Number(_) | serde_json::Value::String(_)) => Some(v),
        _ => None,
    }
}

fn skip_ws(bytes: &[u8], mut at: usize) -> usize {
    while bytes.get(at).is_some_and(|b| b.is_ascii_whitespace()) {
        at += 1;
    }
    at
}

fn trim_end(bytes: &[u8]) -> &[u8] {
    let n = bytes
        .iter()
        .rev()
        .take_while(|b| b.is_ascii_whitespace())
        .count();
    &bytes[..bytes.len() - n]
}

/// A JSON string starting at `at`: its raw contents (escapes left as they are) and the
/// index after its closing quote.
fn string_at(bytes: &[u8], at: usize) -> Option<(&[u8], usize)> {
    if bytes.get(at) != Some(&b'"') {
        return None;
    }
    let mut i = at + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some((&bytes[at + 1..i], i + 1)),
            _ => i += 1,
        }
    }
    None
}

/// The end of a string, number, `true`, `false` or `null` starting at `at` (an object
/// or an array is not skipped: the id must come before any).
fn scalar_end(bytes: &[u8], at: usize) -> Option<usize> {
    if bytes.get(at) == Some(&b'"') {
        return string_at(bytes, at).map(|(_, end)| end);
    }
    let n = bytes[at.min(bytes.len())..]
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'+' | b'.'))
        .count();
    // Running into the end of the kept bytes: the value may go on beyond them.
    (n > 0 && at + n < bytes.len()).then_some(at + n)
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

    async fn read_all(data: &[u8], limit: &AnswerLimit) -> io::Result<String> {
        let mut reader = LimitedLines::new(data, limit.clone());
        let mut out = Vec::new();
        reader.read_to_end(&mut out).await?;
        Ok(String::from_utf8(out).expect("utf-8"))
    }

    #[tokio::test]
    async fn an_oversized_answer_becomes_an_error_for_its_id_and_the_stream_goes_on() {
        let big = "x".repeat(100);
        // rmcp's order (id first) and the TypeScript SDK's (id last).
        for line in [
            format!(r#"{{"jsonrpc":"2.0","id":7,"result":{{"text":"{big}"}}}}"#),
            format!(r#"{{"result":{{"text":"{big}"}},"jsonrpc":"2.0","id":7}}"#),
        ] {
            let data = format!("{{\"a\":1}}\n{line}\n{{\"b\":2}}\n");
            let limit = AnswerLimit::new(60);
            let out = read_all(data.as_bytes(), &limit).await.expect("goes on");
            let lines: Vec<&str> = out.lines().collect();
            assert_eq!(lines[0], r#"{"a":1}"#);
            // What rmcp got of the long line, cut by a newline (not JSON: ignored).
            assert!(lines[1].len() <= 60 && !lines[1].ends_with('}'), "{out}");
            let answer: serde_json::Value = serde_json::from_str(lines[2]).expect("json");
            assert_eq!(answer["id"], 7, "{out}");
            assert_eq!(answer["error"]["code"], DISCARDED_CODE);
            assert_eq!(lines[3], r#"{"b":2}"#);
            assert_eq!(lines.len(), 4, "{out}");
            assert_eq!(limit.discarded(), 1);
            assert!(!limit.tripped());
        }
    }

    #[tokio::test]
    async fn an_oversized_line_without_a_findable_id_ends_the_stream() {
        let big = "x".repeat(100);
        for line in [
            // An id inside the result, not the message's.
            format!(r#"{{"jsonrpc":"2.0","result":{{"t":"{big}","id":3}}}}"#),
            format!(r#"{{"result":{{"t":"{big}","id":3}},"jsonrpc":"2.0"}}"#),
            // An id as a string inside the text.
            format!(r#"{{"jsonrpc":"2.0","result":{{"t":"{big}\",\"id\":3}}"}}}}"#),
        ] {
            let limit = AnswerLimit::new(60);
            let guards = (limit.request(), limit.request());
            let err = read_all(format!("{line}\n").as_bytes(), &limit)
                .await
                .expect_err(&line);
            assert!(err.to_string().contains("more than 60 bytes"), "{err}");
            assert!(limit.tripped());
            assert!(limit.stream_ended());
            assert!(
                !limit.culprit(guards.0.seq()),
                "two requests were in flight"
            );
            assert_eq!(limit.discarded(), 0);
        }
    }

    #[test]
    fn ids_are_read_from_either_end_of_a_message() {
        assert_eq!(
            request_id_at_start(br#" { "jsonrpc" : "2.0" , "id" : "a\"b" , "result":{"#),
            Some(serde_json::json!("a\"b"))
        );
        assert_eq!(request_id_at_start(br#"{"id":12"#), None, "may go on");
        assert_eq!(request_id_at_start(br#"{"result":{"id":1},"id":2"#), None);
        assert_eq!(
            request_id_at_end(br#"xx"},"jsonrpc":"2.0","id":-4}  "#),
            Some(serde_json::json!(-4))
        );
        assert_eq!(
            request_id_at_end(br#"xx"},"id":4,"jsonrpc":"2.0"}"#),
            Some(serde_json::json!(4))
        );
        assert_eq!(request_id_at_end(br#"x":{"id":4}}"#), None);
        assert_eq!(request_id_at_end(br#"x":[1,2]}"#), None);
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

    #[tokio::test]
    async fn an_oversized_answer_split_over_many_reads_is_replaced() {
        let (mut tx, rx) = tokio::io::duplex(7);
        let limit = AnswerLimit::new(40);
        let mut reader = LimitedLines::new(rx, limit.clone());
        let big = "y".repeat(500);
        let data = format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":\"ok\"}}\n{{\"result\":\"{big}\",\"jsonrpc\":\"2.0\",\"id\":2}}\n{{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":1}}\n"
        );
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            tx.write_all(data.as_bytes()).await.expect("write");
        });
        let mut out = Vec::new();
        reader.read_to_end(&mut out).await.expect("goes on");
        writer.await.expect("writer");
        let out = String::from_utf8(out).expect("utf-8");
        let ids: Vec<serde_json::Value> = out
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|v| v["id"].clone())
            .collect();
        assert_eq!(ids, [1, 2, 3], "{out}");
        assert_eq!(limit.discarded(), 1);
    }

    #[tokio::test]
    async fn an_oversized_request_or_notification_from_the_server_is_dropped() {
        let big = "z".repeat(100);
        let data = format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"sampling/createMessage\",\"params\":\"{big}\"}}\n\
             {{\"method\":\"notifications/message\",\"params\":\"{big}\",\"jsonrpc\":\"2.0\"}}\n\
             {{\"method\":\"x\",\"params\":\"{big}\",\"jsonrpc\":\"2.0\",\"id\":6}}\n{{\"b\":2}}\n"
        );
        let limit = AnswerLimit::new(60);
        let out = read_all(data.as_bytes(), &limit).await.expect("goes on");
        // Nothing with an id 5 or 6 reaches rmcp: the client's own requests with those
        // numbers are not failed by the server's.
        assert!(!out.contains("-32097"), "{out}");
        assert!(out.ends_with("{\"b\":2}\n"), "{out}");
        assert!(!limit.tripped());
    }

    #[tokio::test]
    async fn a_stream_that_ends_inside_an_oversized_answer_fails_that_call() {
        let data = format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":9,\"result\":\"{}",
            "w".repeat(100)
        );
        let limit = AnswerLimit::new(60);
        let out = read_all(data.as_bytes(), &limit).await.expect("ends");
        assert!(out.contains(r#""id":9"#) && out.contains("-32097"), "{out}");
        // Cut short at the end: an id that only its end could give is not trusted.
        let data = format!(
            "{{\"result\":\"{}\",\"jsonrpc\":\"2.0\",\"id\":9}}",
            "w".repeat(1000)
        );
        let limit = AnswerLimit::new(60);
        assert!(read_all(data.as_bytes(), &limit).await.is_err());
    }

    #[tokio::test]
    async fn a_call_is_the_culprit_only_if_it_was_alone_and_nothing_was_given_up() {
        let line = format!("{{\"t\":\"{}\"}}\n", "v".repeat(100));
        // Alone: the culprit; a request sent after the end is not.
        let limit = AnswerLimit::new(60);
        let lone = limit.request();
        assert!(read_all(line.as_bytes(), &limit).await.is_err());
        assert!(limit.culprit(lone.seq()));
        assert!(!limit.culprit(limit.request().seq()));
        // A request given up before (its late answer may be the long line): nobody is.
        let limit = AnswerLimit::new(60);
        drop(limit.request());
        let lone = limit.request();
        assert!(read_all(line.as_bytes(), &limit).await.is_err());
        assert!(!limit.culprit(lone.seq()));
        // One answered before does not count.
        let limit = AnswerLimit::new(60);
        limit.request().answered();
        let lone = limit.request();
        assert!(read_all(line.as_bytes(), &limit).await.is_err());
        assert!(limit.culprit(lone.seq()));
    }

    #[test]
    fn only_this_sessions_mark_makes_an_error_ours() {
        let (a, b) = (AnswerLimit::new(1), AnswerLimit::new(1));
        let mark = serde_json::json!({"mcpq_discarded": a.state.token});
        assert!(a.is_ours(Some(&mark)));
        assert!(!b.is_ours(Some(&mark)));
        assert!(!a.is_ours(None));
    }
}
