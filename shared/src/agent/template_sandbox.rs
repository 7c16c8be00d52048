//! The template sandbox: where the worker renders a job's templates, so that a template
//! that asks for gigabytes kills a small child process instead of the worker.
//!
//! Why a process: minijinja's fuel counts instructions, not bytes, and a few
//! instructions can build gigabytes (`{% set a = a ~ a %}` six times over a 100 MB
//! string; `center`, `indent`, `replace`, `join`, `format`...). In Rust an allocation
//! that fails aborts the whole process; there is no way to fail just the render. So the
//! render runs where the kernel can say no: a child with a memory limit.
//!
//! What it promises:
//! 1. **The worker lives.** The child (the worker's own binary, started with
//!    [`SANDBOX_ARG`]) caps its memory at [`MEMORY_LIMIT_BYTES`] (`RLIMIT_DATA`, no core
//!    file) before it reads anything; past it the allocation fails and the child dies.
//!    The step fails `template_error` (permanent: the same template would die again),
//!    naming the template memory limit and quoting the child's last words.
//! 2. **Bounded in size and time.** The child enforces the template output limit
//!    ([`super::template::MAX_OUTPUT_BYTES`]) and the worker reads no more than that (plus
//!    room for the JSON around it) from it; a render that takes longer than
//!    [`RENDER_TIME_LIMIT`] (or runs past the job's deadline, or the job is cancelled)
//!    has its child killed.
//! 3. **Started like every other child**: through the [`Supervisor`] (clean signal
//!    state, own process group, parent-death signal, drained stderr, only the
//!    [`crate::supervisor::INHERITED_ENV`] variables, so no secret of the worker), in
//!    `/`; stopped at worker shutdown ([`TemplateSandbox::stop_idle`]), killed with the
//!    servers if one is still busy.
//! 4. **Fast when it can be.** A value without `{{` or `{%` never leaves the worker.
//!    Children are started on first use, reused (one request at a time each; up to
//!    [`MAX_IDLE`] wait for the next), and replaced when they die. A child found dead
//!    when reused (killed from outside) is replaced and the render tried once more on a
//!    fresh one before the template is blamed.
//!
//! Protocol (one line of JSON each way per render): the worker writes
//! `{"value": <arguments>, "data": <what templates see>}`, the child answers
//! `{"rendered": <value>}` or `{"failed": {"template", "message"}}`.
//!
//! Caveats:
//! - The child needs room for the data it is sent: a job whose `input` and earlier
//!   results take more than [`MEMORY_LIMIT_BYTES`] once parsed cannot use templates.
//! - Only Linux >= 4.7 counts `mmap` in `RLIMIT_DATA`; older kernels bound only the heap.
//!
//! Test: `tests/chaos/huge_template.rs`.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::pipe;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::template::{has_templates, TemplateError, Templates, MAX_OUTPUT_BYTES};
use crate::failure::FailureKind;
use crate::supervisor::{describe_exit, unix, ServerProcess, SpawnSpec, Supervisor};

/// The first argument that makes the worker binary serve as a template sandbox
/// ([`serve`]) instead of running as a worker.
pub const SANDBOX_ARG: &str = "--mcpq-template-sandbox";

/// The template memory limit: what the sandbox child may allocate, in bytes. Four times
/// the biggest input a render is normally given (a 32 MiB payload parsed), and far above
/// what real argument templates need; small next to a worker's host.
pub const MEMORY_LIMIT_BYTES: u64 = 256 * 1024 * 1024;

/// The template time limit: how long one render may take. Fuel already bounds the
/// instructions; this bounds the few that are slow on big values (a `replace` over
/// 100 MB).
pub const RENDER_TIME_LIMIT: Duration = Duration::from_secs(10);

/// Idle children kept for the next render; more are stopped when they come back.
pub const MAX_IDLE: usize = 8;

/// The program the sandbox runs: the worker's own executable. `/proc/self/exe` still
/// names the running binary after it was replaced on disk by an upgrade.
const SANDBOX_PROGRAM: &str = "/proc/self/exe";

/// Bytes of one answer beyond the output limit: JSON escaping (up to 6 bytes for one
/// control character) and the envelope.
const ANSWER_SLACK: usize = 64 * 1024;

/// How long a dead child's stderr is awaited, so its last words are in the error.
const LAST_WORDS_WAIT: Duration = Duration::from_millis(500);

/// Why a render did not produce a value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RenderError {
    /// The template is at fault (bad syntax, a missing value, a limit): running it
    /// again cannot help.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// No sandbox could be started or spoken to (the system, not the template).
    #[error("cannot render templates: {0}")]
    Unavailable(String),
    /// The job's deadline came during the render.
    #[error("the job's deadline passed while its templates were rendered")]
    Deadline,
    /// The job was cancelled during the render.
    #[error("the job was stopped while its templates were rendered")]
    Cancelled,
}

impl RenderError {
    /// The failure kind a job gets.
    pub fn kind(&self) -> FailureKind {
        match self {
            RenderError::Template(_) | RenderError::Unavailable(_) => FailureKind::TemplateError,
            RenderError::Deadline => FailureKind::Timeout,
            RenderError::Cancelled => FailureKind::Cancelled,
        }
    }

