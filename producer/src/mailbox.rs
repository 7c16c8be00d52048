//! The messages of a mailbox, one at a time and each bounded: a directory of `.eml`
//! files, a Maildir (`new/` then `cur/`), or an mbox file (mboxrd: a message starts at a
//! line `From `, and a `>From ` line inside one loses one `>`).
//!
//! Guarantees: no message is held bigger than `limit` bytes (a bigger one is reported
//! as such and skipped, its bytes never kept), files are read in name order, nothing
//! but regular files is read (no symlink is followed out of the directory), and a
//! directory's subdirectories other than a Maildir's `new/` and `cur/` are not entered.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::exit;
use mcpq_core::lines::{Line, Lines};

/// A message: its name (file path under the mailbox, or "mbox message N") and its
/// bytes, or why they are not there.
type Each<'a> = dyn FnMut(String, Result<Vec<u8>, String>) -> anyhow::Result<()> + 'a;

/// Calls `each` for every message of the mailbox at `path`, in order.
pub fn messages(
    path: &Path,
    limit: usize,
    mut each: impl FnMut(String, Result<Vec<u8>, String>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let meta = std::fs::metadata(path)
        .map_err(|e| exit::usage(format!("cannot read {}: {e}", path.display())))?;
    if meta.is_dir() {
        directory(path, limit, &mut each)
    } else {
        mbox(path, limit, &mut each)
    }
}

fn directory(root: &Path, limit: usize, each: &mut Each<'_>) -> anyhow::Result<()> {
    let maildir = root.join("cur").is_dir() || root.join("new").is_dir();
    let dirs: Vec<PathBuf> = if maildir {
        vec![root.join("new"), root.join("cur")]
    } else {
        vec![root.to_path_buf()]
    };
    for dir in dirs.iter().filter(|d| d.is_dir()) {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| exit::usage(format!("cannot list {}: {e}", dir.display())))?
            .filter_map(Result::ok)
            .filter(|entry| entry.file_type().is_ok_and(|t| t.is_file()))
            .filter(|entry| !entry.file_name().to_string_lossy().starts_with('.'))
            .map(|entry| entry.path())
            .collect();
        files.sort();
        for file in files {
            let name = file
                .strip_prefix(root)
                .unwrap_or(&file)
                .display()
                .to_string();
            let mut raw = Vec::new();
            let read = File::open(&file)
                .and_then(|f| f.take(limit as u64 + 1).read_to_end(&mut raw))
                .map_err(|e| format!("cannot read it: {e}"));
            let message = match read {
                Err(e) => Err(e),
                Ok(_) if raw.len() > limit => Err(too_big(limit)),
                Ok(_) => Ok(raw),
            };
            each(name, message)?;
        }
    }
    Ok(())
}

fn too_big(limit: usize) -> String {
    format!("the message is larger than queue.max_payload ({limit} bytes)")
}

fn mbox(path: &Path, limit: usize, each: &mut Each<'_>) -> anyhow::Result<()> {
    let mut lines = Lines::open(path, limit)
        .map_err(|e| crate::exit::usage(format!("cannot read {}: {e}", path.display())))?;
    // The message being read: its bytes, or None once it grew past the limit.
    let mut current: Option<Option<Vec<u8>>> = None;
    let mut number = 0u64;
    loop {
        let line = lines
            .next_line()
            .map_err(|e| exit::usage(format!("cannot read {}: {e}", path.display())))?
            .map(|(_, line)| line);
        // The end of the file ends the last message, as a "From " line ends the others.
        let separator = matches!(&line, Some(Line::Text(text)) if text.starts_with(b"From "));
        if line.is_none() || separator {
            if let Some(message) = current.take() {
                number += 1;
                each(
                    format!("mbox message {number}"),
                    message.ok_or(too_big(limit)),
                )?;
            }
            if line.is_none() {
                return Ok(());
            }
            current = Some(Some(Vec::new()));
            continue;
        }
        let Some(message) = current.as_mut() else {
            return Err(exit::usage(format!(
                "{} is neither a directory of messages, a Maildir nor an mbox file (an mbox starts with a line \"From \")",
                path.display()
            )));
        };
        let (Some(bytes), Some(Line::Text(text))) = (message.as_mut(), line) else {
            // Past the limit already, or a line longer than it.
            *message = None;
            continue;
        };
        // mboxrd: ">From ", ">>From "... lose one '>'.
        let unquoted = match text.iter().position(|b| *b != b'>') {
            Some(at) if at > 0 && text[at..].starts_with(b"From ") => &text[1..],
            _ => &text[..],
        };
        if bytes.len() + unquoted.len() + 1 > limit {
            *message = None;
        } else {
            bytes.extend_from_slice(unquoted);
            bytes.push(b'\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(path: &Path, limit: usize) -> Vec<(String, Result<Vec<u8>, String>)> {
        let mut out = Vec::new();
        messages(path, limit, |name, m| {
            out.push((name, m));
            Ok(())
        })
        .expect("mailbox");
        out
    }

    #[test]
    fn an_mbox_is_split_at_from_lines_unquoted_and_an_oversized_message_is_skipped() {
        let dir = std::env::temp_dir().join(format!("mcpq-mbox-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("box");
        let big = "x".repeat(200);
        std::fs::write(
            &path,
            format!("From a@x Mon Jan 1\nSubject: one\n\n>From here\n\nFrom b@x Tue\nSubject: two\n\n{big}\nFrom c@x\nSubject: three\n"),
        )
        .expect("write");
        let got = collect(&path, 100);
        assert_eq!(got.len(), 3);
        assert_eq!(
            got[0].1.as_deref().expect("one"),
            b"Subject: one\n\nFrom here\n\n"
        );
        assert!(got[1]
            .1
            .as_ref()
            .expect_err("two is too big")
            .contains("max_payload"));
        assert_eq!(got[2].1.as_deref().expect("three"), b"Subject: three\n");
        std::fs::write(&path, "Subject: not an mbox\n").expect("write");
        assert!(messages(&path, 100, |_, _| Ok(())).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_maildir_is_read_new_then_cur_in_name_order_and_hidden_files_are_skipped() {
        let dir = std::env::temp_dir().join(format!("mcpq-maildir-{}", std::process::id()));
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir_all(dir.join(sub)).expect("dir");
        }
        std::fs::write(dir.join("cur/2"), "Subject: c2\n").expect("write");
        std::fs::write(dir.join("cur/1"), "Subject: c1\n").expect("write");
        std::fs::write(dir.join("new/9"), "Subject: n9\n").expect("write");
        std::fs::write(dir.join("new/.hidden"), "x").expect("write");
        std::fs::write(dir.join("tmp/0"), "Subject: half-written\n").expect("write");
        let names: Vec<String> = collect(&dir, 100).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec!["new/9", "cur/1", "cur/2"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
