//! A connection to Redis, whatever its shape: one node, the master that sentinels
//! name, or a Redis Cluster, over TLS or not. [`Conn`] is what every queue operation
//! takes; it is cheap to clone (all clones share one multiplexed connection per node)
//! and reconnects by itself.
//!
//! Guarantees: the first connection has a deadline ([`CONNECT_TIMEOUT`]) and its error
//! names the target (never its password); every command has a response deadline
//! (30 s); on a cluster, commands go to the node of their first key, and every script
//! is given its partition's prefix as `KEYS[1]` (`scripts.rs`) so that it runs where
//! its keys are.
//!
//! # TLS
//!
//! `rediss` targets (all three topologies, sentinels included) use rustls with the
//! *ring* provider ([`install_crypto_provider`], run before every TLS connection). The
//! server's certificate is checked against the platform's roots, or only against
//! `[redis] ca_file` when set; `cert_file` + `key_file` are sent to servers that ask for
//! a client certificate. `[redis] insecure = true` checks nothing and is logged as a
//! warning at each connect. A handshake that fails is named in plain words
//! ([`tls_problem`]: an untrusted issuer, a host name the certificate does not list, a
//! client certificate the server wants or refuses) inside
//! [`QueueError::Unreachable`], so the CLI still exits 3.
//!
//! # Sentinel: following a failover
//!
//! On a Sentinel target, [`Conn`] holds the master's connection and the sentinels'
//! client. The sentinels are asked for the master again (for at most
//! [`FAILOVER_LOOKUP_TIMEOUT`], tries 100 ms apart, doubling) when
//! - a sentinel announces `+switch-master` for our master (a task listens to one
//!   sentinel at a time while the connection lives), or
//! - a command fails in a way that says the master may have moved (an I/O error, a
//!   dropped or refused connection, a timeout, `READONLY` from a demoted master,
//!   `MASTERDOWN`, `NOREPLICAS`), at most once per [`LOOKUP_INTERVAL`] for all clones
//!   together;
//!
//! and when they name another node, which answers `ROLE` as a master, every clone's
//! *next* command goes to it. The failed command
//! itself is never retried here: it returns its error to the caller, whose loop (the
//! worker's fetch, lease and finish loops, a producer's submit) decides; scripts that
//! end attempts are fenced by the attempt number, so a caller's retry cannot apply an
//! outcome twice. Pub/sub asks the sentinels anew at every reconnect
//! ([`pubsub_client`]).
//!
//! What a failover may lose: Redis replicates asynchronously. A write the old master
//! acknowledged but had not yet sent to the replica that is promoted is gone: a submit
//! answered with a job id may never run, an outcome stored may be lost (the job then
//! runs again when its lease expires: at-least-once still holds), a cancel may be
//! forgotten. A crash of the master may lose up to the replication lag. A planned
//! `SENTINEL FAILOVER` does not stop the old master either: it stays a writable master
//! until the sentinels demote it, so writes it takes between the promotion and our
//! switch (the `+switch-master` announcement comes within about a second) are lost
//! too; the e2e test counts them as extra executions (outcomes lost, jobs run again
//! when their lease expires). `min-replicas-to-write 1` on the Redis nodes closes that
//! window (a master without a replica refuses writes: `NOREPLICAS`), at the price of
//! refusing writes whenever no replica is connected. With
//! `[redis] wait_replicas >= 1`, a submit is answered only once that many replicas have
//! it (`WAIT`), so an acknowledged submit survives the promotion of any of them.

use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    Client, Cmd, ConnectionAddr, IntoConnectionInfo, Pipeline, RedisError, RedisFuture,
    RedisResult, TlsCertificates, TlsMode, Value,
};

use super::QueueError;
use crate::backoff::Backoff;
use crate::config::redis_target::{RedisTarget, Topology};