    /// True when another attempt could succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, RenderError::Unavailable(_) | RenderError::Deadline)
    }
}

#[derive(Serialize)]
struct Request<'a> {
    value: &'a Value,
    data: &'a Value,
}

#[derive(Deserialize)]
struct OwnedRequest {
    value: Value,
    data: Value,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Answer {
    Rendered(Value),
    Failed(TemplateError),
}

/// Renders templates in sandbox children; one per worker, cheap to clone.
#[derive(Debug, Clone)]
pub struct TemplateSandbox {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    supervisor: Supervisor,
    spec: SpawnSpec,
    idle: Mutex<Vec<Child>>,
}

/// One sandbox child and its pipes.
#[derive(Debug)]
struct Child {
    process: ServerProcess,
    input: pipe::Sender,
    output: BufReader<pipe::Receiver>,
}

/// How one exchange with a child ended.
enum Exchange {
    Answer(Answer),
    /// The child died, closed its pipes or answered garbage: why, in words.
    Died(String),
    TimedOut,
    Cancelled,
}

impl TemplateSandbox {
    /// A sandbox whose children are the running binary started with [`SANDBOX_ARG`]:
    /// the binary's `main` must call [`serve`] when it sees it (`mcpq-worker` does).
    pub fn new(supervisor: Supervisor) -> Self {
        Self::with_program(supervisor, PathBuf::from(SANDBOX_PROGRAM))
    }

