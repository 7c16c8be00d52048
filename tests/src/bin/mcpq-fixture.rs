//! `mcpq-fixture`: a stdio MCP server built with rmcp, with one tool per behaviour the
//! tests need: echo, add, sleep, sleep in turn (like a server that handles one request
//! at a time), count overlapping calls, progress reports, call time stamps, fail, crash,
//! flood stderr, a big answer, report signal state, and the torture ones (sleep for
//! ever, ignore SIGTERM, spawn a grandchild, close stdout but stay alive).
//!
//! With `--http ADDR` (e.g. `--http 127.0.0.1:0`) it serves the same tools over
//! streamable HTTP at `http://ADDR/mcp` instead, and prints that URL on stdout; with
//! `MCPQ_FIXTURE_REQUIRE_BEARER=<token>` it then answers 401 to requests without
//! `Authorization: Bearer <token>` (with `MCPQ_FIXTURE_ECHO_AUTH=1`, its 401 body quotes
//! the `Authorization` header it got, as careless servers do). With
//! `MCPQ_FIXTURE_JSON_RESPONSE=1` it serves without sessions and answers each request
//! with one JSON body instead of an SSE stream. With `MCPQ_FIXTURE_429_ONCE=<file>` it
//! answers its first `tools/call` with 429 Too Many Requests and `Retry-After:
//! $MCPQ_FIXTURE_RETRY_AFTER` (default `2`), appending `429 MICROS` to that file (the
//! `stamp` tool's clock and format), and serves every later request.
//!
//! Environment switches: `MCPQ_FIXTURE_HANG_INITIALIZE=1` reads stdin for ever and never
//! answers `initialize`; `MCPQ_FIXTURE_NEVER_READ=1` never even reads its stdin.
//!
//! It writes a start-up banner to stderr, as Node and Python servers do, so every test
//! also checks that stderr is drained. With `MCPQ_FIXTURE_SPAWN_LOG=<file>` it appends
//! its pid and process group to that file at start (tests count spawns with it).

use std::io::Write;
use std::time::Duration;

