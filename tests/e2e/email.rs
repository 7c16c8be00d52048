//! Email jobs: the corpus in tests/data/eml, attachments on disk (sanitized, limited,
//! swept), plan templates over the email, reply drafts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mcpq_shared::email::parse::parse_eml;
use mcpq_shared::job::{Job, PlanStep};
use mcpq_tests::{text, wait_until, TestEnv};
use serde_json::{json, Value};

fn corpus(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/eml")
        .join(name)
}

fn email_env(tag: &str, extra: &str) -> (TestEnv, PathBuf) {
    let env = TestEnv::new(tag, "");
    let root = env.dir.join("attachments");
    env.add_config(&format!(
        "[email]\nattachments_dir = \"{}\"\nmax_attachment = 4096\n{extra}",
        root.display()
    ));
    (env, root)
}

/// The subject and every attachment's name and size, through a real MCP call.
const LIST_STEPS: &str = r#"[{"name": "list", "server": "echo", "tool": "echo", "arguments": {"text": "{{ email.subject }}|{% for a in attachments %}{{ a.name }}={{ a.size }};{% endfor %}"}}]"#;

fn submit_eml(env: &TestEnv, name: &str) -> std::process::Output {
    let eml = corpus(name);
    env.mcpq(&[
        "submit",
        "email",
        "--eml",
        eml.to_str().expect("path"),
        "--instructions",
        "list it",
        "--server",
        "echo",
        "--steps",
        LIST_STEPS,
    ])
}

/// Every file under `root`, relative to it.
fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(root).expect("under root").to_path_buf());
            }
        }
    }
    out
}

