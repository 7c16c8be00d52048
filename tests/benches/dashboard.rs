//! The dashboard's pages at 100,000 jobs against the same pages at 1,000, side by side
//! in one run (issue 19: "pages work at 100,000 jobs"): each page's median load time
//! and the Redis commands one load makes (`INFO commandstats`, commands called inside
//! scripts included), so a page that scans what grows with the jobs shows a ratio far
//! above 1. Release build; `scripts/bench` runs it. `BENCH_DASHBOARD_JOBS` (default
//! 100,000) sets the big namespace's size; a tenth of each namespace's jobs are dead
//! (a tool the fixture does not have, one attempt), the rest succeeded noop jobs.
//!
//! Not a test: nothing is asserted but that every page answered 200. Run it on a quiet
//! Redis: the command counts are the whole server's.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mcpq_shared::job::{Job, JobOptions, PlanStep};
use mcpq_shared::queue::{self, Keys, Producer, QueueSettings};
use mcpq_tests::serve::{TOKEN, TOKEN_CONFIG};
use mcpq_tests::{runtime, wait_until, TestEnv};
use serde_json::json;

/// Loads of each page measured.
const LOADS: usize = 20;

fn jobs(n: usize) -> Vec<Job> {
    (0..n)
        .map(|i| {
            if i % 10 == 0 {
                let step = PlanStep {
                    name: None,
                    server: "echo".to_string(),
                    tool: "no_such_tool".to_string(),
                    arguments: json!({}).as_object().cloned().expect("object"),
                    continue_on_error: false,
                    literal_arguments: false,
                    keep_tool_errors: false,
                };
                let options = JobOptions {
                    max_attempts: 1,
                    ..JobOptions::default()
                };
                Job::agent(vec![step], options)
            } else {
                Job::from_json(br#"{"kind":"noop"}"#).expect("a noop job")
            }
        })
        .collect()
}

/// Redis's command count so far (every client's).
fn commands(redis: &mut redis::Connection) -> u64 {
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(redis)
        .expect("INFO commandstats");
    stats
        .lines()
        .filter(|l| l.starts_with("cmdstat_") && !l.starts_with("cmdstat_info:"))
        .filter_map(|l| {
            l.split(',')
                .find_map(|f| f.split(':').nth(1)?.strip_prefix("calls="))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .sum()
}

/// One namespace of `n` jobs, all ended, with `mcpq serve` on it: (env, serve, a dead
/// job's id).
fn seeded(n: usize) -> (TestEnv, mcpq_tests::serve::ServeProc, String) {
    let env = TestEnv::new(
        "bench-dash",
        &format!("{TOKEN_CONFIG}[worker]\nconcurrency = 32\n"),
    );
    let keys = Keys::new(env.namespace.clone());
    let rt = runtime();
    let started = Instant::now();
    let ids: Vec<String> = rt.block_on(async {
        let conn = queue::connect(&mcpq_tests::redis_url())
            .await
            .expect("redis");
        let producer = Producer::new(conn, keys, QueueSettings::default());
        let mut ids = Vec::new();
        for chunk in jobs(n).chunks(10_000) {
            for s in producer.submit_many(chunk).await.expect("submit") {
                ids.push(s.id.to_string());
            }
        }
        ids
    });
    let mut worker = env.worker(&[]);
    let mut redis = env.redis();
    let totals = format!("{{{}}}:totals", env.namespace);
    assert!(
        wait_until(Duration::from_secs(900), || {
            let (ok, dead): (Option<usize>, Option<usize>) = redis::cmd("HMGET")
                .arg(&totals)
                .arg("succeeded")
                .arg("dead")
                .query(&mut redis)
                .unwrap_or_default();
            ok.unwrap_or(0) + dead.unwrap_or(0) >= n
        }),
        "the jobs did not all end"
    );
    worker.signal(libc::SIGTERM);
    worker.wait_exit(Duration::from_secs(30));
    eprintln!(
        "dashboard bench: {n} jobs seeded and run in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let serve = env.serve(&[]);
    (env, serve, ids[0].clone())
}

/// Median ms and Redis commands per load of each page.
fn measure(serve: &mcpq_tests::serve::ServeProc, dead: &str) -> BTreeMap<&'static str, (f64, f64)> {
    mcpq_shared::tls::install();
    let http = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let resp = http
        .post(serve.at("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={TOKEN}"))
        .send()
        .expect("login");
    let cookie = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("mcpq_session="))
        .and_then(|v| v.split(';').next())
        .expect("session cookie")
        .to_string();
    let mut redis = redis::Client::open(mcpq_tests::redis_url())
        .and_then(|c| c.get_connection())
        .expect("redis");
    let pages: [(&'static str, String); 11] = [
        ("overview", "/".into()),
        ("overview.json (every 2 s)", "/ui/overview.json".into()),
        ("jobs", "/jobs".into()),
        ("jobs?status=dead", "/jobs?status=dead".into()),
        ("jobs?queue=default", "/jobs?queue=default".into()),
        ("a dead job", format!("/jobs/{dead}")),
        ("dead letters", "/dead".into()),
        (
            "dead?kind=protocol_error",
            "/dead?kind=protocol_error".into(),
        ),
        ("batches", "/batches".into()),
        ("servers", "/servers".into()),
        ("schedules & limits", "/schedules".into()),
    ];
    let mut out = BTreeMap::new();
    for (name, path) in pages {
        let url = serve.at(&path);
        let mut times = Vec::new();
        let before = commands(&mut redis);
        for _ in 0..LOADS {
            let t = Instant::now();
            let resp = http
                .get(&url)
                .header("cookie", &cookie)
                .send()
                .expect("GET");
            assert_eq!(resp.status().as_u16(), 200, "{name}");
            let _ = resp.bytes();
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        // One INFO per measurement is left out by `commands`.
        let per_load = (commands(&mut redis) - before) as f64 / LOADS as f64;
        times.sort_by(f64::total_cmp);
        out.insert(name, (times[LOADS / 2], per_load));
    }
    out
}

fn main() {
    let big: usize = std::env::var("BENCH_DASHBOARD_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let small = (big / 100).max(100);
    let (_env_s, serve_s, dead_s) = seeded(small);
    let (_env_b, serve_b, dead_b) = seeded(big);
    let s = measure(&serve_s, &dead_s);
    let b = measure(&serve_b, &dead_b);
    println!(
        "dashboard: median of {LOADS} loads per page, {small} jobs vs {big} jobs (a tenth dead), same run"
    );
    println!(
        "{:<28} {:>9} {:>9} {:>7}   {:>12} {:>12}",
        "page",
        format!("{small} ms"),
        format!("{big} ms"),
        "ratio",
        "cmds/load S",
        "cmds/load B"
    );
    for (name, (ms_s, cmd_s)) in &s {
        let (ms_b, cmd_b) = b[name];
        println!(
            "{name:<28} {ms_s:>9.2} {ms_b:>9.2} {:>7.2}   {cmd_s:>12.1} {cmd_b:>12.1}",
            ms_b / ms_s
        );
    }
}