/// How long a first connection to Redis may take before we say it is unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one command may wait for its answer.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one search for a new master may take, its tries included (sentinels
/// asked, the named master's `ROLE` checked, a connection made to it). A killed master
/// is replaced after the sentinels' `down-after-milliseconds` plus an election, so a
/// search started at its death may find nothing yet: the next failing command starts
/// another one.
pub const FAILOVER_LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Searches for a new master start at most this often, however many commands fail.
pub const LOOKUP_INTERVAL: Duration = Duration::from_millis(250);

/// A connection to the target's Redis (see the module doc).
#[derive(Clone)]
pub struct Conn {
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    /// One node.
    Node(ConnectionManager),
    /// A cluster: routes by key, follows MOVED and failovers.
    Cluster(ClusterConnection),
    /// The master the sentinels name, followed across failovers.
    Sentinel(Arc<Followed>),
}

impl From<ConnectionManager> for Conn {
    fn from(conn: ConnectionManager) -> Self {
        Conn {
            inner: Inner::Node(conn),
        }
    }
}

impl Conn {
    /// True on a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.inner, Inner::Cluster(_))
    }

    /// The master's `host:port` on a Sentinel target (the one the next command goes
    /// to); `None` on other targets.
    pub fn sentinel_master(&self) -> Option<String> {
        match &self.inner {
            Inner::Sentinel(f) => Some(f.current().address),
            _ => None,
        }
    }

    /// Waits until `replicas` replicas have every write this connection made on the
    /// node holding `key` (`WAIT`), for at most `timeout`; returns how many did. `key`
    /// only routes (a script key, [`super::Keys::script_key`], will do).
    pub async fn wait_replicas(
        &mut self,
        key: &str,
        replicas: u32,
        timeout: Duration,
    ) -> Result<u32, QueueError> {
        // The EXISTS routes the pipeline to `key`'s node on a cluster; WAIT has no key.
        let (_, acked): (i64, u32) = redis::pipe()
            .cmd("EXISTS")
            .arg(key)
            .cmd("WAIT")
            .arg(replicas)
            .arg(
                u64::try_from(timeout.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1),
            )
            .query_async(self)
            .await?;
        Ok(acked)
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.inner {
            Inner::Node(c) => c.req_packed_command(cmd),
            Inner::Cluster(c) => c.req_packed_command(cmd),
            Inner::Sentinel(f) => {
                let f = f.clone();
                Box::pin(async move {
                    let mut current = f.current();
                    let result = current.conn.req_packed_command(cmd).await;
                    if let Err(e) = &result {
                        f.after_error(current.generation, e).await;
                    }
                    result
                })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.inner {
            Inner::Node(c) => c.req_packed_commands(pipeline, offset, count),
            Inner::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Inner::Sentinel(f) => {
                let f = f.clone();
                Box::pin(async move {
                    let mut current = f.current();
                    let result = current
                        .conn
                        .req_packed_commands(pipeline, offset, count)
                        .await;
                    if let Err(e) = &result {
                        f.after_error(current.generation, e).await;
                    }
                    result
                })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match &self.inner {
            Inner::Node(c) => c.get_db(),
            Inner::Cluster(c) => c.get_db(),
            Inner::Sentinel(f) => f.current().conn.get_db(),
        }
    }
}

/// The master of a Sentinel target, and how to find the next one.
struct Followed {
    /// The task that listens to the sentinels' `+switch-master` announcements; ended
    /// when the last clone of the connection is dropped.
    watcher: std::sync::OnceLock<tokio::task::AbortHandle>,
    /// What the next command uses.
    current: StdMutex<Current>,
    /// The sentinels' client (it caches its connections to them) and when the last
    /// search ended; held for the whole search, so only one runs at a time.
    lookup: tokio::sync::Mutex<Lookup>,
    /// For logs: the sentinels and the master's name.
    target: String,
    /// Credentials and database for the master (its address a placeholder), and TLS:
    /// to connect to a master a sentinel announced.
    master_info: redis::ConnectionInfo,
    tls: Option<Tls>,
}

#[derive(Clone)]
struct Current {
    /// Bumped at each switch: a command that failed on an older master does not
    /// search again once another command has switched.
    generation: u64,
    /// `host:port` of the master.
    address: String,
    conn: ConnectionManager,
}

struct Lookup {
    client: SentinelClient,
    last: Option<Instant>,
}

impl Drop for Followed {
    fn drop(&mut self) {
        if let Some(watcher) = self.watcher.get() {
            watcher.abort();
        }
    }
}

impl Followed {
    fn current(&self) -> Current {
        // A poisoned lock only means a panic elsewhere while swapping two clones: the
        // value in it is whole.
        match self.current.lock() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// After a command on master `generation` failed with `error`: when the error says
    /// the master may have moved, asks the sentinels (see the module doc).
    async fn after_error(&self, generation: u64, error: &RedisError) {
        if !master_may_have_moved(error) {
            return;
        }
        let mut lookup = self.lookup.lock().await;
        if self.current().generation != generation
            || lookup
                .last
                .is_some_and(|last| last.elapsed() < LOOKUP_INTERVAL)
        {
            return;
        }
        tracing::debug!(target = %self.target, "a command failed ({error}); asking the sentinels for the master");
        self.search(&mut lookup).await;
    }

    /// After a sentinel announced `+switch-master` of our master to `host:port`:
    /// switches to it once it answers `ROLE` as a master (asking the sentinels instead
    /// if it does not). Several sentinels announce the same switch: the first does it.
    async fn after_announcement(&self, host: &str, port: u16) {
        let mut lookup = self.lookup.lock().await;
        let address = format!("{host}:{port}");
        if self.current().address == address {
            return;
        }
        tracing::debug!(target = %self.target, "a sentinel announced {address} as the master");
        let connecting = async {
            let info = self
                .master_info
                .clone()
                .set_addr(ConnectionAddr::Tcp(host.to_string(), port));
            let client = client_for(info, self.tls.as_ref())?;
            let mut check = client.get_multiplexed_async_connection().await?;
            let role: redis::Role = redis::cmd("ROLE").query_async(&mut check).await?;
            if !matches!(role, redis::Role::Primary { .. }) {
                return Err(RedisError::from((
                    redis::ErrorKind::Client,
                    "the announced master is not a master (yet)",
                )));
            }
            client
                .get_connection_manager_with_config(manager_config())
                .await
        };
        match tokio::time::timeout(FAILOVER_LOOKUP_TIMEOUT, connecting).await {
            Ok(Ok(conn)) => {
                self.switch(address, conn);
                lookup.last = Some(Instant::now());
            }
            Ok(Err(e)) => {
                tracing::debug!(target = %self.target, "announced master {address}: {e}; asking the sentinels");
                self.search(&mut lookup).await;
            }
            Err(_) => self.search(&mut lookup).await,
        }
    }

    /// Makes `conn` (to the master at `address`) the one the next command uses.
    fn switch(&self, address: String, conn: ConnectionManager) {
        let mut current = match self.current.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        if current.address == address {
            return;
        }
        tracing::warn!(
            target = %self.target,
            "Redis master moved from {} to {address} (failover): commands go there now",
            current.address
        );
        *current = Current {
            generation: current.generation + 1,
            address,
            conn,
        };
    }

    /// Asks the sentinels for the master, within [`FAILOVER_LOOKUP_TIMEOUT`], and
    /// switches to it when it is another node.
    async fn search(&self, lookup: &mut Lookup) {
        let deadline = tokio::time::Instant::now() + FAILOVER_LOOKUP_TIMEOUT;
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let held = self.current().address;
        loop {
            let found = tokio::time::timeout_at(deadline, async {
                let (address, master) = master_of(&mut lookup.client).await?;
                if address == held {
                    // Still there (a network blip): its manager reconnects by itself.
                    return Ok(None);
                }
                let conn = master
                    .get_connection_manager_with_config(manager_config())
                    .await?;
                Ok::<_, RedisError>(Some((address, conn)))
            })
            .await;
            match found {
                Ok(Ok(None)) => break,
                Ok(Ok(Some((address, conn)))) => {
                    self.switch(address, conn);
                    break;
                }
                Ok(Err(e)) => {
                    if tokio::time::Instant::now() + backoff.peek() >= deadline {
                        tracing::warn!(
                            target = %self.target,
                            "the sentinels name no reachable master yet ({}); the next failing command asks again",
                            explain(&e)
                        );
                        break;
                    }
                    tokio::time::sleep(backoff.advance()).await;
                }
                Err(_) => {
                    tracing::warn!(
                        target = %self.target,
                        "no master found within {}s; the next failing command asks again",
                        FAILOVER_LOOKUP_TIMEOUT.as_secs()
                    );
                    break;
                }
            }
        }
        lookup.last = Some(Instant::now());
    }
}

/// Listens to every sentinel's `+switch-master` channel (each reconnected with
/// backoff) and hands `followed` the new master of `master_name` as soon as the first
/// sentinel announces it: without it, a connection to a demoted master that stays up
/// would go on writing to it until the sentinels reconfigure it (up to their 10 s
/// `INFO` period), and those writes are lost; and a sentinel asked too early may still
/// name the old master (sentinels learn the new one from each other within 2 s). Ends
/// when the last clone of the connection is dropped.
async fn watch_announcements(
    followed: std::sync::Weak<Followed>,
    sentinels: Vec<String>,
    master_name: String,
    tls: Option<Tls>,
) {
    let watchers = sentinels
        .iter()
        .map(|sentinel| watch_one(&followed, sentinel, &master_name, tls.as_ref()));
    futures::future::join_all(watchers).await;
}

/// [`watch_announcements`] on one sentinel.
async fn watch_one(
    followed: &std::sync::Weak<Followed>,
    sentinel: &str,
    master_name: &str,
    tls: Option<&Tls>,
) {
    use futures::StreamExt;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let subscribed = async {
            let mut pubsub = node_client(sentinel, tls)?.get_async_pubsub().await?;
            pubsub.subscribe("+switch-master").await?;
            Ok::<_, RedisError>(pubsub)
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, subscribed).await {
            Ok(Ok(mut pubsub)) => {
                backoff.reset();
                let mut messages = pubsub.on_message();
                while let Some(message) = messages.next().await {
                    // "<name> <old ip> <old port> <new ip> <new port>"
                    let payload = String::from_utf8_lossy(message.get_payload_bytes());
                    let words: Vec<&str> = payload.split(' ').collect();
                    let [name, _, _, host, port] = words[..] else {
                        continue;
                    };
                    let (true, Ok(port)) = (name == master_name, port.parse::<u16>()) else {
                        continue;
                    };
                    let Some(followed) = followed.upgrade() else {
                        return;
                    };
                    followed.after_announcement(host, port).await;
                }
            }
            Ok(Err(e)) => {
                tracing::debug!("cannot listen to sentinel {sentinel} for failovers: {e}")
            }
            Err(_) => tracing::debug!("sentinel {sentinel} did not answer a SUBSCRIBE"),
        }
        if followed.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(backoff.advance()).await;
    }
}

/// True when `error` may mean that the master is no longer where we talk to: the
/// connection broke or timed out, or the node says it is a replica now.
fn master_may_have_moved(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_timeout()
        || matches!(error.code(), Some("READONLY" | "MASTERDOWN" | "NOREPLICAS"))
        || error.to_string().contains("READONLY")
}

/// The settings every node connection uses.
fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(2)
}

/// Asks the sentinels for the master (its `ROLE` checked): its `host:port` and a
/// client for it.
async fn master_of(client: &mut SentinelClient) -> RedisResult<(String, Client)> {
    let master = client.async_get_client().await?;
    Ok((address_of(master.get_connection_info().addr()), master))
}

/// `host:port` of an address, for logs and comparisons.
fn address_of(addr: &ConnectionAddr) -> String {
    match addr {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            format!("{host}:{port}")
        }
        other => format!("{other:?}"),
    }
}

/// The TLS part of a target: certificates to hand to the redis crate, and whether
/// nothing is checked.
#[derive(Clone)]
struct Tls {
    /// `None`: the platform's roots, no client certificate.
    certificates: Option<TlsCertificates>,
    insecure: bool,
}

/// Reads the target's TLS files and installs the crypto provider (on a TLS target).
fn tls_of(target: &RedisTarget) -> Result<Option<Tls>, RedisError> {
    if !target.tls() {
        return Ok(None);
    }
    install_crypto_provider();
    let files = target.tls_files().map_err(|e| {
        RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "TLS files",
            e.to_string(),
        ))
    })?;
    let certificates = (files.ca.is_some() || files.client.is_some()).then(|| TlsCertificates {
        client_tls: files
            .client
            .map(|(client_cert, client_key)| redis::ClientTlsConfig {
                client_cert,
                client_key,
            }),
        root_cert: files.ca,
    });
    let insecure = target.insecure();
    if insecure {
        tracing::warn!(
            "TLS to {} does not check the server's certificate (redis.insecure = true): \
             anyone on the path can read and change the traffic; use redis.ca_file instead",
            target.redacted()
        );
    }
    Ok(Some(Tls {
        certificates,
        insecure,
    }))
}

