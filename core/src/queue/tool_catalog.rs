//! The tool listings of the servers the MCP front exposes (`[serve.mcp] expose`).
//!
//! Workers run the servers; `mcpq serve` runs none (unless `--with-worker`), so what a
//! server offers reaches the front through Redis: a worker with a warm session of an
//! exposed server writes the server's `tools/list` answer into the hash
//! [`Keys::tool_catalog`] (one field per server) and, when it differs from what was
//! there, publishes the server's name on [`Keys::tools_changed_channel`], which the
//! front turns into `notifications/tools/list_changed` for its clients.
//!
//! Guarantees: a listing is bounded ([`MAX_LISTING_BYTES`], [`MAX_TOOLS`]) when written
//! and again when read (an entry someone else wrote is hostile); an unreadable entry
//! reads as no listing, never as an error for the whole catalog. Entries are kept
//! [`LISTING_TTL`] after the last worker refreshed any of them.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::queue::Conn;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Keys, QueueError};

/// The largest listing of one server, in bytes of JSON.
pub const MAX_LISTING_BYTES: usize = 4 << 20;
/// The most tools one server's listing may hold.
pub const MAX_TOOLS: usize = 1000;
/// How long the catalog outlives the last refresh.
pub const LISTING_TTL: Duration = Duration::from_secs(24 * 3600);

/// One server's listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Listing {
    /// The worker that listed.
    pub worker: String,
    /// When (ms since the Unix epoch).
    pub listed_at: u64,
    /// The tools, as the server listed them (MCP `Tool` objects).
    pub tools: Vec<Map<String, Value>>,
}

/// Why a listing was not written.
#[derive(Debug, thiserror::Error)]
pub enum ListingError {
    /// Too many tools.
    #[error("server `{server}` lists {count} tools; at most {MAX_TOOLS} are published")]
    TooManyTools {
        /// The server.
        server: String,
        /// How many it listed.
        count: usize,
    },
    /// Too big.
    #[error("server `{server}`'s tool listing is {bytes} bytes; at most {MAX_LISTING_BYTES} are published")]
    TooBig {
        /// The server.
        server: String,
        /// Its size.
        bytes: usize,
    },
    /// Redis failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Writes `server`'s listing; publishes its name on the change channel when the tools
/// differ from the stored ones. Returns whether they differed.
pub async fn publish(
    conn: &Conn,
    keys: &Keys,
    server: &str,
    listing: &Listing,
) -> Result<bool, ListingError> {
    if listing.tools.len() > MAX_TOOLS {
        return Err(ListingError::TooManyTools {
            server: server.to_string(),
            count: listing.tools.len(),
        });
    }
    let json = serde_json::to_string(listing).expect("a listing is plain JSON");
    if json.len() > MAX_LISTING_BYTES {
        return Err(ListingError::TooBig {
            server: server.to_string(),
            bytes: json.len(),
        });
    }
    let mut conn = conn.clone();
    let key = keys.tool_catalog();
    let old: Option<Vec<u8>> = redis::cmd("HGET")
        .arg(&key)
        .arg(server)
        .query_async(&mut conn)
        .await
        .map_err(QueueError::from)?;
    let changed = old
        .as_deref()
        .and_then(decode)
        .is_none_or(|o| o.tools != listing.tools);
    let mut pipe = redis::pipe();
    pipe.hset(&key, server, &json)
        .ignore()
        .expire(&key, LISTING_TTL.as_secs() as i64)
        .ignore();
    if changed {
        pipe.publish(keys.tools_changed_channel(), server).ignore();
    }
    let _: () = pipe
        .query_async(&mut conn)
        .await
        .map_err(QueueError::from)?;
    Ok(changed)
}

/// Every readable listing, by server. Entries that are too big or not a listing are
/// left out (and named in the log at debug).
pub async fn read_all(conn: &Conn, keys: &Keys) -> Result<BTreeMap<String, Listing>, QueueError> {
    let mut conn = conn.clone();
    let raw: Vec<(String, Vec<u8>)> = redis::cmd("HGETALL")
        .arg(keys.tool_catalog())
        .query_async(&mut conn)
        .await?;
    let mut out = BTreeMap::new();
    for (server, bytes) in raw {
        match decode(&bytes) {
            Some(listing) => {
                out.insert(server, listing);
            }
            None => tracing::debug!(
                server = %server.escape_debug(),
                "unreadable tool listing in the catalog; left out"
            ),
        }
    }
    Ok(out)
}

/// The listings of `servers` only (one HMGET: fields for other names, which anyone
/// with access to Redis could add, are never read). A missing or unreadable entry is
/// left out.
pub async fn read_servers(
    conn: &Conn,
    keys: &Keys,
    servers: &[&str],
) -> Result<BTreeMap<String, Listing>, QueueError> {
    if servers.is_empty() {
        return Ok(BTreeMap::new());
    }
    let mut conn = conn.clone();
    let raw: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
        .arg(keys.tool_catalog())
        .arg(servers)
        .query_async(&mut conn)
        .await?;
    Ok(servers
        .iter()
        .zip(raw)
        .filter_map(|(server, bytes)| Some((server.to_string(), decode(&bytes?)?)))
        .collect())
}

fn decode(bytes: &[u8]) -> Option<Listing> {
    if bytes.len() > MAX_LISTING_BYTES {
        return None;
    }
    let listing: Listing = serde_json::from_slice(bytes).ok()?;
    (listing.tools.len() <= MAX_TOOLS).then_some(listing)
}
