//! Every `libc` call of the supervisor, and the reason each one is safe.
//!
//! Two resets live here:
//! - [`child_main`] runs in the cloned child before `execve` (see `spawn.rs`): default
//!   dispositions, its stdio pipes on 0-2, own session and process group, parent-death
//!   signal, close-on-exec on every descriptor above 2, working directory, empty signal
//!   mask, exec.
//! - [`reset_own_signal_state`] runs once at worker start-up, before any thread exists:
//!   a service manager or a shell may have started us with signals blocked or ignored,
//!   and children inherit both through `fork`.
//!
//! Linux only, and gated so: the spawn path ([`ChildPlan`], [`child_main`],
//! [`clone_vfork`]: `clone`, `PR_SET_PDEATHSIG`, `close_range`, raw `rt_sigaction`,
//! `__errno_location`), [`pipe`] (`pipe2`) and [`pidfd_open`]. The rest is POSIX
//! (`waitpid`, `kill`, `sigaction`, `setrlimit`), though [`MAX_SIGNAL`] and the
//! reserved signals 32 and 33 are Linux/glibc numbers. `supervisor/mod.rs` stops a
//! non-Linux build with a `compile_error!` that says so.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// Highest signal number on Linux (`SIGRTMAX`); a constant because `SIGRTMAX()` is a libc
/// function we do not want to call in the child.
const MAX_SIGNAL: libc::c_int = 64;

/// glibc reserves 32 and 33 for its threading; `sigaction` refuses them with EINVAL.
fn is_settable(sig: libc::c_int) -> bool {
    sig != libc::SIGKILL && sig != libc::SIGSTOP && sig != 32 && sig != 33
}

#[cfg(target_os = "linux")]
/// Everything the child needs, prepared by the parent before the clone. Raw pointers
/// into buffers the parent keeps alive until the child has exec'd or exited.
#[derive(Debug)]
pub(crate) struct ChildPlan {
    /// Absolute or relative path to execute (already resolved against PATH).
    pub path: *const libc::c_char,
    /// NULL-terminated argv.
    pub argv: *const *const libc::c_char,
    /// NULL-terminated envp.
    pub envp: *const *const libc::c_char,
    /// Working directory, or NULL.
    pub cwd: *const libc::c_char,
    /// Descriptors to become the child's 0, 1 and 2.
    pub stdio: [libc::c_int; 3],
    /// Write end of the close-on-exec pipe that reports a failure (errno) to the parent.
    pub report: libc::c_int,
    /// The worker's pid, to check that it did not die before the parent-death signal
    /// was armed.
    pub parent: libc::pid_t,
}

#[cfg(target_os = "linux")]
/// The child's side of [`clone_vfork`]. Runs on its own stack in the worker's address
/// space, with every signal blocked, until `execve` replaces it.
///
/// Only async-signal-safe syscalls on data prepared by the parent: no allocation, no
/// lock, no write to the parent's memory (errno aside: the child has the parent thread's
/// TLS, and that thread is suspended until we exec or exit). Order matters:
/// 1. dispositions back to `SIG_DFL` first, while everything is still blocked: no
///    handler of the worker can ever run here, and `SIG_IGN` (which survives exec) is
///    undone;
/// 2. the stdio pipes onto 0-2 (through descriptors >= 3 first, in case a pipe end
///    itself is 0, 1 or 2 because the worker had closed those);
/// 3. `setsid`: own session and process group, so the supervisor can signal the whole
///    tree (npx, uv, sh launchers) with `kill(-pgid)`;
/// 4. `PR_SET_PDEATHSIG`, then check `getppid()`: if the worker died before prctl, no
///    signal will ever come, so give up now;
/// 5. close-on-exec on every descriptor above 2 (`close_range`; ENOSYS on Linux < 5.11
///    is ignored: std and tokio open theirs with O_CLOEXEC anyway);
/// 6. `chdir`, an empty signal mask, `execve`.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `&ChildPlan` passed by `clone_vfork`, alive until we exec or
    // exit (the parent thread is suspended by CLONE_VFORK until then). Every call is a
    // plain syscall wrapper on stack values or on the plan's prepared buffers.
    unsafe {
        let plan = &*(arg as *const ChildPlan);
        let fail = |report: libc::c_int| -> ! {
            let errno = *libc::__errno_location();
            let bytes = errno.to_ne_bytes();
            libc::write(report, bytes.as_ptr().cast(), bytes.len());
            libc::_exit(127)
        };
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = libc::SIG_DFL;
        libc::sigemptyset(&mut action.sa_mask);
        for sig in 1..=MAX_SIGNAL {
            if is_settable(sig) {
                libc::sigaction(sig, &action, std::ptr::null_mut());
            }
        }
        reset_reserved_signals();

        let mut high = [0 as libc::c_int; 3];
        for (i, &fd) in plan.stdio.iter().enumerate() {
            high[i] = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3);
            if high[i] < 0 {
                fail(plan.report);
            }
        }
        for (target, &fd) in high.iter().enumerate() {
            if libc::dup2(fd, target as libc::c_int) < 0 {
                fail(plan.report);
            }
        }
        if libc::setsid() < 0 {
            fail(plan.report);
        }
        if libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        ) != 0
        {
            fail(plan.report);
        }
        if libc::getppid() != plan.parent {
            *libc::__errno_location() = libc::ESRCH;
            fail(plan.report);
        }
        const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        );
        if !plan.cwd.is_null() && libc::chdir(plan.cwd) != 0 {
            fail(plan.report);
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::execve(plan.path, plan.argv, plan.envp);
        fail(plan.report)
    }
}

