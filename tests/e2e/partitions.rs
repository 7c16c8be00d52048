//! Partitions on one node (`[redis] partitions = 4`): jobs spread over the hash tags
//! `{ns}`, `{ns~1}`.., and every promise holds across them: all jobs run once, an
//! idempotency key meets its first job, batches finish, cancel and delays find their
//! job, listings and stats count every partition, and a process configured with
//! another count is refused. (The same code on a Redis Cluster: `cluster.rs`.)

use std::time::Duration;

use mcpq_tests::{bin, call_job, text, TestEnv};
use serde_json::{json, Value};

const FOUR: &str = "[redis]\npartitions = 4\n[worker]\nconcurrency = 8\npoll_interval = \"20ms\"\n";

/// Job keys per partition (`{ns}:job:*`, `{ns~1}:job:*`, ...), attempts lists left out.
fn jobs_per_partition(env: &TestEnv) -> Vec<usize> {
    let mut redis = env.redis();
    (0..4)
        .map(|p| {
            let prefix = if p == 0 {
                format!("{{{}}}", env.namespace)
            } else {
                format!("{{{}~{p}}}", env.namespace)
            };
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{prefix}:job:*"))
                .query(&mut redis)
                .expect("KEYS");
            keys.iter().filter(|k| !k.ends_with(":attempts")).count()
        })
        .collect()
}

