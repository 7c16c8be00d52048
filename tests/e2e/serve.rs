//! `mcpq serve`: the HTTP API over real HTTP, against the real worker and Redis.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use mcpq_tests::serve::{TOKEN, TOKEN_CONFIG};
use mcpq_tests::{deps, text, TestEnv};
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::StatusCode;
use serde_json::{json, Value};

fn client() -> Client {
    // The workspace's reqwest has no default TLS provider; mcpq's is installed here.
    mcpq_shared::tls::install();
    Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("http client")
}

fn authed(req: RequestBuilder) -> RequestBuilder {
    req.bearer_auth(TOKEN)
}

fn echo_job(text: &str) -> Value {
    json!({"kind": "agent", "payload": {"steps": [
        {"server": "echo", "tool": "echo", "arguments": {"text": text}}
    ]}})
}

fn body(resp: Response) -> (StatusCode, Value) {
    let status = resp.status();
    let text = resp.text().expect("body");
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, value)
}

#[test]
fn a_thousand_jobs_from_eight_clients_all_succeed_and_read_back_through_wait() {
    let env = TestEnv::new("serve-1000", TOKEN_CONFIG);
    let _worker = env.worker(&["--concurrency", "16"]);
    let serve = env.serve(&[]);
    let url = serve.at("/v1/jobs");
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let url = url.clone();
            std::thread::spawn(move || {
                let http = client();
                (0..125)
                    .map(|i| {
                        let text = format!("c{c}-j{i}");
                        let (status, v) = body(
                            authed(http.post(&url))
                                .json(&echo_job(&text))
                                .send()
                                .expect("POST"),
                        );
                        assert_eq!(status, StatusCode::ACCEPTED, "{v}");
                        assert_eq!(v["created"], true);
                        (v["id"].as_str().expect("id").to_string(), text)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let jobs: Vec<(String, String)> = clients
        .into_iter()
        .flat_map(|c| c.join().expect("client thread"))
        .collect();
    assert_eq!(jobs.len(), 1000);
    assert_eq!(
        jobs.iter().map(|(id, _)| id).collect::<BTreeSet<_>>().len(),
        1000
    );

    // Read back by 8 clients too, each result through a long poll.
    let chunks: Vec<Vec<(String, String)>> = jobs.chunks(125).map(<[_]>::to_vec).collect();
    let readers: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            let serve_url = serve.url.clone();
            std::thread::spawn(move || {
                let http = client();
                for (id, text) in chunk {
                    let (status, v) = body(
                        authed(http.get(format!("{serve_url}/v1/jobs/{id}/result?wait=60s")))
                            .send()
                            .expect("GET result"),
                    );
                    assert_eq!(status, StatusCode::OK, "{v}");
                    assert_eq!(v["status"], "succeeded", "{v}");
                    assert_eq!(
                        v["result"][0]["result"]["content"][0]["text"],
                        text.as_str()
                    );
                }
            })
        })
        .collect();
    for r in readers {
        r.join().expect("reader thread");
    }
}

#[test]
fn every_route_but_health_needs_a_valid_token() {
    let env = TestEnv::new("serve-auth", TOKEN_CONFIG);
    let serve = env.serve(&[]);
    let http = client();
    let id = "01JDX6Q6T3N7Z8YV1K0W2M4C5B";
    let routes = [
        ("POST", "/v1/jobs".to_string()),
        ("GET", "/v1/jobs".to_string()),
        ("GET", format!("/v1/jobs/{id}")),
        ("GET", format!("/v1/jobs/{id}/result")),
        ("POST", format!("/v1/jobs/{id}/cancel")),
        ("POST", "/v1/batches".to_string()),
        ("GET", "/v1/batches".to_string()),
        ("GET", format!("/v1/batches/{id}")),
        ("GET", format!("/v1/batches/{id}/results")),
        ("GET", "/v1/dlq".to_string()),
        ("POST", format!("/v1/dlq/{id}/requeue")),
        ("GET", "/v1/servers".to_string()),
        ("GET", "/openapi.json".to_string()),
        ("GET", "/metrics".to_string()),
    ];
    for (method, path) in &routes {
        let request = |token: Option<&str>| {
            let req = match *method {
                "POST" => http.post(serve.at(path)).json(&echo_job("x")),
                _ => http.get(serve.at(path)),
            };
            match token {
                Some(t) => req.bearer_auth(t),
                None => req,
            }
        };
        for token in [None, Some("wrong-token-0123456789abcdef"), Some("")] {
            let (status, v) = body(request(token).send().expect("request"));
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {token:?}: {v}"
            );
            assert_eq!(v["error"]["kind"], "unauthorized");
        }
        let status = request(Some(TOKEN)).send().expect("request").status();
        assert_ne!(
            status,
            StatusCode::UNAUTHORIZED,
            "{method} {path} with the token"
        );
    }
    let (status, v) = body(http.get(serve.at("/health")).send().expect("health"));
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["redis"], true);
    assert!(!serve.log_text().contains(TOKEN), "the token was logged");
}

