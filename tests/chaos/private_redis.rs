//! A `redis-server` of the test's own, on a free loopback port, with AOF on.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mcpq_tests::wait_until;

/// A private Redis; stopped (SIGKILL) and its directory removed on drop.
pub struct PrivateRedis {
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

impl PrivateRedis {
    /// Starts one and waits until it answers PING.
    pub fn start(tag: &str) -> PrivateRedis {
        let dir = std::env::temp_dir().join(format!(
            "mcpq-chaos-redis-{tag}-{}-{}",
            std::process::id(),
            ulid::Ulid::generate()
        ));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut redis = PrivateRedis {
            port: free_port(),
            dir,
            child: None,
        };
        redis.launch();
        redis
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn launch(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/dev-up installs it)");
        self.child = Some(child);
        let url = self.url();
        assert!(
            wait_until(Duration::from_secs(10), || {
                redis::Client::open(url.as_str())
                    .and_then(|c| c.get_connection())
                    .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                    .is_ok()
            }),
            "private redis-server on port {} did not start",
            self.port
        );
    }

    /// Stops it the way a service manager does (SIGTERM: it flushes the AOF), waits,
    /// then starts it again on the same port and directory after `down`.
    pub fn restart(&mut self, down: Duration) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid only sends a signal.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
            let _ = child.wait();
        }
        std::thread::sleep(down);
        self.launch();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