fn json_lines(out: &std::process::Output) -> Vec<Value> {
    text(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn jobs_spread_over_every_partition_and_all_run_once() {
    let env = TestEnv::new("partitions-spread", FOUR);
    // The first process stores the count.
    let first = env.submit_call("echo", "echo", r#"{"text":"first"}"#, &[]);
    let jobs: Vec<_> = (0..200)
        .map(|i| call_job("echo", "echo", json!({ "text": format!("j{i}") })))
        .collect();
    let ids = env.submit_jobs(&jobs);
    let per = jobs_per_partition(&env);
    assert_eq!(per.iter().sum::<usize>(), 201, "{per:?}");
    assert!(
        per.iter().all(|n| *n >= 20),
        "round-robin spreads them: {per:?}"
    );
    // `mcpq queues` sums every partition.
    let queues = env.mcpq(&["queues", "--json"]);
    assert!(queues.status.success(), "{}", text(&queues.stderr));
    let default = json_lines(&queues)
        .into_iter()
        .find(|q| q["name"] == "default")
        .expect("the default queue");
    assert_eq!(default["queued"]["normal"], 201, "{default}");

    let _w1 = env.worker(&[]);
    let _w2 = env.worker(&[]);
    assert!(
        env.wait_finished(201, Duration::from_secs(60)),
        "{:?}",
        env.status_counts()
    );
    let (code, record) = env.wait_json(&first);
    assert_eq!(code, Some(0), "{record}");
    for id in &ids {
        let status = env.status_json(id);
        assert_eq!(status["status"], "succeeded", "{status}");
        assert_eq!(status["attempts"].as_u64(), Some(1), "ran once: {status}");
    }
    // The listing merges every partition.
    let listed = env.mcpq(&["jobs", "--limit", "500", "--json"]);
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    assert_eq!(json_lines(&listed).len(), 201, "{}", text(&listed.stdout));
}

#[test]
fn an_idempotency_key_meets_its_first_job_and_cancel_and_delays_find_theirs() {
    let env = TestEnv::new("partitions-promises", FOUR);
    let ids: Vec<String> = (0..6)
        .map(|_| {
            env.submit_call(
                "echo",
                "echo",
                r#"{"text":"k"}"#,
                &["--idempotency-key", "order-17"],
            )
        })
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    // Jobs in every partition can be cancelled and delayed by id.
    let cancelled: Vec<String> = (0..8)
        .map(|i| env.submit_call("echo", "echo", &format!("{{\"text\":\"c{i}\"}}"), &[]))
        .collect();
    for id in &cancelled {
        let out = env.mcpq(&["cancel", id]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let delayed: Vec<String> = (0..8)
        .map(|i| {
            env.submit_call(
                "echo",
                "echo",
                &format!("{{\"text\":\"d{i}\"}}"),
                &["--delay", "1s"],
            )
        })
        .collect();
    let _w = env.worker(&[]);
    for id in delayed.iter().chain([&ids[0]]) {
        let (code, record) = env.wait_json(id);
        assert_eq!(code, Some(0), "{record}");
    }
    for id in &cancelled {
        assert_eq!(env.status_json(id)["status"], "cancelled");
    }
}

#[test]
fn a_batch_lives_in_one_partition_and_its_fan_in_runs_once() {
    let env = TestEnv::new("partitions-batch", FOUR);
    // Store the count first, as a worker or producer would.
    env.submit_call("echo", "echo", r#"{"text":"x"}"#, &[]);
    // Batch lines name no id (the batch gives them theirs).
    let lines: String = (0..30)
        .map(|i| {
            let job = call_job("echo", "echo", json!({ "text": format!("b{i}") }));
            let mut v: Value = serde_json::from_slice(&job.to_json()).expect("job json");
            v.as_object_mut().expect("object").remove("id");
            v.to_string() + "\n"
        })
        .collect();
    let file = env.dir.join("batch.jsonl");
    std::fs::write(&file, lines).expect("write");
    let _w = env.worker(&[]);
    let out = env.mcpq(&[
        "batch",
        "submit",
        file.to_str().expect("path"),
        "--wait",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let listed = env.mcpq(&["batch", "list", "--json"]);
    assert!(
        text(&listed.stdout).contains("\"succeeded\":30"),
        "{}",
        text(&listed.stdout)
    );
}

#[test]
fn a_process_with_another_partition_count_is_refused() {
    let env = TestEnv::new("partitions-agree", FOUR);
    env.submit_call("echo", "echo", r#"{"text":"x"}"#, &[]);
    let other = env.dir.join("two.toml");
    let config = std::fs::read_to_string(&env.config).expect("config");
    std::fs::write(&other, config.replace("partitions = 4", "partitions = 2")).expect("write");
    let run = |args: &[&str]| {
        std::process::Command::new(bin("mcpq"))
            .arg("--config")
            .arg(&other)
            .args(args)
            .env_remove("MCPQ_CONFIG")
            .env("REDIS_URL", &env.redis_url)
            .output()
            .expect("run mcpq")
    };
    let out = run(&["queues"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("has 4 partitions") && err.contains("partitions"),
        "{err}"
    );
    // Without a count of its own, a process adopts the namespace's.
    std::fs::write(&other, config.replace("partitions = 4\n", "")).expect("write");
    let out = run(&["queues", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn pages_of_a_listing_over_partitions_list_every_job_once() {
    let env = TestEnv::new("partitions-pages", FOUR);
    env.submit_call("echo", "echo", r#"{"text":"first"}"#, &[]);
    // Older jobs in every partition (two submit times), then 150 jobs of one submit
    // millisecond (one script call) in partition 0 alone (their idempotency keys name
    // it): a page of 100 ends inside that run, and the next must still reach
    // partition 0's older jobs before the other partitions' oldest.
    let batch = |tag: &str| -> Vec<_> {
        (0..40)
            .map(|i| call_job("echo", "echo", json!({ "text": format!("{tag}{i}") })))
            .collect()
    };
    let in_zero: Vec<_> = (0..)
        .map(|i| format!("k{i}"))
        .filter(|k| mcpq_shared::queue::partition::of_key(k, 4) == 0)
        .take(150)
        .map(|k| {
            let mut job = call_job("echo", "echo", json!({ "text": k }));
            job.options.idempotency_key = Some(k);
            job
        })
        .collect();
    let mut ids = env.submit_jobs(&batch("old"));
    std::thread::sleep(Duration::from_millis(5));
    ids.extend(env.submit_jobs(&batch("mid")));
    std::thread::sleep(Duration::from_millis(5));
    ids.extend(env.submit_jobs(&in_zero));
    let rt = mcpq_tests::runtime();
    let listed = rt.block_on(async {
        let mut conn = mcpq_shared::queue::connect(&env.redis_url)
            .await
            .expect("redis");
        let keys = mcpq_shared::queue::partition::agree(
            &mut conn,
            &mcpq_shared::queue::Keys::new(env.namespace.clone()),
            4,
            true,
        )
        .await
        .expect("partitions");
        let filter = mcpq_shared::queue::listing::JobFilter::default();
        let (mut all, mut cursor) = (Vec::new(), None::<String>);
        loop {
            let page = mcpq_shared::queue::listing::list_page(
                &mut conn,
                &keys,
                &filter,
                100,
                cursor.as_deref(),
            )
            .await
            .expect("page");
            all.extend(page.jobs.into_iter().map(|j| j.id));
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        all
    });
    let unique: std::collections::BTreeSet<&String> = listed.iter().collect();
    assert_eq!(unique.len(), listed.len(), "no job listed twice");
    assert_eq!(listed.len(), 231, "every job listed once");
    for id in &ids {
        assert!(unique.contains(id), "{id} missing");
    }
}
