//! The dashboard (issue 19), over real HTTP against a real `mcpq serve`, worker and
//! Redis: the login and its cookie, counts that match what was submitted, a dead job
//! found by its error kind and requeued from its page, CSRF and cross-origin refusals,
//! hostile job data shown as text, an open (token-less) server's loopback rules.

use std::time::Duration;

use mcpq_tests::serve::{TOKEN, TOKEN_CONFIG};
use mcpq_tests::{wait_until, TestEnv};
use reqwest::blocking::{Client, Response};
use reqwest::StatusCode;

/// A client that does not follow redirects (the tests look at them) and keeps no
/// cookies of its own (the tests send the session cookie themselves).
pub(crate) fn client() -> Client {
    mcpq_shared::tls::install();
    Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http client")
}

/// The session cookie's `name=value` from a response's `Set-Cookie`, and the whole line.
pub(crate) fn session_cookie(resp: &Response) -> (String, String) {
    let line = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("mcpq_session="))
        .expect("a session cookie")
        .to_string();
    let pair = line.split(';').next().unwrap_or_default().to_string();
    (pair, line)
}

/// A form body of one field (URL-encoded).
pub(crate) fn form(name: &str, value: &str) -> String {
    let encoded: String = value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("{name}={encoded}")
}

/// The value of the first hidden `csrf` input of a page.
pub(crate) fn csrf(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    html[at..].split('"').next().unwrap_or_default().to_string()
}

pub(crate) fn login(http: &Client, serve: &mcpq_tests::serve::ServeProc) -> String {
    let resp = post_form(http, &serve.at("/login"), &[], form("token", TOKEN));
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    session_cookie(&resp).0
}

/// POSTs the URL-encoded `body` to `url`, with `headers` (the cookie, an origin) added.
pub(crate) fn post_form(
    http: &Client,
    url: &str,
    headers: &[(&str, &str)],
    body: String,
) -> Response {
    let mut request = http
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(body).send().expect("POST")
}

pub(crate) fn get(http: &Client, url: &str, cookie: &str) -> (StatusCode, String) {
    let resp = http.get(url).header("cookie", cookie).send().expect("GET");
    let status = resp.status();
    (status, resp.text().unwrap_or_default())
}

