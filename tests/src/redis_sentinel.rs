//! A Sentinel deployment of the test's own: one master, one replica and three
//! sentinels (`redis-server CONF --sentinel`; Debian may not ship `redis-sentinel`), on
//! free loopback ports, in a temp directory. Sentinels judge a master down after 1 s
//! and give a failover 3 s. Every process is killed (SIGKILL) and the directory removed
//! on drop.
//!
//! [`SentinelSet::start`] returns once the replica is in sync and every sentinel knows
//! the replica and the two other sentinels, so a failover can be forced at once.
//! [`SentinelSet::start_tls`] does the same with every process speaking only TLS
//! (replication and the sentinels' links included), with the caller's certificates.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::redis_tls::ServerCerts;
use crate::{free_port, wait_until_every};

/// The name the sentinels know the master by.
pub const MASTER_NAME: &str = "m";

/// A master, a replica and three sentinels (see the module doc).
pub struct SentinelSet {
    /// The two data nodes' ports (the first started as master).
    pub data_ports: [u16; 2],
    /// The sentinels' ports.
    pub sentinel_ports: [u16; 3],
    /// Their directory.
    pub dir: PathBuf,
    children: Vec<(u16, Child)>,
    /// TLS only: the certificates and the CA's PEM (to check the servers).
    tls: Option<(ServerCerts, Vec<u8>)>,
}

fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
}

impl SentinelSet {
    /// Starts the five processes and waits (30 s at most) until a failover can run.
    pub fn start(tag: &str) -> SentinelSet {
        SentinelSet::start_with(tag, None)
    }

    /// [`SentinelSet::start`], every process speaking only TLS with `certs` (clients
    /// need no certificate).
    pub fn start_tls(tag: &str, certs: &ServerCerts) -> SentinelSet {
        mcpq_shared::queue::conn::install_crypto_provider();
        let ca = std::fs::read(&certs.ca).expect("CA file");
        SentinelSet::start_with(tag, Some((certs.clone(), ca)))
    }

    fn start_with(tag: &str, tls: Option<(ServerCerts, Vec<u8>)>) -> SentinelSet {
        let dir = std::env::temp_dir().join(format!(
            "mcpq-sentinel-{tag}-{}-{}",
            std::process::id(),
            ulid::Ulid::generate()
        ));
        std::fs::create_dir_all(&dir).expect("sentinel dir");
        let mut set = SentinelSet {
            data_ports: [free_port(), free_port()],
            sentinel_ports: [free_port(), free_port(), free_port()],
            dir,
            children: Vec::new(),
            tls,
        };
        let [master, replica] = set.data_ports;
        set.spawn_data(master, None);
        set.spawn_data(replica, Some(master));
        assert!(
            wait_until_every(Duration::from_secs(15), Duration::from_millis(50), || {
                set.info(replica, "replication")
                    .and_then(|i| info_field(&i, "master_link_status"))
                    .as_deref()
                    == Some("up")
            }),
            "the replica on port {replica} did not sync with the master on {master}"
        );
        for port in set.sentinel_ports {
            let conf = set.dir.join(format!("sentinel-{port}.conf"));
            let listen = match &set.tls {
                None => format!("port {port}\n"),
                Some((certs, _)) => format!(
                    "port 0\ntls-port {port}\ntls-cert-file {}\ntls-key-file {}\n\
                     tls-ca-cert-file {}\ntls-auth-clients no\ntls-replication yes\n",
                    certs.cert.display(),
                    certs.key.display(),
                    certs.ca.display()
                ),
            };
            std::fs::write(
                &conf,
                format!(
                    "{listen}bind 127.0.0.1\ndir {dir}\n\
                     sentinel monitor {MASTER_NAME} 127.0.0.1 {master} 2\n\
                     sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                     sentinel failover-timeout {MASTER_NAME} 3000\n\
                     sentinel parallel-syncs {MASTER_NAME} 1\n",
                    dir = set.dir.display()
                ),
            )
            .expect("sentinel config");
            let log = set.dir.join(format!("sentinel-{port}.log"));
            let child = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .arg("--logfile")
                .arg(&log)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server must be installed (scripts/dev-up installs it)");
            set.children.push((port, child));
        }
        let ready = wait_until_every(Duration::from_secs(30), Duration::from_millis(100), || {
            set.sentinel_ports.iter().all(|&s| set.sentinel_ready(s))
        });
        assert!(
            ready,
            "the sentinels did not find each other and the replica"
        );
        set
    }

