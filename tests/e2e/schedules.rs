//! Cron schedules (issue 16, point 2): one job per tick however many workers run,
//! missed ticks as `catch_up` says, `mcpq schedules`, hostile records.

use std::collections::BTreeMap;
use std::time::Duration;

use mcpq_tests::{text, wait_until, TestEnv};
use redis::Commands;
use serde_json::{json, Value};

const JOB: &str = r#"job = { kind = "agent", payload = { steps = [ { server = "echo", tool = "echo", arguments = { text = "tick" } } ] } }"#;

fn env_with(tag: &str, cron: &str, catch_up: &str) -> TestEnv {
    TestEnv::new(
        tag,
        &format!("[schedules.s]\ncron = \"{cron}\"\ncatch_up = \"{catch_up}\"\n{JOB}\n"),
    )
}

/// Every job of the namespace by its schedule tick (from its idempotency key
/// `schedule:s:TICK`): tick -> job ids.
fn jobs_by_tick(env: &TestEnv) -> BTreeMap<i64, Vec<String>> {
    let mut redis = env.redis();
    let ids: Vec<String> = redis
        .zrange(format!("{{{}}}:jobs", env.namespace), 0, -1)
        .expect("job index");
    let mut out: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for id in ids {
        let key: Option<String> = redis
            .hget(format!("{{{}}}:job:{id}", env.namespace), "idempotency_key")
            .expect("hget");
        let key = key.expect("a schedule's job has its tick's idempotency key");
        let tick: i64 = key
            .strip_prefix("schedule:s:")
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("unexpected key {key}"));
        out.entry(tick).or_default().push(id);
    }
    out
}

fn record(env: &TestEnv) -> Option<Value> {
    // Err while the key is of another type (the hostile test).
    let raw: Option<String> = env
        .redis()
        .hget(format!("{{{}}}:schedules", env.namespace), "s")
        .ok()
        .flatten();
    raw.and_then(|r| serde_json::from_str(&r).ok())
}

#[test]
fn a_cron_every_second_on_three_workers_yields_one_job_per_tick() {
    let env = env_with("sched-3w", "* * * * * *", "none");
    let workers: Vec<_> = (0..3).map(|_| env.worker(&[])).collect();
    // Once the three run (each has fired or seen a tick), five whole seconds: the five
    // ticks in them have one job each, not three.
    for w in &workers {
        assert!(
            w.wait_log("worker started", Duration::from_secs(20)),
            "{}",
            w.log_text()
        );
    }
    let now = mcpq_shared::queue::results::now_ms() as i64;
    let from = now - now % 1000 + 1000;
    let to = from + 5000;
    std::thread::sleep(Duration::from_millis((to - now + 1000) as u64));
    for w in &workers {
        w.signal(libc::SIGTERM);
    }
    drop(workers);
    let ticks = jobs_by_tick(&env);
    for (tick, ids) in &ticks {
        assert_eq!(ids.len(), 1, "tick {tick} has {} jobs: {ids:?}", ids.len());
        assert_eq!(tick % 1000, 0, "ticks are whole seconds");
    }
    let list: Vec<i64> = ticks.keys().copied().collect();
    for pair in list.windows(2) {
        assert_eq!(pair[1] - pair[0], 1000, "no tick is skipped: {list:?}");
    }
    let window: Vec<i64> = ticks.range(from..to).map(|(t, _)| *t).collect();
    assert_eq!(
        window.len(),
        5,
        "5 s of 3 workers: {window:?} (all: {list:?})"
    );
    // The record holds a fired tick and that tick's job (the newest, unless a worker
    // was stopped between the submit and the record: then the tick before it).
    let rec = record(&env).expect("record");
    let tick = rec["tick"].as_i64().expect("tick");
    assert!(tick >= list[list.len() - 2], "{rec} vs {list:?}");
    assert_eq!(rec["job"], json!(ticks[&tick][0]));
}

/// Waits until the current second of the minute is between 5 and 25, so that a test
/// built on minute ticks (its set-up and waits take up to ~30 s on a loaded machine)
/// does not straddle one.
fn away_from_a_minute_tick() {
    wait_until(Duration::from_secs(60), || {
        let s = (mcpq_shared::queue::results::now_ms() / 1000) % 60;
        (5..=25).contains(&s)
    });
}

