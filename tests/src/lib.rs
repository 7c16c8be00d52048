//! Helpers for mcpq's end-to-end tests: real binaries, real Redis, real processes.
//!
//! - [`TestEnv`]: a unique Redis namespace and temp directory per test, a config file
//!   whose `echo` server is the fixture binary; its keys are deleted when it drops
//!   (never FLUSHALL/FLUSHDB).
//! - [`WorkerProc`]: a running `mcpq-worker`, stopped (SIGTERM, then SIGKILL) on drop.
//! - [`TestEnv::mcpq`]: runs the `mcpq` CLI against the test's config.
//!
//! The binaries are looked up next to the test executable (`target/<profile>/`); build
//! them first with `cargo build --workspace --bins` (the README's test command does).

pub mod prometheus;
pub mod redis_cluster;
pub mod redis_sentinel;
pub mod redis_tls;
pub mod scripted_model;
pub mod serve;

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Redis used by the tests (`REDIS_URL`, default the local one).
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string())
}

/// The directory scripts/test-deps installed `what` (`npm` or `venv`) into, or `None`
/// with a loud message when it could not (registry unreachable): the test then skips.
pub fn deps(what: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("MCPQ_DEPS_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/mcpq-deps")))?;
    if dir.join(what).join(".stamp").exists() {
        Some(dir)
    } else {
        eprintln!(
            "SKIPPED: {what} is not installed in {} (run scripts/test-deps; is the registry reachable?)",
            dir.display()
        );
        None
    }
}

/// Path of a workspace binary built next to the test executable.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/..");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first with `cargo build --workspace --bins` (scripts/test does)",
        path.display()
    );
    path
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The `[queue]` table of test configs: retries come back within a fraction of a second
/// (the defaults, 1 s doubling to 5 min, would make failure tests slow).
pub const TEST_QUEUE: &str = "retry_base = \"50ms\"\nretry_cap = \"200ms\"\n";

/// One test's world: namespace, directory, config.
pub struct TestEnv {
    /// Unique Redis key namespace.
    pub namespace: String,
    /// Unique temp directory (removed on drop).
    pub dir: PathBuf,
    /// The config file.
    pub config: PathBuf,
    /// The Redis this env uses (the shared one, or a chaos test's private one).
    pub redis_url: String,
}

impl TestEnv {
    /// A fresh env named after `tag`, with the fixture as server `echo` (pooled) and
    /// `extra` TOML prepended to the config (more servers, `[worker]` settings...).
    pub fn new(tag: &str, extra: &str) -> TestEnv {
        Self::with_echo(tag, extra, "")
    }

    /// Like [`TestEnv::new`], with `echo_extra` added to `[servers.echo]`
    /// (e.g. `pool = false` for a fresh server per job).
    pub fn with_echo(tag: &str, extra: &str, echo_extra: &str) -> TestEnv {
        Self::custom(tag, TEST_QUEUE, extra, echo_extra)
    }

    /// Like [`TestEnv::new`] with `queue` as the `[queue]` table (see [`TEST_QUEUE`]).
    pub fn with_queue(tag: &str, queue: &str, extra: &str) -> TestEnv {
        Self::custom(tag, queue, extra, "")
    }

    /// The general constructor: `[queue]` table, extra TOML, extra `[servers.echo]` lines.
    pub fn custom(tag: &str, queue: &str, extra: &str, echo_extra: &str) -> TestEnv {
        Self::on_redis(&redis_url(), tag, queue, extra, echo_extra)
    }

    /// [`TestEnv::custom`] on the Redis at `url` (a chaos test's private server).
    pub fn on_redis(url: &str, tag: &str, queue: &str, extra: &str, echo_extra: &str) -> TestEnv {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let namespace = format!(
            "mcpq-test-{tag}-{}-{n}-{}",
            std::process::id(),
            ulid::Ulid::generate()
        );
        let dir = std::env::temp_dir().join(&namespace);
        std::fs::create_dir_all(&dir).expect("create test dir");
        let config = dir.join("mcpq.toml");
        let text = format!(
            "namespace = \"{namespace}\"\nredis_url = \"{url}\"\n[queue]\n{queue}\n{extra}\n[servers.echo]\ncommand = \"{}\"\nenv = {{ MCPQ_FIXTURE_SPAWN_LOG = \"{}\" }}\n{echo_extra}\n",
            bin("mcpq-fixture").display(),
            dir.join("spawns.log").display(),
        );
        std::fs::write(&config, text).expect("write config");
        TestEnv {
            namespace,
            dir,
            config,
            redis_url: url.to_string(),
        }
    }

