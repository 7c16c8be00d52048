//! Tool patterns: which tools of which servers a setting names. One matcher for every
//! list of them: the MCP front's `[serve.mcp] expose`, a server's own allow-list
//! (`[servers.NAME] tools`) and a job's (`llm.tools`).
//!
//! - [`ToolPattern`]: `SERVER__TOOL`, split at the first `__`; the tool part is a name or
//!   a glob.
//! - [`glob`]: `*` matches any run of characters (none too), everything else itself. No
//!   other metacharacter: `?`, `[` and `\` are plain characters, so a tool name that has
//!   them is matched literally. Matching is linear in the text per `*` (no backtracking
//!   explosion: each part is found once, left to right).
//!
//! No I/O; the checks that a server exists live with the settings that use patterns.

/// Separates a server's name from its tool's in `SERVER__TOOL`.
pub const SEPARATOR: &str = "__";

/// One `SERVER__TOOL` pattern, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolPattern<'a> {
    /// The server's name (never a glob).
    pub server: &'a str,
    /// The tool part: a name, or a glob with `*`.
    pub tool: &'a str,
}

impl<'a> ToolPattern<'a> {
    /// Splits `SERVER__TOOL` at the first `__`; `None` when either side is empty or there
    /// is no `__`.
    pub fn parse(text: &'a str) -> Option<ToolPattern<'a>> {
        let (server, tool) = text.split_once(SEPARATOR)?;
        (!server.is_empty() && !tool.is_empty()).then_some(ToolPattern { server, tool })
    }

    /// Whether `tool` of `server` matches.
    pub fn matches(&self, server: &str, tool: &str) -> bool {
        self.server == server && glob(self.tool, tool)
    }
}

/// Whether `text` matches `pattern`, where `*` matches any run of characters (none too)
/// and everything else itself.
pub fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Whether `tool` of `server` is allowed by `patterns` (`SERVER__TOOL` each; an
/// unparsable one allows nothing, but validation refuses those first).
pub fn any_matches(patterns: &[String], server: &str, tool: &str) -> bool {
    patterns
        .iter()
        .filter_map(|p| ToolPattern::parse(p))
        .any(|p| p.matches(server, tool))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_prefixes_suffixes_and_middles() {
        assert!(glob("*", ""));
        assert!(glob("*", "anything"));
        assert!(glob("read_*", "read_text_file"));
        assert!(!glob("read_*", "write_file"));
        assert!(glob("*_file", "move_file"));
        assert!(glob("git_*_log", "git_a_log"));
        assert!(!glob("git_*_log", "git_a_logs"));
        assert!(glob("a*a", "aa"));
        assert!(!glob("a*a", "a"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exactly"));
        assert!(glob("a?[b]", "a?[b]"), "only * is special");
    }

    #[test]
    fn patterns_split_at_the_first_separator_and_match_their_server_only() {
        let p = ToolPattern::parse("fs__read_*").expect("valid");
        assert_eq!((p.server, p.tool), ("fs", "read_*"));
        assert!(p.matches("fs", "read_text_file"));
        assert!(!p.matches("fs2", "read_text_file"));
        assert_eq!(ToolPattern::parse("a__b__c").map(|p| p.tool), Some("b__c"));
        for bad in ["fs", "__x", "fs__", ""] {
            assert!(ToolPattern::parse(bad).is_none(), "{bad}");
        }
        let list = vec!["fs__read_text_file".to_string(), "time__*".to_string()];
        assert!(any_matches(&list, "time", "now"));
        assert!(!any_matches(&list, "fs", "write_file"));
    }
}
