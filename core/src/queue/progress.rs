//! A running job's progress: what its MCP servers report while they work
//! (`lua/progress.lua`).
//!
//! [`record`] keeps the newest report in the job's hash (field `progress`, shown by
//! `mcpq status`, `GET /v1/jobs/ID` and the MCP front's `get_job` and tasks) and
//! publishes it on [`Keys::progress_channel`] as `ID JSON`, which the MCP front
//! forwards to a client that asked for progress. A report for a job that has no
//! record (it expired) writes nothing. A report is at most [`MAX_REPORT_BYTES`].

use crate::queue::Conn;
use serde::{Deserialize, Serialize};

use super::{Keys, QueueError};

/// The largest progress report stored or published, in bytes of JSON.
pub const MAX_REPORT_BYTES: usize = 4096;

/// One progress report of a server (MCP `notifications/progress`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Progress {
    /// How far (grows with each report).
    pub progress: f64,
    /// Of how much, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<f64>,
    /// What the server says it is doing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Stores and announces `report` for job `id` (see the module doc).
pub async fn record(
    conn: &Conn,
    keys: &Keys,
    id: &str,
    report: &Progress,
) -> Result<(), QueueError> {
    let keys = &keys.for_job(id);
    let json = serde_json::to_string(report).expect("a report is plain data");
    if json.len() > MAX_REPORT_BYTES {
        return Ok(());
    }
    let mut conn = conn.clone();
    let _: i64 = super::scripts::PROGRESS
        .prepare_invoke()
        .key(keys.script_key())
        .arg(keys.prefix())
        .arg(id)
        .arg(json)
        .invoke_async(&mut conn)
        .await?;
    Ok(())
}

/// Splits a message of [`Keys::progress_channel`] into the job id and its report.
pub fn parse_message(message: &str) -> Option<(&str, Progress)> {
    let (id, json) = message.split_once(' ')?;
    if json.len() > MAX_REPORT_BYTES {
        return None;
    }
    Some((id, serde_json::from_str(json).ok()?))
}