    /// Appends TOML (more `[servers.X]` tables) to the config.
    pub fn add_config(&self, toml: &str) {
        let config = std::fs::read_to_string(&self.config).expect("config");
        std::fs::write(&self.config, format!("{config}\n{toml}\n")).expect("config");
    }

    fn spawn_log(&self, field: usize) -> Vec<u32> {
        std::fs::read_to_string(self.dir.join("spawns.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(field)?.parse().ok())
            .collect()
    }

    /// Pids of every fixture server started so far in this env.
    pub fn fixture_pids(&self) -> Vec<u32> {
        self.spawn_log(0)
    }

    /// Process groups of those servers (a launcher's, when one runs in front).
    pub fn fixture_groups(&self) -> Vec<u32> {
        self.spawn_log(1)
    }

    /// Starts a worker with the env's config and `args`.
    pub fn worker(&self, args: &[&str]) -> WorkerProc {
        self.worker_with(args, |_| {})
    }

    /// [`TestEnv::worker`], once it logged that it started (within 20 s; its log on
    /// failure).
    pub fn started_worker(&self, args: &[&str]) -> WorkerProc {
        let worker = self.worker(args);
        assert!(
            worker.wait_log("worker started", Duration::from_secs(20)),
            "{}",
            worker.log_text()
        );
        worker
    }

    /// Starts a worker, letting `setup` change the command (e.g. its signal state).
    pub fn worker_with(&self, args: &[&str], setup: impl FnOnce(&mut Command)) -> WorkerProc {
        let log = self.dir.join(format!(
            "worker-{}.log",
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let file = std::fs::File::create(&log).expect("worker log");
        let mut cmd = Command::new(bin("mcpq-worker"));
        cmd.arg("--config")
            .arg(&self.config)
            .args(args)
            .env_remove("MCPQ_CONFIG")
            .env_remove("MCPQ_NAMESPACE")
            .env("REDIS_URL", &self.redis_url)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup log"))
            .stderr(file);
        setup(&mut cmd);
        let child = cmd.spawn().expect("start mcpq-worker");
        WorkerProc { child, log }
    }

    /// `mcpq ARGS` with this env's config and Redis, and no config from the caller's
    /// environment.
    pub fn mcpq_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin("mcpq"));
        cmd.arg("--config")
            .arg(&self.config)
            .args(args)
            .env_remove("MCPQ_CONFIG")
            .env_remove("MCPQ_NAMESPACE")
            .env("REDIS_URL", &self.redis_url);
        cmd
    }

    /// Runs `mcpq ARGS` with this env's config; `stdin` is fed to it.
    pub fn mcpq_with_stdin(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut child = self
            .mcpq_command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mcpq");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin)
            .expect("feed stdin");
        child.wait_with_output().expect("mcpq output")
    }

    /// Runs `mcpq ARGS` with this env's config, and reads its peak resident memory
    /// (`VmHWM`, bytes) every 20 ms while it runs: the last reading before it exits.
    pub fn mcpq_measured(&self, args: &[&str]) -> (Output, u64) {
        let out_path = self
            .dir
            .join(format!("mcpq-{}.out", ulid::Ulid::generate()));
        let err_path = out_path.with_extension("err");
        let mut child = self
            .mcpq_command(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_path).expect("stdout file"))
            .stderr(std::fs::File::create(&err_path).expect("stderr file"))
            .spawn()
            .expect("start mcpq");
        let mut peak = 0u64;
        let status = loop {
            if let Some(bytes) = proc_memory(child.id(), "VmHWM") {
                peak = peak.max(bytes);
            }
            if let Some(status) = child.try_wait().expect("wait mcpq") {
                break status;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let output = Output {
            status,
            stdout: std::fs::read(&out_path).unwrap_or_default(),
            stderr: std::fs::read(&err_path).unwrap_or_default(),
        };
        (output, peak)
    }

    /// Runs `mcpq ARGS` with this env's config.
    pub fn mcpq(&self, args: &[&str]) -> Output {
        self.mcpq_with_stdin(args, b"")
    }

    /// `mcpq submit ...` and returns the printed job id (asserts success).
    pub fn submit(&self, args: &[&str]) -> String {
        let mut all = vec!["submit"];
        all.extend_from_slice(args);
        let out = self.mcpq(&all);
        assert_eq!(
            out.status.code(),
            Some(0),
            "submit failed: {}",
            text(&out.stderr)
        );
        text(&out.stdout).trim().to_string()
    }

    /// `mcpq submit agent --server S --tool T --args ARGS EXTRA...`; returns the job id.
    pub fn submit_call(&self, server: &str, tool: &str, args: &str, extra: &[&str]) -> String {
        let mut all = vec!["agent", "--server", server, "--tool", tool, "--args", args];
        all.extend_from_slice(extra);
        self.submit(&all)
    }

    /// `mcpq wait ID --timeout 60s --json`: its exit code and its JSON line.
    pub fn wait_json(&self, id: &str) -> (Option<i32>, serde_json::Value) {
        let out = self.mcpq(&["wait", id, "--timeout", "60s", "--json"]);
        let v = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {} / {}", text(&out.stdout), text(&out.stderr)));
        (out.status.code(), v)
    }

    /// `mcpq status ID --json`.
    pub fn status_json(&self, id: &str) -> serde_json::Value {
        let out = self.mcpq(&["status", id, "--json"]);
        serde_json::from_slice(&out.stdout).expect("status JSON")
    }

    /// Milliseconds from a finished job's start to its finish (status timestamps).
    pub fn run_millis(&self, id: &str) -> u64 {
        let s = self.status_json(id);
        let (start, end) = (s["started_at"].as_u64(), s["finished_at"].as_u64());
        end.expect("finished") - start.expect("started")
    }

    /// Pushes many jobs at once through the library's producer (the CLI spawns a
    /// process per job, too slow for hundreds). Returns the ids they got (a fresh id is
    /// re-drawn in its partition when the namespace has several).
    pub fn submit_jobs(&self, jobs: &[mcpq_shared::Job]) -> Vec<String> {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            // As the env's processes connect: its topology and partition count.
            let config = mcpq_shared::Config::load(Some(&self.config)).expect("config");
            let target = config.redis_target().expect("redis target");
            let (conn, keys) = mcpq_shared::queue::open(&target, &self.namespace)
                .await
                .expect("redis");
            let producer = mcpq_shared::queue::Producer::new(conn, keys, Default::default());
            producer
                .submit_many(jobs)
                .await
                .expect("submit")
                .into_iter()
                .map(|s| s.id)
                .collect()
        })
    }

    /// Jobs not finished yet, from the queue's own structures (O(1)): queued in any
    /// priority or as a suspect, running under a lease, or waiting for a retry.
    pub fn queue_depth(&self) -> usize {
        let mut redis = self.redis();
        let partitions: u16 = redis::cmd("GET")
            .arg(format!("{{{}}}:partitions", self.namespace))
            .query::<Option<u16>>(&mut redis)
            .ok()
            .flatten()
            .unwrap_or(1);
        (0..partitions)
            .map(|n| {
                let p = if n == 0 {
                    format!("{{{}}}", self.namespace)
                } else {
                    format!("{{{}~{n}}}", self.namespace)
                };
                let (high, normal, low, leases, scheduled, suspects): (
                    usize,
                    usize,
                    usize,
                    usize,
                    usize,
                    usize,
                ) = redis::pipe()
                    .llen(format!("{p}:ready:high"))
                    .llen(format!("{p}:ready:normal"))
                    .llen(format!("{p}:ready:low"))
                    .zcard(format!("{p}:leases"))
                    .zcard(format!("{p}:scheduled"))
                    .llen(format!("{p}:suspects"))
                    .query(&mut redis)
                    .unwrap_or((1, 0, 0, 0, 0, 0));
                high + normal + low + leases + scheduled + suspects
            })
            .sum()
    }

    /// Counts of job statuses in this namespace (KEYS + one HGET each: for checks at the
    /// end of a test, not for polling).
    pub fn status_counts(&self) -> std::collections::BTreeMap<String, usize> {
        let mut redis = self.redis();
        // Partition 0's jobs, then the other partitions' ({ns~N}).
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{{{}}}:job:*", self.namespace))
            .query(&mut redis)
            .unwrap_or_default();
        keys.extend(
            redis::cmd("KEYS")
                .arg(format!("{{{}~*}}:job:*", self.namespace))
                .query::<Vec<String>>(&mut redis)
                .unwrap_or_default(),
        );
        // `KEY:corrupt` is a malformed record the queue set aside (not a job hash).
        let jobs: Vec<&String> = keys
            .iter()
            .filter(|k| !k.ends_with(":attempts") && !k.ends_with(":corrupt"))
            .collect();
        let mut counts = std::collections::BTreeMap::new();
        for chunk in jobs.chunks(1000) {
            let mut pipe = redis::pipe();
            for key in chunk {
                pipe.hget(key.as_str(), "status");
            }
            let statuses: Vec<Option<String>> = pipe.query(&mut redis).unwrap_or_default();
            for s in statuses {
                *counts
                    .entry(s.unwrap_or_else(|| "none".into()))
                    .or_insert(0) += 1;
            }
        }
        counts
    }

    /// How many jobs of this namespace have finished (succeeded, dead or cancelled).
    pub fn finished_count(&self) -> usize {
        self.status_counts()
            .iter()
            .filter(|(status, _)| matches!(status.as_str(), "succeeded" | "dead" | "cancelled"))
            .map(|(_, n)| n)
            .sum()
    }

    /// Waits until at least `n` jobs of this namespace have finished.
    pub fn wait_finished(&self, n: usize, within: Duration) -> bool {
        wait_until_every(within, Duration::from_millis(200), || {
            self.finished_count() >= n
        })
    }

    /// A sync Redis connection.
    pub fn redis(&self) -> redis::Connection {
        redis::Client::open(self.redis_url.as_str())
            .and_then(|c| c.get_connection())
            .expect("Redis must run at REDIS_URL (scripts/dev-up starts one)")
    }

    /// Every key of this env's namespace.
    pub fn keys(&self) -> Vec<String> {
        let mut conn = self.redis();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{{{}}}:*", self.namespace))
            .query(&mut conn)
            .expect("KEYS");
        keys
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if let Ok(mut conn) =
            redis::Client::open(self.redis_url.as_str()).and_then(|c| c.get_connection())
        {
            // Partition 0 and the shared keys, then the other partitions' ({ns~N}).
            let mut keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{{{}}}:*", self.namespace))
                .query(&mut conn)
                .unwrap_or_default();
            keys.extend(
                redis::cmd("KEYS")
                    .arg(format!("{{{}~*}}:*", self.namespace))
                    .query::<Vec<String>>(&mut conn)
                    .unwrap_or_default(),
            );
            for chunk in keys.chunks(500) {
                let _: Result<(), _> = redis::cmd("DEL").arg(chunk).query(&mut conn);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running `mcpq-worker`.
pub struct WorkerProc {
    /// The process.
    pub child: Child,
    /// Its log file (stdout + stderr).
    pub log: PathBuf,
}

impl WorkerProc {
    /// Pid of the worker.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `sig` to the worker.
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid only sends a signal.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, sig);
        }
    }

    /// Waits up to `within` for the worker to exit.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The worker's peak resident memory so far, in bytes (`VmHWM`), or `None` once
    /// it has exited. Chaos scenarios report it and check it against their bound.
    pub fn peak_rss(&self) -> Option<u64> {
        proc_memory(self.pid(), "VmHWM")
    }

    /// The worker's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_log(&self, needle: &str, within: Duration) -> bool {
        wait_until(within, || self.log_text().contains(needle))
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal(libc::SIGTERM);
            if self.wait_exit(Duration::from_secs(15)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

/// A one-step agent job calling `tool` on `server` with `args` (a JSON object).
pub fn call_job(server: &str, tool: &str, args: serde_json::Value) -> mcpq_shared::Job {
    let step = mcpq_shared::job::PlanStep {
        name: None,
        server: server.to_string(),
        tool: tool.to_string(),
        arguments: args
            .as_object()
            .cloned()
            .expect("tool arguments are a JSON object"),
        continue_on_error: false,
        literal_arguments: false,
        keep_tool_errors: false,
    };
    mcpq_shared::Job::agent(vec![step], Default::default())
}

/// A tokio runtime for a test that calls the library directly.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("runtime")
}

/// A connection to the tests' Redis through the library.
pub async fn connect() -> mcpq_shared::queue::Conn {
    mcpq_shared::queue::connect(&redis_url())
        .await
        .expect("redis")
}

/// A port nobody listens on now (for a listener whose address a test must know first).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Polls `cond` every 20 ms until it holds or `within` passes.
pub fn wait_until(within: Duration, cond: impl FnMut() -> bool) -> bool {
    wait_until_every(within, Duration::from_millis(20), cond)
}

/// Polls `cond` every `period` until it holds or `within` passes.
pub fn wait_until_every(
    within: Duration,
    period: Duration,
    mut cond: impl FnMut() -> bool,
) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(period);
    }
}

/// A memory field of `/proc/PID/status` (`VmRSS`: resident now, `VmHWM`: the peak), in
/// bytes; `None` once the process is gone.
pub fn proc_memory(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| {
        l.strip_prefix(field)
            .is_some_and(|rest| rest.starts_with(':'))
    })?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// True while a process with this pid exists and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state follows the ")" that closes the command name.
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next());
            state != Some('Z')
        }
        Err(_) => false,
    }
}