/// Installs *ring* as the process-wide rustls crypto provider, which the redis crate's
/// rustls needs before its first TLS connection (a no-op once one is installed; the
/// worker's HTTP clients install the same one).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client for the node at `url` with the target's TLS.
fn node_client(url: &str, tls: Option<&Tls>) -> RedisResult<Client> {
    client_for(url.into_connection_info()?, tls)
}

/// A client for `info` with the target's TLS.
fn client_for(info: redis::ConnectionInfo, tls: Option<&Tls>) -> RedisResult<Client> {
    let Some(tls) = tls else {
        return Client::open(info);
    };
    let info = match info.addr().clone() {
        ConnectionAddr::TcpTls { host, port, .. } | ConnectionAddr::Tcp(host, port) => info
            .set_addr(ConnectionAddr::TcpTls {
                host,
                port,
                insecure: tls.insecure,
                tls_params: None,
            }),
        _ => info,
    };
    match &tls.certificates {
        Some(certificates) => Client::build_with_tls(info, certificates.clone()),
        None => Client::open(info),
    }
}

/// The sentinels' client of a Sentinel target: TLS, credentials and database for the
/// master from `node_url`, TLS for the sentinels too.
fn sentinel_client(
    sentinels: &[String],
    master_name: &str,
    node_url: &str,
    tls: Option<&Tls>,
) -> RedisResult<SentinelClient> {
    let addresses = sentinels
        .iter()
        .map(|s| Ok(s.as_str().into_connection_info()?.addr().clone()))
        .collect::<RedisResult<Vec<ConnectionAddr>>>()?;
    let node = node_url.into_connection_info()?;
    let settings = node.redis_settings();
    let mut builder =
        SentinelClientBuilder::new(addresses, master_name, SentinelServerType::Master)?
            .set_client_to_redis_db(settings.db())
            .set_client_to_redis_protocol(settings.protocol());
    if let Some(user) = settings.username() {
        builder = builder.set_client_to_redis_username(user);
    }
    if let Some(password) = settings.password() {
        builder = builder.set_client_to_redis_password(password);
    }
    if let Some(tls) = tls {
        let mode = if tls.insecure {
            TlsMode::Insecure
        } else {
            TlsMode::Secure
        };
        builder = builder
            .set_client_to_redis_tls_mode(mode)
            .set_client_to_sentinel_tls_mode(mode);
        if let Some(certificates) = &tls.certificates {
            builder = builder
                .set_client_to_redis_certificates(certificates.clone())
                .set_client_to_sentinel_certificates(certificates.clone());
        }
    }
    builder.build()
}

