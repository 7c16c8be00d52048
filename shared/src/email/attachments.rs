//! Attachments on disk: one directory per job under `email.attachments_dir`, so that
//! MCP servers (a filesystem server, say) can read them.
//!
//! Guarantees:
//! - **Nothing is written outside the job's directory.** A name is reduced to its last
//!   path component (`../../etc/passwd` becomes `passwd`), control characters and
//!   separators are dropped, leading dots removed, the length capped; an empty result
//!   becomes `attachment-N`. Files are created with `create_new` in a directory made
//!   fresh for each attempt, so no existing file or symlink is followed.
//! - **Same-name attachments do not overwrite each other**: `a.txt`, `a (2).txt`, ...
//! - **Size limits** per attachment and per job, checked before anything is written,
//!   with an error that names the attachment and the limit.
//! - Directories older than `email.retention` are removed by [`sweep`], which the
//!   worker runs every minute.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine;
use serde::Serialize;

use super::message::Attachment;
use super::settings::EmailSettings;

/// Longest file name kept, in bytes.
const MAX_NAME: usize = 120;

/// An attachment written to disk, as templates and results see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SavedAttachment {
    /// The sanitized file name.
    pub name: String,
    /// The name the sender gave, if it differs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_name: Option<String>,
    /// Absolute path of the file.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// MIME type.
    pub content_type: String,
}

/// Why attachments could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttachmentError {
    /// Over a size limit (not retryable).
    #[error(
        "attachment {index} ({name:?}) is {size} bytes; the limit (email.{limit_key}) is {limit}"
    )]
    TooLarge {
        /// Position in the list.
        index: usize,
        /// Its name.
        name: String,
        /// Its size (or the running total).
        size: u64,
        /// `max_attachment` or `max_attachments_total`.
        limit_key: &'static str,
        /// The limit.
        limit: u64,
    },
    /// Not base64, or a `path` reached the worker (not retryable).
    #[error("attachment {index} ({name:?}): {message}")]
    Invalid {
        /// Position in the list.
        index: usize,
        /// Its name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// The disk refused (retryable).
    #[error("cannot write attachments to {dir}: {source}")]
    Io {
        /// The job's directory.
        dir: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl AttachmentError {
    /// True when trying again could help (a disk error), false for bad input.
    pub fn is_retryable(&self) -> bool {
        matches!(self, AttachmentError::Io { .. })
    }
}

/// A safe file name for `name` (see the module doc); `index` numbers the fallback.
pub fn sanitize_name(name: &str, index: usize) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = last
        .chars()
        .filter(|c| !c.is_control() && !matches!(c, '/' | '\\' | ':' | '\0'))
        .collect();
    let trimmed = cleaned.trim().trim_start_matches('.').trim();
    let mut out = String::new();
    for c in trimmed.chars() {
        if out.len() + c.len_utf8() > MAX_NAME {
            break;
        }
        out.push(c);
    }
    if out.is_empty() {
        format!("attachment-{}", index + 1)
    } else {
        out
    }
}

/// `name`, or `stem (n).ext` when taken.
fn unique(name: String, taken: &mut HashSet<String>) -> String {
    if taken.insert(name.to_lowercase()) {
        return name;
    }
    let (stem, ext) = match name.rfind('.') {
        Some(dot) if dot > 0 => (&name[..dot], &name[dot..]),
        _ => (name.as_str(), ""),
    };
    (2..)
        .map(|n| format!("{stem} ({n}){ext}"))
        .find(|candidate| taken.insert(candidate.to_lowercase()))
        .expect("some suffix is free")
}

/// Writes `attachments` into a fresh `root/job_id/` (blocking: call it from
/// `spawn_blocking`). `job_id` must be a job id (a ULID), never user text.
pub fn materialize(
    settings: &EmailSettings,
    job_id: &str,
    attachments: &[Attachment],
) -> Result<Vec<SavedAttachment>, AttachmentError> {
    let engine = base64::engine::general_purpose::STANDARD;
    let mut decoded = Vec::with_capacity(attachments.len());
    let mut total = 0u64;
    for (index, a) in attachments.iter().enumerate() {
        let invalid = |message: String| AttachmentError::Invalid {
            index,
            name: a.name.clone(),
            message,
        };
        if a.path.is_some() {
            return Err(invalid(
                "`path` is read by the producer (mcpq submit) only; a worker never reads a path a job names".to_string(),
            ));
        }
        let b64: String = a
            .content_base64
            .as_deref()
            .ok_or_else(|| invalid("no content_base64".to_string()))?
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        let size = a.decoded_len() as u64;
        if size > settings.max_attachment {
            return Err(AttachmentError::TooLarge {
                index,
                name: a.name.clone(),
                size,
                limit_key: "max_attachment",
                limit: settings.max_attachment,
            });
        }
        total += size;
        if total > settings.max_attachments_total {
            return Err(AttachmentError::TooLarge {
                index,
                name: a.name.clone(),
                size: total,
                limit_key: "max_attachments_total",
                limit: settings.max_attachments_total,
            });
        }
        let bytes = engine
            .decode(b64.as_bytes())
            .map_err(|e| invalid(format!("content_base64 is not base64: {e}")))?;
        decoded.push(bytes);
    }
    let dir = settings.attachments_dir.join(job_id);
    let io = |source| AttachmentError::Io {
        dir: dir.clone(),
        source,
    };
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(io)?;
    }
    std::fs::create_dir_all(&dir).map_err(io)?;
    let mut taken = HashSet::new();
    let mut saved = Vec::with_capacity(attachments.len());
    for (index, (a, bytes)) in attachments.iter().zip(decoded).enumerate() {
        let name = unique(sanitize_name(&a.name, index), &mut taken);
        let path = dir.join(&name);
        debug_assert_eq!(path.parent(), Some(dir.as_path()));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io)?;
        file.write_all(&bytes).map_err(io)?;
        saved.push(SavedAttachment {
            original_name: (name != a.name).then(|| a.name.clone()),
            name,
            path: path.to_string_lossy().into_owned(),
            size: bytes.len() as u64,
            content_type: a.content_type.clone(),
        });
    }
    Ok(saved)
}

