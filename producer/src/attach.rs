//! Local files attached to an email job at submit: which ones may be read, and reading
//! them without trusting them.
//!
//! A job file is data, often piped in from another system (`mcpq submit -`), so it never
//! chooses a local file by itself. Files are read only when
//! - the command line names them (`--attach FILE`), or
//! - a job's attachment gives a `path` and the command line allows a directory with
//!   `--attach-root DIR`: the path (relative to DIR, or absolute) must resolve, symlinks
//!   followed, to a file inside DIR; that resolved path is then opened without following
//!   a symlink (one swapped in after the check is refused). Caveat: a directory on the
//!   way swapped for a symlink between the check and the open is not detected; do not
//!   name a DIR that other users can write to.
//!
//! Reading: only regular files (a FIFO, a device such as `/dev/zero` or a directory is
//! refused without reading: the file is opened non-blocking and checked with `fstat`);
//! the size is checked before reading and the read itself stops one byte past the limit,
//! so a huge or growing file never makes the producer big.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::exit;

/// What the user is told when a job file names a path on its own.
pub const HOW_TO_ATTACH: &str = "a job file cannot choose local files to read; attach files with --attach FILE, or allow paths under a directory with --attach-root DIR";

/// Resolves `path` (from a job's `attachments[i].path`) under `root`: relative paths are
/// taken from `root`; the result, symlinks resolved, must be inside `root`.
pub fn resolve_under(root: &Path, path: &str, field: &str) -> anyhow::Result<PathBuf> {
    let root = root.canonicalize().map_err(|e| {
        exit::invalid_job(format!(
            "--attach-root {}: cannot use it: {e}",
            root.display()
        ))
    })?;
    let full = root.join(path);
    let real = full
        .canonicalize()
        .map_err(|e| exit::invalid_job(format!("{field}: cannot read {}: {e}", full.display())))?;
    if !real.starts_with(&root) {
        return Err(exit::invalid_job(format!(
            "{field}: {path:?} is outside --attach-root {} (resolved to {})",
            root.display(),
            real.display()
        )));
    }
    Ok(real)
}

/// How [`read_file`] treats a symlink as the last component of the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Symlinks {
    /// Follow it (a file the user named on the command line).
    Follow,
    /// Refuse it (a path already resolved by [`resolve_under`]: a symlink there now was
    /// put in after the check).
    Refuse,
}

/// Reads the regular file at `path`, refusing it if it is bigger than `limit` bytes
/// (`limit_key` names the config key in the message).
pub fn read_file(
    path: &Path,
    symlinks: Symlinks,
    limit: u64,
    limit_key: &str,
    field: &str,
) -> anyhow::Result<Vec<u8>> {
    let cannot = |e: std::io::Error| {
        exit::invalid_job(format!("{field}: cannot read {}: {e}", path.display()))
    };
    // Non-blocking: opening a FIFO for reading must not wait for a writer.
    let nofollow = match symlinks {
        Symlinks::Follow => 0,
        Symlinks::Refuse => libc::O_NOFOLLOW,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | nofollow)
        .open(path)
        .map_err(cannot)?;
    let meta = file.metadata().map_err(cannot)?;
    if !meta.is_file() {
        return Err(exit::invalid_job(format!(
            "{field}: {} is not a regular file",
            path.display()
        )));
    }
    let too_big = |size: u64| {
        exit::invalid_job(format!(
            "{field}: {} is {size} bytes; the limit ({limit_key}) is {limit}",
            path.display()
        ))
    };
    if meta.len() > limit {
        return Err(too_big(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    bounded(file, limit)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > limit {
        // It grew since the fstat.
        return Err(too_big(bytes.len() as u64));
    }
    Ok(bytes)
}

/// At most `limit + 1` bytes of `file`: enough to tell that it is over the limit.
fn bounded(file: File, limit: u64) -> impl Read {
    file.take(limit.saturating_add(1))
}

/// A MIME type from a file name's extension (`application/octet-stream` if unknown).
pub fn content_type(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("txt") => "text/plain",
        Some("csv") => "text/csv",
        Some("html" | "htm") => "text/html",
        Some("md") => "text/markdown",
        Some("json") => "application/json",
        Some("pdf") => "application/pdf",
        Some("zip") => "application/zip",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("eml") => "message/rfc822",
        _ => "application/octet-stream",
    }
}