/// What to do about a Redis that does not answer (not said of a TLS refusal, which
/// says what to set instead).
pub const UNREACHABLE_HINT: &str = "(start redis-server, run scripts/dev-up, or set REDIS_URL)";

/// Connects to `target` with a deadline, with an error that names it (and, for a TLS
/// handshake that failed, what to change: [`tls_problem`]).
pub async fn connect_to(target: &RedisTarget) -> Result<Conn, QueueError> {
    let unreachable = |message: String| QueueError::Unreachable {
        url: target.redacted(),
        message,
    };
    let connecting = async {
        let tls = tls_of(target)?;
        match &target.topology {
            Topology::Node { url } => {
                let client = node_client(url, tls.as_ref())?;
                let conn = client
                    .get_connection_manager_with_config(manager_config())
                    .await?;
                Ok(Conn {
                    inner: Inner::Node(conn),
                })
            }
            Topology::Cluster { nodes } => {
                let mut builder = redis::cluster::ClusterClient::builder(nodes.clone())
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(RESPONSE_TIMEOUT);
                if let Some(tls) = &tls {
                    builder = builder.tls(if tls.insecure {
                        TlsMode::Insecure
                    } else {
                        TlsMode::Secure
                    });
                    if let Some(certificates) = &tls.certificates {
                        builder = builder.certs(certificates.clone());
                    }
                }
                let conn = builder.build()?.get_async_connection().await?;
                Ok(Conn {
                    inner: Inner::Cluster(conn),
                })
            }
            Topology::Sentinel {
                sentinels,
                master_name,
                node_url,
            } => {
                let mut client = sentinel_client(sentinels, master_name, node_url, tls.as_ref())?;
                let (address, master) = master_of(&mut client).await?;
                let conn = master
                    .get_connection_manager_with_config(manager_config())
                    .await?;
                tracing::debug!(target = %target.redacted(), "the sentinels name {address} as the master");
                let followed = Arc::new(Followed {
                    watcher: std::sync::OnceLock::new(),
                    current: StdMutex::new(Current {
                        generation: 0,
                        address,
                        conn,
                    }),
                    lookup: tokio::sync::Mutex::new(Lookup { client, last: None }),
                    target: target.redacted(),
                    master_info: node_url.as_str().into_connection_info()?,
                    tls: tls.clone(),
                });
                let watcher = tokio::spawn(watch_announcements(
                    Arc::downgrade(&followed),
                    sentinels.clone(),
                    master_name.clone(),
                    tls,
                ));
                let _ = followed.watcher.set(watcher.abort_handle());
                Ok::<_, RedisError>(Conn {
                    inner: Inner::Sentinel(followed),
                })
            }
        }
    };
    match tokio::time::timeout(CONNECT_TIMEOUT * 2, connecting).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) if tls_problem(&e).is_some() => Err(unreachable(explain(&e))),
        Ok(Err(e)) => Err(unreachable(format!("{} {UNREACHABLE_HINT}", explain(&e)))),
        Err(_) => Err(unreachable(format!(
            "no answer within {}s {UNREACHABLE_HINT}",
            CONNECT_TIMEOUT.as_secs() * 2
        ))),
    }
}

