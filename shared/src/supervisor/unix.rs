//! Every system call of the supervisor, and the reason each one is safe.
//!
//! Through `nix` (typed, safe wrappers; already in the build through rmcp's
//! process-wrap) wherever one exists: pipes, reads, `waitpid`, `killpg`, `access`,
//! resource limits, signal masks and names. Raw `libc` remains where nix cannot serve:
//! - the child between clone and exec ([`child_main`], [`clone_vfork`]) may only make
//!   async-signal-safe calls that allocate nothing, and nix's `execve` and `chdir` build
//!   C strings and pointer vectors on the heap, and nix has no `close_range`;
//! - `pidfd_open` and the query of a signal's disposition have no nix wrapper.
//!
//! Why a hand-made `clone(CLONE_VM | CLONE_VFORK)` and not `Command::pre_exec`: a
//! `pre_exec` hook makes std fork (copy the page tables of the whole worker) instead of
//! vfork. The `cold_start` benchmark's `fork` rows measure what that costs, side by side
//! (docs/BENCHMARKS.md, "Cold start"; 2026-11-27): a whole cold start (spawn,
//! `initialize`, one call) is 1.08-1.12x slower at p50 with fork from a small process,
//! and 13x slower (34 ms instead of 2.5 ms) from one holding 512 MiB, as a busy worker
//! may. So the vfork spawn stays.
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
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::resource::{self, Resource};
use nix::sys::signal::{self, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{self, WaitPidFlag, WaitStatus};
use nix::unistd::{self, AccessFlags, Pid};

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

/// A pipe, both ends close-on-exec: (read end, write end).
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(unistd::pipe2(OFlag::O_CLOEXEC)?)
}

/// Reads the child's failure report: `None` at EOF (it exec'd), else its errno.
pub(crate) fn read_report(fd: &OwnedFd) -> io::Result<Option<i32>> {
    let mut buf = [0u8; 4];
    let mut got = 0;
    while got < buf.len() {
        match unistd::read(fd, &mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok((got == buf.len()).then(|| i32::from_ne_bytes(buf)))
}

/// A `waitpid` result as std's `ExitStatus` (which is built from the raw status word:
/// the exit code in bits 8-15, or the signal in bits 0-6 and the core flag in bit 7).
/// `None` while the child runs (stops and continues are never asked for).
fn exit_status(status: WaitStatus) -> Option<ExitStatus> {
    match status {
        WaitStatus::Exited(_, code) => Some(ExitStatus::from_raw((code & 0xff) << 8)),
        WaitStatus::Signaled(_, sig, core) => Some(ExitStatus::from_raw(
            sig as i32 | if core { 0x80 } else { 0 },
        )),
        _ => None,
    }
}

/// `waitpid(pid, WNOHANG)`: the exit status once the child has exited.
pub(crate) fn reap_nohang(pid: libc::pid_t) -> io::Result<Option<ExitStatus>> {
    Ok(exit_status(wait::waitpid(
        Pid::from_raw(pid),
        Some(WaitPidFlag::WNOHANG),
    )?))
}

/// Blocking `waitpid`; only for a child known to be exiting, off the async runtime.
pub(crate) fn reap_blocking(pid: libc::pid_t) -> io::Result<ExitStatus> {
    loop {
        match wait::waitpid(Pid::from_raw(pid), None) {
            Ok(status) => {
                if let Some(status) = exit_status(status) {
                    return Ok(status);
                }
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
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
    std::fs::metadata(path).is_ok_and(|meta| meta.is_file())
        && unistd::access(path, AccessFlags::X_OK).is_ok()
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
    let mut old = SigSet::empty();
    signal::pthread_sigmask(
        SigmaskHow::SIG_SETMASK,
        Some(&SigSet::empty()),
        Some(&mut old),
    )?;
    // Real-time signals too, which nix's `Signal` does not name.
    // SAFETY: sigismember reads the live set `old` (nix's SigSet is a sigset_t).
    let blocked = |sig| unsafe { libc::sigismember(old.as_ref(), sig) } == 1;
    for sig in 1..=MAX_SIGNAL {
        if blocked(sig) {
            report.unblocked.push(sig);
        }
    }
    // SAFETY: sigaction is a plain C struct for which all-zero is valid; every pointer
    // passed points to a live stack value. Querying a disposition (null new action) has
    // no nix wrapper.
    unsafe {
        for sig in 1..=MAX_SIGNAL {
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

/// Sends `sig` (`None`: only check) to every process of the group `pgid`. Returns
/// `Ok(false)` when the group no longer exists.
pub(crate) fn signal_group(pgid: u32, sig: Option<Signal>) -> io::Result<bool> {
    let pgid = libc::pid_t::try_from(pgid).map_err(|_| Errno::EINVAL)?;
    if pgid <= 1 {
        // kill(-1) or kill(0) would hit far more than one server: never.
        return Err(Errno::EINVAL.into());
    }
    match signal::killpg(Pid::from_raw(pgid), sig) {
        Ok(()) => Ok(true),
        Err(Errno::ESRCH) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// True while any process of group `pgid` exists (zombies included).
pub(crate) fn group_exists(pgid: u32) -> bool {
    signal_group(pgid, None).unwrap_or(false)
}

/// The worker's own pid, for [`ChildPlan::parent`].
pub(crate) fn current_pid() -> libc::pid_t {
    unistd::getpid().as_raw()
}

/// The worker's real user id (owner checks of the attachment directory).
pub fn current_uid() -> u32 {
    unistd::getuid().as_raw()
}

/// `SIGTERM`-style name of a signal number, for logs and errors.
pub fn signal_name(sig: i32) -> String {
    match Signal::try_from(sig) {
        Ok(signal) => signal.as_str().to_string(),
        Err(_) => format!("signal {sig}"),
    }
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
    for (resource, limit) in [(Resource::RLIMIT_DATA, bytes), (Resource::RLIMIT_CORE, 0)] {
        let (_, max) = resource::getrlimit(resource)?;
        let limit = limit.min(max);
        resource::setrlimit(resource, limit, limit)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_statuses_become_the_exit_statuses_std_reports() {
        let pid = Pid::from_raw(42);
        let exited = exit_status(WaitStatus::Exited(pid, 3)).expect("exited");
        assert_eq!((exited.code(), exited.signal()), (Some(3), None));
        let killed =
            exit_status(WaitStatus::Signaled(pid, Signal::SIGKILL, false)).expect("signaled");
        assert_eq!((killed.code(), killed.signal()), (None, Some(9)));
        assert!(!killed.core_dumped());
        let dumped =
            exit_status(WaitStatus::Signaled(pid, Signal::SIGSEGV, true)).expect("signaled");
        assert_eq!(dumped.signal(), Some(11));
        assert!(dumped.core_dumped());
        assert_eq!(exit_status(WaitStatus::StillAlive), None);
    }

    #[test]
    fn signals_are_named_like_the_c_constants_and_unknown_numbers_by_number() {
        assert_eq!(signal_name(libc::SIGTERM), "SIGTERM");
        assert_eq!(signal_name(libc::SIGKILL), "SIGKILL");
        assert_eq!(signal_name(libc::SIGWINCH), "SIGWINCH");
        assert_eq!(signal_name(40), "signal 40");
        assert_eq!(signal_name(-1), "signal -1");
    }
}
