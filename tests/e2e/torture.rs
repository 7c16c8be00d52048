//! The supervisor's torture suite: each test recreates one way stdio MCP servers hang
//! workers elsewhere, and asserts on real processes (via /proc) that mcpq does not.

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use mcpq_tests::{
    call_job, fd_count, group_members, process_alive, text, wait_until, zombie_children, TestEnv,
};
use serde_json::json;

fn assert_group_gone(pgid: u32) {
    assert!(
        wait_until(Duration::from_secs(5), || group_members(pgid).is_empty()),
        "process group {pgid} still has {:?}",
        group_members(pgid)
    );
}

#[test]
fn sleep_forever_with_a_2s_job_timeout_fails_in_under_3s_and_its_group_is_gone() {
    let env = TestEnv::new("sleep-forever", "");
    let _worker = env.worker(&[]);
    let id = env.submit_call(
        "echo",
        "sleep_forever",
        "{}",
        &["--timeout", "2s", "--max-attempts", "1"],
    );
    let (code, v) = env.wait_json(&id);
    assert_eq!(code, Some(1));
    assert_eq!(v["error"]["kind"], "timeout", "{v}");
    let took = env.run_millis(&id);
    assert!(
        took < 3000,
        "the 2 s timeout took {took} ms to fail the job"
    );
    let pids = env.fixture_pids();
    assert_eq!(pids.len(), 1);
    assert_group_gone(pids[0]);
}

#[test]
fn a_server_ignoring_sigterm_is_killed_by_sigkill_and_the_error_says_so() {
    let env = TestEnv::new("ignore-sigterm", "[defaults]\nkill_grace = \"1s\"\n");
    let _worker = env.worker(&[]);
    let job = r#"{"kind":"agent","payload":{"steps":[
        {"server":"echo","tool":"ignore_sigterm"},
        {"server":"echo","tool":"sleep_forever"}]},"options":{"timeout":"2s"}}"#;
    let out = env.mcpq_with_stdin(&["submit", "-"], job.as_bytes());
    let id = text(&out.stdout).trim().to_string();
    let (code, v) = env.wait_json(&id);
    assert_eq!(code, Some(1));
    assert_eq!(v["error"]["kind"], "timeout");
    let message = v["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("ignored SIGTERM") && message.contains("SIGKILL"),
        "{message}"
    );
    assert_group_gone(env.fixture_pids()[0]);
}

