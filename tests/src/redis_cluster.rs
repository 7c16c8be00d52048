//! A real Redis Cluster of the test's own: 6 `redis-server` processes (3 masters, 3
//! replicas) on free loopback ports in a temp directory, made with
//! `redis-cli --cluster create`, the way `scripts/redis-cluster` makes one by hand.
//! Also [`Standalone`], one node started the same way, for side-by-side measurements.
//!
//! Guarantees:
//! - [`Cluster::start`] returns only once every node says `cluster_state:ok`, sees 3
//!   masters and 3 replicas and no failed node, and every replica's link to its master
//!   is up with no sync in progress (or panics naming what it waited for).
//! - [`Cluster::failover`] returns only once the replica has become master and every
//!   live node says `cluster_state:ok` again.
//! - Every wait has a deadline; every connection has connect, read and write timeouts.
//! - Nothing here touches any other Redis; on drop every node is SIGKILLed and the
//!   directory removed (nothing is persisted: no RDB, no AOF).
//!
//! Nodes are named by their port. Topology is read from `CLUSTER NODES`, so it stays
//! right after failovers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, wait_until, wait_until_every};

/// How long a node may take to answer PING after it is started.
const START_DEADLINE: Duration = Duration::from_secs(15);

/// How long the cluster may take to be healthy (create, or after a failover).
const HEALTHY_DEADLINE: Duration = Duration::from_secs(60);

/// Connect, read and write timeout of the helper's own connections.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// `cluster-node-timeout`: how long a node may be unreachable before it is marked
/// failed (small, so a killed node is noticed within a test).
pub const NODE_TIMEOUT_MS: u64 = 3000;

/// One node as `CLUSTER NODES` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// The node's id.
    pub id: String,
    /// Its client port.
    pub port: u16,
    /// Master (true) or replica.
    pub is_master: bool,
    /// The id of its master, for a replica.
    pub master_id: Option<String>,
    /// Marked `fail` or `fail?` by the node asked.
    pub failed: bool,
    /// The hash slot ranges it serves (inclusive), for a master.
    pub slots: Vec<(u16, u16)>,
}

/// A `redis-server` process of ours.
struct Node {
    port: u16,
    child: Option<Child>,
}

/// Spawns a `redis-server` on `port` keeping its files in `dir`; `extra` are more
/// arguments (the cluster options).
fn spawn_node(dir: &Path, port: u16, extra: &[String]) -> Child {
    let node_dir = dir.join(port.to_string());
    std::fs::create_dir_all(&node_dir).expect("node dir");
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(&node_dir)
        .arg("--logfile")
        .arg(node_dir.join("redis.log"))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server must be installed (scripts/dev-up installs it)")
}

/// A connection to the node on `port`, with timeouts, or the error.
pub fn try_node(port: u16) -> redis::RedisResult<redis::Connection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let conn = client.get_connection_with_timeout(IO_TIMEOUT)?;
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(conn)
}

/// A connection to the node on `port` (panics if it cannot be made).
pub fn node(port: u16) -> redis::Connection {
    try_node(port).unwrap_or_else(|e| panic!("cannot connect to the node on port {port}: {e}"))
}

fn pongs(port: u16) -> bool {
    try_node(port)
        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
        .is_ok()
}

