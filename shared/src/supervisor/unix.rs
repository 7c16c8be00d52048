//! Every `libc` call of the supervisor, and the reason each one is safe.
//!
//! Two resets live here:
//! - [`prepare_child`] runs in the forked child before `exec` (`pre_exec`): empty signal
//!   mask, default dispositions, own session and process group, parent-death signal,
//!   close-on-exec on every descriptor above 2.
//! - [`reset_own_signal_state`] runs once at worker start-up, before any thread exists:
//!   a service manager or a shell may have started us with signals blocked or ignored,
//!   and children inherit both through `fork`.

use std::io;

/// Highest signal number on Linux (`SIGRTMAX`); a constant because `SIGRTMAX()` is a libc
/// function we do not want to call after fork.
const MAX_SIGNAL: libc::c_int = 64;

/// glibc reserves 32 and 33 for its threading; `sigaction` refuses them with EINVAL.
fn is_settable(sig: libc::c_int) -> bool {
    sig != libc::SIGKILL && sig != libc::SIGSTOP && sig != 32 && sig != 33
}

/// Runs in the child between `fork` and `exec`. `parent` is the worker's pid, read before
/// the fork.
///
/// # Safety
/// Must only be called from a `pre_exec` closure: it calls only async-signal-safe
/// functions (`sigemptyset`, `sigprocmask`, `sigaction`, `setsid`, `prctl`, `getppid`,
/// `syscall(close_range)`), allocates nothing and takes no lock.
pub(crate) unsafe fn prepare_child(parent: libc::pid_t) -> io::Result<()> {
    // SAFETY: all calls below are async-signal-safe syscalls on stack values; see the
    // function contract. Order matters:
    // 1. dispositions back to default *before* unblocking, so that a signal pending in
    //    the mask cannot run an inherited handler (there is none after exec anyway, but
    //    SIG_IGN would survive exec and swallow it);
    // 2. empty mask;
    // 3. setsid: own session and process group, so the supervisor can signal the whole
    //    tree (npx, uv, sh launchers) with kill(-pgid);
    // 4. PR_SET_PDEATHSIG, then check getppid(): if the worker died between fork and
    //    prctl, no signal will ever come, so give up now.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = libc::SIG_DFL;
        libc::sigemptyset(&mut action.sa_mask);
        for sig in 1..=MAX_SIGNAL {
            if is_settable(sig) {
                libc::sigaction(sig, &action, std::ptr::null_mut());
            }
        }
        #[cfg(target_os = "linux")]
        reset_reserved_signals();
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        if libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::setsid() < 0 {
            return Err(io::Error::last_os_error());
        }
        #[cfg(target_os = "linux")]
        {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            // close_range(3, ~0, CLOSE_RANGE_CLOEXEC): every descriptor the worker opened
            // without O_CLOEXEC closes at exec. Not a plain close: std reports exec errors
            // through a CLOEXEC pipe that must stay open until exec. ENOSYS (kernel < 5.11)
            // is ignored: std and tokio open their descriptors with O_CLOEXEC anyway.
            const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
            libc::syscall(
                libc::SYS_close_range,
                3 as libc::c_uint,
                libc::c_uint::MAX,
                CLOSE_RANGE_CLOEXEC,
            );
        }
        #[cfg(not(target_os = "linux"))]
        let _ = parent;
    }
    Ok(())
}

/// Signals 32 and 33 (glibc's SIGCANCEL and SIGSETXID) back to SIG_DFL with the raw
/// `rt_sigaction` syscall, which glibc's wrapper refuses for them. A parent that left them
/// ignored would otherwise pass that on to the server through exec.
///
/// # Safety
/// Only for the child between fork and exec (glibc's own threads no longer exist there).
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

/// The worker's own pid, for [`prepare_child`].
pub(crate) fn current_pid() -> libc::pid_t {
    // SAFETY: getpid cannot fail and has no preconditions.
    unsafe { libc::getpid() }
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
