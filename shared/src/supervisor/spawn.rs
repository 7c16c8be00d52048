//! Creating a child process the way `posix_spawn` does, plus our clean start.
//!
//! Why not `std`/`tokio::process::Command` with `pre_exec`: any `pre_exec` makes std fall
//! back from its `posix_spawn`/vfork path to a full `fork()`, which copies the page
//! tables of the whole worker; measured here, that alone cost ~10 % of a server's cold
//! start (spawn + initialize + one call), and it grows with the worker's memory. So we do
//! what glibc's `posix_spawn` does: `clone(CLONE_VM | CLONE_VFORK)` onto a small stack,
//! run our clean-start steps in the child ([`super::unix::child_main`]), then `execve`.
//!
//! How it stays correct:
//! - Everything the child needs (path, argv, envp, cwd, pipe descriptors) is built in
//!   the parent *before* the clone; the child only reads it and makes syscalls.
//! - The calling thread blocks every signal around the clone, so no signal handler of
//!   the worker can run in the child (which shares the worker's memory until exec); the
//!   child resets every disposition to `SIG_DFL` before it unblocks.
//! - `CLONE_VFORK` suspends the calling thread until the child has exec'd or exited. A
//!   failed `execve` (or any failed step) is reported through a close-on-exec pipe as an
//!   errno, so spawn errors stay precise (`ENOENT`, `EACCES`...).
//! - Exits are awaited through a pidfd registered with tokio (readable once the child
//!   exits), then reaped with `waitpid`; without pidfd (Linux < 5.3), by polling.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;

use super::unix;

/// Stack for the cloned child: it only makes syscalls, but libc wrappers and the
/// kernel's signal frame need room. glibc's posix_spawn uses a similar size.
const CHILD_STACK_BYTES: usize = 128 * 1024;

/// How often exit is polled when the kernel has no pidfd.
const POLL_WITHOUT_PIDFD: Duration = Duration::from_millis(10);

/// What to run, as the OS takes it (built from a [`super::SpawnSpec`] by the supervisor).
#[derive(Debug, Clone)]
pub(crate) struct ExecSpec {
    pub program: OsString,
    pub args: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
    pub cwd: Option<PathBuf>,
}

/// A spawned child: pid, its pipes, and a handle to await its exit.
#[derive(Debug)]
pub(crate) struct RawChild {
    pub pid: u32,
    pub stdin: pipe::Sender,
    pub stdout: pipe::Receiver,
    pub stderr: pipe::Receiver,
    pub exit: ExitWatch,
}

/// Awaits and reaps one child.
#[derive(Debug)]
pub(crate) struct ExitWatch {
    pid: libc::pid_t,
    pidfd: Option<AsyncFd<OwnedFd>>,
    status: Option<ExitStatus>,
}

impl ExitWatch {
    /// Reaps the child if it has exited, without waiting.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = unix::reap_nohang(self.pid)?;
        }
        Ok(self.status)
    }

    /// Waits for the child to exit and reaps it.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            match &self.pidfd {
                Some(fd) => {
                    let mut ready = fd.readable().await?;
                    // Readable means exited: reap. A spurious wake-up waits again.
                    match unix::reap_nohang(self.pid)? {
                        Some(status) => self.status = Some(status),
                        None => ready.clear_ready(),
                    }
                }
                None => tokio::time::sleep(POLL_WITHOUT_PIDFD).await,
            }
        }
    }

    /// True once reaped.
    pub fn is_reaped(&self) -> bool {
        self.status.is_some()
    }
}

fn cstring(bytes: &[u8], what: &str) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} contains a NUL byte"),
        )
    })
}

/// `execvp`'s search, done in the parent: the first executable `dir/program` on `PATH`.
fn resolve(program: &OsStr, env: &[(OsString, OsString)]) -> io::Result<PathBuf> {
    let as_path = Path::new(program);
    if program.as_bytes().contains(&b'/') {
        return Ok(as_path.to_path_buf());
    }
    let path = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin"));
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(program);
        if unix::is_executable_file(&candidate) {
            return Ok(candidate);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "`{}` is not on PATH ({})",
            program.to_string_lossy(),
            path.to_string_lossy()
        ),
    ))
}