/// `INFO section` of a node as `field -> value`.
fn info(port: u16, section: &str) -> Option<BTreeMap<String, String>> {
    let mut conn = try_node(port).ok()?;
    let text: String = redis::cmd("INFO").arg(section).query(&mut conn).ok()?;
    Some(
        text.lines()
            .filter_map(|l| l.trim().split_once(':'))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn cluster_state_ok(port: u16) -> bool {
    let Ok(mut conn) = try_node(port) else {
        return false;
    };
    let text: String = match redis::cmd("CLUSTER").arg("INFO").query(&mut conn) {
        Ok(t) => t,
        Err(_) => return false,
    };
    text.lines().any(|l| l.trim() == "cluster_state:ok")
}

/// The cluster as `port`'s node sees it (`CLUSTER NODES`).
pub fn nodes_seen_by(port: u16) -> redis::RedisResult<Vec<NodeInfo>> {
    let mut conn = try_node(port)?;
    let text: String = redis::cmd("CLUSTER").arg("NODES").query(&mut conn)?;
    Ok(text.lines().filter_map(parse_node_line).collect())
}

/// One line of `CLUSTER NODES`:
/// `id ip:port@cport[,hostname] flags master-id ping pong epoch link slot...`.
fn parse_node_line(line: &str) -> Option<NodeInfo> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() < 8 {
        return None;
    }
    let address = fields[1].split(['@', ',']).next()?;
    let port = address.rsplit_once(':')?.1.parse().ok()?;
    let flags: Vec<&str> = fields[2].split(',').collect();
    let slots = fields[8..]
        .iter()
        .filter(|s| !s.starts_with('[')) // slots being migrated
        .filter_map(|s| match s.split_once('-') {
            Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
            None => {
                let n = s.parse().ok()?;
                Some((n, n))
            }
        })
        .collect();
    Some(NodeInfo {
        id: fields[0].to_string(),
        port,
        is_master: flags.contains(&"master"),
        master_id: (fields[3] != "-").then(|| fields[3].to_string()),
        failed: flags.iter().any(|f| f.starts_with("fail")),
        slots,
    })
}

/// A 6-node Redis Cluster of the test's own; see the module doc.
pub struct Cluster {
    /// Where the nodes keep their files and logs.
    pub dir: PathBuf,
    nodes: Vec<Node>,
}

/// `n` distinct free ports.
fn free_ports(n: usize) -> Vec<u16> {
    let mut ports = BTreeSet::new();
    let mut list = Vec::new();
    while list.len() < n {
        let p = free_port();
        if ports.insert(p) {
            list.push(p);
        }
    }
    list
}

impl Cluster {
    /// Starts 6 nodes, makes them a cluster of 3 masters with a replica each, and waits
    /// until it is healthy (see the module doc). `tag` names the temp directory.
    pub fn start(tag: &str) -> Cluster {
        let dir = std::env::temp_dir().join(format!(
            "mcpq-cluster-{tag}-{}-{}",
            std::process::id(),
            ulid::Ulid::generate()
        ));
        std::fs::create_dir_all(&dir).expect("cluster dir");
        // Client and bus ports both come from the kernel's free ones (the default bus
        // port, +10000, may be past 65535 or taken).
        let ports = free_ports(12);
        let mut cluster = Cluster {
            dir,
            nodes: Vec::new(),
        };
        for pair in ports.chunks(2) {
            let (port, bus) = (pair[0], pair[1]);
            let conf = cluster.dir.join(port.to_string()).join("nodes.conf");
            let extra = [
                "--cluster-enabled".to_string(),
                "yes".to_string(),
                "--cluster-port".to_string(),
                bus.to_string(),
                "--cluster-config-file".to_string(),
                conf.display().to_string(),
                "--cluster-node-timeout".to_string(),
                NODE_TIMEOUT_MS.to_string(),
            ];
            let child = spawn_node(&cluster.dir, port, &extra);
            cluster.nodes.push(Node {
                port,
                child: Some(child),
            });
        }
        for node in &cluster.nodes {
            assert!(
                wait_until(START_DEADLINE, || pongs(node.port)),
                "the cluster node on port {} did not answer PING within {START_DEADLINE:?}; see {}",
                node.port,
                cluster.dir.display()
            );
        }
        cluster.create();
        cluster.wait_healthy(6);
        cluster
    }

    /// `redis-cli --cluster create ... --cluster-replicas 1 --cluster-yes`, with a deadline.
    fn create(&self) {
        let log = self.dir.join("create.log");
        let file = std::fs::File::create(&log).expect("create log");
        let mut child = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup log"))
            .stderr(file)
            .spawn()
            .expect("redis-cli must be installed (it comes with redis-server)");
        let mut status = None;
        let done = wait_until_every(HEALTHY_DEADLINE, Duration::from_millis(50), || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        });
        if !done {
            let _ = child.kill();
            let _ = child.wait();
        }
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            done && status.is_some_and(|s| s.success()),
            "redis-cli --cluster create did not succeed within {HEALTHY_DEADLINE:?}:\n{text}"
        );
    }

    /// Ports of the nodes still running (not killed).
    fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
            .collect()
    }

    /// True when every live node is healthy, sees `expect_live` healthy nodes (3
    /// masters with slots) and no failed one unless it was killed, and every live
    /// replica is in sync.
    fn healthy(&self, expect_live: usize) -> bool {
        let live = self.live_ports();
        live.iter().all(|&port| {
            if !cluster_state_ok(port) {
                return false;
            }
            let Ok(seen) = nodes_seen_by(port) else {
                return false;
            };
            let up: Vec<&NodeInfo> = seen
                .iter()
                .filter(|n| !n.failed && live.contains(&n.port))
                .collect();
            let serving = up
                .iter()
                .filter(|n| n.is_master && !n.slots.is_empty())
                .count();
            if up.len() != expect_live || serving != 3 {
                return false;
            }
            // A killed master still serving slots in this node's view: not noticed yet.
            if seen
                .iter()
                .any(|n| !n.failed && !live.contains(&n.port) && n.is_master && !n.slots.is_empty())
            {
                return false;
            }
            match info(port, "replication") {
                Some(r) if r.get("role").map(String::as_str) == Some("slave") => {
                    r.get("master_link_status").map(String::as_str) == Some("up")
                        && r.get("master_sync_in_progress").map(String::as_str) == Some("0")
                }
                Some(_) => true,
                None => false,
            }
        })
    }

    fn wait_healthy(&self, expect_live: usize) {
        assert!(
            wait_until_every(HEALTHY_DEADLINE, Duration::from_millis(100), || self
                .healthy(expect_live)),
            "the cluster was not healthy within {HEALTHY_DEADLINE:?} ({expect_live} live nodes, 3 \
             serving masters, replicas in sync); nodes: {:?}; see {}",
            self.live_ports()
                .first()
                .map(|&p| nodes_seen_by(p).map_err(|e| e.to_string())),
            self.dir.display()
        );
    }

    /// `redis+cluster://127.0.0.1:P,...`: every node, killed ones included (a client
    /// skips seeds that do not answer).
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// Every node's port.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// The cluster as the first live node sees it, killed nodes left out.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        let live = self.live_ports();
        for &port in &live {
            if let Ok(seen) = nodes_seen_by(port) {
                return seen
                    .into_iter()
                    .filter(|n| live.contains(&n.port))
                    .collect();
            }
        }
        panic!("no live cluster node answers CLUSTER NODES (live: {live:?})");
    }

    /// Ports of the masters serving slots, in port order.
    pub fn masters(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .nodes()
            .into_iter()
            .filter(|n| n.is_master && !n.failed && !n.slots.is_empty())
            .map(|n| n.port)
            .collect();
        ports.sort_unstable();
        ports
    }

    /// The port of a live replica of the master on `master`, if it has one.
    pub fn replica_of(&self, master: u16) -> Option<u16> {
        let nodes = self.nodes();
        let id = nodes.iter().find(|n| n.port == master)?.id.clone();
        nodes
            .iter()
            .find(|n| !n.is_master && !n.failed && n.master_id.as_deref() == Some(id.as_str()))
            .map(|n| n.port)
    }

    /// The port of the master serving `key`'s slot.
    pub fn master_of_key(&self, key: &str) -> u16 {
        let port = self.live_ports()[0];
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut node(port))
            .expect("CLUSTER KEYSLOT");
        self.nodes()
            .into_iter()
            .find(|n| n.is_master && n.slots.iter().any(|&(a, b)| a <= slot && slot <= b))
            .map(|n| n.port)
            .unwrap_or_else(|| panic!("no master serves slot {slot}"))
    }

    /// A coordinated failover of the master on `master`: `CLUSTER FAILOVER` on its
    /// replica, then waits until that replica is master and the cluster is healthy.
    /// Returns the new master's port.
    pub fn failover(&self, master: u16) -> u16 {
        let replica = self
            .replica_of(master)
            .unwrap_or_else(|| panic!("the master on port {master} has no live replica"));
        let _: String = redis::cmd("CLUSTER")
            .arg("FAILOVER")
            .query(&mut node(replica))
            .expect("CLUSTER FAILOVER");
        self.wait_promoted(replica);
        replica
    }

    /// SIGKILLs the master on `master`, then promotes its replica at once with
    /// `CLUSTER FAILOVER FORCE` (no handshake with the dead master: writes it took but
    /// had not sent on are lost, as in a crash). Returns the new master's port.
    pub fn crash_master(&mut self, master: u16) -> u16 {
        let replica = self
            .replica_of(master)
            .unwrap_or_else(|| panic!("the master on port {master} has no live replica"));
        self.kill(master);
        let _: String = redis::cmd("CLUSTER")
            .arg("FAILOVER")
            .arg("FORCE")
            .query(&mut node(replica))
            .expect("CLUSTER FAILOVER FORCE");
        self.wait_promoted(replica);
        replica
    }

    fn wait_promoted(&self, replica: u16) {
        let promoted = wait_until_every(HEALTHY_DEADLINE, Duration::from_millis(50), || {
            info(replica, "replication").and_then(|r| r.get("role").cloned())
                == Some("master".to_string())
                && self.live_ports().iter().all(|&p| cluster_state_ok(p))
                && self.masters().contains(&replica)
        });
        assert!(
            promoted,
            "the replica on port {replica} did not become a serving master within \
             {HEALTHY_DEADLINE:?}; see {}",
            self.dir.display()
        );
    }

    /// SIGKILLs the node on `port` and reaps it.
    pub fn kill(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no node of this cluster on port {port}"));
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Keys matching `pattern` (a `SCAN MATCH` glob) on each serving master, by port.
    pub fn count_keys(&self, pattern: &str) -> BTreeMap<u16, usize> {
        self.masters()
            .into_iter()
            .map(|port| (port, scan(&mut node(port), pattern).len()))
            .collect()
    }

    /// The job records of `namespace` in every partition, by status (`none` for a
    /// record without one), read on each master: for checks, not for polling fast.
    pub fn status_counts(&self, namespace: &str) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for port in self.masters() {
            for (status, n) in status_counts_on(&mut node(port), namespace) {
                *counts.entry(status).or_insert(0) += n;
            }
        }
        counts
    }

    /// Jobs of `namespace` that succeeded, died or were cancelled.
    pub fn finished_count(&self, namespace: &str) -> usize {
        finished(&self.status_counts(namespace))
    }
}

