//! `[redis]` and the shapes of `redis_url`: which Redis to use and how (one node, a
//! master found through Sentinel, or a Cluster), over TLS or not, in how many
//! partitions, waiting for how many replicas. Plain data and its validation: the
//! connection itself is `queue::conn`.
//!
//! ```toml
//! redis_url = "rediss://cache.example.com:6380"   # one node (TLS: rediss)
//! # redis_url = "redis+sentinel://s1:26379,s2:26379,s3:26379/mymaster"   # Sentinel
//! # redis_url = "redis+cluster://n1:7000,n2:7000,n3:7000"                 # Cluster
//!
//! [redis]
//! ca_file = "ca.pem"        # trust this CA (PEM) instead of the platform's roots
//! cert_file = "client.pem"  # mTLS: our certificate (PEM) ...
//! key_file = "client.key"   # ... and its key (PEM)
//! insecure = false          # true: accept any certificate (tests only; logged loudly)
//! partitions = 16           # a namespace's queues in this many hash tags (default 1,
//!                           # 16 on a cluster); fixed once jobs exist (kept in Redis)
//! wait_replicas = 0         # >0: a submit or an outcome is answered only once this
//!                           # many replicas have it (WAIT), up to wait_timeout
//! wait_timeout = "1s"
//! ```
//!
//! `redis+sentinel://` and `redis+cluster://` (and `rediss+...` for TLS) take a comma
//! list of `host:port`, with `user:password@` before it as in `redis://`; Sentinel's URL
//! ends in `/MASTER_NAME` and may add `/DB`. The same can be given as `[redis]
//! sentinels = ["h:p", ...]` with `master_name`, or `cluster_nodes = ["h:p", ...]`, next
//! to a plain `redis_url` that then gives the scheme, credentials and database.
//!
//! TLS: `rediss` (any of the three forms) trusts the platform's root certificates, or
//! only `ca_file` when it is set; `cert_file` + `key_file` add a client certificate
//! (mTLS). Relative paths are relative to the config file's directory
//! ([`RedisSettings::resolve_paths`]). The files are read and parsed when the
//! configuration is checked ([`RedisTarget::tls_files`]): a missing or malformed one is
//! an error naming its key and path, never a surprise at connect time. `insecure = true`
//! is the only way to skip the server certificate's check (a `#insecure` URL fragment is
//! refused), and the connection logs a warning each time it is used.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::redis_url::redacted;
use super::ConfigError;

/// The most partitions a namespace may have.
pub const MAX_PARTITIONS: u16 = 256;

/// Most sentinels or cluster seeds a target may list.
pub const MAX_HOSTS: usize = 64;

/// Partitions on a cluster when `[redis] partitions` is not set.
pub const CLUSTER_PARTITIONS: u16 = 16;

/// The `[redis]` section; see the module doc.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// A CA certificate (PEM) to trust instead of the platform's roots (TLS only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Our client certificate (PEM), for servers that ask for one (mTLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// The key of `cert_file` (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Accept any server certificate. For tests against self-signed servers only.
    #[serde(default)]
    pub insecure: bool,
    /// Sentinels (`host:port`), with `master_name`: the master is asked of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sentinels: Vec<String>,
    /// The name the sentinels know the master by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_name: Option<String>,
    /// Seed nodes of a Redis Cluster (`host:port`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cluster_nodes: Vec<String>,
    /// How many hash tags a namespace's queues are spread over (default 1; 16 on a
    /// cluster). Kept in Redis by the first process: a process configured otherwise is
    /// refused, since jobs would wait in partitions nobody reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<u16>,
    /// Replicas that must have a submit or an outcome before it is acknowledged.
    #[serde(default)]
    pub wait_replicas: u32,
    /// How long to wait for them (default 1 s); fewer by then is an error for a
    /// submit and a warning for an outcome (it is stored on the master).
    #[serde(default = "default_wait_timeout", with = "crate::duration")]
    pub wait_timeout: Duration,
}

impl RedisSettings {
    /// Makes `ca_file`, `cert_file` and `key_file` absolute against `dir` (the config
    /// file's directory) when they are relative, as `mcp_servers_file` is.
    pub fn resolve_paths(&mut self, dir: &Path) {
        for file in [&mut self.ca_file, &mut self.cert_file, &mut self.key_file]
            .into_iter()
            .flatten()
        {
            if file.is_relative() {
                *file = dir.join(&*file);
            }
        }
    }
}