#[test]
fn a_grandchild_in_the_servers_group_is_gone_after_the_job() {
    // A fresh server per job: the job's end is the session's end.
    let env = TestEnv::with_echo("grandchild", "", "pool = false");
    let _worker = env.worker(&[]);
    let id = env.submit_call("echo", "spawn_grandchild", "{}", &[]);
    let (code, v) = env.wait_json(&id);
    assert_eq!(code, Some(0), "{v}");
    let grandchild: u32 = v["result"][0]["result"]["content"][0]["text"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .expect("grandchild pid");
    assert!(
        wait_until(Duration::from_secs(5), || !process_alive(grandchild)),
        "grandchild {grandchild} outlived its job"
    );
    assert_group_gone(env.fixture_pids()[0]);
}

#[test]
fn launchers_between_us_and_the_server_are_stopped_with_it() {
    let fixture = mcpq_tests::bin("mcpq-fixture");
    let extra = format!(
        "[servers.sh_exec]\ncommand = \"sh\"\nargs = [\"-c\", \"exec {f}\"]\nenv = {{ MCPQ_FIXTURE_SPAWN_LOG = \"{{log}}\" }}\npool = false\n\
         [servers.sh_parent]\ncommand = \"sh\"\nargs = [\"-c\", \"{f}; sleep 1000\"]\nenv = {{ MCPQ_FIXTURE_SPAWN_LOG = \"{{log}}\" }}\npool = false\n\
         [defaults]\nkill_grace = \"1s\"\n",
        f = fixture.display()
    );
    let env = TestEnv::new("launchers", "");
    let extra = extra.replace("{log}", &env.dir.join("spawns.log").display().to_string());
    env.add_config(&extra);
    let _worker = env.worker(&[]);
    for server in ["sh_exec", "sh_parent"] {
        let id = env.submit_call(server, "echo", r#"{"text":"via sh"}"#, &[]);
        let (code, v) = env.wait_json(&id);
        assert_eq!(code, Some(0), "{server}: {v}");
        assert_eq!(v["result"][0]["result"]["content"][0]["text"], "via sh");
    }
    // Both fixtures (and the `sh` still waiting in front of the second one) are gone:
    // the server pid under `sh -c 'x; sleep'` is not the group leader, the shell is.
    let (pids, groups) = (env.fixture_pids(), env.fixture_groups());
    assert_eq!(pids.len(), 2);
    assert_ne!(
        pids[1], groups[1],
        "under `sh -c 'x; sleep'` the shell leads the group"
    );
    for pid in pids {
        assert!(
            wait_until(Duration::from_secs(5), || !process_alive(pid)),
            "fixture {pid} left behind"
        );
    }
    for pgid in groups {
        assert_group_gone(pgid);
    }
}

#[test]
fn servers_that_never_answer_or_never_read_fail_within_their_startup_timeout() {
    let fixture = mcpq_tests::bin("mcpq-fixture").display().to_string();
    let extra = format!(
        "[servers.mute]\ncommand = \"{fixture}\"\nstartup_timeout = \"1s\"\nenv = {{ MCPQ_FIXTURE_HANG_INITIALIZE = \"1\" }}\n\
         [servers.deaf]\ncommand = \"{fixture}\"\nstartup_timeout = \"1s\"\nenv = {{ MCPQ_FIXTURE_NEVER_READ = \"1\" }}\n\
         [defaults]\nkill_grace = \"500ms\"\n"
    );
    let env = TestEnv::new("hang-init", &extra);
    let _worker = env.worker(&[]);
    for (server, words) in [
        ("mute", "never answer initialize"),
        ("deaf", "never read stdin"),
    ] {
        let id = env.submit_call(server, "echo", "{}", &[]);
        let (code, v) = env.wait_json(&id);
        assert_eq!(code, Some(1));
        assert_eq!(v["error"]["kind"], "startup_timeout", "{v}");
        assert!(v["error"]["message"]
            .as_str()
            .expect("message")
            .contains("initialize"));
        assert!(
            v["error"]["stderr_tail"]
                .as_str()
                .expect("tail")
                .contains(words),
            "{v}"
        );
        let took = env.run_millis(&id);
        // Deadline 1 s, + 1 s at most (the contract), stop included.
        assert!(
            took < 2000,
            "{server}: a startup timeout of 1 s took {took} ms"
        );
    }
}

#[test]
fn a_server_that_closes_stdout_but_stays_alive_fails_the_call_and_is_stopped() {
    let env = TestEnv::new("close-stdout", "[defaults]\nkill_grace = \"500ms\"\n");
    let _worker = env.worker(&[]);
    let id = env.submit_call(
        "echo",
        "close_stdout_stay_alive",
        "{}",
        &["--timeout", "30s"],
    );
    let (code, v) = env.wait_json(&id);
    assert_eq!(code, Some(1));
    assert_eq!(v["error"]["kind"], "connection_closed", "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .expect("message")
        .contains("kept running"));
    let took = env.run_millis(&id);
    assert!(took < 5000, "took {took} ms");
    assert_group_gone(env.fixture_pids()[0]);
}

#[test]
fn a_100_mb_stderr_flood_during_a_call_completes_and_errors_carry_only_a_bounded_tail() {
    let env = TestEnv::new("flood-100mb", "");
    let _worker = env.worker(&[]);
    let job = r#"{"kind":"agent","payload":{"steps":[
        {"server":"echo","tool":"stderr_flood","arguments":{"bytes":100000000}},
        {"server":"echo","tool":"fail","arguments":{"message":"after the flood"}}]},
        "options":{"timeout":"120s"}}"#;
    let out = env.mcpq_with_stdin(&["submit", "-"], job.as_bytes());
    let id = text(&out.stdout).trim().to_string();
    let (code, v) = env.wait_json(&id);
    assert_eq!(code, Some(1), "{v}");
    // The flood step completed; the plan reached the second step.
    assert_eq!(v["error"]["step"], 1);
    assert_eq!(v["error"]["kind"], "tool_error");
    let tail = v["error"]["stderr_tail"].as_str().expect("tail");
    assert!(
        tail.len() <= mcpq_shared::supervisor::TAIL_IN_ERRORS + 100,
        "tail of {} bytes",
        tail.len()
    );
    assert!(
        tail.contains("flood done"),
        "{}",
        &tail[tail.len().saturating_sub(200)..]
    );
    assert!(tail.starts_with('['), "the tail says how much was omitted");
}

