//! A connection to Redis, whatever its shape: one node, the master that sentinels
//! name, or a Redis Cluster. [`Conn`] is what every queue operation takes; it is cheap
//! to clone (all clones share one multiplexed connection per node) and reconnects by
//! itself.
//!
//! Guarantees: the first connection has a deadline ([`CONNECT_TIMEOUT`]) and its error
//! names the target (never its password); every command has a response deadline
//! (30 s); on a cluster, commands go to the node of their first key, and every script
//! is given its partition's prefix as `KEYS[1]` (`scripts.rs`) so that it runs where
//! its keys are.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use super::QueueError;
use crate::config::redis_target::{RedisTarget, Topology};

/// How long a first connection to Redis may take before we say it is unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one command may wait for its answer.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection to the target's Redis (see the module doc).
#[derive(Clone)]
pub struct Conn {
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    /// One node (also the master found through Sentinel).
    Node(ConnectionManager),
    /// A cluster: routes by key, follows MOVED and failovers.
    Cluster(ClusterConnection),
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
        }
    }

    fn get_db(&self) -> i64 {
        match &self.inner {
            Inner::Node(c) => c.get_db(),
            Inner::Cluster(c) => c.get_db(),
        }
    }
}

/// Connects to `target` with a deadline, with an error that names it.
pub async fn connect_to(target: &RedisTarget) -> Result<Conn, QueueError> {
    let unreachable = |message: String| QueueError::Unreachable {
        url: target.redacted(),
        message,
    };
    let connecting = async {
        match &target.topology {
            Topology::Node { url } => {
                let client = redis::Client::open(url.as_str())?;
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT))
                    .set_number_of_retries(2);
                let conn = client.get_connection_manager_with_config(config).await?;
                Ok(Conn {
                    inner: Inner::Node(conn),
                })
            }
            Topology::Cluster { nodes } => {
                let client = redis::cluster::ClusterClient::builder(nodes.clone())
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(RESPONSE_TIMEOUT)
                    .build()?;
                let conn = client.get_async_connection().await?;
                Ok(Conn {
                    inner: Inner::Cluster(conn),
                })
            }
            Topology::Sentinel {
                sentinels,
                master_name,
                node_url,
            } => {
                let node = redis::IntoConnectionInfo::into_connection_info(node_url.as_str())?;
                let mut client = redis::sentinel::SentinelClient::build(
                    sentinels.clone(),
                    master_name.clone(),
                    Some(
                        redis::sentinel::SentinelNodeConnectionInfo::default()
                            .set_redis_connection_info(node.redis_settings().clone()),
                    ),
                    redis::sentinel::SentinelServerType::Master,
                )?;
                let master = client.async_get_client().await?;
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT))
                    .set_number_of_retries(2);
                let conn = master.get_connection_manager_with_config(config).await?;
                Ok::<_, redis::RedisError>(Conn {
                    inner: Inner::Node(conn),
                })
            }
        }
    };
    match tokio::time::timeout(CONNECT_TIMEOUT * 2, connecting).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(unreachable(e.to_string())),
        Err(_) => Err(unreachable(format!(
            "no answer within {}s",
            CONNECT_TIMEOUT.as_secs() * 2
        ))),
    }
}

/// A client for pub/sub on `target`: the node itself, the current master, or one
/// reachable cluster node (a cluster forwards every PUBLISH to all its nodes).
pub async fn pubsub_client(target: &RedisTarget) -> Result<redis::Client, redis::RedisError> {
    match &target.topology {
        Topology::Node { url } => redis::Client::open(url.as_str()),
        Topology::Cluster { nodes } => {
            let mut last = None;
            for node in nodes {
                let client = redis::Client::open(node.as_str())?;
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
            let node = redis::IntoConnectionInfo::into_connection_info(node_url.as_str())?;
            let mut client = redis::sentinel::SentinelClient::build(
                sentinels.clone(),
                master_name.clone(),
                Some(
                    redis::sentinel::SentinelNodeConnectionInfo::default()
                        .set_redis_connection_info(node.redis_settings().clone()),
                ),
                redis::sentinel::SentinelServerType::Master,
            )?;
            client.async_get_client().await
        }
    }
}
