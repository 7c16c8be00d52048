//! Completion webhooks: a real HTTP receiver in the test, real workers, the README's
//! verification snippets run with python3 and node on what the receiver got.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use mcpq_shared::config::webhooks::WebhookSettings;
use mcpq_shared::webhook::client::Sent;
use mcpq_shared::webhook::WebhookClient;
use mcpq_tests::{text, wait_until, TestEnv};
use serde_json::Value;

const SECRET_ENV: &str = "MCPQ_TEST_WEBHOOK_SECRET";
const SECRET: &str = "whsec-test-5f1c9a";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Got {
    path: String,
    delivery: String,
    timestamp: String,
    signature: String,
    body: Vec<u8>,
    answered: u16,
}

/// What the receiver saw and did, kept across its restarts.
#[derive(Debug, Default)]
struct Log {
    got: Vec<Got>,
    /// Delivery ids acted on (first 2xx answer for each; later copies are ignored, as a
    /// receiver that dedupes on X-Mcpq-Delivery does), with how often each came.
    acted: BTreeMap<String, usize>,
    /// `/hook` answers 500 to this many requests first.
    fail_first: usize,
    /// Requests to `/slow` being answered now, and the most at once.
    slow_now: usize,
    slow_most: usize,
}

type Shared = Arc<Mutex<Log>>;

fn lock(log: &Shared) -> std::sync::MutexGuard<'_, Log> {
    log.lock().unwrap_or_else(|p| p.into_inner())
}