/// Starts `spec` with a clean signal state, in its own session and process group, with
/// a parent-death signal, its stdio on three new pipes and no other descriptor.
///
/// Must run on a long-lived thread (a tokio worker thread): the parent-death signal fires
/// when the thread that spawned the child exits.
pub(crate) fn spawn(spec: &ExecSpec) -> io::Result<RawChild> {
    let path = resolve(&spec.program, &spec.env)?;
    let path = cstring(path.as_os_str().as_bytes(), "the command")?;
    let mut argv = vec![cstring(spec.program.as_bytes(), "the command")?];
    for arg in &spec.args {
        argv.push(cstring(arg.as_bytes(), "an argument")?);
    }
    let mut envp = Vec::with_capacity(spec.env.len());
    for (k, v) in &spec.env {
        let mut kv = k.clone().into_vec();
        kv.push(b'=');
        kv.extend_from_slice(v.as_bytes());
        envp.push(cstring(&kv, "an environment variable")?);
    }
    let cwd = match &spec.cwd {
        Some(dir) => Some(cstring(
            dir.as_os_str().as_bytes(),
            "the working directory",
        )?),
        None => None,
    };
    let (stdin_r, stdin_w) = unix::pipe()?;
    let (stdout_r, stdout_w) = unix::pipe()?;
    let (stderr_r, stderr_w) = unix::pipe()?;
    let (report_r, report_w) = unix::pipe()?;

    let argv_ptrs: Vec<*const libc::c_char> = argv
        .iter()
        .map(|a| a.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    let envp_ptrs: Vec<*const libc::c_char> = envp
        .iter()
        .map(|e| e.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    let plan = unix::ChildPlan {
        path: path.as_ptr(),
        argv: argv_ptrs.as_ptr(),
        envp: envp_ptrs.as_ptr(),
        cwd: cwd.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
        stdio: [
            stdin_r.as_raw_fd(),
            stdout_w.as_raw_fd(),
            stderr_w.as_raw_fd(),
        ],
        report: report_w.as_raw_fd(),
        parent: unix::current_pid(),
    };
    let mut stack = vec![0u8; CHILD_STACK_BYTES];
    let pid = unix::clone_vfork(&plan, &mut stack)?;
    // The child has exec'd or exited: its copies of the pipe ends are its own now.
    drop((stdin_r, stdout_w, stderr_w, report_w));
    if let Some(errno) = unix::read_report(&report_r)? {
        // The child failed before exec and _exit'ed: reap it, then report why.
        let _ = unix::reap_blocking(pid);
        return Err(io::Error::from_raw_os_error(errno));
    }
    drop(stack);
    let pidfd = unix::pidfd_open(pid).ok().and_then(|fd| {
        // SAFETY: `fd` is an OwnedFd moved into the AsyncFd, which owns it until dropped:
        // it stays open and refers to the same pidfd for the AsyncFd's whole life.
        unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }.ok()
    });
    Ok(RawChild {
        pid: pid as u32,
        stdin: pipe::Sender::from_owned_fd(stdin_w)?,
        stdout: pipe::Receiver::from_owned_fd(stdout_r)?,
        stderr: pipe::Receiver::from_owned_fd(stderr_r)?,
        exit: ExitWatch {
            pid,
            pidfd,
            status: None,
        },
    })
}

/// Reaps `pid` in the background once it exits (for a child dropped without `wait`).
pub(crate) fn reap_in_background(mut exit: ExitWatch) {
    if exit.is_reaped() {
        return;
    }
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn(async move {
                let _ = exit.wait().await;
            });
        }
        // No runtime (process teardown): the child was sent SIGKILL, so this returns at
        // once; and we are not on a runtime thread.
        Err(_) => {
            let _ = unix::reap_blocking(exit.pid);
        }
    }
}