#[test]
fn an_open_server_refuses_web_pages_and_every_submit_needs_its_media_type() {
    // No token: open on loopback to this machine's programs, not to a browser's pages.
    let env = TestEnv::new("serve-open", "");
    let serve = env.serve(&[]);
    let http = client();
    let (status, v) = body(
        http.post(serve.at("/v1/jobs"))
            .json(&echo_job("from a program"))
            .send()
            .expect("POST"),
    );
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let id = v["id"].as_str().expect("id").to_string();

    // A page's cross-site POST carries an Origin (and would come as text/plain, which
    // needs no preflight): refused whatever it names, nothing enqueued.
    for origin in ["https://evil.example", "null", serve.url.as_str()] {
        let (status, v) = body(
            http.post(serve.at("/v1/jobs"))
                .header("origin", origin)
                .header("content-type", "text/plain")
                .body(echo_job("forged").to_string())
                .send()
                .expect("POST"),
        );
        assert_eq!(status, StatusCode::FORBIDDEN, "{origin}: {v}");
        assert_eq!(v["error"]["kind"], "forbidden");
        let (status, _) = body(
            http.post(serve.at(&format!("/v1/jobs/{id}/cancel")))
                .header("origin", origin)
                .send()
                .expect("cancel"),
        );
        assert_eq!(status, StatusCode::FORBIDDEN, "{origin}");
    }
    // DNS rebinding: the page's own host name resolves to 127.0.0.1; the Host says so.
    let port = serve.url.rsplit(':').next().expect("port").to_string();
    for host in [format!("evil.example:{port}"), "evil.example".to_string()] {
        let (status, v) = body(
            http.get(serve.at(&format!("/v1/jobs/{id}")))
                .header("host", &host)
                .send()
                .expect("GET"),
        );
        assert_eq!(status, StatusCode::FORBIDDEN, "{host}: {v}");
    }
    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}")] {
        let (status, v) = body(
            http.get(serve.at(&format!("/v1/jobs/{id}")))
                .header("host", &host)
                .send()
                .expect("GET"),
        );
        assert_eq!(status, StatusCode::OK, "{host}: {v}");
    }

    // A submit must say its body is JSON (JSON lines for a batch): 415 otherwise.
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut req = http
            .post(serve.at("/v1/jobs"))
            .body(echo_job("untyped").to_string());
        if let Some(c) = content_type {
            req = req.header("content-type", c);
        }
        let (status, v) = body(req.send().expect("POST"));
        assert_eq!(
            status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}: {v}"
        );
        assert_eq!(v["error"]["kind"], "unsupported_media_type");
    }
    let (status, v) = body(
        http.post(serve.at("/v1/batches"))
            .json(&echo_job("a batch as JSON"))
            .send()
            .expect("POST batch"),
    );
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{v}");
    let (status, v) = body(
        http.post(serve.at("/v1/batches"))
            .header("content-type", "application/jsonl")
            .body(echo_job("a batch line").to_string())
            .send()
            .expect("POST batch"),
    );
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    assert_eq!(
        env.queue_depth(),
        2,
        "only the program's job and batch line"
    );
}

