//! What `[redis] wait_replicas = 1` costs a submit (issue 17): one job per submit, one
//! submit at a time (the latency a client sees) and 16 at once (throughput), on a
//! private master with one replica on this machine, with and without the WAIT, side by
//! side in one run. Release build; `scripts/bench` runs it. `BENCH_SUBMITS` (default
//! 5000) sets how many submits each way.
//!
//! Not a test: nothing is asserted but that every submit was acknowledged. On one
//! machine the replica is as close as it gets: across a network, add a round trip.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mcpq_shared::queue::{self, Keys, Producer, QueueSettings};
use mcpq_tests::{call_job, free_port, wait_until};
use serde_json::json;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(port: u16, extra: &[&str]) -> Server {
    // A replica writes the master's snapshot to its directory: a temporary one.
    let dir = std::env::temp_dir().join(format!("mcpq-bench-durability-{port}"));
    std::fs::create_dir_all(&dir).expect("dir");
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "no"])
        .arg("--dir")
        .arg(&dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server");
    let url = format!("redis://127.0.0.1:{port}");
    assert!(wait_until(Duration::from_secs(10), || {
        redis::Client::open(url.as_str())
            .and_then(|c| c.get_connection())
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok()
    }));
    Server(child)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let n: usize = std::env::var("BENCH_SUBMITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let (mport, rport) = (free_port(), free_port());
    let _master = start(mport, &[]);
    let _replica = start(rport, &["--replicaof", "127.0.0.1", &mport.to_string()]);
    let master = format!("redis://127.0.0.1:{mport}");
    assert!(
        wait_until(Duration::from_secs(10), || {
            redis::Client::open(master.as_str())
                .and_then(|c| c.get_connection())
                .and_then(|mut c| {
                    redis::cmd("INFO")
                        .arg("replication")
                        .query::<String>(&mut c)
                })
                .is_ok_and(|info| {
                    info.contains("connected_slaves:1") && info.contains("state=online")
                })
        }),
        "the replica did not come online"
    );
    let rt = mcpq_tests::runtime();
    println!("wait_replicas cost: {n} submits each way, master + 1 replica on loopback");
    println!(
        "{:<18} {:>10} {:>10} {:>10} {:>14}",
        "mode", "p50 ms", "p99 ms", "max ms", "16 at once /s"
    );
    let mut rows = Vec::new();
    for replicas in [0_u32, 1] {
        let (p50, p99, max, rate) = rt.block_on(async {
            let conn = queue::connect(&master).await.expect("redis");
            let keys = Keys::new(format!(
                "bench-durability-{replicas}-{}",
                std::process::id()
            ));
            let producer = Producer::new(conn, keys, QueueSettings::default())
                .with_durability(replicas, Duration::from_secs(1));
            let job = call_job("echo", "echo", json!({"text": "x"}));
            let mut lat = Vec::with_capacity(n);
            for _ in 0..n {
                let mut j = job.clone();
                j.id = mcpq_shared::job::JobId::generate();
                let t = Instant::now();
                producer.submit(&j).await.expect("acknowledged");
                lat.push(t.elapsed());
            }
            lat.sort();
            // Throughput: 16 submitters at once.
            let started = Instant::now();
            let tasks: Vec<_> = (0..16)
                .map(|_| {
                    let (producer, job) = (producer.clone(), job.clone());
                    tokio::spawn(async move {
                        for _ in 0..n / 16 {
                            let mut j = job.clone();
                            j.id = mcpq_shared::job::JobId::generate();
                            producer.submit(&j).await.expect("acknowledged");
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.expect("task");
            }
            let rate = (n / 16 * 16) as f64 / started.elapsed().as_secs_f64();
            (
                percentile(&lat, 0.5),
                percentile(&lat, 0.99),
                lat[lat.len() - 1],
                rate,
            )
        });
        let mode = format!("wait_replicas = {replicas}");
        println!(
            "{mode:<18} {:>10.3} {:>10.3} {:>10.3} {:>14.0}",
            ms(p50),
            ms(p99),
            ms(max),
            rate
        );
        rows.push((p50, rate));
    }
    println!(
        "ratio (1 vs 0): p50 latency x{:.2}, throughput x{:.2}",
        rows[1].0.as_secs_f64() / rows[0].0.as_secs_f64(),
        rows[1].1 / rows[0].1
    );
}