use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock};
use rmcp::{schemars, tool, tool_router, ErrorData, ServiceExt};
use serde::Deserialize;
use serde_json::json;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct EchoArgs {
    /// Text to send back.
    text: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct AddArgs {
    /// Left operand.
    a: f64,
    /// Right operand.
    b: f64,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct MarkArgs {
    /// File to append to.
    path: String,
    /// Line to append (and the answer).
    tag: String,
    /// Sleep after writing, in milliseconds.
    ms: Option<u64>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct StampArgs {
    /// File to append to.
    path: String,
    /// Sleep between the start and end lines, in milliseconds.
    ms: Option<u64>,
}

/// Microseconds since the Unix epoch, by this process's clock.
fn micros_now() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct ProgressArgs {
    /// How many progress reports.
    steps: u32,
    /// Milliseconds between them.
    ms: u64,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct SleepArgs {
    /// How long to sleep, in milliseconds.
    ms: u64,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct FailArgs {
    /// The error text to return.
    #[serde(default)]
    message: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct CrashArgs {
    /// Exit code (default 3).
    #[serde(default)]
    code: Option<i32>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct BigArgs {
    /// Length of the text answer, in bytes.
    bytes: u64,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct FloodArgs {
    /// Bytes to write to stderr before answering.
    bytes: u64,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct ReadArgs {
    /// The file to read.
    path: String,
}

struct Fixture;

/// Set by `ignore_sigterm`: the server then also outlives the end of its stdin, like a
/// hung server that only SIGKILL removes.
static STUBBORN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Held by `sleep_serial` while it sleeps: its calls take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Calls of `overlap` running now, and the most at once so far.
static OVERLAP_RUNNING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static OVERLAP_MOST: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

async fn forever() -> ! {
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

/// `/proc/self/status` as it was before Rust's runtime started: the Rust runtime sets
/// SIGPIPE to ignored before `main`, so only a constructor in `.init_array` (run by the
/// loader before Rust's start-up code) sees the signal state the process inherited.
static INHERITED_STATUS: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Descriptors open at exec (listing /proc/self/fd opens one more, which is left out).
static INHERITED_FDS: std::sync::OnceLock<Vec<u32>> = std::sync::OnceLock::new();

extern "C" fn capture_inherited_status() {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        let _ = INHERITED_STATUS.set(status);
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        let own_pid_fd_dir = format!("/proc/{}/fd", std::process::id());
        let mut fds: Vec<u32> = dir
            .filter_map(|e| e.ok())
            // Leave out the descriptor of the directory being listed.
            .filter(|e| {
                std::fs::read_link(e.path()).map_or(true, |t| t.to_string_lossy() != own_pid_fd_dir)
            })
            .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
            .collect();
        fds.sort_unstable();
        let _ = INHERITED_FDS.set(fds);
    }
}

#[used]
#[link_section = ".init_array"]
static CAPTURE_INHERITED_STATUS: extern "C" fn() = capture_inherited_status;

/// Signal numbers set in a hex mask from /proc/self/status.
fn signals_in(mask: &str) -> Vec<u32> {
    let bits = u64::from_str_radix(mask.trim(), 16).unwrap_or(0);
    (0..64)
        .filter(|i| bits & (1u64 << i) != 0)
        .map(|i| i + 1)
        .collect()
}

fn status_field(status: &str, name: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
        .unwrap_or_default()
}

#[tool_router(server_handler)]
impl Fixture {
    #[tool(description = "Return the text unchanged")]
    async fn echo(&self, Parameters(EchoArgs { text }): Parameters<EchoArgs>) -> String {
        text
    }

    #[tool(description = "Add two numbers")]
    async fn add(&self, Parameters(AddArgs { a, b }): Parameters<AddArgs>) -> String {
        (a + b).to_string()
    }

    #[tool(description = "Sleep for ms milliseconds, then answer")]
    async fn sleep_ms(&self, Parameters(SleepArgs { ms }): Parameters<SleepArgs>) -> String {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        format!("slept {ms} ms")
    }

    #[tool(
        description = "Sleep `ms` milliseconds holding a process-wide lock, then answer: calls of it run one after another, like a server that handles one request at a time"
    )]
    async fn sleep_serial(&self, Parameters(SleepArgs { ms }): Parameters<SleepArgs>) -> String {
        let _turn = SERIAL.lock().await;
        tokio::time::sleep(Duration::from_millis(ms)).await;
        format!("slept {ms} ms in turn")
    }

    #[tool(
        description = "Sleep `ms` milliseconds, then answer {pid, running, most}: the calls of this tool the process was running when this one started (itself included), and the most ever"
    )]
    async fn overlap(&self, Parameters(SleepArgs { ms }): Parameters<SleepArgs>) -> String {
        use std::sync::atomic::Ordering;
        let running = OVERLAP_RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
        OVERLAP_MOST.fetch_max(running, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        let most = OVERLAP_MOST.load(Ordering::SeqCst);
        OVERLAP_RUNNING.fetch_sub(1, Ordering::SeqCst);
        json!({"pid": std::process::id(), "running": running, "most": most}).to_string()
    }

    #[tool(
        description = "Append `tag` and a newline to the file `path` (one write, O_APPEND), sleep `ms`, answer `tag`: a log of every execution"
    )]
    async fn mark(
        &self,
        Parameters(MarkArgs { path, tag, ms }): Parameters<MarkArgs>,
    ) -> Result<String, ErrorData> {
        use std::io::Write as _;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| ErrorData::internal_error(format!("cannot open {path}: {e}"), None))?;
        file.write_all(format!("{tag}\n").as_bytes())
            .map_err(|e| ErrorData::internal_error(format!("cannot write {path}: {e}"), None))?;
        tokio::time::sleep(Duration::from_millis(ms.unwrap_or(0))).await;
        Ok(tag)
    }

    #[tool(
        description = "Append `start MICROS` to the file `path` as the call arrives, sleep `ms`, append `end MICROS`: the server's own record of when calls ran (rate-limit tests)"
    )]
    async fn stamp(
        &self,
        Parameters(StampArgs { path, ms }): Parameters<StampArgs>,
    ) -> Result<String, ErrorData> {
        use std::io::Write as _;
        let append = |line: String| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .and_then(|mut f| f.write_all(line.as_bytes()))
                .map_err(|e| ErrorData::internal_error(format!("cannot write {path}: {e}"), None))
        };
        append(format!("start {}\n", micros_now()))?;
        tokio::time::sleep(Duration::from_millis(ms.unwrap_or(0))).await;
        append(format!("end {}\n", micros_now()))?;
        Ok("stamped".to_string())
    }

    #[tool(
        description = "Report progress `steps` times, `ms` apart (to a caller that sent a progressToken), then answer"
    )]
    async fn progress_steps(
        &self,
        Parameters(ProgressArgs { steps, ms }): Parameters<ProgressArgs>,
        context: rmcp::service::RequestContext<rmcp::RoleServer>,
    ) -> String {
        let token = context.meta.get_progress_token();
        for i in 1..=steps.min(1000) {
            if let Some(token) = &token {
                let mut note = rmcp::model::ProgressNotificationParam::new(token.clone(), i as f64);
                note.total = Some(steps as f64);
                note.message = Some(format!("step {i} of {steps}"));
                let _ = context.peer.notify_progress(note).await;
            }
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        format!("did {steps} steps (progress token: {})", token.is_some())
    }

    #[tool(description = "Never answer")]
    async fn sleep_forever(&self) -> String {
        forever().await
    }

    #[tool(description = "Ignore SIGTERM from now on, and stay alive after stdin closes")]
    async fn ignore_sigterm(&self) -> String {
        // SAFETY: setting a disposition to SIG_IGN has no preconditions.
        unsafe {
            libc::signal(libc::SIGTERM, libc::SIG_IGN);
        }
        STUBBORN.store(true, std::sync::atomic::Ordering::SeqCst);
        "SIGTERM is ignored now".to_string()
    }

    #[tool(
        description = "Start `sleep 1000` in this process group (it inherits our stdio) and return its pid"
    )]
    async fn spawn_grandchild(&self) -> Result<String, ErrorData> {
        let child = std::process::Command::new("sleep")
            .arg("1000")
            .spawn()
            .map_err(|e| ErrorData::internal_error(format!("cannot start sleep: {e}"), None))?;
        Ok(child.id().to_string())
    }

    #[tool(description = "Close stdout (the MCP channel) and keep running, never answering")]
    async fn close_stdout_stay_alive(&self) -> String {
        STUBBORN.store(true, std::sync::atomic::Ordering::SeqCst);
        // SAFETY: closing fd 1 only ends our side of the pipe; nothing else uses it after.
        unsafe {
            libc::close(1);
        }
        forever().await
    }

    #[tool(
        description = "Answer now, then freeze (stop serving, stay alive) after ms milliseconds"
    )]
    async fn freeze_after(&self, Parameters(SleepArgs { ms }): Parameters<SleepArgs>) -> String {
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            // Blocks the server's only runtime thread: alive, but deaf to every request.
            std::thread::sleep(Duration::from_secs(u64::from(u32::MAX)));
        });
        format!("freezing in {ms} ms")
    }

    #[tool(description = "Return a tool error (isError: true)")]
    async fn fail(
        &self,
        Parameters(FailArgs { message }): Parameters<FailArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let text = message.unwrap_or_else(|| "the fixture failed on purpose".to_string());
        Ok(CallToolResult::error(vec![ContentBlock::text(text)]))
    }

    #[tool(
        description = "Return the text of the file at `path` (a tool error if it cannot be read)"
    )]
    async fn read_text(
        &self,
        Parameters(ReadArgs { path }): Parameters<ReadArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        Ok(match std::fs::read_to_string(&path) {
            Ok(text) => CallToolResult::success(vec![ContentBlock::text(text)]),
            Err(e) => CallToolResult::error(vec![ContentBlock::text(format!("{path}: {e}"))]),
        })
    }

    #[tool(description = "Write a last words line to stderr and exit mid-call")]
    async fn crash(&self, Parameters(CrashArgs { code }): Parameters<CrashArgs>) -> String {
        let code = code.unwrap_or(3);
        eprintln!("mcpq-fixture: crashing on purpose with exit code {code}");
        std::process::exit(code)
    }

    #[tool(
        description = "SIGKILL this server's parent (the worker that started it), then never answer: a job that kills every worker that runs it"
    )]
    async fn kill_parent(&self) -> String {
        // SAFETY: getppid and kill only read our parent's pid and send it a signal.
        unsafe {
            libc::kill(libc::getppid(), libc::SIGKILL);
        }
        std::future::pending::<String>().await
    }

    #[tool(description = "Answer a text of `bytes` bytes (`x` repeated)")]
    async fn big_answer(&self, Parameters(BigArgs { bytes }): Parameters<BigArgs>) -> String {
        "x".repeat(usize::try_from(bytes).unwrap_or(usize::MAX))
    }

    #[tool(description = "Write `bytes` bytes to stderr, then answer")]
    async fn stderr_flood(&self, Parameters(FloodArgs { bytes }): Parameters<FloodArgs>) -> String {
        let line = [b'x'; 1023];
        let mut err = std::io::stderr().lock();
        let mut left = bytes;
        while left > 0 {
            let n = left.min(1024) as usize;
            let _ = err.write_all(&line[..n - 1]);
            let _ = err.write_all(b"\n");
            left -= n as u64;
        }
        let _ = err.write_all(b"mcpq-fixture: flood done\n");
        format!("wrote {bytes} bytes to stderr")
    }

    #[tool(
        description = "Report the blocked and ignored signals this process inherited, its pid, process group and session"
    )]
    async fn signal_state(&self) -> Result<String, ErrorData> {
        let status = INHERITED_STATUS.get().ok_or_else(|| {
            ErrorData::internal_error("could not read /proc/self/status at start-up", None)
        })?;
        let blocked = status_field(status, "SigBlk:");
        let ignored = status_field(status, "SigIgn:");
        // SAFETY: getpid/getpgrp/getsid(0) have no preconditions and cannot fail.
        let (pid, pgid, sid) = unsafe { (libc::getpid(), libc::getpgrp(), libc::getsid(0)) };
        Ok(json!({
            "pid": pid,
            "pgid": pgid,
            "sid": sid,
            "blocked_mask": blocked,
            "ignored_mask": ignored,
            "blocked": signals_in(&blocked),
            "ignored": signals_in(&ignored),
            "inherited_fds": INHERITED_FDS.get(),
        })
        .to_string())
    }
}