#[test]
fn submit_checks_like_the_cli_pages_with_a_cursor_and_cancels() {
    let env = TestEnv::new("serve-api", TOKEN_CONFIG);
    let serve = env.serve(&[]);
    let http = client();
    let post = |v: &Value| {
        body(
            authed(http.post(serve.at("/v1/jobs")))
                .json(v)
                .send()
                .expect("POST"),
        )
    };

    // A typo is a 400 naming the field; an unknown server too; nothing is enqueued.
    let mut typo = echo_job("x");
    typo["payload"]["steps"][0]["tol"] = json!("echo");
    let (status, v) = post(&typo);
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["kind"], "invalid_job");
    assert_eq!(v["error"]["path"], "payload.steps[0].tol", "{v}");
    let mut unknown = echo_job("x");
    unknown["payload"]["steps"][0]["server"] = json!("nope");
    let (status, v) = post(&unknown);
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["path"], "payload.steps[0].server", "{v}");
    let (status, v) = body(
        authed(http.post(serve.at("/v1/jobs")))
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .expect("POST"),
    );
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    // An email attachment may not name a file on the server.
    let email = json!({"kind": "email", "payload": {"from": "a@example.com", "subject": "s",
        "text": "t", "attachments": [{"name": "p", "path": "/etc/passwd"}], "instructions": "i",
        "steps": [{"server": "echo", "tool": "echo", "arguments": {"text": "x"}}]}});
    let (status, v) = post(&email);
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["path"], "payload.attachments[0].path", "{v}");
    // More than queue.max_payload is 413. Its own client: the server answers before it
    // has read the body and closes that connection, which a pooled client might pick
    // for the next request in the meantime (IncompleteMessage, seen in CI).
    let big = echo_job(&"x".repeat(33 << 20));
    let (status, v) = body(
        authed(client().post(serve.at("/v1/jobs")))
            .json(&big)
            .send()
            .expect("POST"),
    );
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert_eq!(env.queue_depth(), 0, "a refused job was enqueued");

    // The Idempotency-Key header: the second submit names the first job.
    let keyed = |k: &str| {
        body(
            authed(http.post(serve.at("/v1/jobs")))
                .header("Idempotency-Key", k)
                .json(&echo_job("once"))
                .send()
                .expect("POST"),
        )
    };
    let (s1, first) = keyed("order-42");
    let (s2, second) = keyed("order-42");
    assert_eq!((s1, s2), (StatusCode::ACCEPTED, StatusCode::OK));
    assert_eq!(first["id"], second["id"]);
    assert_eq!(second["created"], false);
    let (status, _) = keyed("bad key with spaces");
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // The same key with another body is a mistake, not a retry: 409, nothing enqueued.
    let (status, v) = body(
        authed(http.post(serve.at("/v1/jobs")))
            .header("Idempotency-Key", "order-42")
            .json(&echo_job("twice?"))
            .send()
            .expect("POST"),
    );
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error"]["kind"], "idempotency_key_reused", "{v}");
    assert_eq!(env.queue_depth(), 1);

    // 25 more jobs; pages of 7 list all 26 exactly once, newest first.
    let mut ids = vec![first["id"].as_str().expect("id").to_string()];
    for i in 0..25 {
        let (status, v) = post(&echo_job(&format!("j{i}")));
        assert_eq!(status, StatusCode::ACCEPTED);
        ids.push(v["id"].as_str().expect("id").to_string());
    }
    let mut listed = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = serve.at("/v1/jobs?limit=7&status=queued");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = body(authed(http.get(url)).send().expect("list"));
        assert_eq!(status, StatusCode::OK, "{page}");
        // A job submitted mid-listing never shifts the pages.
        if cursor.is_none() {
            post(&echo_job("late"));
        }
        for j in page["jobs"].as_array().expect("jobs") {
            listed.push(j["id"].as_str().expect("id").to_string());
        }
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(listed, newest_first);
    let (status, v) = body(
        authed(http.get(serve.at("/v1/jobs?cursor=zzz")))
            .send()
            .expect("list"),
    );
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");

    // Status, result while queued (202, even with a short wait), cancel, result (200).
    let id = &ids[3];
    let (status, v) = body(
        authed(http.get(serve.at(&format!("/v1/jobs/{id}"))))
            .send()
            .expect("status"),
    );
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "queued");
    let started = Instant::now();
    let (status, v) = body(
        authed(http.get(serve.at(&format!("/v1/jobs/{id}/result?wait=300ms"))))
            .send()
            .expect("result"),
    );
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "the wait was not held"
    );
    let (status, v) = body(
        authed(http.post(serve.at(&format!("/v1/jobs/{id}/cancel"))))
            .send()
            .expect("cancel"),
    );
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["cancelled"], true);
    let (status, v) = body(
        authed(http.get(serve.at(&format!("/v1/jobs/{id}/result"))))
            .send()
            .expect("result"),
    );
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "cancelled");
    let (status, v) = body(
        authed(http.post(serve.at(&format!("/v1/jobs/{id}/cancel"))))
            .send()
            .expect("cancel"),
    );
    assert_eq!(
        (status, v["cancelled"].clone()),
        (StatusCode::OK, json!(false))
    );

    // Unknown ids are 404, junk ids 400, too long a wait 400.
    let (status, _) = body(
        authed(http.get(serve.at("/v1/jobs/01JDX6Q6T3N7Z8YV1K0W2M4C5B")))
            .send()
            .expect("status"),
    );
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = body(
        authed(http.get(serve.at("/v1/jobs/..%2F..%2Fetc")))
            .send()
            .expect("status"),
    );
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = body(
        authed(http.get(serve.at(&format!("/v1/jobs/{id}/result?wait=1h"))))
            .send()
            .expect("result"),
    );
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // The servers and the dead-letter set.
    let (status, v) = body(
        authed(http.get(serve.at("/v1/servers")))
            .send()
            .expect("servers"),
    );
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["servers"][0]["name"], "echo");
    assert!(
        v["servers"][0].get("command").is_none(),
        "the command line is not shown"
    );
    let (status, v) = body(authed(http.get(serve.at("/v1/dlq"))).send().expect("dlq"));
    assert_eq!((status, v["total"].clone()), (StatusCode::OK, json!(0)));
    let (status, _) = body(
        authed(http.post(serve.at(&format!("/v1/dlq/{id}/requeue"))))
            .send()
            .expect("requeue"),
    );
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[test]
fn every_error_is_json_rejections_405_and_timeouts_included() {
    let config = format!("[serve]\nrequest_timeout = \"1s\"\n{TOKEN_CONFIG}");
    let env = TestEnv::new("serve-errors", &config);
    let serve = env.serve(&[]);
    let http = client();
    let expect = |resp: Response, status: StatusCode, kind: &str| {
        let got = resp.status();
        let text = resp.text().expect("body");
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {got} {text:?}"));
        assert_eq!(got, status, "{v}");
        assert_eq!(v["error"]["kind"], kind, "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{v}"
        );
    };
    // Query strings that do not deserialize, a key given twice, a forged cursor.
    for query in [
        "limit=-1",
        "limit=abc",
        "status=queued&status=running",
        "cursor=i1800000000000.18446744073709551615",
    ] {
        let resp = authed(http.get(serve.at(&format!("/v1/jobs?{query}"))))
            .send()
            .expect("GET");
        expect(resp, StatusCode::BAD_REQUEST, "invalid_request");
    }
    let resp = authed(http.get(serve.at("/v1/dlq?limit=1&limit=2")))
        .send()
        .expect("GET");
    expect(resp, StatusCode::BAD_REQUEST, "invalid_request");
    // A method the route does not take: 405, and Allow still says which it takes.
    let resp = authed(http.delete(serve.at("/v1/jobs")))
        .send()
        .expect("DELETE");
    assert!(
        resp.headers().get("allow").is_some(),
        "{:?}",
        resp.headers()
    );
    expect(resp, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    // A body that stops arriving: the request times out (serve.request_timeout).
    use std::io::{Read, Write};
    let addr = serve.url.trim_start_matches("http://").to_string();
    let mut tcp = std::net::TcpStream::connect(&addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        tcp,
        "POST /v1/jobs HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"kind\":"
    )
    .expect("write");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("}}") {
        match tcp.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    let answer = String::from_utf8_lossy(&answer).to_string();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    let json = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let v: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {answer}"));
    assert_eq!(v["error"]["kind"], "timeout", "{v}");
}

/// Reads `tcp` until the server closes it (end of stream or reset); false if it stayed
/// open for the whole read timeout.
fn closed_by_server(tcp: &mut std::net::TcpStream) -> bool {
    use std::io::{ErrorKind, Read};
    let mut buf = [0u8; 1024];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn slow_and_silent_connections_are_closed_and_do_not_hold_the_server() {
    use std::io::Write;
    let config = format!("[serve]\nheader_timeout = \"1s\"\nmax_connections = 8\n{TOKEN_CONFIG}");
    let env = TestEnv::new("serve-slowloris", &config);
    let serve = env.serve(&[]);
    let addr = serve.url.trim_start_matches("http://").to_string();
    // Five times the cap: half send nothing, half a header that never ends.
    let mut idle: Vec<std::net::TcpStream> = (0..40)
        .map(|i| {
            let mut tcp = std::net::TcpStream::connect(&addr).expect("connect");
            tcp.set_read_timeout(Some(Duration::from_secs(60)))
                .expect("timeout");
            if i % 2 == 1 {
                tcp.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
                    .expect("write");
            }
            tcp
        })
        .collect();
    // The server still answers (the header deadline frees the slots they hold).
    let (status, v) = body(client().get(serve.at("/health")).send().expect("health"));
    assert_eq!(status, StatusCode::OK, "{v}");
    // And it closes every one of them itself.
    for (i, tcp) in idle.iter_mut().enumerate() {
        assert!(closed_by_server(tcp), "connection {i} was left open");
    }
    let (status, _) = body(client().get(serve.at("/health")).send().expect("health"));
    assert_eq!(status, StatusCode::OK);

    // SIGTERM with a silent connection and an idle kept-alive one open, at the default
    // header deadline (10 s, as long as the shutdown grace): both are closed at once.
    let env = TestEnv::new("serve-sigterm", TOKEN_CONFIG);
    let mut serve = env.serve(&[]);
    let addr = serve.url.trim_start_matches("http://").to_string();
    let mut silent = std::net::TcpStream::connect(&addr).expect("connect");
    silent
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let kept = client();
    let (status, _) = body(kept.get(serve.at("/health")).send().expect("health"));
    assert_eq!(status, StatusCode::OK);
    std::thread::sleep(Duration::from_millis(300));
    let exit = serve.stop(Duration::from_secs(6));
    assert_eq!(
        exit.and_then(|e| e.code()),
        Some(0),
        "mcpq-serve did not exit promptly: {}",
        serve.log_text()
    );
    assert!(closed_by_server(&mut silent));
}

#[test]
fn big_results_read_by_many_at_once_keep_the_server_answering() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let env = TestEnv::new("serve-big-results", TOKEN_CONFIG);
    let _worker = env.worker(&[]);
    let serve = env.serve(&[]);
    let http = client();
    // About 6 MB, under queue.max_result (8 MiB); the payload is as big (echo).
    const SIZE: usize = 6_000_000;
    let (status, v) = body(
        authed(http.post(serve.at("/v1/jobs")))
            .json(&echo_job(&"y".repeat(SIZE)))
            .send()
            .expect("POST"),
    );
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let url = serve.at(&format!(
        "/v1/jobs/{}/result?wait=60s",
        v["id"].as_str().expect("id")
    ));
    let text_len = |v: &Value| {
        v["result"][0]["result"]["content"][0]["text"]
            .as_str()
            .map(str::len)
    };
    let (status, v) = body(authed(http.get(&url)).send().expect("result"));
    assert_eq!(status, StatusCode::OK, "{}", v["status"]);
    assert_eq!(text_len(&v), Some(SIZE));

    // 20 readers at once; /health keeps answering meanwhile.
    let reading = Arc::new(AtomicBool::new(true));
    let health = {
        let (reading, url) = (reading.clone(), serve.at("/health"));
        std::thread::spawn(move || {
            let http = client();
            let mut answered = 0;
            while reading.load(Ordering::SeqCst) || answered == 0 {
                let (status, v) = body(http.get(&url).send().expect("health"));
                assert_eq!(status, StatusCode::OK, "{v}");
                answered += 1;
            }
            answered
        })
    };
    let readers: Vec<_> = (0..20)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let (status, v) = body(authed(client().get(&url)).send().expect("result"));
                assert_eq!(status, StatusCode::OK, "{}", v["status"]);
                assert_eq!(v["status"], "succeeded");
                text_len(&v)
            })
        })
        .collect();
    for r in readers {
        assert_eq!(r.join().expect("reader"), Some(SIZE));
    }
    reading.store(false, Ordering::SeqCst);
    assert!(health.join().expect("health thread") >= 1);
}