/// The keys of `namespace`'s partitions, all of them: `{ns}:...` and `{ns~N}:...`.
pub fn namespace_pattern(namespace: &str) -> String {
    format!("{{{namespace}[}}~]*")
}

/// Every key matching `pattern` on one node (SCAN, 1000 at a time).
pub fn scan(conn: &mut redis::Connection, pattern: &str) -> Vec<String> {
    let mut cursor: u64 = 0;
    let mut keys = Vec::new();
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query(conn)
            .expect("SCAN");
        keys.extend(batch);
        if next == 0 {
            return keys;
        }
        cursor = next;
    }
}

/// The job records of `namespace` on one node, by status.
pub fn status_counts_on(conn: &mut redis::Connection, namespace: &str) -> BTreeMap<String, usize> {
    let keys = scan(conn, &format!("{}:job:*", namespace_pattern(namespace)));
    // `KEY:attempts` is a job's attempt list, `KEY:corrupt` a record set aside.
    let jobs: Vec<&String> = keys
        .iter()
        .filter(|k| !k.ends_with(":attempts") && !k.ends_with(":corrupt"))
        .collect();
    let mut counts = BTreeMap::new();
    for chunk in jobs.chunks(1000) {
        let mut pipe = redis::pipe();
        for key in chunk {
            pipe.hget(key.as_str(), "status");
        }
        let statuses: Vec<Option<String>> = pipe.query(conn).expect("HGET status");
        for s in statuses {
            *counts
                .entry(s.unwrap_or_else(|| "none".into()))
                .or_insert(0) += 1;
        }
    }
    counts
}