/// A client for pub/sub on `target`: the node itself, the current master, or one
/// reachable cluster node (a cluster forwards every PUBLISH to all its nodes); with
/// the target's TLS.
pub async fn pubsub_client(target: &RedisTarget) -> Result<redis::Client, redis::RedisError> {
    let tls = tls_of(target)?;
    match &target.topology {
        Topology::Node { url } => node_client(url, tls.as_ref()),
        Topology::Cluster { nodes } => {
            let mut last = None;
            for node in nodes {
                let client = node_client(node, tls.as_ref())?;
                match client.get_multiplexed_async_connection().await {
                    Ok(_) => return Ok(client),
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or_else(|| {
                redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "no cluster nodes"))
            }))
        }
        Topology::Sentinel {
            sentinels,
            master_name,
            node_url,
        } => {
            sentinel_client(sentinels, master_name, node_url, tls.as_ref())?
                .async_get_client()
                .await
        }
    }
}

/// `error` as a message: what [`tls_problem`] says about it first, when it is a TLS
/// failure.
fn explain(error: &RedisError) -> String {
    match tls_problem(error) {
        Some(problem) => format!("{problem} ({error})"),
        None => error.to_string(),
    }
}

/// When `error` is a failed TLS handshake, what went wrong in plain words and which
/// setting changes it.
pub fn tls_problem(error: &RedisError) -> Option<String> {
    use rustls::{AlertDescription, CertificateError};
    let rustls_error = rustls_error_in(error)?;
    Some(match rustls_error {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "the server's TLS certificate is not trusted (unknown issuer): set redis.ca_file \
             to the CA that signed it"
                .to_string()
        }
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => "the server's TLS certificate does not name the host in redis_url: connect by \
              a name (or IP) the certificate lists"
            .to_string(),
        rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => "the server's TLS certificate has expired".to_string(),
        rustls::Error::InvalidCertificate(other) => {
            format!("the server's TLS certificate was refused ({other:?})")
        }
        rustls::Error::AlertReceived(AlertDescription::CertificateRequired) => {
            "the server requires a TLS client certificate: set redis.cert_file and \
             redis.key_file"
                .to_string()
        }
        rustls::Error::AlertReceived(
            alert @ (AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::HandshakeFailure),
        ) => format!(
            "the server refused the TLS handshake ({alert:?}): it may not accept our client \
             certificate (redis.cert_file) or may require one"
        ),
        rustls::Error::InvalidMessage(_) => {
            "the server did not answer in TLS: is this its tls-port? (rediss:// needs one; \
             redis:// is for a plain port)"
                .to_string()
        }
        other => format!("the TLS handshake failed ({other})"),
    })
}

