//! What `/health` reports, read straight from Redis: the queue's counts by state
//! (`queue::stats`) and the live workers (`queue::workers` heartbeats), against the
//! shared Redis with one namespace per test and real worker processes.

use std::time::Duration;

use mcpq_shared::failure::{FailureKind, JobFailure};
use mcpq_shared::job::{JobOptions, Priority};
use mcpq_shared::queue::fetch::fetch_picked;
use mcpq_shared::queue::finish::{finish, Finished, Outcome};
use mcpq_shared::queue::stats::{self, ByPriority};
use mcpq_shared::queue::workers;
use mcpq_shared::queue::{Keys, Producer, QueueSettings};
use mcpq_tests::{call_job, connect, runtime, wait_until_every, TestEnv};
use redis::Commands;
use serde_json::json;

#[test]
fn stats_count_jobs_by_state_and_priority_and_age_the_oldest_queued_job() {
    let env = TestEnv::new("stats", "");
    let rt = runtime();
    rt.block_on(async {
        let mut conn = connect().await;
        let keys = Keys::new(env.namespace.clone());
        let settings = QueueSettings::default();
        let empty = stats::read(&conn, &keys).await.expect("stats");
        assert_eq!(empty.queued_total() + empty.dead + empty.running, 0);
        assert_eq!(empty.oldest_queued_age(), None);

        let producer = Producer::new(conn.clone(), keys.clone(), settings.clone());
        let job_at = |priority| {
            let mut job = call_job("echo", "echo", json!({"text": "x"}));
            job.options = JobOptions {
                priority,
                max_attempts: 1,
                ..job.options.clone()
            };
            job
        };
        let jobs: Vec<_> = [
            (Priority::High, 3),
            (Priority::Normal, 3),
            (Priority::Low, 2),
        ]
        .into_iter()
        .flat_map(|(p, n)| (0..n).map(move |_| p))
        .map(job_at)
        .collect();
        producer.submit_many(&jobs).await.expect("submit");
        // Ages are in ms by Redis's clock: let some pass.
        tokio::time::sleep(Duration::from_millis(50)).await;

        // Three high jobs leave their queue: one dead, one waiting to retry, one running.
        let mut taken = Vec::new();
        for _ in 0..3 {
            let d = fetch_picked(&mut conn, &keys, "w", &settings, 0)
                .await
                .expect("fetch")
                .expect("a job");
            taken.push(d);
        }
        let failure = || JobFailure::new(FailureKind::ToolError, "no".to_string(), true);
        let outcomes = [
            Outcome::Dead(failure()),
            Outcome::Retry {
                error: failure(),
                delay: Duration::from_secs(3600),
            },
        ];
        for (d, outcome) in taken.iter().zip(&outcomes) {
            let stored = finish(&mut conn, &keys, &settings, &d.id, d.attempt, outcome)
                .await
                .expect("finish");
            assert_eq!(stored, Finished::Stored);
        }

        let s = stats::read(&conn, &keys).await.expect("stats");
        assert_eq!(
            s.queued,
            ByPriority {
                high: 0,
                normal: 3,
                low: 2
            },
            "{s:?}"
        );
        assert_eq!(
            (s.dead, s.scheduled, s.running, s.suspects),
            (1, 1, 1, 0),
            "{s:?}"
        );
        assert_eq!(s.oldest_queued_age_ms.high, None, "{s:?}");
        let normal = s
            .oldest_queued_age_ms
            .normal
            .expect("a normal job is queued");
        let low = s.oldest_queued_age_ms.low.expect("a low job is queued");
        assert!(normal >= 50 && low >= 50, "{s:?}");
        assert_eq!(s.oldest_queued_age(), Some(normal.max(low)));
        assert!(s.problems.is_empty(), "{s:?}");

        // A key someone else wrote with the wrong type is named and counted 0.
        let mut sync = env.redis();
        let _: () = sync.set(keys.suspects(), "not a list").expect("set");
        let s = stats::read(&conn, &keys).await.expect("stats");
        assert_eq!(s.suspects, 0);
        assert_eq!(s.problems, vec![keys.suspects()]);
        assert_eq!(s.queued.normal, 3);
    });
}

#[test]
fn a_running_worker_is_listed_and_a_killed_one_ages_out() {
    let env = TestEnv::new("heartbeats", "");
    let keys = Keys::new(env.namespace.clone());
    let rt = runtime();
    let conn = rt.block_on(connect());
    let live = |within: Duration| -> Vec<workers::LiveWorker> {
        rt.block_on(workers::live_within(&conn, &keys, within))
            .expect("workers")
    };
    let ids = |list: &[workers::LiveWorker]| -> Vec<String> {
        list.iter().map(|w| w.info.id.clone()).collect()
    };

    // An entry of a worker that died long ago: pruned by the next heartbeat.
    let mut sync = env.redis();
    let _: () = sync.hset(keys.workers(), "ghost", "1000 {}").expect("hset");

    let mut doomed = env.worker(&["--name", "doomed", "--concurrency", "3"]);
    let _stays = env.worker(&["--name", "stays"]);
    let both = wait_until_every(Duration::from_secs(20), Duration::from_millis(100), || {
        ids(&live(workers::DEAD_AFTER)) == ["doomed", "stays"]
    });
    assert!(both, "{:?}", live(workers::DEAD_AFTER));
    let list = live(workers::DEAD_AFTER);
    let w = &list[0];
    assert_eq!(
        (w.info.pid, w.info.concurrency, w.info.running),
        (doomed.pid(), 3, 0),
        "{w:?}"
    );
    assert!(
        w.heartbeat_age_ms < workers::DEAD_AFTER.as_millis() as u64,
        "{w:?}"
    );
    assert!(
        !w.info.host.is_empty() && !w.info.version.is_empty(),
        "{w:?}"
    );
    let ghost: Option<String> = sync.hget(keys.workers(), "ghost").expect("hget");
    assert_eq!(ghost, None, "the dead entry was pruned");

    // Killed: no clean stop removes its entry; it is left out once it is older than
    // the limit (here 10 s, two missed beats), while the other one stays listed.
    doomed.signal(libc::SIGKILL);
    doomed.wait_exit(Duration::from_secs(5)).expect("killed");
    let limit = Duration::from_secs(10);
    let aged_out = wait_until_every(Duration::from_secs(30), Duration::from_millis(200), || {
        ids(&live(limit)) == ["stays"]
    });
    assert!(aged_out, "{:?}", live(limit));
}

#[test]
fn a_worker_that_stops_cleanly_removes_its_heartbeat() {
    let env = TestEnv::new("heartbeat-stop", "");
    let keys = Keys::new(env.namespace.clone());
    let rt = runtime();
    let conn = rt.block_on(connect());
    let mut worker = env.worker(&["--name", "leaving"]);
    let listed = wait_until_every(Duration::from_secs(20), Duration::from_millis(100), || {
        rt.block_on(workers::live(&conn, &keys))
            .expect("workers")
            .len()
            == 1
    });
    assert!(listed, "{}", worker.log_text());
    worker.signal(libc::SIGTERM);
    let status = worker.wait_exit(Duration::from_secs(20)).expect("exits");
    assert!(status.success(), "{}", worker.log_text());
    let mut sync = env.redis();
    let left: Option<String> = sync.hget(keys.workers(), "leaving").expect("hget");
    assert_eq!(left, None);
}
