//! Checking a call's arguments against the tool's `inputSchema` before `tools/call`.
//!
//! [`McpSession::call_for_job`](super::McpSession::call_for_job) asks [`check`] with the
//! tool as the session listed it; arguments that do not fit are refused before the
//! server sees them: a plan step fails (`invalid_job`, not retried), a model gets the
//! message as a tool error and may correct itself. The message names each offending
//! field by its JSON pointer (`/path: "x" is not of type "integer"`).
//!
//! Guarantees:
//! - A schema is data from a server we do not trust: it is compiled with no reference
//!   resolving at all (the `jsonschema` crate without its `resolve-http`/`resolve-file`
//!   features, and a retriever that refuses every URI), so a `$ref` to a URL or a file
//!   never makes the worker fetch anything; a schema of more than [`MAX_SCHEMA_BYTES`]
//!   is not compiled.
//! - A tool without a schema, or whose schema does not compile (too big, an external
//!   `$ref`, invalid), is called unchecked, as before this check existed: the server
//!   stays the judge of its arguments. Logged once per schema (while it stays cached).
//! - Compiled validators are cached by (server, tool, hash of the schema's text), at
//!   most [`MAX_VALIDATORS`] of them; a full cache is emptied (simple and bounded: the
//!   next calls compile again). A server that changes a tool's schema gets a new entry.
//!
//! - `format` is never asserted, whatever draft the schema names (drafts 4 to 7 would
//!   assert it, and a server that takes any string would see its calls refused).
//! - `pattern` regexes run on the `regex` engine (linear time, compiled size at most
//!   [`MAX_REGEX_BYTES`]): a pattern it cannot take (lookarounds, backreferences) makes
//!   the schema not compile, and the tool is called unchecked.
//! - A message quotes at most [`MAX_ERRORS_QUOTED`] errors of at most
//!   [`MAX_ERROR_CHARS`] characters each (an error quotes the offending value, which may
//!   be megabytes).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock};

use rmcp::model::Tool;
use serde_json::{Map, Value};

/// Largest `inputSchema` compiled (its JSON text): real tools' schemas are a few KiB;
/// past this a schema is a hazard (compile time, memory), not a contract.
pub const MAX_SCHEMA_BYTES: usize = 64 * 1024;

/// Most compiled validators kept, worker-wide: a few hundred tools is a large setup.
pub const MAX_VALIDATORS: usize = 512;

/// Most schema errors quoted in one message (a model needs the first few, not all).
pub const MAX_ERRORS_QUOTED: usize = 5;

/// Longest quoted error, in characters.
pub const MAX_ERROR_CHARS: usize = 300;

/// Largest compiled `pattern` regex, in bytes.
pub const MAX_REGEX_BYTES: usize = 1 << 20;

/// A validator, or `None` for a schema that is called unchecked.
type Entry = Option<Arc<jsonschema::Validator>>;

/// (server, tool, hash of the schema's text).
type Key = (String, String, u64);

fn cache() -> &'static Mutex<HashMap<Key, Entry>> {
    static CACHE: OnceLock<Mutex<HashMap<Key, Entry>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Refuses every reference outside the schema itself.
struct NoRetrieval;

impl jsonschema::Retrieve for NoRetrieval {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        Err(format!("external references are not followed ({uri})").into())
    }
}

/// Checks `arguments` for `tool` of `server`; `Err` is the message for the caller
/// (every offending field by its path). `Ok` also when the tool cannot be checked
/// (see the module doc).
pub fn check(server: &str, tool: &Tool, arguments: &Map<String, Value>) -> Result<(), String> {
    let Some(validator) = validator(server, tool) else {
        return Ok(());
    };
    let instance = Value::Object(arguments.clone());
    let errors: Vec<String> = validator
        .iter_errors(&instance)
        .take(MAX_ERRORS_QUOTED + 1)
        .map(|e| {
            let path = e.instance_path().to_string();
            let path = if path.is_empty() {
                "/".to_string()
            } else {
                path
            };
            let text = format!("{path}: {e}");
            match text.char_indices().nth(MAX_ERROR_CHARS) {
                Some((cut, _)) => format!("{}...", &text[..cut]),
                None => text,
            }
        })
        .collect();
    if errors.is_empty() {
        return Ok(());
    }
    let more = if errors.len() > MAX_ERRORS_QUOTED {
        " (and more)"
    } else {
        ""
    };
    let quoted: Vec<&str> = errors
        .iter()
        .take(MAX_ERRORS_QUOTED)
        .map(String::as_str)
        .collect();
    Err(format!(
        "the arguments of `{}` do not match its inputSchema: {}{more}",
        tool.name,
        quoted.join("; ")
    ))
}