    /// A sandbox whose children run `program` with [`SANDBOX_ARG`].
    pub fn with_program(supervisor: Supervisor, program: PathBuf) -> Self {
        // No kill grace: sandbox children are dropped (SIGKILL to the group), never stopped.
        let spec = SpawnSpec {
            args: vec![SANDBOX_ARG.to_string()],
            cwd: Some(PathBuf::from("/")),
            ..SpawnSpec::new("template-sandbox", program.to_string_lossy().into_owned())
        };
        TemplateSandbox {
            inner: Arc::new(Inner {
                supervisor,
                spec,
                idle: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Renders every template in `value` with `data` (see [`Templates::render`]) in a
    /// sandbox child, within [`RENDER_TIME_LIMIT`] and the job's `deadline`, stopping
    /// when `cancel` fires. A value without templates is returned as it is.
    pub async fn render(
        &self,
        value: &Value,
        data: &Value,
        deadline: Instant,
        cancel: &CancellationToken,
    ) -> Result<Value, RenderError> {
        if !has_templates(value) {
            return Ok(value.clone());
        }
        let mut request = serde_json::to_vec(&Request { value, data })
            .map_err(|e| RenderError::Unavailable(format!("cannot encode the request: {e}")))?;
        request.push(b'\n');
        let limit = deadline.min(Instant::now() + RENDER_TIME_LIMIT);
        // A reused child may have been killed since its last render: a death on it earns
        // one more try on a fresh child before the template is blamed.
        let (mut child, mut reused) = match self.take_idle() {
            Some(child) => (child, true),
            None => (self.start()?, false),
        };
        loop {
            match exchange(&mut child, &request, limit, cancel).await {
                Exchange::Answer(answer) => {
                    self.give_back(child);
                    return match answer {
                        Answer::Rendered(v) => Ok(v),
                        Answer::Failed(e) => Err(RenderError::Template(e)),
                    };
                }
                Exchange::Died(_) if reused => {
                    tracing::debug!(
                        pid = child.process.pid(),
                        "idle template sandbox was dead; starting a fresh one"
                    );
                    child = self.start()?;
                    reused = false;
                }
                Exchange::Died(why) => {
                    let words = last_words(&mut child).await;
                    tracing::warn!(
                        pid = child.process.pid(),
                        "template sandbox died while rendering: {why}{words}"
                    );
                    return Err(RenderError::Template(TemplateError::new(
                        first_template(value),
                        format!(
                            "the template renderer died while rendering ({why}{words}); a \
                             render may use at most {} MiB of memory (template memory limit)",
                            MEMORY_LIMIT_BYTES / (1024 * 1024)
                        ),
                    )));
                }
                Exchange::TimedOut if limit == deadline => return Err(RenderError::Deadline),
                Exchange::TimedOut => {
                    return Err(RenderError::Template(TemplateError::new(
                        first_template(value),
                        format!(
                            "rendering took longer than the template time limit of {} s",
                            RENDER_TIME_LIMIT.as_secs()
                        ),
                    )))
                }
                Exchange::Cancelled => return Err(RenderError::Cancelled),
            }
        }
    }

    /// Stops every idle child (at worker shutdown, before the supervisor kills what is
    /// left of the servers: an idle sandbox is not a server cut off by shutdown).
    pub fn stop_idle(&self) {
        let idle: Vec<Child> = self
            .inner
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect();
        // Dropping one kills its process group and reaps it in the background.
        drop(idle);
    }

    /// An idle child that is still alive, if any.
    fn take_idle(&self) -> Option<Child> {
        let mut idle = self.inner.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(mut child) = idle.pop() {
            if child.process.try_exit().is_none() {
                return Some(child);
            }
        }
        None
    }

    /// Keeps `child` for the next render, or lets it go (its drop kills its group).
    fn give_back(&self, child: Child) {
        let mut idle = self.inner.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(child);
        }
    }

    fn start(&self) -> Result<Child, RenderError> {
        let mut process = self
            .inner
            .supervisor
            .spawn(&self.inner.spec)
            .map_err(|e| RenderError::Unavailable(e.to_string()))?;
        let (output, input) = process.take_stdio().ok_or_else(|| {
            RenderError::Unavailable("the sandbox's pipes were already taken".to_string())
        })?;
        Ok(Child {
            process,
            input,
            output: BufReader::new(output),
        })
    }
}

/// One request and its answer, bounded by `limit` and `cancel`.
async fn exchange(
    child: &mut Child,
    request: &[u8],
    limit: Instant,
    cancel: &CancellationToken,
) -> Exchange {
    let talk = async {
        child
            .input
            .write_all(request)
            .await
            .map_err(|e| format!("cannot write to it: {e}"))?;
        let cap = (MAX_OUTPUT_BYTES + ANSWER_SLACK) as u64;
        let mut line = Vec::new();
        (&mut child.output)
            .take(cap)
            .read_until(b'\n', &mut line)
            .await
            .map_err(|e| format!("cannot read from it: {e}"))?;
        match line.last() {
            Some(b'\n') => serde_json::from_slice::<Answer>(&line)
                .map_err(|e| format!("it answered something that is not an answer: {e}")),
            _ if line.len() as u64 >= cap => Err(format!("its answer exceeds {cap} bytes")),
            _ => Err("it closed its output".to_string()),
        }
    };
    tokio::select! {
        outcome = tokio::time::timeout_at(limit, talk) => match outcome {
            Ok(Ok(answer)) => Exchange::Answer(answer),
            Ok(Err(why)) => Exchange::Died(why),
            Err(_) => Exchange::TimedOut,
        },
        _ = cancel.cancelled() => Exchange::Cancelled,
    }
}

/// How a dead child ended and what it last wrote, for the error: `; killed by SIGABRT:
/// memory allocation of 200000000 bytes failed`.
async fn last_words(child: &mut Child) -> String {
    let exit = child.process.wait_exit(LAST_WORDS_WAIT).await;
    child.process.stderr().wait_closed(LAST_WORDS_WAIT).await;
    let mut words = String::new();
    if let Some(status) = exit {
        words.push_str(&format!("; {}", describe_exit(&status)));
    }
    let tail = child.process.stderr().text(512);
    let lines: Vec<&str> = tail
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("note: run with `RUST_BACKTRACE"))
        .collect();
    if !lines.is_empty() {
        words.push_str(&format!(": {}", lines.join("; ")));
    }
    words
}

/// The first template string inside `value`, to name in an error.
fn first_template(value: &Value) -> &str {
    match value {
        Value::String(s) if has_templates(value) => s,
        Value::Array(items) => items
            .iter()
            .find(|v| has_templates(v))
            .map_or("", first_template),
        Value::Object(map) => map
            .values()
            .find(|v| has_templates(v))
            .map_or("", first_template),
        _ => "",
    }
}

/// The sandbox child's whole life: cap its own memory, then answer render requests on
/// stdin, one line each, until EOF. Call it first thing in `main` when the first
/// argument is [`SANDBOX_ARG`], before anything starts threads.
pub fn serve() -> std::process::ExitCode {
    use std::process::ExitCode;
    if let Err(e) = unix::limit_own_memory(MEMORY_LIMIT_BYTES) {
        eprintln!("template sandbox: cannot limit its memory: {e}");
        return ExitCode::from(1);
    }
    let templates = Templates::new();
    let mut input = std::io::stdin().lock();
    let mut output = std::io::stdout().lock();
    let mut line = Vec::new();
    loop {
        line.clear();
        match input.read_until(b'\n', &mut line) {
            Ok(0) => return ExitCode::SUCCESS,
            Ok(_) => {}
            Err(e) => {
                eprintln!("template sandbox: cannot read a request: {e}");
                return ExitCode::from(1);
            }
        }
        let answer = match serde_json::from_slice::<OwnedRequest>(&line) {
            Ok(request) => {
                let rendered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    templates.render(&request.value, &request.data)
                }));
                match rendered {
                    Ok(Ok(value)) => Answer::Rendered(value),
                    Ok(Err(e)) => Answer::Failed(e),
                    Err(_) => Answer::Failed(TemplateError::new(
                        first_template(&request.value),
                        "the template engine panicked (a bug in mcpq or minijinja)",
                    )),
                }
            }
            Err(e) => Answer::Failed(TemplateError::new("", format!("bad request: {e}"))),
        };
        let written = serde_json::to_writer(&mut output, &answer)
            .map_err(std::io::Error::from)
            .and_then(|()| output.write_all(b"\n"))
            .and_then(|()| output.flush());
        if let Err(e) = written {
            eprintln!("template sandbox: cannot answer: {e}");
            return ExitCode::from(1);
        }
    }
}