/// The rustls error somewhere in `error`'s chain (the redis crate keeps it inside an
/// `io::Error` inside an `Arc`).
fn rustls_error_in(error: &RedisError) -> Option<&rustls::Error> {
    fn inside<'e>(error: &'e (dyn std::error::Error + 'static)) -> Option<&'e rustls::Error> {
        if let Some(found) = error.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            if let Some(found) = io.get_ref().and_then(|e| inside(e)) {
                return Some(found);
            }
        }
        if let Some(arc) = error.downcast_ref::<Arc<dyn std::error::Error + Send + Sync>>() {
            let inner: &(dyn std::error::Error + 'static) = &**arc;
            if let Some(found) = inside(inner) {
                return Some(found);
            }
        }
        error.source().and_then(inside)
    }
    inside(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrapped(error: rustls::Error) -> RedisError {
        RedisError::from(std::io::Error::new(std::io::ErrorKind::InvalidData, error))
    }

    #[test]
    fn tls_failures_inside_redis_errors_are_named_in_plain_words() {
        let unknown = wrapped(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ));
        let said = tls_problem(&unknown).expect("a TLS problem");
        assert!(said.contains("not trusted (unknown issuer)"), "{said}");
        assert!(said.contains("redis.ca_file"), "{said}");

        let required = wrapped(rustls::Error::AlertReceived(
            rustls::AlertDescription::CertificateRequired,
        ));
        let said = tls_problem(&required).expect("a TLS problem");
        assert!(said.contains("redis.cert_file"), "{said}");

        let plain = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(tls_problem(&plain), None);
        assert!(master_may_have_moved(&plain));
    }
}
