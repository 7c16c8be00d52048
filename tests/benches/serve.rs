//! Jobs/s into the queue through `POST /v1/jobs` of `mcpq serve` (one client, and 8
//! concurrent keep-alive clients) against the CLI (`mcpq submit FILE`, one process per
//! job, as a script in another language would shell out), side by side in one run
//! (release build; run it with `scripts/bench`). No worker runs: this measures the way
//! in. `BENCH_SERVE_JOBS` (default 4000) jobs per HTTP run, a tenth of that through the
//! CLI (it is much slower).
//!
//! Not a test: nothing is asserted but that every submit succeeded.

use std::time::Instant;

use mcpq_tests::serve::{TOKEN, TOKEN_CONFIG};
use mcpq_tests::{text, TestEnv};
use serde_json::json;

fn job(i: usize) -> serde_json::Value {
    json!({"kind": "agent", "payload": {"steps": [
        {"server": "echo", "tool": "add", "arguments": {"a": i, "b": 1}}]}})
}

fn http_run(url: &str, jobs: usize, clients: usize) -> f64 {
    mcpq_shared::tls::install();
    let started = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let url = url.to_string();
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::new();
                for i in (c..jobs).step_by(clients) {
                    let resp = http
                        .post(&url)
                        .bearer_auth(TOKEN)
                        .json(&job(i))
                        .send()
                        .expect("POST");
                    assert_eq!(resp.status().as_u16(), 202, "{:?}", resp.text());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client");
    }
    jobs as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let n: usize = std::env::var("BENCH_SERVE_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000);
    let cli_jobs = (n / 10).max(10);
    let env = TestEnv::new("bench-serve", TOKEN_CONFIG);
    let file = env.dir.join("job.json");
    std::fs::write(&file, job(1).to_string()).expect("job file");
    let started = Instant::now();
    for _ in 0..cli_jobs {
        let out = env.mcpq(&["submit", file.to_str().expect("utf-8")]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }
    let cli = cli_jobs as f64 / started.elapsed().as_secs_f64();
    let serve = env.serve(&[]);
    let url = serve.at("/v1/jobs");
    let one = http_run(&url, n, 1);
    let eight = http_run(&url, n, 8);
    println!("serve: jobs/s into the queue (no worker), same machine, one run");
    println!("anchor  mcpq submit FILE, a process per job ({cli_jobs} jobs) : {cli:>8.0} jobs/s");
    println!(
        "mcpq    POST /v1/jobs, 1 client ({n} jobs)              : {one:>8.0} jobs/s   ratio {:.1}",
        one / cli
    );
    println!(
        "mcpq    POST /v1/jobs, 8 clients ({n} jobs)             : {eight:>8.0} jobs/s   ratio {:.1}",
        eight / cli
    );
}