#[cfg(target_os = "linux")]
/// Runs [`child_main`] in a new process sharing our memory (`CLONE_VM | CLONE_VFORK`, as
/// `posix_spawn` does): returns its pid once it has exec'd or exited.
pub(crate) fn clone_vfork(plan: &ChildPlan, stack: &mut [u8]) -> io::Result<libc::pid_t> {
    // The stack grows down: hand clone its 16-byte aligned top.
    let top = stack.as_mut_ptr() as usize + stack.len();
    let top = (top & !15) as *mut libc::c_void;
    // SAFETY: sigset/pthread_sigmask on stack values. clone runs `child_main` on `stack`
    // (owned by the caller, alive across the call) with `plan` (likewise); CLONE_VFORK
    // returns only after the child exec'd or exited, so neither is used after this
    // function returns. All signals are blocked on this thread around the clone, so no
    // handler runs in the child on our memory; the child resets them before unblocking.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(
            child_main,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            plan as *const ChildPlan as *mut libc::c_void,
        );
        let err = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if pid < 0 {
            return Err(err);
        }
        Ok(pid)
    }
}

#[cfg(target_os = "linux")]
/// A pipe, both ends close-on-exec: (read end, write end).
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`; we own them from here on.
    unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])))
    }
}

/// Reads the child's failure report: `None` at EOF (it exec'd), else its errno.
pub(crate) fn read_report(fd: &OwnedFd) -> io::Result<Option<i32>> {
    let mut buf = [0u8; 4];
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: reading into the unfilled part of a stack buffer.
        let n = unsafe {
            libc::read(
                fd.as_raw_fd(),
                buf[got..].as_mut_ptr().cast(),
                buf.len() - got,
            )
        };
        match n {
            0 => break,
            n if n > 0 => got += n as usize,
            _ => {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
        }
    }
    Ok((got == buf.len()).then(|| i32::from_ne_bytes(buf)))
}

/// `waitpid(pid, WNOHANG)`: the raw wait status once the child has exited.
pub(crate) fn reap_nohang(pid: libc::pid_t) -> io::Result<Option<libc::c_int>> {
    let mut status = 0;
    // SAFETY: waitpid on our own child with a valid status pointer.
    match unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } {
        0 => Ok(None),
        p if p == pid => Ok(Some(status)),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Blocking `waitpid`; only for a child known to be exiting, off the async runtime.
pub(crate) fn reap_blocking(pid: libc::pid_t) -> io::Result<libc::c_int> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our own child with a valid status pointer.
        let p = unsafe { libc::waitpid(pid, &mut status, 0) };
        if p == pid {
            return Ok(status);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

#[cfg(target_os = "linux")]
/// A pidfd for `pid` (Linux >= 5.3), readable once the process exits.
pub(crate) fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open returns a new descriptor we own, or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor returned to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// True for a regular file we may execute.
pub(crate) fn is_executable_file(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: access(2) on a NUL-terminated path.
    meta.is_file() && unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0
}

/// Signals 32 and 33 (glibc's SIGCANCEL and SIGSETXID) back to SIG_DFL with the raw
/// `rt_sigaction` syscall, which glibc's wrapper refuses for them. A parent that left them
/// ignored would otherwise pass that on to the server through exec.
///
/// # Safety
/// Only for the child between clone and exec.
#[cfg(target_os = "linux")]
unsafe fn reset_reserved_signals() {
    /// The kernel's `struct sigaction` (not glibc's): handler, flags, restorer, mask.
    #[repr(C)]
    struct KernelSigaction {
        handler: libc::sighandler_t,
        flags: libc::c_ulong,
        restorer: usize,
        mask: u64,
    }
    let action = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for sig in [32, 33] {
        // SAFETY: rt_sigaction with a valid struct pointer and the kernel's sigset size
        // (8 bytes); async-signal-safe.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &action as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                8usize,
            );
        }
    }
}

/// What [`reset_own_signal_state`] changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SignalReset {
    /// Signals that were blocked and are now unblocked.
    pub unblocked: Vec<i32>,
    /// Signals that were ignored (`SIG_IGN`) and are now at their default.
    pub defaulted: Vec<i32>,
}

/// Unblocks every signal and puts every ignored signal but SIGPIPE back to its default
/// disposition, for the calling thread and (through inheritance) every thread and child
/// created after it. SIGPIPE stays ignored: Rust programs rely on `EPIPE` instead.
///
/// Call it first thing in `main`, before the tokio runtime starts threads: the signal
/// mask is per thread, and only threads created afterwards inherit the cleared one.
pub fn reset_own_signal_state() -> io::Result<SignalReset> {
    let mut report = SignalReset::default();
    // SAFETY: sigset_t and sigaction are plain C structs for which all-zero is valid;
    // every pointer passed points to a live stack value.
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        if libc::pthread_sigmask(libc::SIG_SETMASK, &empty, &mut old) != 0 {
            return Err(io::Error::last_os_error());
        }
        for sig in 1..=MAX_SIGNAL {
            if libc::sigismember(&old, sig) == 1 {
                report.unblocked.push(sig);
            }
            if !is_settable(sig) || sig == libc::SIGPIPE {
                continue;
            }
            let mut current: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut current) != 0 {
                continue;
            }
            if current.sa_sigaction == libc::SIG_IGN {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = libc::SIG_DFL;
                libc::sigemptyset(&mut action.sa_mask);
                if libc::sigaction(sig, &action, std::ptr::null_mut()) == 0 {
                    report.defaulted.push(sig);
                }
            }
        }
    }
    Ok(report)
}

/// Sends `sig` to every process of the group `pgid`. Returns `Ok(false)` when the group
/// no longer exists.
pub(crate) fn signal_group(pgid: u32, sig: libc::c_int) -> io::Result<bool> {
    let pgid =
        libc::pid_t::try_from(pgid).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    if pgid <= 1 {
        // kill(-1) or kill(0) would hit far more than one server: never.
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: kill(2) with a negative pid only sends a signal; pgid > 1 was checked above.
    let rc = unsafe { libc::kill(-pgid, sig) };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) {
        Ok(false)
    } else {
        Err(err)
    }
}

/// True while any process of group `pgid` exists (zombies included).
pub(crate) fn group_exists(pgid: u32) -> bool {
    signal_group(pgid, 0).unwrap_or(false)
}

/// The worker's own pid, for [`ChildPlan::parent`].
pub(crate) fn current_pid() -> libc::pid_t {
    // SAFETY: getpid cannot fail and has no preconditions.
    unsafe { libc::getpid() }
}

/// The worker's real user id (owner checks of the attachment directory).
pub fn current_uid() -> u32 {
    // SAFETY: getuid cannot fail and has no preconditions.
    unsafe { libc::getuid() }
}

/// `SIGTERM`-style name of a signal number, for logs and errors.
pub fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGCHLD => "SIGCHLD",
        libc::SIGCONT => "SIGCONT",
        libc::SIGSTOP => "SIGSTOP",
        libc::SIGTSTP => "SIGTSTP",
        libc::SIGTTIN => "SIGTTIN",
        libc::SIGTTOU => "SIGTTOU",
        libc::SIGURG => "SIGURG",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGVTALRM => "SIGVTALRM",
        libc::SIGPROF => "SIGPROF",
        libc::SIGWINCH => "SIGWINCH",
        libc::SIGIO => "SIGIO",
        libc::SIGSYS => "SIGSYS",
        _ => return format!("signal {sig}"),
    };
    name.to_string()
}

/// Caps the calling process's own memory, for a child that runs untrusted work (the
/// template sandbox) and must die, not grow, when that work asks for too much:
/// `RLIMIT_DATA` (heap and private writable mappings: every `malloc`, on Linux >= 4.7)
/// to `bytes`, and `RLIMIT_CORE` to 0 so that dying leaves no core file behind. Past the
/// limit an allocation fails, and Rust aborts the process (SIGABRT, "memory allocation
/// of N bytes failed" on stderr).
///
/// Limits are inherited and can only be lowered by an unprivileged process: call it
/// before doing any of the untrusted work. A lower limit already in place is kept.
pub fn limit_own_memory(bytes: u64) -> io::Result<()> {
    for (resource, limit) in [(libc::RLIMIT_DATA, bytes), (libc::RLIMIT_CORE, 0)] {
        let mut old = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into a live stack value.
        if unsafe { libc::getrlimit(resource, &mut old) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let limit = limit.min(old.rlim_max);
        let value = libc::rlimit {
            rlim_cur: limit,
            rlim_max: limit,
        };
        // SAFETY: setrlimit with a pointer to a live stack value; it only changes this
        // process's limits.
        if unsafe { libc::setrlimit(resource, &value) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
