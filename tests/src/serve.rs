//! A running `mcpq-serve` for the tests: started on a free port with a [`TestEnv`]'s
//! config, its URL read from its first line, stopped (SIGTERM, then SIGKILL) on drop.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::{bin, TestEnv};

/// A token the tests configure (`[[serve.tokens]]` named `test`, from `MCPQ_TEST_TOKEN`).
pub const TOKEN: &str = "test-token-0123456789abcdef";

/// The config lines that make [`TOKEN`] the one token.
pub const TOKEN_CONFIG: &str = "[[serve.tokens]]\nname = \"test\"\nenv = \"MCPQ_TEST_TOKEN\"\n";

/// A running `mcpq-serve`.
pub struct ServeProc {
    /// The process.
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Its stderr (the log).
    pub log: PathBuf,
}

impl TestEnv {
    /// Starts `mcpq-serve` on 127.0.0.1 (a free port, unless `args` has `--listen`) with
    /// this env's config, `args`
    /// and `MCPQ_TEST_TOKEN` set to [`TOKEN`]; waits for its start-up line.
    pub fn serve(&self, args: &[&str]) -> ServeProc {
        let log = self
            .dir
            .join(format!("serve-{}.log", ulid::Ulid::generate()));
        let mut child = Command::new(bin("mcpq-serve"))
            .arg("--config")
            .arg(&self.config)
            .args(if args.contains(&"--listen") {
                &[][..]
            } else {
                &["--listen", "127.0.0.1:0"][..]
            })
            .args(args)
            .env_remove("MCPQ_CONFIG")
            .env_remove("MCPQ_NAMESPACE")
            .env_remove("MCPQ_SERVE_TOKEN")
            .env("MCPQ_TEST_TOKEN", TOKEN)
            .env("REDIS_URL", &self.redis_url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("serve log"))
            .spawn()
            .expect("start mcpq-serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the start-up line");
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| {
                panic!(
                    "mcpq-serve did not start: {line:?}; log: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            })
            .to_string();
        ServeProc { child, url, log }
    }
}

impl ServeProc {
    /// `url` + `path`.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits up to `within` for the exit.
    pub fn stop(&mut self, within: Duration) -> Option<ExitStatus> {
        // SAFETY: kill(2) on our own child's pid only sends a signal.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServeProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            if self.stop(Duration::from_secs(15)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}