/// `(state, ppid, pgrp)` of a process from /proc/PID/stat, if it exists.
pub fn proc_stat(pid: u32) -> Option<(char, u32, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, ppid, pgrp))
}

fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Live (non-zombie) processes of process group `pgid`.
pub fn group_members(pgid: u32) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(
            |&pid| matches!(proc_stat(pid), Some((state, _, pgrp)) if pgrp == pgid && state != 'Z'),
        )
        .collect()
}

/// Zombie children of `ppid` (exited, never reaped).
pub fn zombie_children(ppid: u32) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|&pid| matches!(proc_stat(pid), Some(('Z', parent, _)) if parent == ppid))
        .collect()
}

/// Live processes whose environment contains `KEY=VALUE` (a tag a test gave a server:
/// its launcher's children inherit it).
pub fn processes_with_env(key_value: &str) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|&pid| {
            matches!(proc_stat(pid), Some((state, _, _)) if state != 'Z')
                && std::fs::read(format!("/proc/{pid}/environ"))
                    .map(|env| env.split(|&b| b == 0).any(|kv| kv == key_value.as_bytes()))
                    .unwrap_or(false)
        })
        .collect()
}

/// Number of open descriptors of a process.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Lossy text of process output.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Makes a worker command start the way a hostile parent (a Python queue worker, a
/// shell, a service manager) can leave it: every signal blocked, and SIGCHLD, SIGINT,
/// SIGTERM, SIGHUP and SIGPIPE ignored. Then the worker is exec'd.
pub fn start_with_hostile_signal_state(cmd: &mut Command) {
    // SAFETY: only async-signal-safe calls (sigfillset, sigprocmask, signal) on stack
    // values, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let mut all: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::sigprocmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
            for sig in [
                libc::SIGCHLD,
                libc::SIGINT,
                libc::SIGTERM,
                libc::SIGHUP,
                libc::SIGPIPE,
            ] {
                libc::signal(sig, libc::SIG_IGN);
            }
            Ok(())
        });
    }
}

/// The fixture serving streamable HTTP on 127.0.0.1 (`mcpq-fixture --http`); killed on
/// drop. `env` is passed to it (e.g. `MCPQ_FIXTURE_REQUIRE_BEARER`).
pub struct HttpFixture {
    /// The process.
    pub child: Child,
    /// `http://127.0.0.1:PORT/mcp`.
    pub url: String,
}

impl HttpFixture {
    /// Starts one and reads its URL.
    pub fn start(env: &[(&str, &str)]) -> HttpFixture {
        use std::io::BufRead;
        let mut child = Command::new(bin("mcpq-fixture"))
            .args(["--http", "127.0.0.1:0"])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the HTTP fixture");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the fixture prints its URL");
        HttpFixture {
            child,
            url: line.trim().to_string(),
        }
    }
}

impl Drop for HttpFixture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
