//! Redis Sentinel: a master, a replica and three sentinels of the test's own
//! ([`SentinelSet`]), the real worker and CLI on a `redis+sentinel://` URL, and a
//! failover in the middle of a run.

use std::time::{Duration, Instant};

use mcpq_shared::queue::{self, Keys};
use mcpq_tests::redis_sentinel::SentinelSet;
use mcpq_tests::{call_job, runtime, text, wait_until_every, TestEnv};
use serde_json::json;

/// Statuses of `ids` as stored on the node at `port` (the master).
fn statuses(set: &SentinelSet, port: u16, keys: &Keys, ids: &[String]) -> Vec<Option<String>> {
    let mut conn = set.node(port);
    let mut pipe = redis::pipe();
    for id in ids {
        pipe.hget(keys.job(id), "status");
    }
    pipe.query(&mut conn).unwrap_or_default()
}

fn lines(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

#[test]
fn a_sentinel_failover_mid_run_loses_no_acknowledged_job_and_the_worker_goes_on() {
    let set = SentinelSet::start("failover");
    let env = TestEnv::on_redis(
        &set.url(),
        "sentinel",
        "lease = \"2s\"\nretry_base = \"50ms\"\nretry_cap = \"500ms\"\n",
        "[worker]\nconcurrency = 4\npoll_interval = \"20ms\"\n",
        "",
    );
    let keys = Keys::new(env.namespace.clone());
    let mut worker = env.started_worker(&[]);
    let marks = env.dir.join("marks.log");
    let n = 200;
    let jobs: Vec<_> = (0..n)
        .map(|i| {
            call_job(
                "echo",
                "mark",
                json!({"path": marks, "tag": format!("j{i}"), "ms": 60}),
            )
        })
        .collect();
    let mut ids: Vec<String> = jobs.iter().map(|j| j.id.to_string()).collect();
    // Through the library on the same redis+sentinel:// URL: every submit acknowledged.
    env.submit_jobs(&jobs);
    // A planned switch loses nothing the replica has: wait until it has every submit.
    assert!(set.wait_in_sync(Duration::from_secs(10)), "replica in sync");
    assert!(
        wait_until_every(Duration::from_secs(30), Duration::from_millis(20), || {
            lines(&marks) >= 20
        }),
        "the worker runs jobs before the failover:\n{}",
        worker.log_text()
    );
    let old = set.master_port().expect("master");
    let ran_before = lines(&marks);
    let started = Instant::now();
    let new = set.failover(Duration::from_secs(20));
    let switch_time = started.elapsed();
    assert_ne!(old, new);
    assert!(
        ran_before < n,
        "the failover came mid-run ({ran_before} of {n} had run)"
    );

    // After the failover: the CLI (a fresh process asks the sentinels) and the same
    // worker (which must have followed the master) still serve.
    let after = 10;
    for i in 0..after {
        let id = env.submit_call(
            "echo",
            "echo",
            &format!(r#"{{"text":"after {i}"}}"#),
            &["--timeout", "30s"],
        );
        ids.push(id);
    }
    let done = wait_until_every(Duration::from_secs(45), Duration::from_millis(200), || {
        statuses(&set, new, &keys, &ids)
            .iter()
            .all(|s| s.as_deref() == Some("succeeded"))
    });
    let final_statuses = statuses(&set, new, &keys, &ids);
    let mut counts = std::collections::BTreeMap::new();
    for s in &final_statuses {
        *counts
            .entry(s.clone().unwrap_or_else(|| "lost".into()))
            .or_insert(0usize) += 1;
    }
    let runs = lines(&marks);
    eprintln!(
        "sentinel: {n} jobs + {after} after a failover {old} -> {new} ({switch_time:?}, \
         {ran_before} had run): {counts:?}; {} extra execution(s) (jobs the old master leased \
         or finished between the promotion and the sentinels' +switch-master, run again)",
        runs.saturating_sub(n)
    );
    assert!(done, "every acknowledged job succeeds: {counts:?}");
    assert!(runs >= n, "every job ran ({runs} marks)");
    let last = &ids[ids.len() - 1];
    let out = env.mcpq(&["wait", last, "--timeout", "10s"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        worker.child.try_wait().expect("try_wait").is_none(),
        "the worker lived through the failover:\n{}",
        worker.log_text()
    );
    assert!(
        worker.log_text().contains("Redis master moved from"),
        "the worker followed the master:\n{}",
        worker.log_text()
    );
}

#[test]
fn a_conn_follows_the_master_when_the_old_one_is_killed() {
    let mut set = SentinelSet::start("kill");
    let url = set.url();
    let rt = runtime();
    let mut conn = rt
        .block_on(queue::connect(&url))
        .expect("connect through the sentinels");
    let old = set.master_port().expect("master");
    assert_eq!(
        conn.sentinel_master(),
        Some(format!("127.0.0.1:{old}")),
        "the first master is the one the sentinels name"
    );
    rt.block_on(async {
        let _: () = redis::cmd("SET")
            .arg("mcpq-test-sentinel-key")
            .arg("before")
            .query_async(&mut conn)
            .await
            .expect("SET on the first master");
    });
    assert!(set.wait_in_sync(Duration::from_secs(10)), "replica in sync");
    set.kill(old);
    // The sentinels need down-after (1 s) plus an election; the Conn asks them again
    // after each failed command, and a command after the switch goes to the new master.
    let started = Instant::now();
    let mut failures = 0;
    let mut value = None;
    while started.elapsed() < Duration::from_secs(40) {
        let got: redis::RedisResult<String> = rt.block_on(
            redis::cmd("GET")
                .arg("mcpq-test-sentinel-key")
                .query_async(&mut conn),
        );
        match got {
            Ok(v) if conn.sentinel_master() != Some(format!("127.0.0.1:{old}")) => {
                value = Some(v);
                break;
            }
            Ok(_) => {}
            Err(_) => failures += 1,
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let new = set.data_ports.iter().copied().find(|&p| p != old);
    eprintln!(
        "sentinel: master {old} killed; the Conn moved to {:?} after {:?} and {failures} failed command(s)",
        conn.sentinel_master(),
        started.elapsed()
    );
    assert_eq!(
        value.as_deref(),
        Some("before"),
        "a read after the switch answers from the new master"
    );
    assert_eq!(
        conn.sentinel_master(),
        new.map(|p| format!("127.0.0.1:{p}")),
        "the Conn talks to the promoted replica"
    );
    assert!(failures >= 1, "the dead master failed a command first");
}