#[test]
fn a_worker_whose_log_pipe_nobody_reads_keeps_running_jobs_and_reports_dropped_lines() {
    let env = TestEnv::new(
        "unread-log",
        "[worker]\nconcurrency = 8\npoll_interval = \"20ms\"\n",
    );
    let mut worker = env.worker_with(&[], |cmd| {
        cmd.env("MCPQ_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
    });
    let mut stderr = worker.child.stderr.take().expect("stderr pipe");
    // Nobody reads the pipe now: with debug logging it is full within a few jobs.
    let n = 500;
    // 64 KiB = 64 debug lines per job: 500 jobs overflow the 16 Ki-line log queue.
    let jobs: Vec<_> = (0..n)
        .map(|i| call_job("echo", "stderr_flood", json!({"bytes": 65536 + i})))
        .collect();
    env.submit_jobs(&jobs);
    let all_done = env.wait_finished(n, Duration::from_secs(180));
    assert!(all_done, "jobs stalled while the log pipe was full");
    let (code, v) = env.wait_json(&jobs[n - 1].id.to_string());
    assert_eq!(code, Some(0), "{v}");
    // Now the reader drains: the worker says how many lines it dropped.
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 65536];
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            match stderr.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(k) => seen.extend_from_slice(&buf[..k]),
            }
            if String::from_utf8_lossy(&seen).contains("log lines while the log output was blocked")
            {
                break;
            }
        }
        String::from_utf8_lossy(&seen).into_owned()
    });
    let log = reader.join().expect("reader");
    let line = log
        .lines()
        .find(|l| l.contains("log lines while the log output was blocked"))
        .unwrap_or_else(|| panic!("no drop report in {} bytes of log", log.len()));
    let count: u64 = line
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .expect("a count in the report");
    assert!(count > 0, "{line}");
    worker.signal(libc::SIGTERM);
}

#[test]
fn a_servers_stderr_before_initialize_appears_in_the_worker_log_attributed_to_it() {
    let env = TestEnv::new("banner", "");
    let worker = env.worker_with(&[], |cmd| {
        cmd.env("MCPQ_LOG", "debug");
    });
    let id = env.submit_call("echo", "echo", r#"{"text":"x"}"#, &[]);
    assert_eq!(env.wait_json(&id).0, Some(0));
    let pid = env.fixture_pids()[0];
    assert!(worker.wait_log("listening on stdio", Duration::from_secs(5)));
    let log = worker.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("listening on stdio"))
        .expect("banner line");
    assert!(
        line.contains("server=echo") && line.contains(&format!("pid={pid}")),
        "{line}"
    );
}