/// Every job of `query`'s listing, following `next` to the end; and the pages read.
fn list_all(
    http: &Client,
    serve: &mcpq_tests::serve::ServeProc,
    query: &str,
) -> (Vec<String>, usize) {
    let mut listed = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut url = serve.at(&format!("/v1/jobs?{query}"));
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = body(authed(http.get(url)).send().expect("list"));
        assert_eq!(status, StatusCode::OK, "{page}");
        pages += 1;
        assert!(pages < 1000, "the listing does not end");
        for j in page["jobs"].as_array().expect("jobs") {
            listed.push(j["id"].as_str().expect("id").to_string());
        }
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return (listed, pages),
        }
    }
}

#[test]
fn a_filter_few_jobs_match_answers_in_short_pages_that_end() {
    let env = TestEnv::new("serve-sparse", TOKEN_CONFIG);
    let serve = env.serve(&[]);
    let http = client();
    // The oldest job is cancelled; 6,000 queued ones come after it.
    let (_, v) = body(
        authed(http.post(serve.at("/v1/jobs")))
            .json(&echo_job("the one"))
            .send()
            .expect("POST"),
    );
    let cancelled = v["id"].as_str().expect("id").to_string();
    let (status, _) = body(
        authed(http.post(serve.at(&format!("/v1/jobs/{cancelled}/cancel"))))
            .send()
            .expect("cancel"),
    );
    assert_eq!(status, StatusCode::OK);
    let jobs: Vec<_> = (0..6000)
        .map(|i| mcpq_tests::call_job("echo", "echo", json!({"text": format!("q{i}")})))
        .collect();
    env.submit_jobs(&jobs);

    // No running job: the first page is empty but not the end; following it ends.
    let (status, page) = body(
        authed(http.get(serve.at("/v1/jobs?status=running&limit=1")))
            .send()
            .expect("list"),
    );
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["jobs"], json!([]), "{page}");
    assert!(
        page["next"].is_string(),
        "one request read the whole index: {page}"
    );
    let (running, _) = list_all(&http, &serve, "status=running&limit=1");
    assert!(running.is_empty());
    let (found, pages) = list_all(&http, &serve, "status=cancelled&limit=1");
    assert_eq!(found, vec![cancelled]);
    assert!(pages >= 2, "{pages}");
    // Unfiltered, pages are full.
    let (status, page) = body(
        authed(http.get(serve.at("/v1/jobs?limit=1000")))
            .send()
            .expect("list"),
    );
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["jobs"].as_array().map(Vec::len), Some(1000));
}

