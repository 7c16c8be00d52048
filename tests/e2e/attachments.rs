//! Attachments hardened: which local files `mcpq submit` may read, the privacy of the
//! attachment directory, its limits (count, disk), and a sweep that spares running jobs.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use mcpq_shared::email::{Attachment, EmailJob};
use mcpq_shared::job::{Job, PlanStep};
use mcpq_tests::{bin, text, wait_until, TestEnv};
use serde_json::json;

/// An env whose `[email]` table has `attachments_dir = DIR/attachments` and `extra`.
fn env_with(tag: &str, extra: &str) -> (TestEnv, PathBuf) {
    let env = TestEnv::new(tag, "");
    let root = env.dir.join("attachments");
    env.add_config(&format!(
        "[email]\nattachments_dir = \"{}\"\n{extra}",
        root.display()
    ));
    (env, root)
}

/// An email job whose one step echoes the first attachment's name and size.
fn email_json(attachments: serde_json::Value) -> serde_json::Value {
    json!({"kind": "email", "payload": {
        "from": "ana@example.com", "subject": "files", "instructions": "list",
        "attachments": attachments, "servers": ["echo"],
        "steps": [{"server": "echo", "tool": "echo",
                   "arguments": {"text": "{{ attachments | length }} file(s)"}}]}})
}

/// `mcpq submit -` with `job` on stdin and `extra` flags: (exit code, stderr).
fn submit(env: &TestEnv, job: &serde_json::Value, extra: &[&str]) -> (Option<i32>, String) {
    let (code, _, stderr) = submit_id(env, job, extra);
    (code, stderr)
}

