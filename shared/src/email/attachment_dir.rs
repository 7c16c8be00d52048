//! The attachment root (`email.attachments_dir`): who may use it, how full it is, and
//! when a job's directory under it goes away.
//!
//! Guarantees:
//! - **Private.** The root is created `0700`; [`check_root`] refuses one that is not a
//!   directory, is not owned by the worker's user, or is writable by group or others
//!   (another local user who created it first could read every attachment and swap job
//!   directories), and one whose parent others could write to without the sticky bit
//!   (they could replace the root itself). Job directories are `0700`, files `0600`
//!   (see [`super::attachments`]). A refused root fails every email job with
//!   `attachments_dir_unsafe` (permanent: fix the directory, then `mcpq dlq requeue`);
//!   the worker also says so at start-up.
//! - **Bounded.** [`usage`] adds up the bytes under the root, so a job whose attachments
//!   would take it beyond `email.max_attachments_dir` fails (`attachment_too_large`)
//!   instead of filling the disk.
//! - **A running job's files are never swept.** A job marks its directory finished when
//!   it ends, whatever the outcome ([`FinishGuard`], a sibling file `ROOT/<id>.finished`,
//!   so the job's own directory holds only its attachments). [`sweep`] removes a
//!   directory `email.retention` after that mark, never before; a directory with no mark
//!   (its worker was killed) only after the longest possible job
//!   ([`crate::job::MAX_JOB_TIMEOUT`]) plus the retention.
//!
//! Caveats: the disk cap is checked before writing, not reserved: jobs writing at the
//! same moment may together go past it by at most their own sizes. Several workers may
//! share one root; a sweep that races a retry of the same job in the same millisecond
//! could remove the retry's fresh directory (the retry then fails with `attachment_io`
//! and is retried).

use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Why the root cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("unsafe attachment directory {root} (email.attachments_dir): {reason}")]
pub struct UnsafeRoot {
    /// The root.
    pub root: PathBuf,
    /// What is wrong and what to do.
    pub reason: String,
}

/// Creates the root (`0700`, parents too) if missing, then checks it (see the module doc).
/// Blocking.
pub fn check_root(root: &Path) -> Result<(), UnsafeRoot> {
    let unsafe_root = |reason: String| UnsafeRoot {
        root: root.to_path_buf(),
        reason,
    };
    if std::fs::symlink_metadata(root).is_err() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(|e| unsafe_root(format!("cannot create it: {e}")))?;
    }
    let meta = std::fs::metadata(root).map_err(|e| unsafe_root(e.to_string()))?;
    let uid = crate::supervisor::unix::current_uid();
    if !meta.is_dir() {
        return Err(unsafe_root("not a directory".to_string()));
    }
    if meta.uid() != uid {
        return Err(unsafe_root(format!(
            "owned by uid {}, not by the worker's user (uid {uid}); use a directory of the worker's own",
            meta.uid()
        )));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(unsafe_root(format!(
            "writable by group or others (mode {mode:o}); `chmod 700` it"
        )));
    }
    if let Some(parent) = root.canonicalize().ok().as_deref().and_then(Path::parent) {
        if let Ok(p) = std::fs::metadata(parent) {
            let pmode = p.permissions().mode() & 0o7777;
            let others_write = pmode & 0o022 != 0 && pmode & 0o1000 == 0;
            if (p.uid() != uid && p.uid() != 0) || others_write {
                return Err(unsafe_root(format!(
                    "its parent {} is owned by uid {} with mode {pmode:o}: others could replace it",
                    parent.display(),
                    p.uid()
                )));
            }
        }
    }
    Ok(())
}

/// Bytes of every file under `root`, job directories included (blocking).
pub fn usage(root: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total += meta.len();
            }
        }
    }
    total
}

/// `ROOT/<id>.finished`: the mark of a finished job's directory.
pub fn finished_mark(root: &Path, job_id: &str) -> PathBuf {
    root.join(format!("{job_id}.finished"))
}