/// The cached validator of `tool`'s schema, compiling it on first use.
fn validator(server: &str, tool: &Tool) -> Entry {
    let schema = Value::Object((*tool.input_schema).clone());
    let text = serde_json::to_string(&schema).unwrap_or_default();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    let key = (server.to_string(), tool.name.to_string(), hasher.finish());
    if let Some(entry) = cache().lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return entry.clone();
    }
    let entry = if text.len() > MAX_SCHEMA_BYTES {
        tracing::warn!(server, tool = %tool.name, bytes = text.len(), "inputSchema over {MAX_SCHEMA_BYTES} bytes; calls of this tool are not checked against it");
        None
    } else {
        match jsonschema::options()
            .with_retriever(NoRetrieval)
            .should_validate_formats(false)
            .with_pattern_options(
                jsonschema::PatternOptions::regex()
                    .size_limit(MAX_REGEX_BYTES)
                    .dfa_size_limit(MAX_REGEX_BYTES),
            )
            .build(&schema)
        {
            Ok(v) => Some(Arc::new(v)),
            Err(e) => {
                tracing::warn!(server, tool = %tool.name, "inputSchema does not compile ({e}); calls of this tool are not checked against it");
                None
            }
        }
    };
    let mut cache = cache().lock().unwrap_or_else(|p| p.into_inner());
    if cache.len() >= MAX_VALIDATORS {
        cache.clear();
    }
    cache.insert(key, entry.clone());
    entry
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tool(name: &str, schema: Value) -> Tool {
        let Value::Object(schema) = schema else {
            panic!("an object")
        };
        Tool::new(name.to_string(), "", Arc::new(schema))
    }

    fn args(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn arguments_that_do_not_fit_are_refused_naming_the_field() {
        let t = tool(
            "add",
            json!({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}),
        );
        assert_eq!(check("calc", &t, &args(json!({"a": 1}))), Ok(()));
        let err = check("calc", &t, &args(json!({"a": "one"}))).expect_err("type");
        assert!(err.contains("/a") && err.contains("integer"), "{err}");
        let err = check("calc", &t, &args(json!({}))).expect_err("required");
        assert!(err.contains("\"a\"") && err.contains("`add`"), "{err}");
    }

    #[test]
    fn external_references_and_huge_schemas_are_not_followed_and_leave_the_call_unchecked() {
        let t = tool(
            "remote",
            json!({"type": "object", "properties": {"a": {"$ref": "http://127.0.0.1:9/x.json"}}}),
        );
        assert_eq!(check("s", &t, &args(json!({"a": 1}))), Ok(()));
        let t = tool(
            "file",
            json!({"$ref": "file:///etc/passwd", "type": "object"}),
        );
        assert_eq!(check("s", &t, &args(json!({"a": 1}))), Ok(()));
        let big: Map<String, Value> = (0..5000)
            .map(|i| (format!("field_{i:05}"), json!({"type": "integer"})))
            .collect();
        let t = tool(
            "big",
            json!({"type": "object", "properties": big, "required": ["x"]}),
        );
        assert_eq!(
            check("s", &t, &args(json!({}))),
            Ok(()),
            "over the size bound"
        );
    }

    #[test]
    fn a_self_referencing_schema_compiles_and_validates() {
        let t = tool(
            "tree",
            json!({"type": "object", "properties": {"child": {"$ref": "#"}, "n": {"type": "integer"}}}),
        );
        assert_eq!(
            check("s", &t, &args(json!({"child": {"child": {"n": 1}}}))),
            Ok(())
        );
        let err = check("s", &t, &args(json!({"child": {"child": {"n": "x"}}}))).expect_err("deep");
        assert!(err.contains("/child/child/n"), "{err}");
    }

    #[test]
    fn formats_are_not_asserted_and_lookaround_patterns_leave_the_tool_unchecked() {
        let dated = tool(
            "t",
            json!({"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                "properties": {"u": {"type": "string", "format": "uri"}}}),
        );
        let args = json!({"u": "not a uri"});
        assert_eq!(
            check("s-format", &dated, args.as_object().expect("object")),
            Ok(())
        );
        let look = tool(
            "t",
            json!({"type": "object", "properties": {"p": {"type": "string", "pattern": "^(?=a)a+$"}}}),
        );
        let args = json!({"p": "bbb"});
        assert_eq!(
            check("s-look", &look, args.as_object().expect("object")),
            Ok(())
        );
    }

    #[test]
    fn a_huge_offending_value_is_quoted_cut() {
        let t = tool(
            "t",
            json!({"type": "object", "properties": {"n": {"type": "integer"}}}),
        );
        let args = json!({"n": "x".repeat(1_000_000)});
        let e = check("s-cut", &t, args.as_object().expect("object")).expect_err("refused");
        assert!(e.len() < 2 * MAX_ERROR_CHARS, "{} bytes", e.len());
        assert!(e.contains("/n"), "{e}");
    }
}