#[test]
fn missed_ticks_are_skipped_fired_once_or_each_as_catch_up_says() {
    away_from_a_minute_tick();
    let now = mcpq_shared::queue::results::now_ms() as i64;
    let newest = now - now % 60_000;
    let last = newest - 10 * 60_000;
    // The three modes at once: three namespaces whose last fired tick was ten minutes
    // ago (as if every worker had been down since), one worker each.
    let envs: Vec<(&str, TestEnv)> = ["none", "last", "all"]
        .into_iter()
        .map(|mode| {
            (
                mode,
                env_with(&format!("sched-{mode}"), "0 * * * * *", mode),
            )
        })
        .collect();
    let mut workers = Vec::new();
    for (_, env) in &envs {
        let _: () = env
            .redis()
            .hset(
                format!("{{{}}}:schedules", env.namespace),
                "s",
                json!({"tick": last, "job": "old", "fired_at": last}).to_string(),
            )
            .expect("hset");
        workers.push(env.worker(&[]));
    }
    for (mode, env) in &envs {
        let want: Vec<i64> = match *mode {
            "none" => vec![],
            "last" => vec![newest],
            _ => (1..=10).map(|i| last + i * 60_000).collect(),
        };
        if !want.is_empty() {
            assert!(
                wait_until(Duration::from_secs(20), || {
                    record(env).is_some_and(|r| r["tick"] == json!(newest))
                }),
                "{mode}: the newest missed tick is recorded"
            );
        } else {
            std::thread::sleep(Duration::from_secs(2));
        }
        let ticks = jobs_by_tick(env);
        let got: Vec<i64> = ticks.keys().copied().collect();
        assert_eq!(got, want, "catch_up = {mode}");
        assert!(ticks.values().all(|ids| ids.len() == 1));
    }
    drop(workers);
}

#[test]
fn schedules_lists_last_and_next_run_and_bad_definitions_name_their_key() {
    let env = env_with("sched-list", "* * * * * *", "none");
    // A job file, relative to the config file, works as well as an inline job.
    std::fs::write(
        env.dir.join("tick.json"),
        json!({"kind": "agent", "payload": {"steps": [
            {"server": "echo", "tool": "echo", "arguments": {"text": "file"}}]}})
        .to_string(),
    )
    .expect("job file");
    env.add_config(
        "[schedules.hourly]\ncron = \"0 0 * * * *\"\ntimezone = \"Europe/Paris\"\njob_file = \"tick.json\"\n",
    );
    let _worker = env.worker(&[]);
    assert!(wait_until(Duration::from_secs(10), || record(&env).is_some()));
    let out = env.mcpq(&["schedules", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let lines: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let hourly = &lines[0];
    assert_eq!(hourly["name"], "hourly");
    assert_eq!(hourly["timezone"], "Europe/Paris");
    assert_eq!(hourly["last_run"], Value::Null);
    let next = hourly["next_run"]["tick"].as_i64().expect("next");
    assert_eq!(next % 3_600_000, 0, "next run on the hour: {hourly}");
    let s = &lines[1];
    assert_eq!(
        (s["name"].clone(), s["cron"].clone()),
        (json!("s"), json!("* * * * * *"))
    );
    let job = s["last_run"]["job"].as_str().expect("last job").to_string();
    assert_eq!(env.status_json(&job)["id"], json!(job));
    assert!(
        s["next_run"]["tick"].as_i64().expect("next")
            > s["last_run"]["tick"].as_i64().expect("last")
    );
    let human = text(&env.mcpq(&["schedules"]).stdout);
    assert!(
        human.contains("hourly") && human.contains("never"),
        "{human}"
    );

    // Bad definitions: refused at load, naming the key.
    for (table, key) in [
        (format!("cron = \"61 * * * *\"\n{JOB}"), "schedules.bad.cron"),
        (format!("cron = \"* * * * *\"\ntimezone = \"Nowhere/City\"\n{JOB}"), "schedules.bad.timezone"),
        ("cron = \"* * * * *\"\njob = { kind = \"agent\", payload = { steps = [ { server = \"nope\", tool = \"x\" } ] } }".to_string(), "schedules.bad.job"),
        ("cron = \"* * * * *\"\njob_file = \"missing.json\"".to_string(), "missing.json"),
    ] {
        let bad = TestEnv::new("sched-bad", &format!("[schedules.bad]\n{table}\n"));
        let out = bad.mcpq(&["schedules"]);
        assert_eq!(out.status.code(), Some(2), "{table}");
        assert!(text(&out.stderr).contains(key), "{key}: {}", text(&out.stderr));
    }
}

#[test]
fn a_garbage_record_or_a_schedules_key_of_another_type_does_not_stop_the_loop() {
    // A field that is not a record: read as never fired, then overwritten.
    let env = env_with("sched-garbage", "* * * * * *", "all");
    let key = format!("{{{}}}:schedules", env.namespace);
    let _: () = env.redis().hset(&key, "s", "\u{0}not json").expect("hset");
    let _worker = env.worker(&[]);
    assert!(
        wait_until(Duration::from_secs(10), || record(&env).is_some()),
        "the garbage record was replaced by a real one"
    );
    assert!(!jobs_by_tick(&env).is_empty());

    // The whole key of another type: set aside, the schedule goes on.
    let other = env_with("sched-wrongtype", "* * * * * *", "none");
    let key = format!("{{{}}}:schedules", other.namespace);
    let _: () = other.redis().set(&key, "a string").expect("set");
    let _worker = other.worker(&[]);
    assert!(wait_until(Duration::from_secs(10), || record(&other).is_some()));
    let corrupt: String = other
        .redis()
        .get(format!("{key}:corrupt"))
        .expect("set aside");
    assert_eq!(corrupt, "a string");
    assert!(!jobs_by_tick(&other).is_empty());
}