#[test]
fn a_login_gives_an_http_only_strict_cookie_and_the_overview_counts_what_was_submitted() {
    let env = TestEnv::new("dash-login", TOKEN_CONFIG);
    let serve = env.serve(&[]);
    let http = client();
    // No session: pages go to the login form, actions are refused.
    let resp = http.get(serve.at("/")).send().expect("GET /");
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()["location"], "/login");
    let resp = http.post(serve.at("/logout")).send().expect("POST");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    // A wrong token, then the right one.
    let resp = post_form(
        &http,
        &serve.at("/login"),
        &[],
        form("token", "not-the-token-not-the-token"),
    );
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp
        .text()
        .unwrap_or_default()
        .contains("not a configured token"));
    let resp = post_form(&http, &serve.at("/login"), &[], form("token", TOKEN));
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let (cookie, line) = session_cookie(&resp);
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(line.contains(flag), "{line}");
    }
    assert!(!line.contains(TOKEN), "the cookie holds no secret: {line}");
    // Three jobs with no worker: three queued.
    for i in 0..3 {
        env.submit_call("echo", "echo", &format!(r#"{{"text":"q{i}"}}"#), &[]);
    }
    let (status, html) = get(&http, &serve.at("/"), &cookie);
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains(r#"<span data-field="queued_total">3</span>"#),
        "{html}"
    );
    let (status, json) = get(&http, &serve.at("/ui/overview.json"), &cookie);
    assert_eq!(status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(v["queued_total"], 3, "{v}");
    // A forged or altered cookie is no session.
    let forged = format!(
        "{}0",
        cookie.trim_end_matches(|c: char| c.is_ascii_hexdigit())
    );
    let (status, _) = get(&http, &serve.at("/"), &forged);
    assert_eq!(status, StatusCode::SEE_OTHER);
}

#[test]
fn a_dead_job_is_found_by_its_kind_and_requeued_from_its_page_with_its_csrf_token() {
    let env = TestEnv::new("dash-dead", TOKEN_CONFIG);
    let _worker = env.worker(&[]);
    let serve = env.serve(&[]);
    let http = client();
    let cookie = login(&http, &serve);
    let good = env.submit_call("echo", "echo", r#"{"text":"fine"}"#, &[]);
    let dead = env.submit_call("echo", "no_such_tool", "{}", &["--max-attempts", "1"]);
    assert!(wait_until(Duration::from_secs(30), || {
        env.status_json(&dead)["status"] == "dead"
            && env.status_json(&good)["status"] == "succeeded"
    }));
    let kind = env.status_json(&dead)["error"]["kind"]
        .as_str()
        .expect("kind")
        .to_string();
    let (status, html) = get(&http, &serve.at(&format!("/dead?kind={kind}")), &cookie);
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains(&dead), "the dead job is listed under {kind}");
    let (_, other) = get(&http, &serve.at("/dead?kind=no_such_kind"), &cookie);
    assert!(!other.contains(&dead), "another kind's filter hides it");
    // Its page offers a requeue; without the CSRF token, or from another site, refused.
    let (status, page) = get(&http, &serve.at(&format!("/jobs/{dead}")), &cookie);
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains(&kind) && page.contains("Requeue"), "{page}");
    let token = csrf(&page);
    let url = serve.at(&format!("/dead/{dead}/requeue"));
    let resp = post_form(&http, &url, &[("cookie", &cookie)], form("csrf", "0"));
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = post_form(
        &http,
        &url,
        &[("cookie", &cookie), ("origin", "http://evil.example")],
        form("csrf", token.as_str()),
    );
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(env.status_json(&dead)["status"], "dead", "nothing ran");
    let resp = post_form(
        &http,
        &url,
        &[("cookie", &cookie), ("origin", serve.url.as_str())],
        form("csrf", token.as_str()),
    );
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    // Requeued: it runs again (and, the tool still missing, dies again, second attempt).
    assert!(wait_until(Duration::from_secs(30), || {
        env.status_json(&dead)["attempts"].as_u64() == Some(2)
    }));
    let log = std::fs::read_to_string(&serve.log).unwrap_or_default();
    assert!(log.contains("dead job requeued"), "{log}");
}

#[test]
fn dead_jobs_are_requeued_in_bulk_and_purged_and_a_job_is_found_by_its_idempotency_key() {
    let env = TestEnv::new("dash-bulk", TOKEN_CONFIG);
    let _worker = env.worker(&[]);
    let serve = env.serve(&[]);
    let http = client();
    let cookie = login(&http, &serve);
    let a = env.submit_call(
        "echo",
        "no_such_tool",
        "{}",
        &["--max-attempts", "1", "--idempotency-key", "order-77"],
    );
    let b = env.submit_call("echo", "no_such_tool", "{}", &["--max-attempts", "1"]);
    let both_dead = |attempts: u64| {
        wait_until(Duration::from_secs(30), || {
            [&a, &b].iter().all(|id| {
                let s = env.status_json(id);
                s["status"] == "dead" && s["attempts"].as_u64() == Some(attempts)
            })
        })
    };
    assert!(both_dead(1));
    // The search box takes an idempotency key too.
    let resp = http
        .get(serve.at("/jobs?q=order-77"))
        .header("cookie", &cookie)
        .send()
        .expect("GET");
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()["location"], format!("/jobs/{a}").as_str());
    let (status, _) = get(&http, &serve.at("/jobs?q=no-such-key"), &cookie);
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Both checked, requeued in one POST; they run (and die) again.
    let (_, page) = get(&http, &serve.at("/dead"), &cookie);
    let token = csrf(&page);
    let resp = post_form(
        &http,
        &serve.at("/dead/requeue"),
        &[("cookie", &cookie)],
        format!("csrf={token}&id={a}&id={b}"),
    );
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp
        .text()
        .unwrap_or_default()
        .contains("2 of 2 selected dead jobs requeued"));
    assert!(both_dead(2));
    // Purge: nothing is older than an hour; everything is older than 0s.
    for (age, purged) in [("1h", 0), ("0s", 2)] {
        let resp = post_form(
            &http,
            &serve.at("/dead/purge"),
            &[("cookie", &cookie)],
            format!("csrf={token}&older_than={age}"),
        );
        assert_eq!(resp.status(), StatusCode::OK);
        let text = resp.text().unwrap_or_default();
        assert!(
            text.contains(&format!("{purged} dead jobs older than {age} purged")),
            "{text}"
        );
    }
    let (_, page) = get(&http, &serve.at("/dead"), &cookie);
    assert!(!page.contains(&a) && !page.contains(&b), "purged");
}

