//! Named queues: routing (a worker serves only its queues), weights between queues,
//! pause and resume, what `mcpq queues` shows, and bad names.

use std::time::{Duration, Instant};

use mcpq_shared::config::served::Served;
use mcpq_shared::queue::{fetch::fetch_batch, Keys, Producer, QueueSettings};
use mcpq_tests::{call_job, runtime, text, wait_until, TestEnv};
use serde_json::{json, Value};

fn status(env: &TestEnv, id: &str) -> String {
    env.status_json(id)["status"]
        .as_str()
        .unwrap_or("?")
        .to_string()
}

fn queues_json(env: &TestEnv) -> Vec<Value> {
    let out = env.mcpq(&["queues", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[test]
fn a_worker_serving_emails_never_runs_an_agents_job() {
    let env = TestEnv::new("queues-routing", "");
    let emails: Vec<String> = (0..6)
        .map(|i| {
            env.submit_call(
                "echo",
                "echo",
                &format!("{{\"text\":\"e{i}\"}}"),
                &["--queue", "emails"],
            )
        })
        .collect();
    let agents: Vec<String> = (0..6)
        .map(|i| {
            env.submit_call(
                "echo",
                "echo",
                &format!("{{\"text\":\"a{i}\"}}"),
                &["--queue", "agents"],
            )
        })
        .collect();
    let plain = env.submit_call("echo", "echo", r#"{"text":"d"}"#, &[]);
    let depth = queues_json(&env);
    let queued = |name: &str| {
        depth
            .iter()
            .find(|q| q["name"] == name)
            .map(|q| q["queued"]["normal"].as_u64().unwrap_or(0))
    };
    assert_eq!(queued("emails"), Some(6), "{depth:?}");
    assert_eq!(queued("agents"), Some(6), "{depth:?}");
    assert_eq!(queued("default"), Some(1), "{depth:?}");

    let _emails_worker = env.worker(&["--queues", "emails", "--name", "w-emails"]);
    for id in &emails {
        let (code, record) = env.wait_json(id);
        assert_eq!(code, Some(0), "{record}");
        assert_eq!(env.status_json(id)["worker"], "w-emails", "{record}");
    }
    // The emails worker is idle now, with agents and default jobs waiting: it leaves them.
    std::thread::sleep(Duration::from_millis(1500));
    for id in agents.iter().chain([&plain]) {
        assert_eq!(status(&env, id), "queued", "{id}");
    }
    let _agents_worker = env.worker(&["--queues", "agents:2,default", "--name", "w-agents"]);
    for id in agents.iter().chain([&plain]) {
        let (code, record) = env.wait_json(id);
        assert_eq!(code, Some(0), "{record}");
        assert_eq!(env.status_json(id)["worker"], "w-agents", "{record}");
    }
    let started: u64 = queues_json(&env)
        .iter()
        .map(|q| {
            q["started_this_minute"].as_u64().unwrap_or(0)
                + q["started_last_minute"].as_u64().unwrap_or(0)
        })
        .sum();
    assert_eq!(started, 13, "every start is counted in its queue's rate");
}

#[test]
fn weights_share_one_fetch_between_queues() {
    let env = TestEnv::new("queues-weights", "");
    let rt = runtime();
    rt.block_on(async {
        let url = mcpq_tests::redis_url();
        let mut conn = mcpq_shared::queue::connect(&url).await.expect("redis");
        let keys = Keys::new(env.namespace.clone());
        let settings = QueueSettings::default();
        let producer = Producer::new(conn.clone(), keys.clone(), settings.clone());
        let mut jobs = Vec::new();
        for queue in ["a", "b"] {
            for _ in 0..8 {
                let mut job = call_job("echo", "echo", json!({}));
                job.options.queue = queue.to_string();
                jobs.push(job);
            }
        }
        producer.submit_many(&jobs).await.expect("submit");
        let queue_of = |id: &str| {
            jobs.iter()
                .find(|j| j.id.to_string() == id)
                .map(|j| j.options.queue.clone())
                .expect("a known job")
        };
        let served: Served = "a:3,b:1".parse().expect("served");
        // Any 4 consecutive draws of one fetch: a comes first 3 times, b once.
        for _ in 0..2 {
            let batch = fetch_batch(&mut conn, &keys, "w", &settings, &served, 0, 4, false)
                .await
                .expect("fetch");
            let got: Vec<String> = batch.deliveries.iter().map(|d| queue_of(&d.id)).collect();
            assert_eq!(got.iter().filter(|q| *q == "a").count(), 3, "{got:?}");
            assert_eq!(got.iter().filter(|q| *q == "b").count(), 1, "{got:?}");
        }
        // An empty queue passes its turn: a has 2 left, b 6; 8 draws take all of them.
        let batch = fetch_batch(&mut conn, &keys, "w", &settings, &served, 0, 8, false)
            .await
            .expect("fetch");
        assert_eq!(batch.deliveries.len(), 8);
        // A worker serving only `c` gets nothing.
        let only_c: Served = "c".parse().expect("served");
        let mut job = call_job("echo", "echo", json!({}));
        job.options.queue = "a".into();
        producer.submit(&job).await.expect("submit");
        let none = fetch_batch(&mut conn, &keys, "w", &settings, &only_c, 0, 8, true)
            .await
            .expect("fetch");
        assert!(none.deliveries.is_empty());
    });
}

#[test]
fn a_paused_queue_is_not_fetched_from_and_its_running_job_finishes() {
    let env = TestEnv::new("queues-pause", "");
    let _worker = env.worker(&["--queues", "emails"]);
    let running = env.submit_call("echo", "sleep_ms", r#"{"ms":4000}"#, &["--queue", "emails"]);
    assert!(wait_until(Duration::from_secs(20), || status(
        &env, &running
    ) == "running"));
    let out = env.mcpq(&["queue", "pause", "emails", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let paused_at = Instant::now();
    let waiting: Vec<String> = (0..3)
        .map(|_| env.submit_call("echo", "echo", r#"{"text":"x"}"#, &["--queue", "emails"]))
        .collect();
    // The running job ends well; none of the waiting ones starts while paused.
    let (code, record) = env.wait_json(&running);
    assert_eq!(code, Some(0), "{record}");
    while paused_at.elapsed() < Duration::from_secs(3) {
        for id in &waiting {
            assert_eq!(status(&env, id), "queued", "{id} started in a paused queue");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let listed = queues_json(&env);
    let emails = listed
        .iter()
        .find(|q| q["name"] == "emails")
        .expect("listed");
    assert_eq!(emails["paused"], true, "{emails}");
    assert_eq!(emails["queued"]["normal"], 3, "{emails}");
    let human = text(&env.mcpq(&["queues"]).stdout);
    assert!(
        human.contains("emails") && human.contains("paused"),
        "{human}"
    );

    let out = env.mcpq(&["queue", "resume", "emails"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for id in &waiting {
        let (code, record) = env.wait_json(id);
        assert_eq!(code, Some(0), "{record}");
    }
}

#[test]
fn bad_queue_names_are_refused_with_the_key_that_holds_them() {
    let env = TestEnv::new("queues-bad", "");
    let out = env.mcpq(&[
        "submit", "agent", "--server", "echo", "--tool", "echo", "--queue", "a:b",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("options.queue"),
        "{}",
        text(&out.stderr)
    );
    let out = env.mcpq(&["queue", "pause", "bad name"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = std::process::Command::new(mcpq_tests::bin("mcpq-worker"))
        .args(["--config"])
        .arg(&env.config)
        .args(["--queues", "emails:0"])
        .env_remove("MCPQ_CONFIG")
        .env("REDIS_URL", &env.redis_url)
        .output()
        .expect("run mcpq-worker");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("weight"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn hostile_entries_in_the_queue_keys_never_stop_a_fetch() {
    let env = TestEnv::new("queues-hostile", "");
    let rt = runtime();
    rt.block_on(async {
        let url = mcpq_tests::redis_url();
        let mut conn = mcpq_shared::queue::connect(&url).await.expect("redis");
        let keys = Keys::new(env.namespace.clone());
        let settings = QueueSettings::default();
        let producer = Producer::new(conn.clone(), keys.clone(), settings.clone());
        let mut sync = env.redis();
        // A count that is not one, in this minute's and the next minute's started hash.
        let (secs, _): (u64, u64) = redis::cmd("TIME").query(&mut sync).expect("time");
        for minute in [secs / 60, secs / 60 + 1] {
            let _: () = redis::cmd("HSET")
                .arg(format!("{}:started:{minute}", keys.prefix()))
                .arg("default")
                .arg("not a number")
                .query(&mut sync)
                .expect("hset");
        }
        // An emails job put in the default list (as a worker of an older version would).
        let mut leaked = call_job("echo", "echo", json!({}));
        leaked.options.queue = "emails".into();
        producer.submit(&leaked).await.expect("submit");
        let moved: Option<String> = redis::cmd("LMOVE")
            .arg(keys.ready_in("emails", mcpq_shared::job::Priority::Normal))
            .arg(keys.ready(mcpq_shared::job::Priority::Normal))
            .arg("RIGHT")
            .arg("RIGHT")
            .query(&mut sync)
            .expect("lmove");
        assert_eq!(moved, Some(leaked.id.to_string()));
        let plain = call_job("echo", "echo", json!({}));
        producer.submit(&plain).await.expect("submit");
        let served = Served::default();
        let batch = fetch_batch(&mut conn, &keys, "w", &settings, &served, 0, 4, true)
            .await
            .expect("a fetch despite the bad count");
        let ids: Vec<&str> = batch.deliveries.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, [plain.id.to_string().as_str()], "only the default job");
        let back: u64 = redis::cmd("LLEN")
            .arg(keys.ready_in("emails", mcpq_shared::job::Priority::Normal))
            .query(&mut sync)
            .expect("llen");
        assert_eq!(back, 1, "the leaked job went back to its own queue");
        // A record whose queue is no queue name is dead-lettered, not run.
        let mut odd = call_job("echo", "echo", json!({}));
        odd.options.queue = "odd".into();
        producer.submit(&odd).await.expect("submit");
        let _: () = redis::cmd("HSET")
            .arg(keys.job(&odd.id.to_string()))
            .arg("queue")
            .arg("no such:queue")
            .query(&mut sync)
            .expect("hset");
        let odd_served: Served = "odd".parse().expect("served");
        let none = fetch_batch(&mut conn, &keys, "w", &settings, &odd_served, 0, 4, true)
            .await
            .expect("fetch");
        assert!(none.deliveries.is_empty());
        assert_eq!(status(&env, &odd.id.to_string()), "dead");
    });
}