/// The TLS files of `[redis]`, read and checked: what a connection hands to rustls.
#[derive(Clone, Default)]
pub struct TlsFiles {
    /// `ca_file`'s PEM (one or more certificates): the only roots trusted when set.
    pub ca: Option<Vec<u8>>,
    /// `cert_file`'s PEM and `key_file`'s PEM (mTLS).
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is a secret: say only whether each part is there.
        f.debug_struct("TlsFiles")
            .field("ca", &self.ca.as_ref().map(|_| "<pem>"))
            .field(
                "client",
                &self.client.as_ref().map(|_| "<pem, key redacted>"),
            )
            .finish()
    }
}

/// Reads `path` (the value of `redis.KEY`), an error naming both when it cannot.
fn read_pem(key: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| ConfigError::Invalid {
        key: format!("redis.{key}"),
        message: format!("cannot read {}: {e}", path.display()),
    })
}

/// Checks that `pem` (from `redis.KEY` = `path`) holds at least one certificate, each
/// well-formed; `anchors`: each must also be usable as a trust anchor (a CA file).
fn check_certificates(
    key: &str,
    path: &Path,
    pem: &[u8],
    anchors: bool,
) -> Result<(), ConfigError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let invalid = |message: String| ConfigError::Invalid {
        key: format!("redis.{key}"),
        message: format!("{}: {message}", path.display()),
    };
    let mut roots = rustls::RootCertStore::empty();
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| invalid(format!("not a PEM certificate: {e}")))?;
        if anchors {
            roots
                .add(cert)
                .map_err(|e| invalid(format!("not a usable CA certificate: {e}")))?;
        }
        count += 1;
    }
    if count == 0 {
        return Err(invalid(
            "holds no certificate (a PEM file with -----BEGIN CERTIFICATE----- is expected)".into(),
        ));
    }
    Ok(())
}

fn default_wait_timeout() -> Duration {
    Duration::from_secs(1)
}

impl Default for RedisSettings {
    fn default() -> Self {
        RedisSettings {
            ca_file: None,
            cert_file: None,
            key_file: None,
            insecure: false,
            sentinels: Vec::new(),
            master_name: None,
            cluster_nodes: Vec::new(),
            partitions: None,
            wait_replicas: 0,
            wait_timeout: default_wait_timeout(),
        }
    }
}

/// How the nodes are arranged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topology {
    /// One node (`redis://` or `rediss://` URL, with credentials and database).
    Node {
        /// Its URL.
        url: String,
    },
    /// A master found through sentinels.
    Sentinel {
        /// The sentinels, as `redis://host:port` (or `rediss://`) URLs without
        /// credentials.
        sentinels: Vec<String>,
        /// The master's name.
        master_name: String,
        /// A URL carrying the scheme, credentials and database for the master (its host
        /// is a placeholder).
        node_url: String,
    },
    /// A Redis Cluster, from seed nodes.
    Cluster {
        /// The seeds, as `redis://[user:pass@]host:port` (or `rediss://`) URLs.
        nodes: Vec<String>,
    },
}

/// Everything needed to connect: the topology and the `[redis]` options.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisTarget {
    /// The nodes.
    pub topology: Topology,
    /// TLS files and options.
    pub settings: RedisSettings,
}

impl RedisTarget {
    /// The target `url` names with default options (tests, benches).
    pub fn from_url(url: &str) -> Result<RedisTarget, ConfigError> {
        RedisTarget::new(url, &RedisSettings::default())
    }