/// A webhook receiver on 127.0.0.1, in its own thread; [`Receiver::stop`] closes its
/// listener and connections (the receiver is "down") until started again on the same
/// port.
struct Receiver {
    addr: SocketAddr,
    log: Shared,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    fn start(port: u16, log: Shared) -> Receiver {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind the receiver");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let state = log.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let app = axum::Router::new()
                    .route("/{*path}", axum::routing::post(receive))
                    .with_state(state);
                let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                    let _ = rx.await;
                });
                // Keep-alive connections end at shutdown; a request in flight gets 2 s.
                let _ = tokio::time::timeout(Duration::from_secs(60), serve).await;
            });
        });
        Receiver {
            addr,
            log,
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn stop(mut self) -> (u16, Shared) {
        self.shutdown();
        (self.addr.port(), self.log.clone())
    }

    fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn receive(
    State(log): State<Shared>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let path = uri.path().to_string();
    if path == "/slow" {
        // Answered after a while, counting how many are in flight at once.
        {
            let mut l = lock(&log);
            l.slow_now += 1;
            l.slow_most = l.slow_most.max(l.slow_now);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        lock(&log).slow_now -= 1;
    }
    let mut log = lock(&log);
    let hook_requests = log.got.iter().filter(|g| g.path == "/hook").count();
    let status = match path.as_str() {
        "/hook" if hook_requests < log.fail_first => StatusCode::INTERNAL_SERVER_ERROR,
        "/gone" => StatusCode::GONE,
        "/redirect" => StatusCode::FOUND,
        _ => StatusCode::OK,
    };
    let delivery = header("x-mcpq-delivery");
    if status.is_success() {
        *log.acted.entry(delivery.clone()).or_default() += 1;
    }
    log.got.push(Got {
        path,
        delivery,
        timestamp: header("x-mcpq-timestamp"),
        signature: header("x-mcpq-signature"),
        body: body.to_vec(),
        answered: status.as_u16(),
    });
    if status == StatusCode::FOUND {
        return (status, [("location", "/target")], "moved").into_response();
    }
    (status, "thanks").into_response()
}

/// The first fenced block of `lang` in README's "Webhooks" section.
fn readme_snippet(lang: &str) -> String {
    let readme = include_str!("../../README.md");
    let section = readme
        .split("\n## Webhooks\n")
        .nth(1)
        .expect("README.md has a section `## Webhooks`")
        .split("\n## ")
        .next()
        .unwrap_or_default();
    let fence = format!("```{lang}\n");
    let start = section
        .find(&fence)
        .unwrap_or_else(|| panic!("no ```{lang} block in README's Webhooks section"))
        + fence.len();
    let end = section[start..].find("```").expect("the block ends") + start;
    section[start..end].to_string()
}

/// Runs the README's Python and Node snippets on one request: both must say the same,
/// and that is returned.
fn snippets_verify(dir: &std::path::Path, got: &Got, secret: &str) -> bool {
    let body = dir.join(format!("body-{}", ulid::Ulid::generate()));
    std::fs::write(&body, &got.body).expect("write the body");
    let python = format!(
        "{}\nimport os, sys\nsys.exit(0 if verify(os.environ['SECRET'].encode(), os.environ['TS'], open(sys.argv[1], 'rb').read(), os.environ['SIG']) else 1)\n",
        readme_snippet("python")
    );
    let node = format!(
        "{}\nconst fs = require('fs');\nprocess.exit(verify(process.env.SECRET, process.env.TS, fs.readFileSync(process.argv[1]), process.env.SIG) ? 0 : 1);\n",
        readme_snippet("js")
    );
    let run = |program: &str, flag: &str, code: &str| {
        let out = Command::new(program)
            .args([flag, code])
            .arg(&body)
            .env("SECRET", secret)
            .env("TS", &got.timestamp)
            .env("SIG", &got.signature)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "{program} failed: {}",
            text(&out.stderr)
        );
        out.status.code() == Some(0)
    };
    let by_python = run("python3", "-c", &python);
    let by_node = run("node", "-e", &node);
    assert_eq!(by_python, by_node, "python and node disagree on {got:?}");
    by_python
}

fn webhooks_config(extra: &str) -> String {
    format!(
        "[webhooks]\nallow_private = true\nretry_base = \"200ms\"\nretry_cap = \"1s\"\ntimeout = \"2s\"\nsecret_envs = [\"{SECRET_ENV}\"]\n{extra}\n"
    )
}

fn worker(env: &TestEnv) -> mcpq_tests::WorkerProc {
    env.worker_with(&[], |cmd| {
        cmd.env(SECRET_ENV, SECRET);
    })
}

fn list(env: &TestEnv, failed: bool) -> Vec<Value> {
    let mut args = vec!["webhooks", "list", "--json"];
    if failed {
        args.push("--failed");
    }
    let out = env.mcpq(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("JSON line"))
        .filter(|v| v["type"] == "webhook")
        .collect()
}

#[test]
fn every_callback_arrives_through_500s_an_outage_and_a_worker_restart_and_verifies_with_the_readme_snippets(
) {
    let log: Shared = Arc::new(Mutex::new(Log {
        fail_first: 3,
        ..Log::default()
    }));
    let receiver = Receiver::start(0, log.clone());
    let env = TestEnv::new("webhooks", &webhooks_config(""));
    let mut first = worker(&env);
    let hook = receiver.url("/hook");
    let callback = ["--callback-url", &hook, "--callback-secret-env", SECRET_ENV];
    let mut jobs = BTreeSet::new();
    for i in 0..4 {
        let args = format!("{{\"text\":\"job {i}\"}}");
        jobs.insert(env.submit_call("echo", "echo", &args, &callback));
    }
    let lines = "{\"kind\":\"agent\",\"payload\":{\"steps\":[{\"server\":\"echo\",\"tool\":\"echo\",\"arguments\":{\"text\":\"a\"}}]}}\n".repeat(2);
    let mut batch_args = vec!["batch", "submit", "-"];
    batch_args.extend_from_slice(&callback);
    let out = env.mcpq_with_stdin(&batch_args, lines.as_bytes());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let batch = text(&out.stdout).trim().to_string();

    // The first three deliveries are answered 500.
    assert!(
        wait_until(Duration::from_secs(30), || lock(&log).got.len() >= 3),
        "the receiver got no 3 deliveries"
    );
    // Then the receiver is down for 10 s, and the worker is killed and another started
    // in between.
    let (port, log) = receiver.stop();
    first.signal(libc::SIGKILL);
    first.wait_exit(Duration::from_secs(10));
    let second = worker(&env);
    std::thread::sleep(Duration::from_secs(10));
    let receiver = Receiver::start(port, log.clone());

    let expected = jobs.len() + 1;
    let all_acted = wait_until(Duration::from_secs(60), || {
        lock(&log).acted.len() >= expected
    });
    let log_now = lock(&log);
    assert!(
        all_acted,
        "not every callback arrived: {:?}\nworker log:\n{}",
        log_now.acted,
        second.log_text()
    );
    assert!(log_now.got.len() >= 3 + expected);
    assert!(log_now.got[..3].iter().all(|g| g.answered == 500));

    // One delivery id per end: the acted ids announce each job and the batch once.
    let mut subjects = BTreeMap::new();
    for g in log_now.got.iter().filter(|g| g.answered == 200) {
        let body: Value = serde_json::from_slice(&g.body).expect("a JSON body");
        assert_eq!(body["delivery"], g.delivery.as_str());
        let subject = match body["type"].as_str() {
            Some("job.finished") => {
                assert_eq!(body["job"]["status"], "succeeded", "{body}");
                assert!(body["job"]["result"].is_array(), "{body}");
                body["job"]["id"].as_str().unwrap_or_default().to_string()
            }
            Some("batch.finished") => {
                assert_eq!(body["batch"]["total"], 2, "{body}");
                assert_eq!(body["batch"]["succeeded"], 2, "{body}");
                assert_eq!(body["batch"]["pending"], 0, "{body}");
                body["batch"]["id"].as_str().unwrap_or_default().to_string()
            }
            other => panic!("unexpected type {other:?}: {body}"),
        };
        subjects
            .entry(subject)
            .or_insert_with(BTreeSet::new)
            .insert(g.delivery.clone());
    }
    let mut want: BTreeSet<String> = jobs.clone();
    want.insert(batch.clone());
    assert_eq!(
        subjects.keys().cloned().collect::<BTreeSet<_>>(),
        want,
        "every job and the batch are announced"
    );
    for (subject, ids) in &subjects {
        assert_eq!(
            ids.len(),
            1,
            "{subject} was announced under two delivery ids: {ids:?}"
        );
    }
    assert_eq!(log_now.acted.len(), expected, "{:?}", log_now.acted);
    let acted: BTreeSet<&String> = log_now.acted.keys().collect();
    for g in &log_now.got {
        assert!(
            acted.contains(&g.delivery),
            "a delivery id nobody acted on: {g:?}"
        );
    }

    // Every request, 500s included, verifies with both README snippets; a changed body
    // or another secret does not.
    for g in &log_now.got {
        assert!(
            snippets_verify(&env.dir, g, SECRET),
            "signature refused: {g:?}"
        );
    }
    let mut forged = log_now.got[0].clone();
    forged.body.push(b' ');
    assert!(!snippets_verify(&env.dir, &forged, SECRET));
    assert!(!snippets_verify(
        &env.dir,
        &log_now.got[0],
        "another secret"
    ));
    drop(log_now);

    // The deliveries are listed as delivered, the first with its failed attempts.
    assert!(wait_until(Duration::from_secs(10), || {
        let listed = list(&env, false);
        listed.len() == expected && listed.iter().all(|d| d["state"] == "delivered")
    }));
    let listed = list(&env, false);
    assert!(
        listed.iter().any(|d| d["attempts"].as_u64() > Some(1)),
        "{listed:?}"
    );
    // A delivered one is not retried by hand.
    let delivered = listed[0]["id"].as_str().unwrap_or_default();
    let out = env.mcpq(&["webhooks", "retry", delivered, "--json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("\"kind\":\"unknown_delivery\""),
        "{}",
        text(&out.stderr)
    );
    drop(receiver);
}

#[test]
fn a_410_stops_a_delivery_and_a_refused_one_fails_at_once_and_can_be_retried_by_hand() {
    let log: Shared = Arc::default();
    let receiver = Receiver::start(0, log.clone());
    let env = TestEnv::new("webhooks-gone", &webhooks_config(""));
    let metrics = format!("127.0.0.1:{}", mcpq_tests::free_port());
    let w = env.worker_with(&["--metrics-listen", &metrics], |cmd| {
        cmd.env(SECRET_ENV, SECRET);
    });
    let gone = receiver.url("/gone");
    let id = env.submit_call(
        "echo",
        "echo",
        "{\"text\":\"x\"}",
        &["--callback-url", &gone],
    );
    // Once the worker has loaded its config, an endpoint added is known to the producer
    // only, so the worker refuses deliveries to it (unknown endpoint).
    assert!(w.wait_log("worker started", Duration::from_secs(30)));
    env.add_config(&format!(
        "[webhooks.endpoints.later]\nurl = \"{}\"\n",
        receiver.url("/target")
    ));
    let refused = env.submit_call(
        "echo",
        "echo",
        "{\"text\":\"y\"}",
        &["--callback-endpoint", "later"],
    );
    assert!(
        wait_until(Duration::from_secs(30), || {
            let listed = list(&env, false);
            listed.len() == 2 && listed.iter().all(|d| d["state"] != "pending")
        }),
        "{}",
        w.log_text()
    );
    let listed = list(&env, false);
    let by_subject = |s: &str| {
        listed
            .iter()
            .find(|d| d["subject"] == s)
            .cloned()
            .unwrap_or_else(|| panic!("no delivery for {s}: {listed:?}"))
    };
    let g = by_subject(&id);
    assert_eq!(g["state"], "gone", "{g}");
    assert_eq!(g["attempts"], 1, "a 410 is not retried: {g}");
    assert_eq!(g["last_status"], 410, "{g}");
    let r = by_subject(&refused);
    assert_eq!(r["state"], "failed", "{r}");
    assert_eq!(r["attempts"], 1, "a refused delivery fails at once: {r}");
    assert!(
        r["last_response"]
            .as_str()
            .unwrap_or_default()
            .contains("unknown endpoint"),
        "{r}"
    );
    assert!(lock(&log).got.iter().all(|g| g.path == "/gone"));
    // Each outcome is counted in the worker's metrics.
    // reqwest, as the other HTTP tests (no curl needed on the machine); the workspace's
    // reqwest needs mcpq's TLS provider installed even for http.
    mcpq_shared::tls::install();
    let scraped = reqwest::blocking::get(format!("http://{metrics}/metrics"))
        .and_then(|r| r.text())
        .expect("GET /metrics");
    for outcome in ["gone", "refused"] {
        let line = format!("mcpq_webhook_deliveries_total{{outcome=\"{outcome}\"}} 1");
        assert!(
            scraped.lines().any(|l| l == line),
            "no `{line}` in:\n{scraped}"
        );
    }
    let failed = list(&env, true);
    assert_eq!(failed.len(), 1, "{failed:?}");
    let did = failed[0]["id"].as_str().unwrap_or_default().to_string();

    // Retried by hand: pending again, then refused again by this worker.
    let out = env.mcpq(&["webhooks", "retry", &did, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(wait_until(Duration::from_secs(30), || {
        list(&env, true)
            .first()
            .is_some_and(|d| d["attempts"].as_u64() == Some(2))
    }));
    // A gone one may be sent again too (a receiver that said 410 by mistake).
    let gone_id = g["id"].as_str().unwrap_or_default().to_string();
    let out = env.mcpq(&["webhooks", "retry", &gone_id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(wait_until(Duration::from_secs(30), || {
        lock(&log).got.iter().filter(|g| g.path == "/gone").count() == 2
    }));
    // An unknown id is refused with its own kind.
    let out = env.mcpq(&["webhooks", "retry", "job-nope-1", "--json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("\"kind\":\"unknown_delivery\""),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_bad_callback_is_refused_at_submit_naming_its_json_path() {
    let env = TestEnv::new("webhooks-bad", &webhooks_config(""));
    for (callback, path) in [
        (
            r#"{"urll": "https://example.com"}"#,
            "options.callback.urll",
        ),
        (r#"{"url": "ftp://example.com/x"}"#, "options.callback.url"),
        (
            r#"{"url": "https://u:p@example.com/x"}"#,
            "options.callback.url",
        ),
        (r#"{"endpoint": "nope"}"#, "options.callback.endpoint"),
        (
            r#"{"url": "https://example.com/x", "secret_env": "AWS_SECRET_ACCESS_KEY"}"#,
            "options.callback.secret_env",
        ),
        (
            r#"{"url": "https://example.com/x", "endpoint": "e"}"#,
            "options.callback",
        ),
    ] {
        let job = format!(
            r#"{{"kind":"agent","payload":{{"steps":[{{"server":"echo","tool":"echo"}}]}},"options":{{"callback":{callback}}}}}"#
        );
        let out = env.mcpq_with_stdin(&["submit", "-", "--json"], job.as_bytes());
        assert_eq!(out.status.code(), Some(2), "{callback}");
        let err = text(&out.stderr);
        assert!(
            err.contains("\"kind\":\"invalid_job\"") && err.contains(path),
            "{callback}: {err}"
        );
    }
    // Without allow_private, a private address literal is refused at submit too.
    let strict = TestEnv::new("webhooks-strict", "");
    let out = strict.mcpq(&[
        "submit",
        "agent",
        "--server",
        "echo",
        "--tool",
        "echo",
        "--callback-url",
        "http://169.254.169.254/latest/meta-data",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("allow_private"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(strict.queue_depth(), 0);
}

#[test]
fn the_guard_refuses_private_targets_and_redirects_are_not_followed() {
    let log: Shared = Arc::default();
    let receiver = Receiver::start(0, log.clone());
    let port = receiver.addr.port();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let post = |client: &WebhookClient, url: &str| {
        let url = url::Url::parse(url).expect("a URL");
        rt.block_on(client.post(&url, b"{}".to_vec(), &[]))
    };
    let strict = WebhookClient::new(&WebhookSettings::default()).expect("client");
    for url in [
        format!("http://127.0.0.1:{port}/target"),
        format!("http://localhost:{port}/target"),
        format!("http://[::1]:{port}/target"),
        format!("http://[::ffff:127.0.0.1]:{port}/target"),
        "http://169.254.169.254/latest/meta-data".to_string(),
        "http://10.0.0.1/".to_string(),
    ] {
        match post(&strict, &url) {
            Sent::Refused(why) => assert!(why.contains("allow_private"), "{url}: {why}"),
            other => panic!("{url} was not refused: {other:?}"),
        }
    }
    assert!(lock(&log).got.is_empty(), "a refused target was reached");

    let open = WebhookClient::new(&WebhookSettings {
        allow_private: true,
        ..WebhookSettings::default()
    })
    .expect("client");
    match post(&open, &receiver.url("/redirect")) {
        Sent::Answered { status, .. } => assert_eq!(status, 302),
        other => panic!("{other:?}"),
    }
    match post(&open, &receiver.url("/gone")) {
        Sent::Answered { status, .. } => assert_eq!(status, 410),
        other => panic!("{other:?}"),
    }
    let paths: Vec<String> = lock(&log).got.iter().map(|g| g.path.clone()).collect();
    assert_eq!(
        paths,
        ["/redirect", "/gone"],
        "the redirect's target was never hit"
    );
}

#[test]
fn a_serial_endpoint_gets_one_delivery_at_a_time_across_workers() {
    let log: Shared = Arc::default();
    let receiver = Receiver::start(0, log.clone());
    let endpoint = format!(
        "[webhooks.endpoints.one]\nurl = \"{}\"\nserial = true\n",
        receiver.url("/slow")
    );
    let env = TestEnv::new("webhooks-serial", &webhooks_config(&endpoint));
    let _workers = [worker(&env), worker(&env)];
    let jobs: Vec<String> = (0..6)
        .map(|i| {
            let args = format!("{{\"text\":\"{i}\"}}");
            env.submit_call("echo", "echo", &args, &["--callback-endpoint", "one"])
        })
        .collect();
    assert!(wait_until(Duration::from_secs(60), || {
        lock(&log).acted.len() == jobs.len()
    }));
    let log = lock(&log);
    assert_eq!(
        log.slow_most, 1,
        "a serial endpoint got two deliveries at once"
    );
}

#[test]
fn a_foreign_key_where_the_failed_set_belongs_does_not_stop_deliveries() {
    let log: Shared = Arc::default();
    let receiver = Receiver::start(0, log.clone());
    let env = TestEnv::new("webhooks-foreign", &webhooks_config(""));
    let failed = format!("{{{}}}:webhooks:failed", env.namespace);
    let _: () = redis::cmd("SET")
        .arg(&failed)
        .arg("not a sorted set")
        .query(&mut env.redis())
        .expect("SET");
    let _w = worker(&env);
    env.submit_call(
        "echo",
        "echo",
        "{\"text\":\"x\"}",
        &["--callback-url", &receiver.url("/ok")],
    );
    assert!(
        wait_until(Duration::from_secs(30), || !lock(&log).got.is_empty()),
        "no delivery arrived"
    );
    let kind: String = redis::cmd("TYPE")
        .arg(format!("{failed}:corrupt"))
        .query(&mut env.redis())
        .expect("TYPE");
    assert_eq!(kind, "string", "the foreign key is set aside, not deleted");
}