/// Removes job directories under `root` last changed more than `retention` ago;
/// returns how many (blocking).
pub fn sweep(root: &Path, retention: Duration) -> usize {
    let Ok(entries) = std::fs::read_dir(root) else {
        return 0;
    };
    let now = SystemTime::now();
    let mut removed = 0;
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .map(|t| now.duration_since(t).unwrap_or_default() > retention)
            .unwrap_or(false);
        if old && entry.path().is_dir() && std::fs::remove_dir_all(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_escape_the_directory() {
        assert_eq!(sanitize_name("../../etc/passwd", 0), "passwd");
        assert_eq!(sanitize_name("..\\..\\win.ini", 0), "win.ini");
        assert_eq!(sanitize_name("/abs/path.txt", 0), "path.txt");
        assert_eq!(sanitize_name("..", 2), "attachment-3");
        assert_eq!(sanitize_name(".hidden", 0), "hidden");
        assert_eq!(sanitize_name("a\u{0}b\nc\u{7}.txt", 0), "abc.txt");
        assert_eq!(sanitize_name("", 0), "attachment-1");
        assert_eq!(sanitize_name(&"x".repeat(500), 0).len(), MAX_NAME);
        assert_eq!(sanitize_name("Résumé ✓.pdf", 0), "Résumé ✓.pdf");
    }

    #[test]
    fn same_names_get_numbered() {
        let mut taken = HashSet::new();
        let names: Vec<String> = ["a.txt", "a.txt", "A.TXT", "noext", "noext"]
            .iter()
            .map(|n| unique(n.to_string(), &mut taken))
            .collect();
        assert_eq!(
            names,
            ["a.txt", "a (2).txt", "A (3).TXT", "noext", "noext (2)"]
        );
    }
}