/// Like [`submit`], with the printed id: (exit code, id, stderr).
fn submit_id(
    env: &TestEnv,
    job: &serde_json::Value,
    extra: &[&str],
) -> (Option<i32>, String, String) {
    let mut args = vec!["submit", "-"];
    args.extend_from_slice(extra);
    let out = env.mcpq_with_stdin(&args, job.to_string().as_bytes());
    (
        out.status.code(),
        text(&out.stdout).trim().to_string(),
        text(&out.stderr),
    )
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn a_job_file_cannot_make_the_producer_read_a_local_file() {
    let env = TestEnv::new("attach-paths", "");
    let dir = env.dir.to_str().expect("dir");
    std::fs::write(env.dir.join("ok.txt"), "fine").expect("file");
    std::os::unix::fs::symlink("/etc/passwd", env.dir.join("link")).expect("symlink");

    // No --attach-root: a path in the job is refused, and the message says how to attach.
    for path in ["/proc/self/environ", "/etc/shadow", "ok.txt"] {
        let job = email_json(json!([{"name": "x", "path": path}]));
        let (code, stderr) = submit(&env, &job, &[]);
        assert_eq!(code, Some(2), "{path}: {stderr}");
        assert!(
            stderr.contains("--attach FILE") && stderr.contains("--attach-root"),
            "{path}: {stderr}"
        );
    }
    // With --attach-root: only what resolves inside it, symlinks and `..` included.
    for path in [
        "/proc/self/environ",
        "/etc/passwd",
        "link",
        "../../../etc/passwd",
    ] {
        let job = email_json(json!([{"name": "x", "path": path}]));
        let (code, stderr) = submit(&env, &job, &["--attach-root", dir]);
        assert_eq!(code, Some(2), "{path}: {stderr}");
        assert!(stderr.contains("outside --attach-root"), "{path}: {stderr}");
    }
    let job = email_json(json!([{"name": "x", "path": "ok.txt"}]));
    let (code, stderr) = submit(&env, &job, &["--attach-root", dir]);
    assert_eq!(code, Some(0), "{stderr}");

    // Not regular files: refused without reading (a FIFO would block, /dev/zero never end).
    let fifo = env.dir.join("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo")
        .success());
    let job = email_json(json!([]));
    for special in ["/dev/zero", fifo.to_str().expect("fifo"), dir] {
        let (code, stderr) = submit(&env, &job, &["--attach", special]);
        assert_eq!(code, Some(2), "{special}: {stderr}");
        assert!(stderr.contains("not a regular file"), "{special}: {stderr}");
    }
    // --attach on a job that is not an email.
    let out = env.mcpq(&[
        "submit", "agent", "--server", "echo", "--tool", "echo", "--attach", "ok.txt",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("email jobs only"));
}

#[test]
fn a_huge_file_is_refused_by_its_size_before_it_is_read() {
    let env = TestEnv::new("attach-huge", "");
    let huge = env.dir.join("huge.bin");
    let file = std::fs::File::create(&huge).expect("create");
    file.set_len(280 * 1024 * 1024).expect("sparse 280 MB");
    let job = email_json(json!([]));
    // Under /usr/bin/time when it is there, to see the producer's peak RSS.
    let timed = Path::new("/usr/bin/time").exists();
    let mut cmd = if timed {
        let mut c = Command::new("/usr/bin/time");
        c.args(["-f", "maxrss_kb=%M"]).arg(bin("mcpq"));
        c
    } else {
        Command::new(bin("mcpq"))
    };
    let out = cmd
        .arg("--config")
        .arg(&env.config)
        .args(["submit", "-", "--attach"])
        .arg(&huge)
        .env("REDIS_URL", &env.redis_url)
        .env_remove("MCPQ_CONFIG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(job.to_string().as_bytes())?;
            child.wait_with_output()
        })
        .expect("run mcpq");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("email.max_attachment"), "{stderr}");
    if let Some(kb) = stderr
        .lines()
        .find_map(|l| l.strip_prefix("maxrss_kb="))
        .and_then(|n| n.trim().parse::<u64>().ok())
    {
        eprintln!("mcpq submit --attach <280 MB file>: peak RSS {kb} kB");
        assert!(kb < 100 * 1024, "the producer grew to {kb} kB");
    }
    // A job file, a raw message or a plan that never ends: read up to queue.max_payload.
    let eml = concat!(env!("CARGO_MANIFEST_DIR"), "/data/eml/01-plain.eml");
    for args in [
        &["submit", "/dev/zero"][..],
        &["submit", "email", "--eml", "/dev/zero", "--steps", "[]"],
        &["submit", "email", "--eml", eml, "--steps", "@/dev/zero"],
    ] {
        let out = env.mcpq(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains("queue.max_payload"),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    assert_eq!(env.keys(), Vec::<String>::new());
}

#[test]
fn attached_files_are_private_to_the_worker_user() {
    let (env, root) = env_with("attach-perms", "");
    let worker = env.worker(&[]);
    std::fs::write(env.dir.join("note.txt"), "secret note").expect("file");
    let note = env.dir.join("note.txt");
    let job = email_json(json!([]));
    let (code, id, stderr) = submit_id(&env, &job, &["--attach", note.to_str().expect("p")]);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, v) = env.wait_json(&id);
    assert_eq!(code, Some(0), "{v}\n{}", worker.log_text());
    assert_eq!(v["result"]["attachments"][0]["content_type"], "text/plain");
    assert!(root.join(&id).join("note.txt").exists(), "{v}");
    let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&root), 0o700, "root");
    for entry in std::fs::read_dir(&root).expect("root").flatten() {
        if entry.path().is_dir() {
            assert_eq!(mode(&entry.path()), 0o700, "{}", entry.path().display());
            let file = entry.path().join("note.txt");
            assert_eq!(mode(&file), 0o600, "{}", file.display());
            assert_eq!(std::fs::read_to_string(&file).expect("read"), "secret note");
        }
    }
}

#[test]
fn a_pre_created_world_writable_attachment_root_is_refused_and_the_job_fails_clearly() {
    let (env, root) = env_with("attach-taken", "");
    std::fs::create_dir_all(&root).expect("root");
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let worker = env.worker(&[]);
    let job = email_json(json!([{"name": "a.txt", "content_base64": b64(b"hello")}]));
    let (code, id, stderr) = submit_id(&env, &job, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, v) = env.wait_json(&id);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["status"], "dead", "{v}");
    assert_eq!(v["error"]["kind"], "attachments_dir_unsafe", "{v}");
    assert_eq!(v["error"]["retryable"], false, "{v}");
    let message = v["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("email.attachments_dir") && message.contains("777"),
        "{message}"
    );
    assert_eq!(
        std::fs::read_dir(&root).expect("root").count(),
        0,
        "nothing written"
    );
    assert!(
        worker.log_text().contains("unsafe attachment directory"),
        "the worker said nothing at start-up: {}",
        worker.log_text()
    );
    // Owned by someone else (as root we can hand it to nobody): refused too.
    if mcpq_shared::supervisor::unix::current_uid() == 0 {
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        std::os::unix::fs::chown(&root, Some(65534), Some(65534)).expect("chown");
        let (code, id, _) = submit_id(&env, &job, &[]);
        assert_eq!(code, Some(0));
        let (code, v) = env.wait_json(&id);
        assert_eq!(code, Some(1), "{v}");
        assert_eq!(v["error"]["kind"], "attachments_dir_unsafe", "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("owned by uid 65534")),
            "{v}"
        );
        assert_eq!(std::fs::metadata(&root).expect("root").uid(), 65534);
    }
}

