//! The MCP config files people already have: Claude Desktop, Cursor and VS Code JSON,
//! read into our [`ServerConfig`]s.
//!
//! Both ways a JSON file reaches mcpq go through [`read`]: `--config servers.json` and
//! `mcp_servers_file = "..."` in `mcpq.toml`; the worker, `mcpq` and `mcpq serve` read
//! the same servers from the same file.
//!
//! Formats:
//! - Claude Desktop, Cursor, Claude Code `.mcp.json`: `{"mcpServers": {NAME: ENTRY}}`;
//! - VS Code `mcp.json`: `{"servers": {NAME: ENTRY}, "inputs": [{"id": ...}, ...]}`.
//!
//! An entry is either
//! - stdio: `command`, `args`, `env` (string or number values), `cwd`; or
//! - streamable HTTP: `url`, `headers`.
//!
//! `type` may say which: `"stdio"`, or `"http"` (Cline's `"streamableHttp"` too); with no
//! `type`, an entry with `url` is HTTP and one with `command` is stdio. `"type": "sse"`
//! (the old HTTP+SSE transport) is refused, naming the server: mcpq speaks only
//! streamable HTTP. `"disabled": true` skips the entry: it is returned in
//! [`McpServers::disabled`] for callers to report, and nothing else in it is checked
//! beyond its keys (its variables need not be set).
//!
//! `${VAR}`, `${env:VAR}`, `${input:ID}` and `${userHome}` in `command`, `args`, `env`
//! values, `cwd`, `url` and `headers` values are expanded as [`vars`] describes; an
//! unresolved one is an error naming the server's key and the variable, never a value.
//!
//! Keys: every key of the file, of an entry and of an input is either read, listed
//! below as ignored, or an error naming its path (`mcpServers.fs.transport: unknown
//! key`), so a setting mcpq would silently drop cannot hide. Ignored, because they only
//! steer an editor's UI and mcpq has no UI:
//! - `description`: a label;
//! - `autoApprove` (Cline, Claude), `alwaysAllow` (Roo Code): which tools run without
//!   asking the user; mcpq never asks, a job names its tools;
//! - `gallery`, `version`: where VS Code installed the entry from, and its version label;
//! - in `inputs`: `type`, `description`, `password`, `default`, `options` (the prompt).
//!   A `default` is not used as a value: a missing `MCPQ_INPUT_*` variable is an error,
//!   not a silent fallback.
//!
//! Refused on purpose: `timeout` (seconds in Cline and Roo Code, milliseconds in Claude
//! Code: mapping it to `call_timeout` would be wrong for one of them; set
//! `[defaults] call_timeout` or move the server into `mcpq.toml`), `envFile`,
//! `disabledTools` (a restriction mcpq would not enforce), OAuth settings (`auth`,
//! `oauth`), and anything else not listed here.
//!
//! A file that yields no server (no server key, an empty one, or every entry disabled)
//! is an error naming the file. Server names follow the rule of `[servers.NAME]`
//! ([`super::server_name_problem`]): no spaces, no `__`.

pub mod vars;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::ServerConfig;
use vars::{Expander, VarError};

/// Why an MCP JSON file could not be read. Every variant names the file; all but
/// [`McpJsonError::Parse`] and [`McpJsonError::NoServer`] name the key in it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum McpJsonError {
    /// Not JSON, or not a JSON object.
    #[error("invalid MCP config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// A key mcpq neither reads nor ignores on purpose (see the module doc).
    #[error("{path}: {key}: unknown key ({known})")]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// Its path in the file, e.g. `mcpServers.fs.transport`.
        key: String,
        /// The keys read at that place.
        known: &'static str,
    },
    /// A value of the wrong type, a refused transport or setting, a bad server name.
    #[error("{path}: {key}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Its path in the file, e.g. `servers.gh.type`.
        key: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// A `${...}` reference that cannot be resolved (the message names the variable).
    #[error("{path}: {key}: {problem}")]
    Variable {
        /// The file.
        path: PathBuf,
        /// The value's path in the file, e.g. `mcpServers.fs.env.API_KEY`.
        key: String,
        /// The reference and the variable to set (not an error `source`: the message
        /// says it once).
        problem: VarError,
    },
    /// The file defines no server mcpq would run.
    #[error("no MCP server in {path}: {reason}")]
    NoServer {
        /// The file.
        path: PathBuf,
        /// Why (empty, every entry disabled, no server key).
        reason: String,
    },
}