/// The number of finished jobs (succeeded, dead, cancelled) in `counts`.
pub fn finished(counts: &BTreeMap<String, usize>) -> usize {
    counts
        .iter()
        .filter(|(s, _)| matches!(s.as_str(), "succeeded" | "dead" | "cancelled"))
        .map(|(_, n)| n)
        .sum()
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One `redis-server` started like a cluster node but without cluster mode (no
/// persistence either): the single-node side of a comparison. Killed on drop.
pub struct Standalone {
    /// Its port.
    pub port: u16,
    dir: PathBuf,
    child: Child,
}

impl Standalone {
    /// Starts one on a free port and waits until it answers PING.
    pub fn start(tag: &str) -> Standalone {
        let dir = std::env::temp_dir().join(format!(
            "mcpq-standalone-{tag}-{}-{}",
            std::process::id(),
            ulid::Ulid::generate()
        ));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let port = free_port();
        let child = spawn_node(&dir, port, &[]);
        let node = Standalone { port, dir, child };
        assert!(
            wait_until(START_DEADLINE, || pongs(port)),
            "redis-server on port {port} did not answer PING within {START_DEADLINE:?}"
        );
        node
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_lines_are_read() {
        let master = parse_node_line(
            "07c3 127.0.0.1:30004@31004,host myself,master - 0 0 1 connected 0-5460 5462 [5461->-e7d1]",
        )
        .expect("a node");
        assert_eq!(master.port, 30004);
        assert!(master.is_master && !master.failed);
        assert_eq!(master.slots, vec![(0, 5460), (5462, 5462)]);
        let replica = parse_node_line("e7d1 127.0.0.1:30005@31005 slave,fail 07c3 0 0 1 connected")
            .expect("a node");
        assert!(!replica.is_master && replica.failed);
        assert_eq!(replica.master_id.as_deref(), Some("07c3"));
        assert!(parse_node_line("garbage").is_none());
    }
}