    fn conn(&self, port: u16) -> redis::RedisResult<redis::Connection> {
        let client = match &self.tls {
            None => redis::Client::open(format!("redis://127.0.0.1:{port}"))?,
            Some((_, ca)) => redis::Client::build_with_tls(
                format!("rediss://127.0.0.1:{port}"),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca.clone()),
                },
            )?,
        };
        client.get_connection_with_timeout(Duration::from_secs(2))
    }

    fn spawn_data(&mut self, port: u16, replica_of: Option<u16>) {
        let mut cmd = Command::new("redis-server");
        match &self.tls {
            None => cmd.args(["--port", &port.to_string()]),
            Some((certs, _)) => cmd
                .args(["--port", "0", "--tls-port", &port.to_string()])
                .arg("--tls-cert-file")
                .arg(&certs.cert)
                .arg("--tls-key-file")
                .arg(&certs.key)
                .arg("--tls-ca-cert-file")
                .arg(&certs.ca)
                .args(["--tls-auth-clients", "no", "--tls-replication", "yes"]),
        };
        cmd.args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--dbfilename")
            .arg(format!("dump-{port}.rdb"))
            .arg("--logfile")
            .arg(self.dir.join(format!("redis-{port}.log")))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(master) = replica_of {
            cmd.args(["--replicaof", "127.0.0.1", &master.to_string()]);
        }
        let child = cmd
            .spawn()
            .expect("redis-server must be installed (scripts/dev-up installs it)");
        self.children.push((port, child));
        assert!(
            wait_until_every(Duration::from_secs(10), Duration::from_millis(50), || {
                self.conn(port)
                    .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                    .is_ok()
            }),
            "redis-server on port {port} did not start"
        );
    }

    fn info(&self, port: u16, section: &str) -> Option<String> {
        let mut conn = self.conn(port).ok()?;
        redis::cmd("INFO").arg(section).query(&mut conn).ok()
    }

    fn sentinel_ready(&self, port: u16) -> bool {
        let Ok(mut conn) = self.conn(port) else {
            return false;
        };
        let replicas: Vec<std::collections::HashMap<String, String>> = redis::cmd("SENTINEL")
            .arg("REPLICAS")
            .arg(MASTER_NAME)
            .query(&mut conn)
            .unwrap_or_default();
        let sentinels: Vec<std::collections::HashMap<String, String>> = redis::cmd("SENTINEL")
            .arg("SENTINELS")
            .arg(MASTER_NAME)
            .query(&mut conn)
            .unwrap_or_default();
        let replica_ok = replicas.iter().any(|r| {
            r.get("flags").is_some_and(|f| f == "slave")
                && r.get("master-link-status").is_some_and(|s| s == "ok")
        });
        replica_ok && sentinels.len() == 2
    }

    /// `redis+sentinel://127.0.0.1:S1,127.0.0.1:S2,127.0.0.1:S3/m` (`rediss+sentinel`
    /// with TLS).
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinel_ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let scheme = if self.tls.is_some() {
            "rediss+sentinel"
        } else {
            "redis+sentinel"
        };
        format!("{scheme}://{}/{MASTER_NAME}", hosts.join(","))
    }

    /// The master's port as the first sentinel that answers names it.
    pub fn master_port(&self) -> Option<u16> {
        self.sentinel_ports.iter().find_map(|&s| {
            let mut conn = self.conn(s).ok()?;
            let (_, port): (String, u16) = redis::cmd("SENTINEL")
                .arg("GET-MASTER-ADDR-BY-NAME")
                .arg(MASTER_NAME)
                .query(&mut conn)
                .ok()?;
            Some(port)
        })
    }

    /// A plain connection to the data node on `port` (not through the sentinels).
    pub fn node(&self, port: u16) -> redis::Connection {
        self.conn(port).expect("a connection to a data node")
    }

    /// Whether the data node on `port` says it is a master.
    pub fn is_master(&self, port: u16) -> bool {
        self.info(port, "replication")
            .and_then(|i| info_field(&i, "role"))
            .as_deref()
            == Some("master")
    }

    /// Waits (within `within`) until the replica has every write the master has (equal
    /// replication offsets): what a planned switch needs to lose nothing.
    pub fn wait_in_sync(&self, within: Duration) -> bool {
        wait_until_every(within, Duration::from_millis(50), || {
            let Some(master) = self.master_port() else {
                return false;
            };
            let Some(replica) = self.data_ports.iter().copied().find(|&p| p != master) else {
                return false;
            };
            let master_offset = self
                .info(master, "replication")
                .and_then(|i| info_field(&i, "master_repl_offset"));
            let replica_offset = self
                .info(replica, "replication")
                .and_then(|i| info_field(&i, "slave_repl_offset"));
            master_offset.is_some() && master_offset == replica_offset
        })
    }

    /// Forces a failover (`SENTINEL FAILOVER m`, retried while the sentinel finds no
    /// good replica yet) and waits until the other node is master, the sentinels name
    /// it, and the old master has become its replica. Returns the new master's port.
    pub fn failover(&self, within: Duration) -> u16 {
        let deadline = Instant::now() + within;
        let old = self.master_port().expect("a master before the failover");
        let new = self
            .data_ports
            .iter()
            .copied()
            .find(|&p| p != old)
            .expect("two data nodes");
        loop {
            let mut conn = self.conn(self.sentinel_ports[0]).expect("sentinel");
            let asked = redis::cmd("SENTINEL")
                .arg("FAILOVER")
                .arg(MASTER_NAME)
                .query::<String>(&mut conn);
            match asked {
                Ok(_) => break,
                Err(e) => assert!(
                    Instant::now() < deadline,
                    "SENTINEL FAILOVER kept failing: {e}"
                ),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let switched = wait_until_every(left, Duration::from_millis(50), || {
            self.is_master(new)
                && self.master_port() == Some(new)
                && self
                    .info(old, "replication")
                    .and_then(|i| info_field(&i, "master_port"))
                    .as_deref()
                    == Some(new.to_string().as_str())
        });
        assert!(
            switched,
            "the failover from {old} to {new} did not complete within {within:?}"
        );
        new
    }

    /// Kills (SIGKILL) the data node on `port`.
    pub fn kill(&mut self, port: u16) {
        if let Some(i) = self.children.iter().position(|(p, _)| *p == port) {
            let (_, mut child) = self.children.remove(i);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for SentinelSet {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