#[test]
fn hostile_job_data_is_shown_as_text_and_pages_forbid_inline_script() {
    let env = TestEnv::new("dash-hostile", TOKEN_CONFIG);
    let _worker = env.worker(&[]);
    let serve = env.serve(&[]);
    let http = client();
    let cookie = login(&http, &serve);
    let evil = r#"<script>alert(1)</script><img src=x onerror=alert(2)>"#;
    let id = env.submit_call(
        "echo",
        "echo",
        &serde_json::json!({ "text": evil }).to_string(),
        &[],
    );
    assert!(wait_until(Duration::from_secs(30), || {
        env.status_json(&id)["status"] == "succeeded"
    }));
    let resp = http
        .get(serve.at(&format!("/jobs/{id}")))
        .header("cookie", &cookie)
        .send()
        .expect("GET");
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .expect("csp")
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    let html = resp.text().expect("html");
    assert!(!html.contains("<script>alert"), "{html}");
    assert!(!html.contains("<img src=x"), "{html}");
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;")
            && html.contains("&lt;img src=x onerror=alert(2)&gt;"),
        "{html}"
    );
}

#[test]
fn an_open_server_gives_loopback_callers_a_session_and_refuses_others() {
    let env = TestEnv::new("dash-open", "");
    let serve = env.serve(&[]);
    let http = client();
    let resp = http.get(serve.at("/")).send().expect("GET /");
    assert_eq!(resp.status(), StatusCode::OK);
    let (cookie, _) = session_cookie(&resp);
    let html = resp.text().expect("html");
    assert!(html.contains("anonymous"), "{html}");
    // DNS rebinding: a page of another name that resolves to 127.0.0.1.
    let resp = http
        .get(serve.at("/"))
        .header("host", "evil.example")
        .send()
        .expect("GET /");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    // Another site's form, with the session cookie a browser would not even send.
    let resp = post_form(
        &http,
        &serve.at("/logout"),
        &[("cookie", &cookie), ("origin", "http://evil.example")],
        form("csrf", csrf(&html).as_str()),
    );
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    // The login page is not needed.
    let resp = http.get(serve.at("/login")).send().expect("GET");
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
}

/// Debian's chromium, or `None` (with a loud message) when scripts/test-deps could not
/// install it.
fn chromium() -> Option<std::path::PathBuf> {
    let found = ["/usr/bin/chromium", "/usr/lib/chromium/chromium"]
        .into_iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        eprintln!("SKIPPED: chromium is not installed (run scripts/test-deps as root)");
    }
    found
}