/// An email job pushed straight into the queue (as another producer might).
fn stored_email(attachments: Vec<Attachment>) -> Job {
    let email = EmailJob {
        from: "ana@example.com".into(),
        instructions: "x".into(),
        attachments,
        steps: vec![PlanStep {
            name: None,
            server: "echo".into(),
            tool: "echo".into(),
            arguments: serde_json::from_value(json!({"text": "ok"})).expect("args"),
            continue_on_error: false,
            literal_arguments: false,
            keep_tool_errors: false,
        }],
        ..Default::default()
    };
    Job::email(email, Default::default())
}

fn attachment(name: &str, bytes: &[u8]) -> Attachment {
    Attachment {
        name: name.into(),
        content_base64: Some(b64(bytes)),
        ..Default::default()
    }
}

#[test]
fn too_many_attachments_or_a_full_attachment_directory_fail_the_job_naming_the_limit() {
    let (env, root) = env_with(
        "attach-caps",
        "max_attachments = 5\nmax_attachments_dir = 100\n",
    );
    // At submit: exit 2, nothing enqueued.
    let six: Vec<_> = (0..6)
        .map(|i| json!({"name": format!("{i}.txt"), "content_base64": b64(b"x")}))
        .collect();
    let (code, stderr) = submit(&env, &email_json(json!(six)), &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("email.max_attachments"), "{stderr}");
    assert_eq!(env.keys(), Vec::<String>::new());

    // In the queue anyway: dead, permanent, named.
    let worker = env.worker(&[]);
    let many = stored_email(
        (0..6)
            .map(|i| attachment(&format!("{i}.txt"), b"x"))
            .collect(),
    );
    let first = stored_email(vec![attachment("a.bin", &[7u8; 60])]);
    let second = stored_email(vec![attachment("b.bin", &[7u8; 60])]);
    env.submit_jobs(&[many.clone(), first.clone()]);
    let (code, v) = env.wait_json(&many.id.to_string());
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["error"]["kind"], "attachment_too_large", "{v}");
    assert_eq!(v["error"]["retryable"], false, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("email.max_attachments")),
        "{v}"
    );
    let (code, v) = env.wait_json(&first.id.to_string());
    assert_eq!(code, Some(0), "{v}\n{}", worker.log_text());
    // 60 bytes are kept (retention 1h); 60 more would pass 100.
    env.submit_jobs(std::slice::from_ref(&second));
    let (code, v) = env.wait_json(&second.id.to_string());
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["error"]["kind"], "attachment_too_large", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("email.max_attachments_dir")),
        "{v}"
    );
    assert!(!root.join(second.id.to_string()).join("b.bin").exists());
}

#[test]
fn the_sweep_never_removes_the_files_of_a_running_job() {
    // Retention 1 s, swept every second; the job reads its file after 3 s.
    let (env, root) = env_with("attach-sweep", "retention = \"1s\"\n");
    let worker = env.worker(&[]);
    let mut job = stored_email(vec![attachment("note.txt", b"still here")]);
    if let mcpq_shared::job::JobPayload::Email(email) = &mut job.payload {
        email.steps = serde_json::from_value(json!([
            {"server": "echo", "tool": "sleep_ms", "arguments": {"ms": 3000}},
            {"server": "echo", "tool": "read_text", "arguments": {"path": "{{ attachments[0].path }}"}}
        ]))
        .expect("steps");
    }
    env.submit_jobs(std::slice::from_ref(&job));
    let id = job.id.to_string();
    let (code, v) = env.wait_json(&id);
    assert_eq!(code, Some(0), "{v}\n{}", worker.log_text());
    assert_eq!(v["result"]["summary"], "still here", "{v}");
    // Finished: now it goes, about a retention later.
    assert!(
        wait_until(Duration::from_secs(15), || !root.join(&id).exists()),
        "a finished job's directory outlived its retention"
    );
    assert!(
        wait_until(Duration::from_secs(10), || !root
            .join(format!("{id}.finished"))
            .exists()),
        "its finished mark stayed"
    );
}
