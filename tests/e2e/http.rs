//! Streamable-HTTP MCP servers: the fixture served over HTTP on 127.0.0.1.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use mcpq_tests::{text, TestEnv};

/// The fixture serving streamable HTTP; killed on drop.
struct HttpFixture {
    child: Child,
    url: String,
}

impl HttpFixture {
    fn start(bearer: &str) -> HttpFixture {
        let mut child = Command::new(mcpq_tests::bin("mcpq-fixture"))
            .args(["--http", "127.0.0.1:0"])
            .env("MCPQ_FIXTURE_REQUIRE_BEARER", bearer)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the HTTP fixture");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the fixture prints its URL");
        HttpFixture {
            child,
            url: line.trim().to_string(),
        }
    }
}

impl Drop for HttpFixture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_job_calls_tools_on_a_streamable_http_server_with_a_bearer_token() {
    let token = format!("tok-{}", ulid::Ulid::generate());
    let fixture = HttpFixture::start(&token);
    assert!(
        fixture.url.starts_with("http://127.0.0.1:"),
        "{}",
        fixture.url
    );
    let env = TestEnv::new("http", "");
    env.add_config(&format!(
        "[servers.remote]\nurl = \"{url}\"\nbearer_token_env = \"MCPQ_TEST_REMOTE_TOKEN\"\nheaders = {{ \"X-Team\" = \"billing\" }}\nmax_in_flight = 4\n\
         [servers.wrong_token]\nurl = \"{url}\"\nbearer_token_env = \"MCPQ_TEST_WRONG_TOKEN\"\nstartup_timeout = \"3s\"\n\
         [servers.no_token]\nurl = \"{url}\"\nbearer_token_env = \"MCPQ_TEST_UNSET_TOKEN\"\n",
        url = fixture.url
    ));
    let worker = env.worker_with(&[], |cmd| {
        cmd.env("MCPQ_TEST_REMOTE_TOKEN", &token)
            .env("MCPQ_TEST_WRONG_TOKEN", "not-the-token")
            .env_remove("MCPQ_TEST_UNSET_TOKEN");
    });
    let job = r#"{"kind":"agent","payload":{"steps":[
        {"server":"remote","tool":"echo","arguments":{"text":"over http"}},
        {"server":"remote","tool":"add","arguments":{"a":1,"b":2}}]}}"#;
    let out = env.mcpq_with_stdin(&["submit", "-", "--wait"], job.as_bytes());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("remote/echo: over http"), "{stdout}");
    assert!(stdout.contains("remote/add: 3"), "{stdout}");

    // A rejected token is a clear start-up failure; the token never reaches the log.
    let id = env.submit_call("wrong_token", "echo", r#"{"text":"x"}"#, &[]);
    let (code, v) = env.wait_json(&id);
    assert_eq!(code, Some(1));
    assert_eq!(v["error"]["kind"], "startup_failed", "{v}");
    let id = env.submit_call("no_token", "echo", r#"{"text":"x"}"#, &[]);
    let (code, v) = env.wait_json(&id);
    assert_eq!(code, Some(1));
    let message = v["error"]["message"].as_str().expect("message");
    assert!(message.contains("MCPQ_TEST_UNSET_TOKEN"), "{message}");
    assert!(
        !worker.log_text().contains(&token),
        "the bearer token was logged"
    );

    // The HTTP server goes away: jobs fail with an error, they do not hang.
    drop(fixture);
    let id = env.submit_call(
        "remote",
        "echo",
        r#"{"text":"gone"}"#,
        &["--timeout", "10s"],
    );
    let (code, v) = env.wait_json(&id);
    assert_eq!(code, Some(1), "{v}");
}
