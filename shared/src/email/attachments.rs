//! Attachments on disk: one directory per job under `email.attachments_dir`, so that
//! MCP servers (a filesystem server, say) can read them.
//!
//! Guarantees:
//! - **Nothing is written outside the job's directory.** A name is reduced to its last
//!   path component (`../../etc/passwd` becomes `passwd`), control characters and
//!   separators are dropped, leading dots removed, the length capped; an empty result
//!   becomes `attachment-N`. Files are created with `create_new` in a directory made
//!   fresh for each attempt, so no existing file or symlink is followed.
//! - **Private**: the job's directory is created `0700`, its files `0600`, under a root
//!   checked by [`super::attachment_dir::check_root`] (owned by the worker's user, not
//!   writable by others).
//! - **Same-name attachments do not overwrite each other**: `a.txt`, `a (2).txt`, ...
//! - **Limits** per attachment (`email.max_attachment`), per job (`max_attachments_total`
//!   bytes, `max_attachments` files) and for the whole root (`max_attachments_dir`),
//!   checked before anything is written, with an error that names the limit.
//! - A finished job's directory is removed `email.retention` after the job ended
//!   ([`super::attachment_dir::sweep`]), never while it runs.

use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;

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
    /// More attachments than `email.max_attachments` (not retryable).
    #[error("the job has {count} attachments; the limit (email.max_attachments) is {limit}")]
    TooMany {
        /// How many the job has.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// The root would hold more than `email.max_attachments_dir` (not retryable).
    #[error("the attachment directory {root} holds {used} bytes; this job's {adding} more would pass the limit (email.max_attachments_dir) of {limit}")]
    DirFull {
        /// The root.
        root: PathBuf,
        /// Bytes already there.
        used: u64,
        /// This job's bytes.
        adding: u64,
        /// The limit.
        limit: u64,
    },
    /// The attachment root is not safe to use (not retryable: an operator must fix it).
    #[error(transparent)]
    UnsafeRoot(#[from] super::attachment_dir::UnsafeRoot),
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
    if attachments.len() > settings.max_attachments {
        return Err(AttachmentError::TooMany {
            count: attachments.len(),
            limit: settings.max_attachments,
        });
    }
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
    let root = &settings.attachments_dir;
    super::attachment_dir::check_root(root)?;
    let dir = root.join(job_id);
    let io = |source| AttachmentError::Io {
        dir: dir.clone(),
        source,
    };
    // An earlier attempt's finished mark: this attempt's files must not be swept.
    let _ = std::fs::remove_file(super::attachment_dir::finished_mark(root, job_id));
    if std::fs::symlink_metadata(&dir).is_ok() {
        // An earlier attempt's files: this attempt starts from nothing.
        std::fs::remove_dir_all(&dir).map_err(io)?;
    }
    let used = super::attachment_dir::usage(root);
    if total > 0 && used + total > settings.max_attachments_dir {
        return Err(AttachmentError::DirFull {
            root: root.clone(),
            used,
            adding: total,
            limit: settings.max_attachments_dir,
        });
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(io)?;
    let mut taken = HashSet::new();
    let mut saved = Vec::with_capacity(attachments.len());
    for (index, (a, bytes)) in attachments.iter().zip(decoded).enumerate() {
        let name = unique(sanitize_name(&a.name, index), &mut taken);
        let path = dir.join(&name);
        debug_assert_eq!(path.parent(), Some(dir.as_path()));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
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