#[test]
fn the_email_corpus_is_processed_or_rejected_with_clear_errors() {
    let (env, root) = email_env("email-corpus", "");
    let worker = env.worker(&[]);
    let expected: &[(&str, &str)] = &[
        ("01-plain.eml", "Meeting moved|"),
        ("02-alternative.eml", "Your receipt|"),
        ("03-nested.eml", "Invoice 42|invoice-42.pdf=69;"),
        ("04-latin1-quoted-printable.eml", "Café für das Büro|"),
        (
            "05-utf8-subject-rfc2231-name.eml",
            "日本の請求書 ✓|請求書.txt=16;",
        ),
        ("06-inline-image.eml", "Logo draft|logo.png=70;"),
        ("07-zip.eml", "Nightly export|export.zip="),
        (
            "08-malicious-filename.eml",
            "Totally normal file|passwd=31;absolute.txt=",
        ),
        ("10-broken-boundary.eml", "Truncated message|"),
        ("11-forwarded-message.eml", "Fwd: Contract|"),
        ("12-duplicate-names.eml", "Two notes|notes.txt="),
        // Mail as it arrives (issue 13, item 6): no usable sender, no recipients, 8-bit
        // headers, HTML only, a bounce. Accepted; only a reply would fail.
        ("13-no-from.eml", "Who sent this?|"),
        (
            "14-bounce-dsn.eml",
            "Undelivered Mail Returned to Sender|attachment-1=",
        ),
        ("15-from-not-an-address.eml", "From a script|"),
        ("16-from-empty.eml", "Nobody wrote this|"),
        ("17-undisclosed-recipients.eml", "November news|"),
        (
            "18-8bit-unknown-charset.eml",
            "Pr\u{fffd}fbericht f\u{fffd}r M\u{fffd}rz",
        ),
        ("19-html-only.eml", "Your order has shipped|"),
    ];
    let mut ids = Vec::new();
    for (file, _) in expected {
        let out = submit_eml(&env, file);
        assert_eq!(out.status.code(), Some(0), "{file}: {}", text(&out.stderr));
        ids.push(text(&out.stdout).trim().to_string());
    }
    for ((file, prefix), id) in expected.iter().zip(&ids) {
        let (code, v) = env.wait_json(id);
        assert_eq!(code, Some(0), "{file}: {v}\n{}", worker.log_text());
        let summary = v["result"]["summary"].as_str().expect("summary");
        assert!(
            summary.starts_with(prefix),
            "{file}: {summary:?} does not start with {prefix:?}"
        );
    }
    let dup = env.wait_json(&ids[10]).1;
    assert!(
        dup["result"]["summary"]
            .as_str()
            .expect("s")
            .contains("notes (2).txt="),
        "{dup}"
    );
    let evil = env.wait_json(&ids[7]).1;
    assert!(
        evil["result"]["summary"]
            .as_str()
            .expect("s")
            .contains("windows.ini="),
        "{evil}"
    );

    // Rejected at submit with a clear error; nothing enqueued for them.
    let out = submit_eml(&env, "09-oversized-attachment.eml");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("email.max_attachment"),
        "{}",
        text(&out.stderr)
    );
    // What is not a message at all (no standard header field) is refused.
    let out = submit_eml(&env, "README.md");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("not an RFC 5322 message"),
        "{}",
        text(&out.stderr)
    );

    // Nothing was written outside the job directories: every file is ROOT/<job id>/<name>
    // (besides the sweep's ROOT/<job id>.finished marks of finished jobs).
    let files: Vec<PathBuf> = files_under(&root)
        .into_iter()
        .filter(|f| {
            f.to_str()
                .and_then(|f| f.strip_suffix(".finished"))
                .is_none_or(|id| !ids.iter().any(|i| i == id))
        })
        .collect();
    assert!(!files.is_empty());
    for f in &files {
        let parts: Vec<_> = f.components().collect();
        assert_eq!(parts.len(), 2, "{}", f.display());
        let job: String = parts[0].as_os_str().to_string_lossy().into_owned();
        assert!(
            ids.contains(&job),
            "{} is not in a job directory",
            f.display()
        );
    }
    let passwd = root.join(&ids[7]).join("passwd");
    assert!(std::fs::read_to_string(&passwd)
        .expect("sanitized file")
        .contains("owned"));
    assert!(!root.join("etc").exists() && !env.dir.join("etc").exists());
    let zip = std::fs::read(root.join(&ids[6]).join("export.zip")).expect("zip");
    assert_eq!(&zip[..4], b"PK\x03\x04", "the zip's bytes arrived intact");

    // An oversized attachment that reaches a worker anyway (another producer) is dead,
    // not a crash, and not retried.
    let mut email = parse_eml(&std::fs::read(corpus("09-oversized-attachment.eml")).expect("eml"))
        .expect("parse");
    email.instructions = "x".into();
    email.steps = serde_json::from_str::<Vec<PlanStep>>(LIST_STEPS).expect("steps");
    let job = Job::email(email, Default::default());
    env.submit_jobs(std::slice::from_ref(&job));
    let (code, v) = env.wait_json(&job.id.to_string());
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["error"]["kind"], "attachment_too_large", "{v}");
    assert_eq!(env.status_json(&job.id.to_string())["attempts"], 1);
}

