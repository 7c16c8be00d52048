//! A `redis-server` of the test's own that speaks only TLS (`--port 0 --tls-port P`) on
//! a free loopback port, with the certificate files the test made; stopped (SIGKILL)
//! on drop. Its directory (logs, dump) is removed on drop; the certificate files are the
//! caller's.
//!
//! Readiness is read from its log ("Ready to accept connections"), so a server that
//! demands client certificates needs none from the fixture.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, wait_until};

/// The server's certificate files (PEM paths).
#[derive(Debug, Clone)]
pub struct ServerCerts {
    /// Its certificate.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    /// The CA client certificates must be signed by (`--tls-ca-cert-file`).
    pub ca: PathBuf,
}

/// A TLS-only Redis (see the module doc).
pub struct TlsRedis {
    /// Its TLS port on 127.0.0.1.
    pub port: u16,
    /// Its working directory (log, no dump: `--save ""`).
    pub dir: PathBuf,
    child: Option<Child>,
}

impl TlsRedis {
    /// Starts one with `certs`; `auth_clients`: demand a client certificate signed by
    /// `certs.ca` (`--tls-auth-clients yes`), else ask for none.
    pub fn start(tag: &str, certs: &ServerCerts, auth_clients: bool) -> TlsRedis {
        let dir = std::env::temp_dir().join(format!(
            "mcpq-tls-redis-{tag}-{}-{}",
            std::process::id(),
            ulid::Ulid::generate()
        ));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let port = free_port();
        let log = dir.join("redis.log");
        let child = Command::new("redis-server")
            .args(["--port", "0", "--bind", "127.0.0.1", "--save", ""])
            .args(["--tls-port", &port.to_string()])
            .arg("--tls-cert-file")
            .arg(&certs.cert)
            .arg("--tls-key-file")
            .arg(&certs.key)
            .arg("--tls-ca-cert-file")
            .arg(&certs.ca)
            .args([
                "--tls-auth-clients",
                if auth_clients { "yes" } else { "no" },
            ])
            .arg("--dir")
            .arg(&dir)
            .arg("--logfile")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/dev-up installs it)");
        let mut redis = TlsRedis {
            port,
            dir,
            child: Some(child),
        };
        let ready = wait_until(Duration::from_secs(10), || {
            std::fs::read_to_string(&log)
                .is_ok_and(|text| text.contains("Ready to accept connections"))
        });
        if !ready {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let exited = redis
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            panic!(
                "TLS redis-server on port {port} did not start (exited: {exited:?}; is it \
                 built with TLS?):\n{text}"
            );
        }
        redis
    }

    /// `rediss://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write a certificate file");
    path
}