    /// The target of `url` (already carrying its password) with `settings`.
    pub fn new(url: &str, settings: &RedisSettings) -> Result<RedisTarget, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            key: "redis_url".into(),
            message,
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| invalid(format!("{} is not a URL", redacted(url))))?;
        let (base, mode) = match scheme {
            "redis" | "rediss" => (scheme, None),
            "redis+sentinel" | "rediss+sentinel" => (&scheme[..scheme.len() - 9], Some("sentinel")),
            "redis+cluster" | "rediss+cluster" => (&scheme[..scheme.len() - 8], Some("cluster")),
            other => {
                return Err(invalid(format!(
                    "scheme `{other}` is not one of redis, rediss, redis+sentinel, \
                     rediss+sentinel, redis+cluster, rediss+cluster"
                )))
            }
        };
        if rest.contains("#insecure") {
            return Err(invalid(
                "a #insecure fragment is not honoured: set [redis] insecure = true to accept \
                 any server certificate (tests only)"
                    .into(),
            ));
        }
        if mode.is_some()
            && rest
                .rsplit_once('@')
                .is_some_and(|(userinfo, _)| userinfo.contains(['/', '?', '#']))
        {
            return Err(invalid(
                "a password with `/`, `?` or `#` must be percent-encoded in redis_url".into(),
            ));
        }
        let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(host_end);
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((u, h)) => (format!("{u}@"), h),
            None => (String::new(), authority),
        };
        let hosts: Vec<String> = hosts
            .split(',')
            .filter(|h| !h.is_empty())
            .map(str::to_string)
            .collect();
        let topology =
            match mode {
                None if !settings.sentinels.is_empty() => {
                    let master_name = settings.master_name.clone().ok_or_else(|| {
                        ConfigError::Invalid {
                        key: "redis.master_name".into(),
                        message:
                            "set it with redis.sentinels: the name the sentinels know the master by"
                                .into(),
                    }
                    })?;
                    Topology::Sentinel {
                        sentinels: settings
                            .sentinels
                            .iter()
                            .map(|h| format!("{base}://{h}"))
                            .collect(),
                        master_name,
                        node_url: url.to_string(),
                    }
                }
                None if !settings.cluster_nodes.is_empty() => Topology::Cluster {
                    nodes: settings
                        .cluster_nodes
                        .iter()
                        .map(|h| format!("{base}://{userinfo}{h}"))
                        .collect(),
                },
                None => Topology::Node {
                    url: url.to_string(),
                },
                Some(_) if hosts.is_empty() => {
                    return Err(invalid(format!("{} names no host", redacted(url))))
                }
                Some("sentinel") => {
                    let mut path = tail.trim_start_matches('/').split('/');
                    let master_name = path.next().unwrap_or("").to_string();
                    if master_name.is_empty() {
                        return Err(invalid(format!(
                            "{} names no master: end it with /MASTER_NAME (and /DB if not 0)",
                            redacted(url)
                        )));
                    }
                    let db = path.next().unwrap_or("0");
                    if db.parse::<u16>().is_err() {
                        return Err(invalid(format!("database `{db}` is not a number")));
                    }
                    Topology::Sentinel {
                        sentinels: hosts.iter().map(|h| format!("{base}://{h}")).collect(),
                        master_name,
                        node_url: format!("{base}://{userinfo}sentinel-master/{db}"),
                    }
                }
                Some(_) => {
                    if !tail.trim_start_matches('/').is_empty() && tail != "/0" {
                        return Err(invalid(
                            "a cluster has only database 0: drop the path from the URL".into(),
                        ));
                    }
                    Topology::Cluster {
                        nodes: hosts
                            .iter()
                            .map(|h| format!("{base}://{userinfo}{h}"))
                            .collect(),
                    }
                }
            };
        let target = RedisTarget {
            topology,
            settings: settings.clone(),
        };
        target.validate()?;
        Ok(target)
    }

    /// True when the nodes are spoken to over TLS.
    pub fn tls(&self) -> bool {
        let first = match &self.topology {
            Topology::Node { url } => url,
            Topology::Sentinel { node_url, .. } => node_url,
            Topology::Cluster { nodes } => nodes.first().map(String::as_str).unwrap_or(""),
        };
        first.starts_with("rediss://")
    }

    /// True when `[redis] insecure = true` on a TLS target: no server certificate is
    /// checked (the connection logs a warning).
    pub fn insecure(&self) -> bool {
        self.tls() && self.settings.insecure
    }

    /// The TLS files of `[redis]`, read and parsed (none on a plain target); the error
    /// names the key and the file at fault.
    pub fn tls_files(&self) -> Result<TlsFiles, ConfigError> {
        let s = &self.settings;
        if !self.tls() {
            return Ok(TlsFiles::default());
        }
        let ca = match &s.ca_file {
            Some(path) => {
                let pem = read_pem("ca_file", path)?;
                check_certificates("ca_file", path, &pem, true)?;
                Some(pem)
            }
            None => None,
        };
        let client = match (&s.cert_file, &s.key_file) {
            (Some(cert_path), Some(key_path)) => {
                let cert = read_pem("cert_file", cert_path)?;
                check_certificates("cert_file", cert_path, &cert, false)?;
                let key = read_pem("key_file", key_path)?;
                {
                    use rustls::pki_types::pem::PemObject;
                    rustls::pki_types::PrivateKeyDer::from_pem_slice(&key).map_err(|e| {
                        ConfigError::Invalid {
                            key: "redis.key_file".into(),
                            message: format!(
                                "{}: not a PEM private key (PKCS#8, PKCS#1 or SEC1): {e}",
                                key_path.display()
                            ),
                        }
                    })?;
                }
                Some((cert, key))
            }
            _ => None,
        };
        Ok(TlsFiles { ca, client })
    }

    /// The partitions wanted: `[redis] partitions`, else 16 on a cluster, 1 otherwise.
    pub fn partitions(&self) -> u16 {
        self.settings.partitions.unwrap_or(match self.topology {
            Topology::Cluster { .. } => CLUSTER_PARTITIONS,
            _ => 1,
        })
    }

    /// The target for messages: no passwords.
    pub fn redacted(&self) -> String {
        match &self.topology {
            Topology::Node { url } => redacted(url),
            Topology::Sentinel {
                sentinels,
                master_name,
                ..
            } => format!("sentinels {} (master {master_name})", sentinels.join(",")),
            Topology::Cluster { nodes } => format!(
                "cluster {}",
                nodes
                    .iter()
                    .map(|n| redacted(n))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: format!("redis.{key}"),
            message,
        };
        let s = &self.settings;
        if let Some(p) = s.partitions {
            if p == 0 || p > MAX_PARTITIONS {
                return Err(invalid(
                    "partitions",
                    format!("{p} is not between 1 and {MAX_PARTITIONS}"),
                ));
            }
        }
        if s.cert_file.is_some() != s.key_file.is_some() {
            return Err(invalid(
                "cert_file",
                "give cert_file and key_file together (mTLS needs both)".into(),
            ));
        }
        let tls_options = s.ca_file.is_some() || s.cert_file.is_some() || s.insecure;
        if tls_options && !self.tls() {
            return Err(invalid(
                "ca_file",
                "TLS options are set but redis_url is not rediss:// (or rediss+sentinel://, rediss+cluster://)".into(),
            ));
        }
        if s.insecure && s.ca_file.is_some() {
            return Err(invalid(
                "insecure",
                "give ca_file (check the server against that CA) or insecure = true \
                 (check nothing), not both"
                    .into(),
            ));
        }
        if s.insecure && s.cert_file.is_some() {
            // Insecure connections made through Sentinel would not send the certificate.
            return Err(invalid(
                "insecure",
                "give cert_file/key_file (mTLS) or insecure = true, not both".into(),
            ));
        }
        self.tls_files()?;
        let hosts = match &self.topology {
            Topology::Node { .. } => 1,
            Topology::Sentinel { sentinels, .. } => sentinels.len(),
            Topology::Cluster { nodes } => nodes.len(),
        };
        if hosts > MAX_HOSTS {
            return Err(invalid(
                "sentinels",
                format!("{hosts} hosts: at most {MAX_HOSTS} sentinels or cluster seeds"),
            ));
        }
        let bad_host = |h: &String| h.contains(['@', '/', '?', '#']);
        if s.sentinels.iter().chain(&s.cluster_nodes).any(bad_host) {
            return Err(invalid(
                "sentinels",
                "hosts are host:port only (credentials and TLS come from redis_url)".into(),
            ));
        }
        if s.wait_replicas > 16 {
            return Err(invalid(
                "wait_replicas",
                format!(
                    "{} is more replicas than makes sense (at most 16)",
                    s.wait_replicas
                ),
            ));
        }
        // A WAIT holds the connection it is sent on: kept well under the response
        // deadline and a lease's renewal.
        if s.wait_timeout < Duration::from_millis(10) || s.wait_timeout > Duration::from_secs(5) {
            return Err(invalid(
                "wait_timeout",
                "must be between 10ms and 5s".into(),
            ));
        }
        if !s.sentinels.is_empty() && !s.cluster_nodes.is_empty() {
            return Err(invalid(
                "sentinels",
                "give sentinels or cluster_nodes, not both".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_urls_are_one_node() {
        let t = RedisTarget::from_url("redis://127.0.0.1:6379/2").expect("valid");
        assert_eq!(
            t.topology,
            Topology::Node {
                url: "redis://127.0.0.1:6379/2".into()
            }
        );
        assert_eq!(t.partitions(), 1);
        assert!(!t.tls());
        assert!(RedisTarget::from_url("rediss://h:6380")
            .expect("valid")
            .tls());
    }

    #[test]
    fn cluster_urls_list_their_seeds_with_credentials() {
        let t = RedisTarget::from_url("rediss+cluster://u:p@a:7000,b:7001").expect("valid");
        assert_eq!(
            t.topology,
            Topology::Cluster {
                nodes: vec!["rediss://u:p@a:7000".into(), "rediss://u:p@b:7001".into()]
            }
        );
        assert_eq!(t.partitions(), CLUSTER_PARTITIONS);
        assert!(t.tls());
        assert!(t.redacted().contains("***@a:7000"), "{}", t.redacted());
        assert!(RedisTarget::from_url("redis+cluster://a:1/3").is_err());
        assert!(RedisTarget::from_url("redis+cluster://").is_err());
    }

    #[test]
    fn sentinel_urls_name_the_master() {
        let t = RedisTarget::from_url("redis+sentinel://:pw@s1:26379,s2:26379/mymaster/3")
            .expect("valid");
        assert_eq!(
            t.topology,
            Topology::Sentinel {
                sentinels: vec!["redis://s1:26379".into(), "redis://s2:26379".into()],
                master_name: "mymaster".into(),
                node_url: "redis://:pw@sentinel-master/3".into(),
            }
        );
        let err = RedisTarget::from_url("redis+sentinel://s1:26379").expect_err("refused");
        assert!(err.to_string().contains("MASTER_NAME"), "{err}");
        assert!(RedisTarget::from_url("redis+sentinel://s1:1/m/x").is_err());
    }

    #[test]
    fn settings_can_name_sentinels_and_seeds() {
        let settings = RedisSettings {
            sentinels: vec!["s1:26379".into()],
            master_name: Some("m".into()),
            ..RedisSettings::default()
        };
        let t = RedisTarget::new("redis://:pw@ignored:1/0", &settings).expect("valid");
        assert!(matches!(t.topology, Topology::Sentinel { .. }));
        let settings = RedisSettings {
            sentinels: vec!["s1:26379".into()],
            ..RedisSettings::default()
        };
        assert!(RedisTarget::new("redis://h", &settings).is_err());
        let settings = RedisSettings {
            cluster_nodes: vec!["a:7000".into()],
            ..RedisSettings::default()
        };
        let t = RedisTarget::new("redis://:pw@h", &settings).expect("valid");
        assert_eq!(
            t.topology,
            Topology::Cluster {
                nodes: vec!["redis://:pw@a:7000".into()]
            }
        );
    }

    #[test]
    fn bad_options_are_named() {
        for (settings, key) in [
            (
                RedisSettings {
                    partitions: Some(0),
                    ..RedisSettings::default()
                },
                "redis.partitions",
            ),
            (
                RedisSettings {
                    ca_file: Some("ca.pem".into()),
                    ..RedisSettings::default()
                },
                "redis.ca_file",
            ),
            (
                RedisSettings {
                    cert_file: Some("c.pem".into()),
                    ..RedisSettings::default()
                },
                "redis.cert_file",
            ),
        ] {
            let err = RedisTarget::new("redis://h", &settings).expect_err("refused");
            assert!(err.to_string().contains(key), "{err}");
        }
        assert!(RedisTarget::from_url("http://h").is_err());
        // An unencoded `/` in a password would split it into host and master name.
        let err = RedisTarget::from_url("redis+sentinel://:pa/ss@s1:26379/m").expect_err("refused");
        assert!(!err.to_string().contains("pa/ss"), "{err}");
        let many = format!("redis+cluster://{}", vec!["h:1"; 65].join(","));
        assert!(RedisTarget::from_url(&many).is_err());
    }

    #[test]
    fn tls_paths_resolve_against_the_config_dir_and_contradictions_are_refused() {
        let mut settings = RedisSettings {
            ca_file: Some("ca.pem".into()),
            cert_file: Some("/abs/client.pem".into()),
            key_file: Some("sub/client.key".into()),
            ..RedisSettings::default()
        };
        settings.resolve_paths(Path::new("/etc/mcpq"));
        assert_eq!(settings.ca_file, Some(PathBuf::from("/etc/mcpq/ca.pem")));
        assert_eq!(settings.cert_file, Some(PathBuf::from("/abs/client.pem")));
        assert_eq!(
            settings.key_file,
            Some(PathBuf::from("/etc/mcpq/sub/client.key"))
        );

        let both = RedisSettings {
            ca_file: Some("/nonexistent/ca.pem".into()),
            insecure: true,
            ..RedisSettings::default()
        };
        let err = RedisTarget::new("rediss://h", &both).expect_err("refused");
        assert!(err.to_string().contains("redis.insecure"), "{err}");

        let err = RedisTarget::from_url("rediss://h:6380/#insecure").expect_err("refused");
        assert!(err.to_string().contains("insecure = true"), "{err}");

        let missing = RedisSettings {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..RedisSettings::default()
        };
        let err = RedisTarget::new("rediss://h", &missing).expect_err("refused");
        let text = err.to_string();
        assert!(
            text.contains("redis.ca_file") && text.contains("/nonexistent/ca.pem"),
            "{text}"
        );

        let insecure = RedisSettings {
            insecure: true,
            ..RedisSettings::default()
        };
        let t = RedisTarget::new("rediss://h", &insecure).expect("valid");
        assert!(t.insecure());
        let files = t.tls_files().expect("no files");
        assert!(files.ca.is_none() && files.client.is_none());
    }
}