#[test]
fn sigkill_of_the_worker_takes_its_8_running_servers_with_it_within_1s() {
    // Serial sessions: one server per running job.
    let env = TestEnv::with_echo(
        "sigkill-worker",
        "[worker]\nconcurrency = 8\npoll_interval = \"20ms\"\n",
        "max_in_flight = 1",
    );
    let mut worker = env.worker(&[]);
    for _ in 0..8 {
        env.submit_call("echo", "sleep_forever", "{}", &["--timeout", "300s"]);
    }
    assert!(
        wait_until(Duration::from_secs(30), || env
            .fixture_pids()
            .iter()
            .filter(|&&p| process_alive(p))
            .count()
            == 8),
        "8 servers running"
    );
    let pids = env.fixture_pids();
    worker.signal(libc::SIGKILL);
    let _ = worker.wait_exit(Duration::from_secs(5));
    assert!(
        wait_until(Duration::from_secs(1), || pids
            .iter()
            .all(|&p| !process_alive(p))),
        "servers outlived the killed worker: {:?}",
        pids.iter()
            .filter(|&&p| process_alive(p))
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_thousand_fresh_servers_leave_no_zombie_and_no_leaked_descriptor() {
    let env = TestEnv::with_echo(
        "thousand",
        "[worker]\nconcurrency = 8\npoll_interval = \"20ms\"\n",
        "pool = false",
    );
    let worker = env.worker(&[]);
    let id = env.submit_call("echo", "echo", r#"{"text":"warm-up"}"#, &[]);
    assert_eq!(env.wait_json(&id).0, Some(0));
    std::thread::sleep(Duration::from_millis(300));
    let baseline = fd_count(worker.pid());
    let n = 1000;
    let jobs: Vec<_> = (0..n)
        .map(|i| call_job("echo", "echo", json!({"text": format!("{i}")})))
        .collect();
    env.submit_jobs(&jobs);
    assert!(
        env.wait_finished(n + 1, Duration::from_secs(300)),
        "1000 jobs did not finish"
    );
    assert_eq!(
        env.fixture_pids().len(),
        n + 1,
        "each job spawned its own server"
    );
    assert!(
        wait_until(Duration::from_secs(5), || zombie_children(worker.pid())
            .is_empty()),
        "zombies: {:?}",
        zombie_children(worker.pid())
    );
    assert!(
        wait_until(Duration::from_secs(5), || fd_count(worker.pid())
            <= baseline),
        "descriptors: {} now, {baseline} before",
        fd_count(worker.pid())
    );
}

#[test]
fn a_crash_loop_marks_the_server_unhealthy_then_it_is_tried_again_after_the_window() {
    let env = TestEnv::new(
        "crash-loop",
        "[worker]\nconcurrency = 1\n[defaults]\nrestart_backoff = \"10ms\"\ncrash_loop_threshold = 3\ncrash_loop_window = \"60s\"\nunhealthy_for = \"2s\"\n",
    );
    let _worker = env.worker(&[]);
    for _ in 0..3 {
        let id = env.submit_call("echo", "crash", "{}", &["--max-attempts", "1"]);
        let (code, v) = env.wait_json(&id);
        assert_eq!(code, Some(1));
        assert_eq!(v["error"]["kind"], "server_exited", "{v}");
    }
    // In a crash loop: fails fast, says why, starts nothing.
    let id = env.submit_call("echo", "echo", r#"{"text":"x"}"#, &["--max-attempts", "1"]);
    let (code, v) = env.wait_json(&id);
    assert_eq!(code, Some(1));
    assert_eq!(v["error"]["kind"], "server_unhealthy", "{v}");
    let message = v["error"]["message"].as_str().expect("message");
    assert!(message.contains("crashed 3 times"), "{message}");
    assert_eq!(
        env.fixture_pids().len(),
        3,
        "an unhealthy server was started"
    );
    // After the window, the server is tried again.
    std::thread::sleep(Duration::from_millis(2100));
    let id = env.submit_call("echo", "echo", r#"{"text":"back"}"#, &[]);
    let (code, v) = env.wait_json(&id);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(env.fixture_pids().len(), 4);
}