/// The issue's scenarios in a real browser (headless chromium driven by
/// tests/browser/dashboard.mjs): log in, the overview counts what was submitted, a dead
/// job found by its error kind is requeued from its page and shows `succeeded` without
/// a reload, a running job is cancelled from its page, markup in job data and in an
/// email's subject stays text (no dialog opens), a POST without the CSRF token is refused, a batch's progress bar
/// reaches 100 % by itself. Screenshots of each page go to the test's directory, or
/// to `MCPQ_SCREENSHOTS` (`MCPQ_SCREENSHOTS=docs/img` refreshes the README's).
#[test]
fn in_a_real_browser_an_operator_requeues_a_dead_job_and_cancels_a_running_one() {
    let (Some(deps), Some(chromium)) = (mcpq_tests::deps("browser"), chromium()) else {
        return;
    };
    // A schedule and a limited server, for the schedules-and-limits page.
    let env = TestEnv::with_echo(
        "dash-browser",
        &format!(
            "{TOKEN_CONFIG}[schedules.nightly-digest]\ncron = \"0 3 * * *\"\ntimezone = \"Europe/Paris\"\njob = {{ kind = \"agent\", payload = {{ steps = [ {{ server = \"echo\", tool = \"echo\", arguments = {{ text = \"digest\" }} }} ] }} }}\n"
        ),
        "rate = \"600/min\"\nmax_concurrent = 8",
    );
    let _worker = env.worker(&["--concurrency", "4"]);
    let serve = env.serve(&[]);
    // Scheduled for later: the overview must count exactly these.
    for i in 0..3 {
        env.submit_call(
            "echo",
            "echo",
            &format!(r#"{{"text":"later {i}"}}"#),
            &["--delay", "1h"],
        );
    }
    // Dead: it reads a file that is not there yet; once requeued, it is.
    let file = env.dir.join("appears-later.txt");
    let dead = env.submit_call(
        "echo",
        "read_text",
        &serde_json::json!({ "path": file.display().to_string() }).to_string(),
        &["--max-attempts", "1"],
    );
    let running = env.submit_call("echo", "sleep_forever", "{}", &["--timeout", "10m"]);
    let evil = env.submit_call(
        "echo",
        "echo",
        r#"{"text":"<script>alert('xss')</script><img src=x onerror=alert('img')>"}"#,
        &[],
    );
    // An email whose subject is markup; its result quotes the subject.
    let email = serde_json::json!({"kind": "email", "payload": {
        "from": "Mallory <mallory@example.com>",
        "subject": "<script>alert('subject')</script><img src=x onerror=alert('subject-img')>",
        "text": "hello", "message_id": "evil-1@example.com",
        "instructions": "summarise", "servers": ["echo"],
        "steps": [{"name": "say", "server": "echo", "tool": "echo",
                   "arguments": {"text": "{{ email.subject }}"}}],
        "reply": {"text": "Re: {{ steps.say.text }}"}}});
    let email_file = env.dir.join("email.json");
    std::fs::write(&email_file, email.to_string()).expect("email job");
    let out = env.mcpq(&["submit", email_file.to_str().expect("utf-8")]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let email = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(wait_until(Duration::from_secs(30), || {
        env.status_json(&dead)["status"] == "dead"
            && env.status_json(&running)["status"] == "running"
            && env.status_json(&evil)["status"] == "succeeded"
            && env.status_json(&email)["status"] == "succeeded"
    }));
    let kind = env.status_json(&dead)["error"]["kind"]
        .as_str()
        .expect("kind")
        .to_string();
    std::fs::write(&file, "here now").expect("write the file");
    // A batch that takes a few seconds: its page's bar moves to 100 % by itself.
    let lines: String = (0..12)
        .map(|_| {
            serde_json::json!({"kind": "agent", "payload": {"steps": [
                {"server": "echo", "tool": "sleep_ms", "arguments": {"ms": 1000}}]}})
            .to_string()
                + "\n"
        })
        .collect();
    let batch_file = env.dir.join("batch.jsonl");
    std::fs::write(&batch_file, lines).expect("write the batch");
    let out = env.mcpq(&[
        "batch",
        "submit",
        batch_file.to_str().expect("utf-8"),
        "--json",
    ]);
    let batch: serde_json::Value = serde_json::from_slice(&out.stdout).expect("batch json");
    let batch = batch["id"].as_str().expect("batch id").to_string();
    let shots = std::env::var_os("MCPQ_SCREENSHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env.dir.join("screenshots"));
    std::fs::create_dir_all(&shots).expect("screenshot dir");
    let output = std::process::Command::new("node")
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("browser/dashboard.mjs"))
        .env("MCPQ_NODE_MODULES", deps.join("browser/node_modules"))
        .env("MCPQ_URL", &serve.url)
        .env("MCPQ_TOKEN", TOKEN)
        .env("MCPQ_CHROMIUM", &chromium)
        .env("MCPQ_SHOTS", &shots)
        .env("MCPQ_DEAD", &dead)
        .env("MCPQ_DEAD_KIND", &kind)
        .env("MCPQ_RUNNING", &running)
        .env("MCPQ_EVIL", &evil)
        .env("MCPQ_BATCH", &batch)
        .env("MCPQ_EMAIL", &email)
        .current_dir(deps.join("browser"))
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let seen: serde_json::Value = serde_json::from_str(stdout.trim().lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    assert!(seen["error"].is_null(), "the browser failed: {seen:#}");
    assert_eq!(seen["login_url"], "/login", "{seen}");
    assert!(seen["wrong_token_alert"]
        .as_str()
        .unwrap_or_default()
        .contains("not a configured token"));
    assert_eq!(seen["cookie"]["httpOnly"], true, "{seen}");
    assert_eq!(seen["cookie"]["sameSite"], "Strict", "{seen}");
    assert_eq!(
        seen["scheduled"], "3",
        "the overview counts the 3 delayed jobs: {seen}"
    );
    assert_eq!(seen["dead_count"], "1", "{seen}");
    assert!(seen["workers_rows"].as_u64() >= Some(1), "{seen}");
    assert_eq!(
        seen["dead_listed"], 1,
        "found under its kind {kind}: {seen}"
    );
    assert_eq!(seen["dead_status_before"], "dead");
    assert_eq!(seen["dead_status_after"], "succeeded", "{seen}");
    assert_eq!(seen["reloads_while_waiting"], 0, "no reload: {seen}");
    assert_eq!(seen["running_status_before"], "running");
    assert_eq!(seen["running_status_after"], "cancelled", "{seen}");
    assert_eq!(env.status_json(&running)["status"], "cancelled");
    assert!(
        seen["evil_text_shown"]
            .as_str()
            .unwrap_or_default()
            .contains("<script>alert('xss')</script>"),
        "the markup is shown as text: {seen}"
    );
    assert_eq!(seen["evil_script_elements"], 0, "{seen}");
    assert!(
        seen["email_text_shown"]
            .as_str()
            .unwrap_or_default()
            .contains("onerror=alert('subject-img')"),
        "the email's subject is shown as text: {seen}"
    );
    assert_eq!(seen["email_script_elements"], 0, "{seen}");
    assert_eq!(seen["email_img_elements"], 0, "{seen}");
    assert_eq!(seen["evil_img_elements"], 0, "{seen}");
    // Only the dashboard's own confirmations (requeue, cancel) opened a dialog.
    let dialogs = seen["dialogs"].as_array().cloned().unwrap_or_default();
    assert_eq!(dialogs.len(), 2, "{seen}");
    assert!(dialogs.iter().all(|d| d["type"] == "confirm"), "{seen}");
    assert_eq!(seen["csrf_missing_status"], 403, "{seen}");
    assert_eq!(
        env.status_json(&evil)["status"],
        "succeeded",
        "the forged cancel did nothing"
    );
    assert_eq!(seen["batch_percent_end"], 100.0, "{seen}");
    assert_eq!(seen["batch_reloads"], 0, "{seen}");
    assert_eq!(seen["schedule_rows"], 1, "{seen}");
    assert!(
        seen["limit_text"]
            .as_str()
            .unwrap_or_default()
            .contains("of 600/min"),
        "{seen}"
    );
    assert!(
        seen["queue_names"]
            .as_array()
            .is_some_and(|q| q.iter().any(|n| n == "default")),
        "{seen}"
    );
    for shot in [
        "overview",
        "dead",
        "job",
        "jobs",
        "batch",
        "batches",
        "servers",
        "schedules",
    ] {
        assert!(
            shots.join(format!("dashboard-{shot}.png")).exists(),
            "{shot}"
        );
    }
}