/// Marks `ROOT/<id>` finished when dropped, once armed: the job ended (succeeded,
/// failed, timed out or was cancelled); its retention starts now. Not armed (the root
/// was refused), it writes nothing.
pub struct FinishGuard {
    mark: PathBuf,
    armed: bool,
}

impl FinishGuard {
    /// A guard for job `job_id`'s directory under `root`, not armed yet.
    pub fn new(root: &Path, job_id: &str) -> FinishGuard {
        FinishGuard {
            mark: finished_mark(root, job_id),
            armed: false,
        }
    }

    /// Mark the directory when the job ends.
    pub fn arm(&mut self) {
        self.armed = true;
    }

    /// Write nothing after all (the root was refused).
    pub fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for FinishGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // One small file create: cheap enough to do inline even on the async runtime.
        // Never through a symlink, never truncating: the mark's name is predictable.
        let marked = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&self.mark)
            .and_then(|f| f.set_modified(SystemTime::now()));
        if let Err(e) = marked {
            tracing::warn!(mark = %self.mark.display(), "cannot mark attachments finished: {e}");
        }
    }
}

/// How old `path` is (by mtime), if it can be told.
fn age(path: &Path, now: SystemTime) -> Option<Duration> {
    let modified = std::fs::symlink_metadata(path).ok()?.modified().ok()?;
    Some(now.duration_since(modified).unwrap_or_default())
}

/// Removes job directories of jobs that finished more than `retention` ago, and those
/// never marked finished older than the longest job plus `retention`; returns how many
/// (blocking).
pub fn sweep(root: &Path, retention: Duration) -> usize {
    let Ok(entries) = std::fs::read_dir(root) else {
        return 0;
    };
    let now = SystemTime::now();
    let abandoned = crate::job::MAX_JOB_TIMEOUT + retention;
    let mut removed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            let mark = finished_mark(root, &name);
            let expired = match age(&mark, now) {
                Some(since_end) => since_end > retention,
                None => age(&path, now).is_some_and(|a| a > abandoned),
            };
            if expired && std::fs::remove_dir_all(&path).is_ok() {
                let _ = std::fs::remove_file(&mark);
                removed += 1;
            }
        } else if let Some(id) = name.strip_suffix(".finished") {
            // A mark whose directory is gone (never written, or removed by hand).
            if !root.join(id).exists() && age(&path, now).is_some_and(|a| a > retention) {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aged(path: &Path, ago: Duration) {
        let t = SystemTime::now() - ago;
        let file = std::fs::File::open(path).expect("open");
        file.set_modified(t).expect("set mtime");
    }

    #[test]
    fn the_sweep_keeps_running_and_recent_jobs_and_removes_old_finished_and_abandoned_ones() {
        let root = std::env::temp_dir().join(format!(
            "mcpq-sweep-test-{}-{}",
            std::process::id(),
            ulid::Ulid::generate()
        ));
        let hour = Duration::from_secs(3600);
        let day = 24 * hour;
        let job = |name: &str, dir_age: Duration, mark_age: Option<Duration>| {
            let dir = root.join(name);
            std::fs::create_dir_all(&dir).expect("dir");
            std::fs::write(dir.join("a.txt"), "x").expect("file");
            aged(&dir, dir_age);
            if let Some(age) = mark_age {
                let mark = finished_mark(&root, name);
                std::fs::write(&mark, "").expect("mark");
                aged(&mark, age);
            }
        };
        job("running-for-a-day", day, None);
        job("abandoned", 8 * day, None);
        job("finished-long-ago", day, Some(2 * hour));
        job("finished-just-now", day, Some(Duration::from_secs(60)));
        std::fs::write(finished_mark(&root, "gone"), "").expect("orphan mark");
        aged(&finished_mark(&root, "gone"), 2 * hour);

        assert_eq!(sweep(&root, hour), 2);
        let mut left: Vec<String> = std::fs::read_dir(&root)
            .expect("root")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "finished-just-now",
                "finished-just-now.finished",
                "running-for-a-day"
            ]
        );
        let _ = std::fs::remove_dir_all(&root);
    }
}