/// Issue 13, item 6: a bounce (multipart/report from `MAILER-DAEMON`, no address) is
/// processed end to end, its report and the returned message saved as attachments; a
/// job that asks for a reply to `From: foo` fails when the reply is drafted, with
/// `no_reply_address`, not retried.
#[test]
fn a_bounce_is_processed_and_a_reply_to_a_from_that_is_not_an_address_fails_clearly() {
    let (env, root) = email_env("email-bounce", "");
    let worker = env.worker(&[]);
    let steps = r#"[{"name": "show", "server": "echo", "tool": "echo", "arguments": {"text": "from={{ email.from }}|to={{ email.to | join(',') }}|{% for a in attachments %}{{ a.name }}:{{ a.content_type }};{% endfor %}"}}]"#;
    let eml = corpus("14-bounce-dsn.eml");
    let out = env.mcpq(&[
        "submit",
        "email",
        "--eml",
        eml.to_str().expect("path"),
        "--instructions",
        "mark the recipient as undeliverable",
        "--server",
        "echo",
        "--steps",
        steps,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();
    let (code, v) = env.wait_json(&id);
    assert_eq!(code, Some(0), "{v}\n{}", worker.log_text());
    assert_eq!(
        v["result"]["summary"],
        "from=MAILER-DAEMON|to=alerts@example.com|attachment-1:message/delivery-status;attachment-2:message/rfc822;",
        "{v}"
    );
    let report = std::fs::read_to_string(root.join(&id).join("attachment-1")).expect("report");
    assert!(
        report.contains("Final-Recipient: rfc822; nobody@nowhere.example"),
        "{report}"
    );
    let returned =
        std::fs::read_to_string(root.join(&id).join("attachment-2")).expect("returned message");
    assert!(
        returned.contains("Message-Id: <weekly-48@example.com>"),
        "{returned}"
    );

    // A reply needs an address: `From: foo` has none. The plan runs, the draft fails.
    let eml = corpus("15-from-not-an-address.eml");
    let out = env.mcpq(&[
        "submit",
        "email",
        "--eml",
        eml.to_str().expect("path"),
        "--server",
        "echo",
        "--steps",
        LIST_STEPS,
        "--reply-text",
        "Thanks, {{ steps.list.text }}",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();
    let (code, v) = env.wait_json(&id);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["error"]["kind"], "no_reply_address", "{v}");
    assert_eq!(v["error"]["retryable"], false, "{v}");
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("From \"foo\" is not an address")
            && message.contains("nobody to reply to"),
        "{v}"
    );
    let status = env.status_json(&id);
    assert_eq!(status["attempts"], 1, "not retried: {status}");
    assert_eq!(status["status"], "dead", "{status}");
}

#[test]
fn attachments_given_by_path_under_attach_root_are_inlined_by_the_producer_and_never_read_by_a_worker(
) {
    let (env, root) = email_env("email-json", "retention = \"2s\"\n");
    let worker = env.worker(&[]);
    std::fs::write(env.dir.join("note.txt"), "hello attachment").expect("file");
    let job = json!({"kind": "email", "payload": {
        "from": "Ana <ana@example.com>", "subject": "Note", "text": "see file",
        "message_id": "m1@example.com",
        "attachments": [{"name": "note.txt", "content_type": "text/plain", "path": "note.txt"}],
        "instructions": "summarise", "servers": ["echo"],
        "steps": [{"name": "say", "server": "echo", "tool": "echo",
                   "arguments": {"text": "{{ attachments[0].name }} {{ attachments[0].size }} {{ input.instructions }}"}}],
        "reply": {"text": "Thanks {{ email.from }}: {{ steps.say.text }}"}
    }});
    let file = env.dir.join("job.json");
    std::fs::write(&file, job.to_string()).expect("job file");
    let out = env.mcpq(&[
        "submit",
        file.to_str().expect("path"),
        "--attach-root",
        env.dir.to_str().expect("dir"),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();
    let (code, v) = env.wait_json(&id);
    assert_eq!(code, Some(0), "{v}\n{}", worker.log_text());
    let r = &v["result"];
    assert_eq!(r["summary"], "note.txt 16 summarise");
    assert_eq!(
        r["attachments"][0]["path"],
        root.join(&id).join("note.txt").to_string_lossy().as_ref()
    );
    assert_eq!(r["reply"]["to"], json!(["Ana <ana@example.com>"]));
    assert_eq!(r["reply"]["subject"], "Re: Note");
    assert_eq!(
        r["reply"]["text"],
        "Thanks Ana <ana@example.com>: note.txt 16 summarise"
    );
    assert_eq!(r["reply"]["in_reply_to"], "m1@example.com");
    // The directory is swept after the retention (2 s here).
    assert!(
        wait_until(Duration::from_secs(10), || !root.join(&id).exists()),
        "the attachment directory outlived its retention"
    );

    // A job whose attachment still names a path (written by another producer) is dead:
    // a worker never reads a path a job gives.
    let mut stored: Job = Job::from_value(job.clone()).expect("valid job");
    stored.id = mcpq_shared::JobId::generate();
    env.submit_jobs(std::slice::from_ref(&stored));
    let (code, v) = env.wait_json(&stored.id.to_string());
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["error"]["kind"], "invalid_job");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("never reads a path"),
        "{v}"
    );
    let _: Value = v;
}

/// A real SMTP server (aiosmtpd, from PyPI via scripts/test-deps) writing what it
/// receives into a Maildir; killed on drop.
struct SmtpServer {
    child: std::process::Child,
    port: u16,
    maildir: PathBuf,
}

impl SmtpServer {
    fn start(venv: &Path, dir: &Path) -> SmtpServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let maildir = dir.join("maildir");
        let child = std::process::Command::new(venv.join("bin/python"))
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start aiosmtpd");
        assert!(
            wait_until(Duration::from_secs(15), || std::net::TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .is_ok()),
            "aiosmtpd did not listen on {port}"
        );
        SmtpServer {
            child,
            port,
            maildir,
        }
    }

    /// The raw messages received so far.
    fn received(&self) -> Vec<String> {
        std::fs::read_dir(self.maildir.join("new"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_reply_is_sent_over_smtp_with_threading_headers() {
    let Some(deps) = mcpq_tests::deps("venv") else {
        return;
    };
    let env = TestEnv::new("email-smtp", "");
    let smtp = SmtpServer::start(&deps.join("venv"), &env.dir);
    env.add_config(&format!(
        "[email]\nattachments_dir = \"{}\"\n[smtp]\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\nfrom = \"mcpq bot <bot@example.com>\"\ntimeout = \"10s\"\n",
        env.dir.join("attachments").display(),
        smtp.port
    ));
    let worker = env.worker(&[]);
    let eml = corpus("03-nested.eml");
    let out = env.mcpq(&[
        "submit", "email", "--eml", eml.to_str().expect("path"), "--instructions", "file it",
        "--server", "echo", "--steps", LIST_STEPS,
        "--reply-text", "Filed {{ attachments[0].name }} ({{ attachments[0].size }} bytes). {{ input.instructions }}.",
        "--send-reply",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();
    let (code, v) = env.wait_json(&id);
    assert_eq!(code, Some(0), "{v}\n{}", worker.log_text());
    let reply = &v["result"]["reply"];
    assert_eq!(reply["sent"], true, "{reply}");
    assert!(
        wait_until(Duration::from_secs(10), || !smtp.received().is_empty()),
        "nothing arrived"
    );
    let received = smtp.received();
    assert_eq!(received.len(), 1);
    // Unfold folded header lines (a line starting with white space continues the last).
    let msg = received[0]
        .replace("\r\n ", " ")
        .replace("\r\n\t", " ")
        .replace("\n ", " ");
    let header = |name: &str| {
        msg.lines()
            .find(|l| {
                l.to_ascii_lowercase()
                    .starts_with(&format!("{}:", name.to_ascii_lowercase()))
            })
            .map(|l| l[name.len() + 1..].trim().to_string())
            .unwrap_or_default()
    };
    assert_eq!(header("To"), "Carlos <carlos@example.org>");
    assert!(header("From").contains("bot@example.com"), "{msg}");
    assert_eq!(header("Subject"), "Re: Invoice 42");
    assert_eq!(header("In-Reply-To"), "<nested-3@example.org>");
    assert_eq!(
        header("References"),
        "<thread-0@example.org> <thread-1@example.org> <nested-3@example.org>"
    );
    assert_eq!(
        header("Message-ID"),
        format!("<{}>", reply["message_id"].as_str().expect("id"))
    );
    assert!(
        msg.contains("Filed invoice-42.pdf (69 bytes). file it."),
        "{msg}"
    );

    // Without [smtp], asking to send is a clear, permanent error.
    let env2 = TestEnv::new("email-nosmtp", "");
    let _w2 = env2.worker(&[]);
    let out = env2.mcpq(&[
        "submit",
        "email",
        "--eml",
        eml.to_str().expect("path"),
        "--server",
        "echo",
        "--steps",
        LIST_STEPS,
        "--reply-text",
        "x",
        "--send-reply",
    ]);
    let (code, v) = env2.wait_json(text(&out.stdout).trim());
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["error"]["kind"], "smtp_not_configured");
}
