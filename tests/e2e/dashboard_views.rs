//! The dashboard's views beyond the first slice (issue 19), over real HTTP against a
//! real `mcpq serve`, worker and Redis: the overview per named queue with the jobs
//! ended per 10 s read from Redis, the jobs list by queue, a job's envelope, webhook
//! deliveries and "run now", MCP servers per worker with crash counts and the last
//! error's stderr tail, dead letters by server, schedules and rate-limit usage, and
//! HTML error pages for a browser.

use std::time::Duration;

use mcpq_shared::queue::{limits, Keys};
use mcpq_tests::serve::{TOKEN, TOKEN_CONFIG};
use mcpq_tests::{connect, free_port, runtime, wait_until, TestEnv};
use reqwest::StatusCode;
use serde_json::Value;

use crate::dashboard::{client, csrf, form, get, login, post_form};

/// `text` as the dashboard's templates escape it.
fn escaped(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#x27;")
        .replace('/', "&#x2f;")
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn the_overview_shows_each_queue_and_the_jobs_ended_per_ten_seconds_from_redis() {
    let env = TestEnv::new("dash-queues", TOKEN_CONFIG);
    let serve = env.serve(&[]);
    let http = client();
    let cookie = login(&http, &serve);
    // Two jobs in queue `emails`, one in the default queue; no worker yet.
    let mails: Vec<String> = (0..2)
        .map(|i| {
            env.submit_call(
                "echo",
                "echo",
                &format!(r#"{{"text":"m{i}"}}"#),
                &["--queue", "emails"],
            )
        })
        .collect();
    let plain = env.submit_call("echo", "echo", r#"{"text":"d"}"#, &[]);
    let (status, text) = get(&http, &serve.at("/ui/overview.json"), &cookie);
    assert_eq!(status, StatusCode::OK);
    let v = json_of(&text);
    let queue = |v: &Value, name: &str| {
        v["queues"]
            .as_array()
            .and_then(|qs| qs.iter().find(|q| q["name"] == name).cloned())
            .unwrap_or_else(|| panic!("no queue {name}: {v}"))
    };
    assert_eq!(queue(&v, "emails")["queued"]["normal"], 2, "{v}");
    assert_eq!(queue(&v, "default")["queued"]["normal"], 1, "{v}");
    assert!(queue(&v, "emails")["oldest_ms"].is_u64(), "{v}");
    let (_, html) = get(&http, &serve.at("/"), &cookie);
    assert!(
        html.contains(r#"href="/jobs?status=queued&amp;queue=emails">emails</a>"#),
        "{html}"
    );
    // The jobs list by queue.
    let (status, page) = get(&http, &serve.at("/jobs?queue=emails"), &cookie);
    assert_eq!(status, StatusCode::OK);
    assert!(mails.iter().all(|id| page.contains(id.as_str())), "{page}");
    assert!(!page.contains(&plain), "another queue's job: {page}");
    let (status, _) = get(&http, &serve.at("/jobs?queue=no:colons"), &cookie);
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Someone else's junk in this minute's and the next minute's history hashes:
    // fields that are not counts. The jobs still finish, and are counted.
    let mut redis = env.redis();
    let (secs, _): (u64, u64) = redis::cmd("TIME").query(&mut redis).expect("time");
    for minute in [secs / 60, secs / 60 + 1] {
        for slot in 0..6 {
            let _: () = redis::cmd("HSET")
                .arg(format!("{{{}}}:ended:{minute}", env.namespace))
                .arg(format!("succeeded:{slot}"))
                .arg("not a number")
                .arg("junk")
                .arg("9")
                .arg("retried:0")
                .arg(&b"\xff\xfe not UTF-8"[..])
                .query(&mut redis)
                .expect("hset");
        }
    }
    let _worker = env.worker(&["--queues", "default,emails"]);
    assert!(wait_until(Duration::from_secs(30), || {
        mails
            .iter()
            .chain([&plain])
            .all(|id| env.status_json(id)["status"] == "succeeded")
    }));
    let (_, text) = get(&http, &serve.at("/ui/overview.json"), &cookie);
    let v = json_of(&text);
    let history = v["history"].as_array().expect("history");
    assert!(history.len() == 90, "15 minutes: {v}");
    let succeeded: u64 = history
        .iter()
        .map(|s| s["succeeded"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(succeeded, 3, "{v}");
    assert_eq!(queue(&v, "emails")["queued"]["normal"], 0, "{v}");
    // A history key of another type is left alone, not a failed finish.
    let _: () = redis::cmd("SET")
        .arg(format!("{{{}}}:ended:{}", env.namespace, secs / 60 + 1))
        .arg("a string")
        .query(&mut redis)
        .expect("set");
    let after = env.submit_call("echo", "echo", r#"{"text":"after"}"#, &[]);
    assert_eq!(env.wait_json(&after).0, Some(0));
    let (status, _) = get(&http, &serve.at("/ui/overview.json"), &cookie);
    assert_eq!(status, StatusCode::OK);
}

#[test]
fn a_jobs_page_shows_its_envelope_and_webhook_deliveries_and_runs_a_delayed_job_now() {
    let env = TestEnv::new(
        "dash-job",
        &format!("{TOKEN_CONFIG}[webhooks]\nallow_private = true\nretry_base = \"10s\"\ntimeout = \"2s\"\n"),
    );
    let _worker = env.worker(&[]);
    let serve = env.serve(&[]);
    let http = client();
    let cookie = login(&http, &serve);
    // Nobody listens there: the delivery fails and waits for its retry.
    let hook = format!("http://127.0.0.1:{}/hook", free_port());
    let id = env.submit_call(
        "echo",
        "echo",
        r#"{"text":"envelope <b>marker</b>"}"#,
        &["--delay", "1h", "--callback-url", &hook],
    );
    assert_eq!(env.status_json(&id)["status"], "scheduled");
    let (status, page) = get(&http, &serve.at(&format!("/jobs/{id}")), &cookie);
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains(&escaped("envelope <b>marker</b>")),
        "the envelope, escaped: {page}"
    );
    assert!(page.contains("Run now"), "{page}");
    // Run now, from the page's form: it runs at once.
    let token = csrf(&page);
    let resp = post_form(
        &http,
        &serve.at(&format!("/jobs/{id}/run-now")),
        &[("cookie", &cookie), ("origin", serve.url.as_str())],
        form("csrf", &token),
    );
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(env.wait_json(&id).0, Some(0), "it ran");
    assert!(wait_until(Duration::from_secs(30), || {
        let (_, page) = get(&http, &serve.at(&format!("/jobs/{id}")), &cookie);
        page.contains(&format!("job-{id}-1")) && page.contains(&escaped(&hook))
    }));
    // Not waiting any more: the API says so (409), and the page offers no button.
    let resp = http
        .post(serve.at(&format!("/v1/jobs/{id}/run-now")))
        .bearer_auth(TOKEN)
        .send()
        .expect("POST");
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    let body = json_of(&resp.text().unwrap_or_default());
    assert_eq!(body["error"]["kind"], "not_waiting", "{body}");
    let (_, page) = get(&http, &serve.at(&format!("/jobs/{id}")), &cookie);
    assert!(!page.contains("Run now"), "{page}");
    let log = std::fs::read_to_string(&serve.log).unwrap_or_default();
    assert!(log.contains("run now: queued"), "{log}");
}

#[test]
fn servers_show_each_workers_crashes_and_last_stderr_and_dead_letters_filter_by_server() {
    let env = TestEnv::new("dash-servers", TOKEN_CONFIG);
    env.add_config(&format!(
        "[servers.crashy]\ncommand = \"{}\"\n",
        mcpq_tests::bin("mcpq-fixture").display()
    ));
    let _worker = env.worker(&[]);
    let serve = env.serve(&[]);
    let http = client();
    let cookie = login(&http, &serve);
    let dead = env.submit_call("crashy", "crash", "{}", &["--max-attempts", "1"]);
    let other = env.submit_call("echo", "no_such_tool", "{}", &["--max-attempts", "1"]);
    assert!(wait_until(Duration::from_secs(30), || {
        env.status_json(&dead)["status"] == "dead" && env.status_json(&other)["status"] == "dead"
    }));
    // A planted dead-set member shaped to aim a Requeue click at another route.
    let planted = format!("../jobs/{other}/cancel?");
    let mut redis = env.redis();
    let _: () = redis::cmd("HSET")
        .arg(format!("{{{}}}:job:{planted}", env.namespace))
        .arg("status")
        .arg("dead")
        .query(&mut redis)
        .expect("hset");
    let _: () = redis::cmd("ZADD")
        .arg(format!("{{{}}}:dead", env.namespace))
        .arg("1")
        .arg(&planted)
        .query(&mut redis)
        .expect("zadd");
    let (_, page) = get(&http, &serve.at("/dead"), &cookie);
    assert!(page.contains("not a job id: purge it"), "{page}");
    // As a browser reads the attributes (`/` may be written `&#x2f;`).
    let read = page.replace("&#x2f;", "/");
    assert!(
        !read.contains("action=\"/dead/..") && !read.contains("href=\"/jobs/.."),
        "{page}"
    );
    let (_, page) = get(&http, &serve.at("/dead?server=crashy"), &cookie);
    assert!(page.contains(&dead), "{page}");
    assert!(!page.contains(&other), "another server's dead job: {page}");
    let (_, page) = get(&http, &serve.at("/dead?server=echo"), &cookie);
    assert!(page.contains(&other) && !page.contains(&dead), "{page}");
    // The worker reports every 5 s: its own report names the crash and the last words.
    let mut page = String::new();
    let reported = wait_until(Duration::from_secs(30), || {
        page = get(&http, &serve.at("/servers"), &cookie).1;
        page.contains("crashing on purpose with exit code 3")
            && page.contains("<code>crashy</code> <small>stdio, pooled, crashes: ")
            && !page.contains("<code>crashy</code> <small>stdio, pooled, crashes: 0<")
    });
    assert!(reported, "{page}");
    // A job's page shows its attempt's error and stderr tail too.
    let (_, page) = get(&http, &serve.at(&format!("/jobs/{dead}")), &cookie);
    assert!(page.contains("crashing on purpose"), "{page}");
}

#[test]
fn schedules_and_rate_limits_show_next_runs_and_what_the_limits_hold_now() {
    let env = TestEnv::with_echo(
        "dash-sched",
        &format!(
            "{TOKEN_CONFIG}[schedules.nightly]\ncron = \"0 3 * * *\"\njob = {{ kind = \"agent\", payload = {{ steps = [ {{ server = \"echo\", tool = \"echo\", arguments = {{ text = \"n\" }} }} ] }} }}\n"
        ),
        "rate = \"100/min\"\nmax_concurrent = 4",
    );
    let serve = env.serve(&[]);
    let http = client();
    let cookie = login(&http, &serve);
    // Three calls admitted, two of them still holding a slot, and a 429 pause.
    let keys = Keys::new(env.namespace.clone());
    let endpoint = limits::server_endpoint("echo");
    let l = limits::Limits {
        rate: Some(mcpq_shared::config::rate::Rate::parse("100/min").expect("rate")),
        max_concurrent: Some(4),
        tokens: None,
    };
    runtime().block_on(async {
        for holder in ["a", "b", "c"] {
            let got = limits::try_acquire(
                connect().await,
                &keys,
                &endpoint,
                &l,
                holder,
                Duration::from_secs(60),
            )
            .await
            .expect("acquire");
            assert!(matches!(got, limits::Acquire::Admitted { .. }), "{got:?}");
        }
        assert!(limits::release(connect().await, &keys, &endpoint, "c")
            .await
            .expect("release"));
        let usage = limits::usage(connect().await, &keys, &endpoint, &l)
            .await
            .expect("usage");
        assert_eq!(
            (usage.calls_in_window, usage.slots_held),
            (3, 2),
            "{usage:?}"
        );
        assert_eq!(usage.paused_ms, 0);
        limits::pause(connect().await, &keys, &endpoint, Duration::from_secs(30))
            .await
            .expect("pause");
    });
    let (status, page) = get(&http, &serve.at("/schedules"), &cookie);
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page.contains("nightly") && page.contains("0 3 * * *"),
        "{page}"
    );
    assert!(page.contains("never"), "not fired yet: {page}");
    assert!(
        page.contains("03:00:00"),
        "the next run, at 03:00 UTC: {page}"
    );
    assert!(page.contains("server:echo"), "{page}");
    assert!(page.contains(&escaped("3 of 100/min")), "{page}");
    assert!(page.contains("2 of 4"), "{page}");
    assert!(
        page.contains("<td>for 2") || page.contains("<td>for 30.0 s"),
        "paused for about 30 s: {page}"
    );
}

#[test]
fn a_browser_gets_error_pages_and_the_api_keeps_its_json() {
    let env = TestEnv::new("dash-errors", TOKEN_CONFIG);
    let serve = env.serve(&[]);
    let http = client();
    let cookie = login(&http, &serve);
    let page = |path: &str| {
        http.get(serve.at(path))
            .header("cookie", &cookie)
            .header("accept", "text/html,application/xhtml+xml")
            .send()
            .expect("GET")
    };
    let resp = page("/no/such/page");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let ct = resp.headers()["content-type"]
        .to_str()
        .unwrap_or("")
        .to_string();
    assert!(ct.starts_with("text/html"), "{ct}");
    assert!(resp.text().unwrap_or_default().contains("No such page."));
    // A form axum refuses before the handler (not a form at all): a page, not JSON.
    let resp = http
        .post(serve.at("/dead/purge"))
        .header("cookie", &cookie)
        .header("accept", "text/html")
        .header("origin", serve.url.as_str())
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .expect("POST");
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let ct = resp.headers()["content-type"]
        .to_str()
        .unwrap_or("")
        .to_string();
    assert!(ct.starts_with("text/html"), "{ct}");
    // The API answers JSON whatever the client accepts.
    let resp = http
        .get(serve.at("/v1/no-such-route"))
        .bearer_auth(TOKEN)
        .header("accept", "text/html")
        .send()
        .expect("GET");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let body = json_of(&resp.text().unwrap_or_default());
    assert_eq!(body["error"]["kind"], "not_found", "{body}");
}
