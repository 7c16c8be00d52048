//! Queue names: which named queue a job waits in (`options.queue`).
//!
//! A name is 1 to [`MAX_QUEUE_NAME`] ASCII letters, digits, `-`, `_` or `.`, so that it
//! can be part of a Redis key (`{ns}:queue:NAME:PRIORITY`), a log line and a terminal
//! without escaping, and can never name another key (no `:`). `lua/common.lua`'s
//! `queue_ok` is the same rule for records someone else wrote.

/// The queue of a job that names none, and of every job from before queues had names.
pub const DEFAULT_QUEUE: &str = "default";

/// Longest queue name, in bytes.
pub const MAX_QUEUE_NAME: usize = 64;

/// Why `name` cannot be a queue's name, or `None` when it can.
pub fn queue_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("must not be empty".into());
    }
    if name.len() > MAX_QUEUE_NAME {
        return Some(format!("must be at most {MAX_QUEUE_NAME} bytes long"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Some("may hold only ASCII letters, digits, '-', '_' and '.'".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_plain_words() {
        for good in ["default", "emails", "agents.v2", "a-b_c", "X"] {
            assert_eq!(queue_name_problem(good), None, "{good}");
        }
        for bad in ["", "a:b", "a b", "é", "a*", &"x".repeat(65), "a\nb"] {
            assert!(queue_name_problem(bad).is_some(), "{bad:?}");
        }
    }
}