/// Serves the fixture over streamable HTTP until killed.
async fn serve_http(addr: &str) -> anyhow::Result<()> {
    use rmcp::transport::streamable_http_server::{
        session::local::LocalSessionManager, StreamableHttpServerConfig, StreamableHttpService,
    };
    let service: StreamableHttpService<Fixture, LocalSessionManager> = StreamableHttpService::new(
        || Ok(Fixture),
        Default::default(),
        if std::env::var_os("MCPQ_FIXTURE_JSON_RESPONSE").is_some() {
            // rmcp answers with JSON bodies only without sessions.
            StreamableHttpServerConfig::default()
                .with_legacy_session_mode(false)
                .with_json_response(true)
        } else {
            StreamableHttpServerConfig::default()
        },
    );
    let required = std::env::var("MCPQ_FIXTURE_REQUIRE_BEARER").ok();
    let echo_auth = std::env::var_os("MCPQ_FIXTURE_ECHO_AUTH").is_some();
    let too_many = std::sync::Arc::new(std::sync::Mutex::new(
        std::env::var("MCPQ_FIXTURE_429_ONCE").ok(),
    ));
    let retry_after = std::env::var("MCPQ_FIXTURE_RETRY_AFTER").unwrap_or_else(|_| "2".to_string());
    let router = axum::Router::new()
        .nest_service("/mcp", service)
        .layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                let too_many = too_many.clone();
                let retry_after = retry_after.clone();
                async move {
                    let armed = too_many.lock().map(|t| t.is_some()).unwrap_or(false);
                    if !armed {
                        return next.run(request).await;
                    }
                    let (parts, body) = request.into_parts();
                    let bytes = axum::body::to_bytes(body, 16 << 20)
                        .await
                        .unwrap_or_default();
                    let is_call = String::from_utf8_lossy(&bytes).contains("\"tools/call\"");
                    let log = if is_call {
                        too_many.lock().ok().and_then(|mut t| t.take())
                    } else {
                        None
                    };
                    if let Some(log) = log {
                        let _ = std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(&log)
                            .and_then(|mut f| {
                                f.write_all(format!("429 {}\n", micros_now()).as_bytes())
                            });
                        return axum::response::IntoResponse::into_response((
                            axum::http::StatusCode::TOO_MANY_REQUESTS,
                            [("retry-after", retry_after)],
                            "slow down",
                        ));
                    }
                    next.run(axum::extract::Request::from_parts(parts, bytes.into()))
                        .await
                }
            },
        ))
        .layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                let required = required.clone();
                async move {
                    if let Some(token) = required {
                        let expected = format!("Bearer {token}");
                        let given = request
                            .headers()
                            .get("authorization")
                            .and_then(|v| v.to_str().ok());
                        if given != Some(expected.as_str()) {
                            // A careless server that quotes the request back.
                            let body = if echo_auth {
                                format!("unauthorized: Authorization: {}", given.unwrap_or(""))
                            } else {
                                String::new()
                            };
                            return axum::response::IntoResponse::into_response((
                                axum::http::StatusCode::UNAUTHORIZED,
                                body,
                            ));
                        }
                    }
                    next.run(request).await
                }
            },
        ));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("http://{}/mcp", listener.local_addr()?);
    eprintln!(
        "mcpq-fixture serving streamable HTTP on {}",
        listener.local_addr()?
    );
    axum::serve(listener, router).await?;
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--http") {
        let addr = args.get(2).map(String::as_str).unwrap_or("127.0.0.1:0");
        return serve_http(addr).await;
    }
    if let Some(path) = std::env::var_os("MCPQ_FIXTURE_SPAWN_LOG") {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        // One write(2) per line: O_APPEND keeps concurrent servers' lines whole.
        // SAFETY: getpgrp has no preconditions and cannot fail.
        let pgid = unsafe { libc::getpgrp() };
        f.write_all(format!("{} {pgid}\n", std::process::id()).as_bytes())?;
    }
    eprintln!(
        "mcpq-fixture {} listening on stdio (pid {})",
        env!("CARGO_PKG_VERSION"),
        std::process::id()
    );
    if std::env::var_os("MCPQ_FIXTURE_NEVER_READ").is_some() {
        eprintln!("mcpq-fixture: will never read stdin");
        forever().await;
    }
    if std::env::var_os("MCPQ_FIXTURE_HANG_INITIALIZE").is_some() {
        eprintln!("mcpq-fixture: will never answer initialize");
        let mut sink = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut tokio::io::stdin(), &mut sink).await;
        forever().await;
    }
    let service = Fixture.serve(rmcp::transport::stdio()).await?;
    let _ = service.waiting().await;
    if STUBBORN.load(std::sync::atomic::Ordering::SeqCst) {
        eprintln!("mcpq-fixture: stdin closed, staying alive anyway");
        forever().await;
    }
    Ok(())
}