/// The servers of one file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct McpServers {
    /// The enabled servers, by name.
    pub servers: BTreeMap<String, ServerConfig>,
    /// Names of the entries skipped for `"disabled": true`, sorted.
    pub disabled: Vec<String>,
    /// Values `${...}` put into the servers that may be secrets (to redact).
    pub secrets: Vec<String>,
}

const TOP_KEYS: &str = "mcpServers, servers, inputs";
const ENTRY_KEYS: &str = "type, command, args, env, cwd, url, headers, disabled; ignored: \
                          description, autoApprove, alwaysAllow, gallery, version";
const INPUT_KEYS: &str = "id, type, description, password, default, options";
/// Entry keys that only steer an editor's UI (see the module doc).
const IGNORED_ENTRY_KEYS: &[&str] = &[
    "description",
    "autoApprove",
    "alwaysAllow",
    "gallery",
    "version",
];
const INPUT_KEY_LIST: &[&str] = &[
    "id",
    "type",
    "description",
    "password",
    "default",
    "options",
];

/// Reads the servers of the MCP JSON file `path` holding `text`, resolving variables
/// through `lookup` (in production `|v| std::env::var(v).ok()`).
pub fn read(
    path: &Path,
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<McpServers, McpJsonError> {
    let file = FileReader { path };
    let top: Value = serde_json::from_str(text).map_err(|e| McpJsonError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let Value::Object(top) = top else {
        return Err(file.parse("expected a JSON object at the top"));
    };
    for key in top.keys() {
        if !["mcpServers", "servers", "inputs"].contains(&key.as_str()) {
            return Err(file.unknown(key.clone(), TOP_KEYS));
        }
    }
    let (section, entries) = match (top.get("mcpServers"), top.get("servers")) {
        (Some(_), Some(_)) => {
            return Err(file.invalid(
                "servers",
                "the file has both `mcpServers` and `servers`: keep one",
            ))
        }
        (Some(v), None) => ("mcpServers", v),
        (None, Some(v)) => ("servers", v),
        (None, None) => {
            return Err(file.no_server(
                "it has neither `mcpServers` (Claude Desktop, Cursor) nor `servers` (VS Code)",
            ))
        }
    };
    let entries = file.object(section, entries)?;
    let inputs = file.inputs(top.get("inputs"))?;
    let expander = Expander::new(lookup, &inputs);

    let mut out = McpServers::default();
    for (name, entry) in entries {
        let key = format!("{section}.{name}");
        if let Some(problem) = super::server_name_problem(name) {
            return Err(file.invalid(&format!("{section}.{name:?}"), problem));
        }
        match file.entry(&key, entry, &expander)? {
            Some(server) => {
                out.servers.insert(name.clone(), server);
            }
            None => out.disabled.push(name.clone()),
        }
    }
    out.secrets = expander.secrets();
    if out.servers.is_empty() {
        let reason = if out.disabled.is_empty() {
            format!("`{section}` is empty")
        } else {
            format!(
                "every server in `{section}` is disabled ({})",
                out.disabled.join(", ")
            )
        };
        return Err(file.no_server(&reason));
    }
    Ok(out)
}

/// Which transport an entry uses.
#[derive(Clone, Copy, PartialEq)]
enum Transport {
    Stdio,
    Http,
}

/// Reads the parts of one file, building errors that name it.
struct FileReader<'p> {
    path: &'p Path,
}

impl FileReader<'_> {
    /// One server entry at `key` (`mcpServers.fs`); `None` when it is disabled.
    fn entry(
        &self,
        key: &str,
        entry: &Value,
        expander: &Expander<'_>,
    ) -> Result<Option<ServerConfig>, McpJsonError> {
        let entry = self.object(key, entry)?;
        let sub = |k: &str| format!("{key}.{k}");
        for k in entry.keys() {
            let read = [
                "type", "command", "args", "env", "cwd", "url", "headers", "disabled",
            ];
            if read.contains(&k.as_str()) || IGNORED_ENTRY_KEYS.contains(&k.as_str()) {
                continue;
            }
            if k == "timeout" {
                return Err(self.invalid(
                    &sub(k),
                    "not supported: its unit differs between clients (seconds in Cline, \
                     milliseconds in Claude Code); remove it and set [defaults] call_timeout \
                     in mcpq.toml, or move this server into mcpq.toml with its own call_timeout",
                ));
            }
            return Err(self.unknown(sub(k), ENTRY_KEYS));
        }
        match entry.get("disabled") {
            None | Some(Value::Bool(false)) => {}
            Some(Value::Bool(true)) => return Ok(None),
            Some(_) => return Err(self.invalid(&sub("disabled"), "must be true or false")),
        }
        let transport = self.transport(key, entry)?;
        let other_side: &[&str] = match transport {
            Transport::Stdio => &["url", "headers"],
            Transport::Http => &["command", "args", "env", "cwd"],
        };
        if let Some(k) = other_side.iter().find(|k| entry.contains_key(**k)) {
            let message = match transport {
                Transport::Stdio => {
                    "is for streamable-HTTP servers (`url`), not for this stdio one"
                }
                Transport::Http => "is for stdio servers (`command`), not for this HTTP one",
            };
            return Err(self.invalid(&sub(k), message));
        }
        let text = |k: &str, v: &Value| -> Result<String, McpJsonError> {
            let Value::String(s) = v else {
                return Err(self.invalid(k, "must be a string"));
            };
            expander.expand(s).map_err(|source| McpJsonError::Variable {
                path: self.path.to_path_buf(),
                key: k.to_string(),
                problem: source,
            })
        };
        let mut server = ServerConfig::default();
        match transport {
            Transport::Stdio => {
                let command = entry.get("command").unwrap_or(&Value::Null);
                server.command = text(&sub("command"), command)?;
                if let Some(args) = entry.get("args") {
                    let Value::Array(args) = args else {
                        return Err(self.invalid(&sub("args"), "must be an array of strings"));
                    };
                    for (i, arg) in args.iter().enumerate() {
                        server.args.push(text(&format!("{key}.args[{i}]"), arg)?);
                    }
                }
                if let Some(env) = entry.get("env") {
                    for (name, value) in self.object(&sub("env"), env)? {
                        let k = format!("{key}.env.{name}");
                        // Numbers are accepted as VS Code does (`"PORT": 3000`).
                        let value = match value {
                            Value::Number(n) => n.to_string(),
                            other => text(&k, other)?,
                        };
                        server.env.insert(name.clone(), value);
                    }
                }
                if let Some(cwd) = entry.get("cwd") {
                    server.cwd = Some(PathBuf::from(text(&sub("cwd"), cwd)?));
                }
            }
            Transport::Http => {
                let url = entry.get("url").unwrap_or(&Value::Null);
                server.url = Some(text(&sub("url"), url)?);
                if let Some(headers) = entry.get("headers") {
                    for (name, value) in self.object(&sub("headers"), headers)? {
                        let value = text(&format!("{key}.headers.{name}"), value)?;
                        server.headers.insert(name.clone(), value);
                    }
                }
            }
        }
        Ok(Some(server))
    }

    /// The transport of the entry at `key`, from its `type` or else its keys.
    fn transport(&self, key: &str, entry: &Map<String, Value>) -> Result<Transport, McpJsonError> {
        let type_key = format!("{key}.type");
        let declared = match entry.get("type") {
            None => None,
            Some(Value::String(t)) => match t.as_str() {
                "stdio" => Some(Transport::Stdio),
                "http" | "streamableHttp" | "streamable-http" => Some(Transport::Http),
                "sse" => {
                    return Err(self.invalid(
                        &type_key,
                        "`sse` is the old HTTP+SSE transport; mcpq supports only streamable \
                         HTTP: point `url` at the server's streamable-HTTP endpoint (often \
                         /mcp) and set \"type\": \"http\"",
                    ))
                }
                _ => {
                    return Err(
                        self.invalid(&type_key, "must be \"stdio\" or \"http\" (streamable HTTP)")
                    )
                }
            },
            Some(_) => return Err(self.invalid(&type_key, "must be a string")),
        };
        match (
            declared,
            entry.contains_key("command"),
            entry.contains_key("url"),
        ) {
            (_, true, true) => Err(self.invalid(key, "has both `command` and `url`: choose one")),
            (Some(t), _, _) => Ok(t),
            (None, true, false) => Ok(Transport::Stdio),
            (None, false, true) => Ok(Transport::Http),
            (None, false, false) => Err(self.invalid(
                key,
                "needs a `command` (stdio) or a `url` (streamable HTTP)",
            )),
        }
    }

    /// The ids declared in `inputs` (an array of objects with a string `id`).
    fn inputs(&self, inputs: Option<&Value>) -> Result<BTreeSet<String>, McpJsonError> {
        let mut ids = BTreeSet::new();
        let Some(inputs) = inputs else {
            return Ok(ids);
        };
        let Value::Array(inputs) = inputs else {
            return Err(self.invalid("inputs", "must be an array"));
        };
        for (i, input) in inputs.iter().enumerate() {
            let key = format!("inputs[{i}]");
            let input = self.object(&key, input)?;
            if let Some(k) = input.keys().find(|k| !INPUT_KEY_LIST.contains(&k.as_str())) {
                return Err(self.unknown(format!("{key}.{k}"), INPUT_KEYS));
            }
            match input.get("id") {
                Some(Value::String(id)) if !id.is_empty() => {
                    ids.insert(id.clone());
                }
                _ => return Err(self.invalid(&format!("{key}.id"), "must be a non-empty string")),
            }
        }
        Ok(ids)
    }

    /// `value` as an object, or an error naming `key`.
    fn object<'v>(
        &self,
        key: &str,
        value: &'v Value,
    ) -> Result<&'v Map<String, Value>, McpJsonError> {
        match value {
            Value::Object(map) => Ok(map),
            _ => Err(self.invalid(key, "must be a JSON object")),
        }
    }

    fn parse(&self, message: &str) -> McpJsonError {
        McpJsonError::Parse {
            path: self.path.to_path_buf(),
            message: message.to_string(),
        }
    }

    fn unknown(&self, key: String, known: &'static str) -> McpJsonError {
        McpJsonError::UnknownKey {
            path: self.path.to_path_buf(),
            key,
            known,
        }
    }

    fn invalid(&self, key: &str, message: &str) -> McpJsonError {
        McpJsonError::Invalid {
            path: self.path.to_path_buf(),
            key: key.to_string(),
            message: message.to_string(),
        }
    }

    fn no_server(&self, reason: &str) -> McpJsonError {
        McpJsonError::NoServer {
            path: self.path.to_path_buf(),
            reason: reason.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::Config;

    /// A directory of its own per test (tag) and process.
    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mcpq-mcp-json-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write temp file");
        p
    }

    /// An environment of exactly `vars` (the process environment is never read).
    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name: &str| vars.get(name).cloned()
    }

    fn load(path: &Path, vars: &[(&str, &str)]) -> Result<Config, String> {
        Config::load_with_env(Some(path), &env(vars)).map_err(|e| e.to_string())
    }

    #[test]
    fn a_cursor_file_with_a_url_entry_and_headers_is_read_as_streamable_http() {
        let dir = temp_dir("cursor");
        let p = write(
            &dir,
            "mcp.json",
            r#"{"mcpServers": {
                "remote": {"url": "https://mcp.example.com/mcp",
                           "headers": {"Authorization": "Bearer ${env:T_CURSOR_TOKEN}", "X-Team": "b"}},
                "fs": {"command": "npx", "args": ["-y", "server-fs"], "description": "files"}
            }}"#,
        );
        let c = load(&p, &[("T_CURSOR_TOKEN", "tok-1")]).expect("cursor file");
        let remote = &c.servers["remote"];
        assert_eq!(remote.url.as_deref(), Some("https://mcp.example.com/mcp"));
        assert!(remote.command.is_empty());
        assert_eq!(remote.headers["Authorization"], "Bearer tok-1");
        assert_eq!(remote.headers["X-Team"], "b");
        assert_eq!(c.servers["fs"].command, "npx");
        assert_eq!(c.servers["fs"].url, None);
        assert_eq!(c.servers["fs"].args, vec!["-y", "server-fs"]);
    }

    #[test]
    fn a_vs_code_file_reads_servers_types_and_inputs_from_mcpq_input_variables() {
        let dir = temp_dir("vscode");
        let json = r#"{
            "inputs": [{"type": "promptString", "id": "gh-token", "description": "GitHub token", "password": true}],
            "servers": {
                "github": {"type": "http", "url": "https://api.example.com/mcp/",
                           "headers": {"Authorization": "Bearer ${input:gh-token}"}},
                "memory": {"type": "stdio", "command": "npx", "args": ["-y", "mem"],
                           "env": {"PORT": 3000, "KEY": "${input:gh-token}"}, "gallery": true, "version": "1.0.0"}
            }
        }"#;
        let p = write(&dir, "mcp.json", json);
        let vars = [("MCPQ_INPUT_GH_TOKEN", "ghp-secret")];
        let c = load(&p, &vars).expect("vs code file");
        assert_eq!(
            c.server_names().collect::<Vec<_>>(),
            vec!["github", "memory"]
        );
        assert_eq!(
            c.servers["github"].headers["Authorization"],
            "Bearer ghp-secret"
        );
        assert_eq!(c.servers["memory"].env["PORT"], "3000");
        assert_eq!(c.servers["memory"].env["KEY"], "ghp-secret");

        // The same file through mcp_servers_file, beside TOML servers.
        let t = write(
            &dir,
            "mcpq.toml",
            "mcp_servers_file = \"mcp.json\"\n[servers.echo]\ncommand = \"e\"\n",
        );
        let c = load(&t, &vars).expect("toml + vs code file");
        assert_eq!(
            c.server_names().collect::<Vec<_>>(),
            vec!["echo", "github", "memory"]
        );

        // Unset: the error names the input and the variable to set, not a value.
        let e = load(&p, &[("OTHER", "ghp-secret")]).expect_err("input unset");
        assert!(
            e.contains("gh-token") && e.contains("MCPQ_INPUT_GH_TOKEN"),
            "{e}"
        );
        assert!(e.contains("servers.github.headers.Authorization"), "{e}");
        assert!(!e.contains("ghp-secret"), "{e}");
    }

    #[test]
    fn disabled_servers_are_skipped_and_returned_by_name() {
        let dir = temp_dir("disabled");
        // The disabled entry's variable need not be set.
        let p = write(
            &dir,
            "claude.json",
            r#"{"mcpServers": {
                "on": {"command": "a"},
                "off": {"command": "${T_DISABLED_UNSET}", "disabled": true, "autoApprove": ["x"]},
                "off2": {"type": "sse", "url": "http://x/sse", "disabled": true}
            }}"#,
        );
        let c = load(&p, &[]).expect("one enabled");
        assert_eq!(c.server_names().collect::<Vec<_>>(), vec!["on"]);
        assert_eq!(c.disabled_servers, vec!["off", "off2"]);

        let p = write(
            &dir,
            "all-off.json",
            r#"{"mcpServers": {"a": {"command": "a", "disabled": true}}}"#,
        );
        let e = load(&p, &[]).expect_err("all disabled");
        assert!(
            e.contains("no MCP server in") && e.contains("all-off.json"),
            "{e}"
        );
        assert!(e.contains("disabled (a)"), "{e}");

        let p = write(
            &dir,
            "bad.json",
            r#"{"mcpServers": {"a": {"command": "a", "disabled": "yes"}}}"#,
        );
        let e = load(&p, &[]).expect_err("not a bool");
        assert!(e.contains("mcpServers.a.disabled"), "{e}");
    }

    #[test]
    fn variables_are_expanded_in_every_field_and_an_unset_one_names_server_field_and_var() {
        let dir = temp_dir("vars");
        let p = write(
            &dir,
            "claude.json",
            r#"{"mcpServers": {"fs": {
                "command": "${T_VARS_BIN}/server",
                "args": ["--root", "${env:T_VARS_ROOT}", "$HOME stays"],
                "env": {"API_KEY": "${T_VARS_KEY}"},
                "cwd": "${userHome}/work"
            }}}"#,
        );
        let vars = [
            ("T_VARS_BIN", "/opt/bin"),
            ("T_VARS_ROOT", "/srv"),
            ("T_VARS_KEY", "k-123"),
            ("HOME", "/home/u"),
        ];
        let c = load(&p, &vars).expect("all set");
        let fs = &c.servers["fs"];
        assert_eq!(fs.command, "/opt/bin/server");
        assert_eq!(fs.args, vec!["--root", "/srv", "$HOME stays"]);
        assert_eq!(fs.env["API_KEY"], "k-123");
        assert_eq!(fs.cwd.as_deref(), Some(Path::new("/home/u/work")));

        let e = load(&p, &vars[..3]).expect_err("HOME unset");
        assert!(e.contains("mcpServers.fs.cwd") && e.contains("HOME"), "{e}");

        let e = load(&p, &[("T_VARS_BIN", "/opt/bin"), ("T_VARS_ROOT", "/srv")])
            .expect_err("key unset");
        assert!(e.contains("mcpServers.fs.env.API_KEY"), "{e}");
        assert!(e.contains("T_VARS_KEY"), "{e}");
        assert!(!e.contains("/opt/bin") && !e.contains("/srv"), "{e}");

        let p = write(
            &dir,
            "editor.json",
            r#"{"servers": {"fs": {"command": "x", "args": ["${workspaceFolder}"]}}}"#,
        );
        let e = load(&p, &[]).expect_err("editor variable");
        assert!(
            e.contains("servers.fs.args[0]") && e.contains("workspaceFolder"),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_are_errors_naming_their_path() {
        let dir = temp_dir("unknown");
        for (json, key) in [
            (
                r#"{"mcpServers": {"fs": {"command": "a", "transport": "stdio"}}}"#,
                "mcpServers.fs.transport: unknown key",
            ),
            (
                r#"{"mcpServers": {"fs": {"command": "a"}}, "globalShortcut": "x"}"#,
                "globalShortcut: unknown key",
            ),
            (
                r#"{"servers": {"fs": {"command": "a", "envFile": ".env"}}}"#,
                "servers.fs.envFile: unknown key",
            ),
            (
                r#"{"servers": {"fs": {"command": "a"}}, "inputs": [{"id": "x", "prompt": "?"}]}"#,
                "inputs[0].prompt: unknown key",
            ),
            (
                r#"{"mcpServers": {"fs": {"command": "a", "timeout": 60}}}"#,
                "mcpServers.fs.timeout: not supported",
            ),
            (
                r#"{"mcpServers": {"fs": {"command": "a", "headers": {}}}}"#,
                "mcpServers.fs.headers: is for streamable-HTTP",
            ),
            (
                r#"{"mcpServers": {"fs": {"type": "http", "url": "http://h/mcp", "command": "a"}}}"#,
                "mcpServers.fs: has both",
            ),
        ] {
            let p = write(&dir, "f.json", json);
            let e = load(&p, &[]).expect_err(json);
            assert!(e.contains(key), "{json}: {e}");
            assert!(e.contains("f.json"), "{json}: {e}");
        }
    }

    #[test]
    fn a_file_without_servers_is_an_error_naming_it() {
        let dir = temp_dir("empty");
        for json in [r#"{"mcpServers": {}}"#, r#"{"servers": {}}"#, "{}"] {
            let p = write(&dir, "empty.json", json);
            let e = load(&p, &[]).expect_err(json);
            assert!(
                e.contains("no MCP server in") && e.contains("empty.json"),
                "{e}"
            );
            let t = write(
                &dir,
                "ref.toml",
                "mcp_servers_file = \"empty.json\"\n[servers.echo]\ncommand = \"e\"\n",
            );
            let e = load(&t, &[]).expect_err(json);
            assert!(
                e.contains("no MCP server in") && e.contains("empty.json"),
                "{e}"
            );
        }
        let p = write(&dir, "list.json", "[]");
        let e = load(&p, &[]).expect_err("not an object");
        assert!(e.contains("list.json"), "{e}");
    }

    #[test]
    fn an_sse_entry_is_refused_naming_the_server() {
        let dir = temp_dir("sse");
        let p = write(
            &dir,
            "mcp.json",
            r#"{"servers": {"old": {"type": "sse", "url": "http://h/sse"}, "ok": {"command": "a"}}}"#,
        );
        let e = load(&p, &[]).expect_err("sse");
        assert!(e.contains("servers.old.type"), "{e}");
        assert!(e.contains("only streamable HTTP"), "{e}");
    }

    #[test]
    fn server_names_with_spaces_or_the_tool_separator_are_refused_in_json_and_toml() {
        let dir = temp_dir("names");
        for (name, what) in [("my server", "without spaces"), ("a__b", "`__`")] {
            let p = write(
                &dir,
                "n.json",
                &format!(r#"{{"mcpServers": {{"{name}": {{"command": "a"}}}}}}"#),
            );
            let e = load(&p, &[]).expect_err(name);
            assert!(e.contains(name) && e.contains(what), "{e}");
            let t = write(
                &dir,
                "n.toml",
                &format!("[servers.\"{name}\"]\ncommand = \"a\"\n"),
            );
            let e = load(&t, &[]).expect_err(name);
            assert!(e.contains(name) && e.contains(what), "{e}");
        }
        let t = write(&dir, "ok.toml", "[servers.a_b-c]\ncommand = \"a\"\n");
        load(&t, &[]).expect("single underscores are fine");
    }
}