#[test]
fn pages_list_each_job_once_though_jobs_keep_coming_in_the_same_millisecond() {
    let env = TestEnv::new("serve-ties", TOKEN_CONFIG);
    let serve = env.serve(&[]);
    let http = client();
    // 300 jobs in one script call: one score, the same millisecond.
    let jobs: Vec<_> = (0..300)
        .map(|i| mcpq_tests::call_job("echo", "echo", json!({"text": format!("t{i}")})))
        .collect();
    env.submit_jobs(&jobs);
    let originals: BTreeSet<String> = jobs.iter().map(|j| j.id.to_string()).collect();
    let index = format!("{{{}}}:jobs", env.namespace);
    let mut redis = env.redis();
    let score: f64 = redis::cmd("ZSCORE")
        .arg(&index)
        .arg(jobs[0].id.to_string())
        .query(&mut redis)
        .expect("ZSCORE");
    let ties: usize = redis::cmd("ZCOUNT")
        .arg(&index)
        .arg(score)
        .arg(score)
        .query(&mut redis)
        .expect("ZCOUNT");
    assert_eq!(ties, 300, "the premise: one score for the whole call");

    let mut listed = Vec::new();
    let mut cursor: Option<String> = None;
    for page_no in 0.. {
        let mut url = serve.at("/v1/jobs?limit=7");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = body(authed(http.get(url)).send().expect("list"));
        assert_eq!(status, StatusCode::OK, "{page}");
        for j in page["jobs"].as_array().expect("jobs") {
            listed.push(j["id"].as_str().expect("id").to_string());
        }
        // Meanwhile more jobs come: later ones, and ones of the very same millisecond
        // (ids sorting before the ones listed, as a submit racing the listing makes).
        let (status, _) = body(
            authed(http.post(serve.at("/v1/jobs")))
                .json(&echo_job("late"))
                .send()
                .expect("POST"),
        );
        assert_eq!(status, StatusCode::ACCEPTED);
        let same_ms = format!("ZZZZZZZZZZZZZZZZZZZZZZ{page_no:04}");
        let _: () = redis::pipe()
            .cmd("HSET")
            .arg(format!("{{{}}}:job:{same_ms}", env.namespace))
            .arg("status")
            .arg("queued")
            .arg("kind")
            .arg("agent")
            .ignore()
            .cmd("ZADD")
            .arg(&index)
            .arg(score)
            .arg(&same_ms)
            .ignore()
            .query(&mut redis)
            .expect("a same-millisecond entry");
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    let unique: BTreeSet<String> = listed.iter().cloned().collect();
    assert_eq!(unique.len(), listed.len(), "a job was listed twice");
    assert!(
        originals.is_subset(&unique),
        "{} of the 300 were never listed",
        originals.difference(&unique).count()
    );
}

/// The status and JSON body of the answer the server writes on `tcp` (read until the
/// body's JSON is whole, the server closes, or the read timeout passes).
fn raw_answer(tcp: &mut std::net::TcpStream) -> (u16, Value) {
    use std::io::Read;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&answer).to_string();
        if let Some((head, json)) = text.split_once("\r\n\r\n") {
            if let Ok(v) = serde_json::from_str::<Value>(json.trim()) {
                let status = head
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                return (status, v);
            }
        }
        match tcp.read(&mut buf) {
            Ok(0) | Err(_) => panic!("no whole answer: {text:?}"),
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
}

#[test]
fn batch_uploads_are_capped_and_must_arrive_within_their_deadline() {
    use std::io::Write;
    let config = format!(
        "[serve]\nrequest_timeout = \"60s\"\nbatch_upload_timeout = \"3s\"\nmax_batch_uploads = 4\n{TOKEN_CONFIG}"
    );
    let env = TestEnv::new("serve-uploads", &config);
    let serve = env.serve(&[]);
    let addr = serve.url.trim_start_matches("http://").to_string();
    // Five slow uploads: one chunk, then nothing.
    let line = format!("{}\n", echo_job("slow"));
    let mut uploads: Vec<std::net::TcpStream> = (0..5)
        .map(|_| {
            let mut tcp = std::net::TcpStream::connect(&addr).expect("connect");
            tcp.set_read_timeout(Some(Duration::from_secs(30)))
                .expect("timeout");
            write!(
                tcp,
                "POST /v1/batches HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{line}\r\n",
                line.len()
            )
            .expect("write");
            tcp
        })
        .collect();
    // One is turned away at once; the four others run into the upload deadline.
    let mut answers: Vec<(u16, String)> = uploads
        .iter_mut()
        .map(|tcp| {
            let (status, v) = raw_answer(tcp);
            (
                status,
                v["error"]["kind"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    answers.sort();
    assert_eq!(
        answers,
        vec![
            (408, "timeout".to_string()),
            (408, "timeout".to_string()),
            (408, "timeout".to_string()),
            (408, "timeout".to_string()),
            (503, "busy".to_string()),
        ]
    );
    assert_eq!(
        env.queue_depth(),
        0,
        "a cut-short upload enqueued something"
    );
    // The turns are given back: a whole upload goes through.
    let (status, v) = body(
        authed(client().post(serve.at("/v1/batches")))
            .header("content-type", "application/x-ndjson")
            .body(line)
            .send()
            .expect("POST batch"),
    );
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
}

#[test]
fn a_long_poll_answers_when_the_job_ends_and_at_shutdown() {
    let env = TestEnv::new("serve-poll", TOKEN_CONFIG);
    let mut serve = env.serve(&[]);
    let http = client();
    let (_, v) = body(
        authed(http.post(serve.at("/v1/jobs")))
            .json(&echo_job("later"))
            .send()
            .expect("POST"),
    );
    let id = v["id"].as_str().expect("id").to_string();
    // The poll starts before any worker; the worker starts a second later.
    let url = serve.at(&format!("/v1/jobs/{id}/result?wait=60s"));
    let poll = std::thread::spawn(move || body(authed(client().get(url)).send().expect("poll")));
    std::thread::sleep(Duration::from_secs(1));
    let worker = env.worker(&[]);
    let (status, v) = poll.join().expect("poll thread");
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "succeeded");
    drop(worker);

    // A poll in flight at shutdown answers at once with what it knows, and the server
    // exits 0.
    let (_, v) = body(
        authed(http.post(serve.at("/v1/jobs")))
            .json(&echo_job("never"))
            .send()
            .expect("POST"),
    );
    let id = v["id"].as_str().expect("id").to_string();
    let url = serve.at(&format!("/v1/jobs/{id}/result?wait=120s"));
    let poll = std::thread::spawn(move || body(authed(client().get(url)).send().expect("poll")));
    std::thread::sleep(Duration::from_millis(500));
    let stopped = Instant::now();
    let exit = serve
        .stop(Duration::from_secs(30))
        .expect("mcpq-serve exits");
    let (status, v) = poll.join().expect("poll thread");
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["status"], "queued");
    assert!(
        stopped.elapsed() < Duration::from_secs(20),
        "shutdown waited for the poll"
    );
    assert_eq!(exit.code(), Some(0), "{}", serve.log_text());
}

#[test]
fn serve_refuses_a_public_address_without_a_token_and_a_missing_token_variable() {
    let env = TestEnv::new("serve-refuse", "");
    let out = std::process::Command::new(mcpq_tests::bin("mcpq-serve"))
        .args(["--config"])
        .arg(&env.config)
        .args(["--listen", "0.0.0.0:0"])
        .env_remove("MCPQ_SERVE_TOKEN")
        .env_remove("MCPQ_CONFIG")
        .output()
        .expect("run mcpq-serve");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("without a token"),
        "{}",
        text(&out.stderr)
    );

    env.add_config(TOKEN_CONFIG);
    let out = std::process::Command::new(mcpq_tests::bin("mcpq-serve"))
        .args(["--config"])
        .arg(&env.config)
        .env_remove("MCPQ_TEST_TOKEN")
        .env_remove("MCPQ_CONFIG")
        .output()
        .expect("run mcpq-serve");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("MCPQ_TEST_TOKEN"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_openapi_document_is_valid_openapi_3_1_and_lists_every_route() {
    let env = TestEnv::new("serve-openapi", TOKEN_CONFIG);
    let serve = env.serve(&[]);
    let (status, doc) = body(
        authed(client().get(serve.at("/openapi.json")))
            .send()
            .expect("GET"),
    );
    assert_eq!(status, StatusCode::OK);
    assert!(
        doc["openapi"].as_str().expect("openapi").starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    for path in [
        "/v1/jobs",
        "/v1/jobs/{id}",
        "/v1/jobs/{id}/result",
        "/v1/jobs/{id}/cancel",
        "/v1/batches",
        "/v1/batches/{id}",
        "/v1/batches/{id}/results",
        "/v1/dlq",
        "/v1/dlq/{id}/requeue",
        "/v1/servers",
        "/health",
        "/metrics",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} is not described");
    }
    let Some(deps) = deps("venv") else { return };
    let file = env.dir.join("openapi.json");
    std::fs::write(&file, doc.to_string()).expect("write");
    let out = std::process::Command::new(deps.join("venv/bin/openapi-spec-validator"))
        .arg(&file)
        .output()
        .expect("run openapi-spec-validator");
    assert!(
        out.status.success(),
        "openapi-spec-validator: {} {}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn a_batch_posted_as_json_lines_runs_and_its_results_stream_back_in_input_order() {
    let env = TestEnv::new("serve-batch", TOKEN_CONFIG);
    let serve = env.serve(&[]);
    let http = client();
    let lines: Vec<String> = (0..60)
        .map(|i| echo_job(&format!("line {i}")).to_string())
        .collect();
    let post = |text: String, query: &str, key: Option<&str>| {
        let mut req = authed(http.post(serve.at(&format!("/v1/batches{query}"))))
            .header("content-type", "application/x-ndjson")
            .body(text);
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        body(req.send().expect("POST batch"))
    };

    // One bad line: 400 naming it, nothing enqueued.
    let mut bad = lines.clone();
    bad[2] =
        r#"{"kind":"agent","payload":{"steps":[{"server":"nope","tool":"t","arguments":{}}]}}"#
            .into();
    let (status, v) = post(bad.join("\n"), "", None);
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["lines"][0]["line"], 3, "{v}");
    assert_eq!(v["error"]["lines"].as_array().map(Vec::len), Some(1));
    assert_eq!(env.queue_depth(), 0);
    // With skip_invalid the 59 others go in.
    let (status, v) = post(bad.join("\n"), "?skip_invalid=true", None);
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    assert_eq!(
        (v["total"].clone(), v["invalid_skipped"].clone()),
        (json!(59), json!(1))
    );

    // The whole batch, keyed; a retried upload resumes it and enqueues nothing more.
    let (status, v) = post(lines.join("\n") + "\n", "", Some("upload-7"));
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    assert_eq!(
        (v["total"].clone(), v["enqueued"].clone()),
        (json!(60), json!(60))
    );
    let id = v["id"].as_str().expect("id").to_string();
    let (status, again) = post(lines.join("\n") + "\n", "", Some("upload-7"));
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert_eq!(
        (
            again["id"].as_str(),
            again["resumed"].clone(),
            again["enqueued"].clone()
        ),
        (Some(id.as_str()), json!(true), json!(0))
    );
    let (status, v) = post(lines[..5].join("\n"), "", Some("upload-7"));
    assert_eq!(status, StatusCode::CONFLICT, "{v}");

    let _worker = env.worker(&["--concurrency", "8"]);
    let finished =
        mcpq_tests::wait_until_every(Duration::from_secs(60), Duration::from_millis(200), || {
            let (_, s) = body(
                authed(http.get(serve.at(&format!("/v1/batches/{id}"))))
                    .send()
                    .expect("status"),
            );
            s["pending"] == 0 && s["succeeded"] == 60
        });
    assert!(finished, "the batch did not finish");
    let resp = authed(http.get(serve.at(&format!("/v1/batches/{id}/results"))))
        .send()
        .expect("results");
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().expect("results body");
    let rows: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(rows.len(), 60);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row["status"], "succeeded", "{row}");
        assert_eq!(
            row["result"][0]["result"]["content"][0]["text"],
            format!("line {i}")
        );
    }
    let (status, list) = body(
        authed(http.get(serve.at("/v1/batches")))
            .send()
            .expect("list"),
    );
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["batches"].as_array().map(Vec::len), Some(2), "{list}");
    // Jobs of a batch are listed by batch.
    let (_, page) = body(
        authed(http.get(serve.at(&format!("/v1/jobs?batch={id}&limit=1000"))))
            .send()
            .expect("jobs"),
    );
    assert_eq!(page["jobs"].as_array().map(Vec::len), Some(60));
}

/// The repository's root (examples/ lives there).
fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

#[test]
fn the_python_and_typescript_examples_submit_wait_and_print_the_result() {
    let env = TestEnv::new("serve-examples", TOKEN_CONFIG);
    let _worker = env.worker(&[]);
    let serve = env.serve(&[]);
    let examples = repo_root().join("examples");
    let run = |cmd: &mut std::process::Command| {
        let out = cmd
            .env("MCPQ_URL", &serve.url)
            .env("MCPQ_TOKEN", TOKEN)
            .output()
            .expect("run the example");
        assert!(
            out.status.success(),
            "{} {}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout).trim().to_string()
    };
    let printed = run(std::process::Command::new("python3")
        .arg(examples.join("python/submit_and_wait.py"))
        .arg("from python"));
    assert_eq!(printed, "from python");

    let Some(deps) = deps("ts") else { return };
    let work = env.dir.join("ts");
    std::fs::create_dir_all(&work).expect("dir");
    for f in ["submit_and_wait.ts", "tsconfig.json", "package.json"] {
        std::fs::copy(examples.join("typescript").join(f), work.join(f)).expect("copy");
    }
    std::os::unix::fs::symlink(deps.join("ts/node_modules"), work.join("node_modules"))
        .expect("link");
    let out = std::process::Command::new(deps.join("ts/node_modules/.bin/tsc"))
        .args(["-p"])
        .arg(&work)
        .output()
        .expect("run tsc");
    assert!(
        out.status.success(),
        "tsc: {} {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let printed = run(std::process::Command::new("node")
        .arg(work.join("dist/submit_and_wait.js"))
        .arg("from typescript"));
    assert_eq!(printed, "from typescript");
}

#[test]
fn health_and_metrics_count_what_the_test_did() {
    let Some(deps) = deps("venv") else { return };
    let python = deps.join("venv/bin/python");
    let env = TestEnv::new("serve-health", TOKEN_CONFIG);
    let serve = env.serve(&[]);
    let http = client();
    // 3 high, 2 normal, 1 low; no worker yet.
    let mut ids = Vec::new();
    for (priority, n) in [("high", 3), ("normal", 2), ("low", 1)] {
        for _ in 0..n {
            let mut job = echo_job(priority);
            job["options"] = json!({"priority": priority});
            let (status, v) = body(
                authed(http.post(serve.at("/v1/jobs")))
                    .json(&job)
                    .send()
                    .expect("POST"),
            );
            assert_eq!(status, StatusCode::ACCEPTED, "{v}");
            ids.push(v["id"].as_str().expect("id").to_string());
        }
    }
    for _ in 0..2 {
        let status = http
            .post(serve.at("/v1/jobs"))
            .json(&echo_job("x"))
            .send()
            .expect("POST")
            .status();
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    std::thread::sleep(Duration::from_millis(20));
    let (status, h) = body(http.get(serve.at("/health")).send().expect("health"));
    assert_eq!(status, StatusCode::OK, "{h}");
    assert_eq!(
        h["queue"]["queued"],
        json!({"high": 3, "normal": 2, "low": 1}),
        "{h}"
    );
    assert!(
        h["queue"]["oldest_queued_age_ms"]["low"].as_u64().is_some(),
        "{h}"
    );
    assert_eq!(
        (h["queue"]["running"].clone(), h["queue"]["dead"].clone()),
        (json!(0), json!(0))
    );
    assert_eq!(h["workers"], json!([]), "{h}");
    assert_eq!(h["servers"], json!({"echo": null}), "{h}");

    let s = mcpq_tests::prometheus::scrape(&python, &serve.at("/metrics"), Some(TOKEN));
    for (priority, n) in [("high", 3.0), ("normal", 2.0), ("low", 1.0)] {
        assert_eq!(
            s.value("mcpq_queue_depth", &[("priority", priority)]),
            Some(n),
            "{priority}"
        );
    }
    let posts = |status: &str| {
        s.value(
            "mcpq_http_requests_total",
            &[
                ("route", "/v1/jobs"),
                ("method", "POST"),
                ("status", status),
            ],
        )
    };
    assert_eq!(posts("202"), Some(6.0));
    assert_eq!(posts("401"), Some(2.0));
    assert_eq!(s.value("mcpq_workers_alive", &[]), Some(0.0));
    assert_eq!(
        s.types
            .get("mcpq_http_request_duration_seconds")
            .map(String::as_str),
        Some("histogram")
    );
    // /metrics needs the token.
    let status = http
        .get(serve.at("/metrics"))
        .send()
        .expect("metrics")
        .status();
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // A worker runs them all; then nothing is queued, one worker beats, and the echo
    // server's pool is reported.
    let _worker = env.worker(&[]);
    for id in &ids {
        let (status, v) = body(
            authed(http.get(serve.at(&format!("/v1/jobs/{id}/result?wait=60s"))))
                .send()
                .expect("result"),
        );
        assert_eq!(
            (status, v["status"].clone()),
            (StatusCode::OK, json!("succeeded")),
            "{v}"
        );
    }
    let reported =
        mcpq_tests::wait_until_every(Duration::from_secs(30), Duration::from_millis(250), || {
            let (_, h) = body(http.get(serve.at("/health")).send().expect("health"));
            h["workers"].as_array().map(Vec::len) == Some(1) && h["servers"]["echo"].is_object()
        });
    assert!(
        reported,
        "the worker and its server never showed in /health"
    );
    let (_, h) = body(http.get(serve.at("/health")).send().expect("health"));
    assert_eq!(
        h["queue"]["queued"],
        json!({"high": 0, "normal": 0, "low": 0}),
        "{h}"
    );
    assert!(h["workers"][0]["last_heartbeat"].as_u64().is_some(), "{h}");
    assert_eq!(h["servers"]["echo"]["pooled"], true, "{h}");
    let s = mcpq_tests::prometheus::scrape(&python, &serve.at("/metrics"), Some(TOKEN));
    assert_eq!(s.value("mcpq_workers_alive", &[]), Some(1.0));
    assert_eq!(
        s.value("mcpq_queue_depth", &[("priority", "high")]),
        Some(0.0)
    );
    assert_eq!(
        s.value(
            "mcpq_http_requests_total",
            &[
                ("route", "/v1/jobs/{id}/result"),
                ("method", "GET"),
                ("status", "200")
            ]
        ),
        Some(6.0)
    );
}
