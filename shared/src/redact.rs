//! `Redactor`: keeps the secrets a worker read out of everything it stores or logs.
//!
//! Servers and APIs echo what they were sent: a 401 body quoting `Authorization:
//! Bearer sk-...` becomes a job's error, then its attempts list, its dead-letter entry
//! and a log line. The worker builds one `Redactor` at start from its config, holding
//! the values of every secret it reads:
//! - the env var named by `[llm] api_key_env`,
//! - each server's `bearer_token_env`,
//! - `[smtp] password_env`,
//! - the password in `redis_url` (as written, and percent-decoded) and the env var
//!   named by `redis_password_env`,
//! - a server's `headers` and `env` values whose name says they are credentials
//!   (`Authorization`, `Cookie`, or with `token`, `key`, `secret`, `password`, `auth`,
//!   `credential` in it), and the last word of each (`Bearer TOKEN`).
//!
//! Guarantees: every failure the runner stores (message and stderr tail, hence the job's
//! `error`, its attempts and its dead-letter entry) and every result (each string in it)
//! has each secret replaced by `[REDACTED]`; so has every line of the worker's log (text
//! or JSON; the JSON-escaped form of a secret too).
//!
//! Caveats: secrets shorter than [`MIN_SECRET_LEN`] bytes are not redacted (replacing
//! every `a` would make errors unreadable, and such a secret protects nothing); a
//! secret a server transformed (base64, split across lines, hashed) is not recognised.

use std::borrow::Cow;

use serde_json::Value;

use crate::config::Config;
use crate::failure::JobFailure;

/// What a secret is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// Secrets shorter than this are not redacted (see the module's caveats).
pub const MIN_SECRET_LEN: usize = 4;

/// The secrets to hide; see the module doc. `Debug` does not show them.
#[derive(Clone, Default)]
pub struct Redactor {
    /// Longest first, so a secret containing another is replaced whole.
    secrets: Vec<String>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} secrets)", self.secrets.len())
    }
}

/// True when a header or environment variable named `name` holds a credential:
/// `Authorization`, `Cookie`, or a name with `token`, `key`, `secret`, `password`,
/// `passwd`, `auth` or `credential` in it (any case).
fn names_a_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name == "cookie"
        || [
            "auth",
            "token",
            "key",
            "secret",
            "password",
            "passwd",
            "credential",
        ]
        .iter()
        .any(|word| name.contains(word))
}

impl mcpq_core::logging::Redact for Redactor {
    fn redact<'a>(&self, line: &'a [u8]) -> Cow<'a, [u8]> {
        self.bytes(line)
    }
}

impl Redactor {
    /// A redactor for these secret values (short and empty ones are ignored).
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let mut all: Vec<String> = Vec::new();
        for secret in secrets {
            if secret.len() < MIN_SECRET_LEN {
                continue;
            }
            // The form a JSON log line or a JSON error body carries.
            let json = serde_json::to_string(&secret).unwrap_or_default();
            let json = json.trim_matches('"').to_string();
            if json != secret && json.len() >= MIN_SECRET_LEN {
                all.push(json);
            }
            all.push(secret);
        }
        all.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        all.dedup();
        Redactor { secrets: all }
    }

    /// The secrets `config` names, read from the environment now.
    pub fn from_config(config: &Config) -> Self {
        let mut vars: Vec<&str> = Vec::new();
        if let Some(var) = config.llm.as_ref().and_then(|l| l.api_key_env.as_deref()) {
            vars.push(var);
        }
        if let Some(var) = config.smtp.as_ref().and_then(|s| s.password_env.as_deref()) {
            vars.push(var);
        }
        if let Some(var) = config.redis_password_env.as_deref() {
            vars.push(var);
        }
        vars.extend(
            config
                .servers
                .values()
                .filter_map(|s| s.bearer_token_env.as_deref()),
        );
        // Webhook secrets: never logged by mcpq; redacted in case a receiver echoes one.
        let webhooks = &config.webhooks;
        vars.push(&webhooks.secret_env);
        vars.extend(webhooks.secret_envs.iter().map(String::as_str));
        vars.extend(
            webhooks
                .endpoints
                .values()
                .filter_map(|e| e.secret_env.as_deref()),
        );
        let mut secrets: Vec<String> = vars
            .into_iter()
            .filter_map(|var| std::env::var(var).ok())
            .collect();
        secrets.extend(redis_password(&config.redis_url));
        // What `${VAR}` and `${input:ID}` put into an MCP JSON file's servers (a token
        // in a URL or an argument).
        secrets.extend(config.substituted_secrets.iter().cloned());
        // Secrets written into the config itself: a server's headers and environment
        // values whose name says they are credentials (redacting every env value would
        // hide words like `true` everywhere).
        for server in config.servers.values() {
            let named = server.headers.iter().chain(server.env.iter());
            secrets.extend(named.filter(|(name, _)| names_a_secret(name)).flat_map(
                |(_, value)| {
                    // `Bearer sk-...`: the token alone is the secret too.
                    let token = value.split_whitespace().last().map(str::to_string);
                    [Some(value.clone()), token].into_iter().flatten()
                },
            ));
        }
        Redactor::new(secrets)
    }

    /// True when there is nothing to hide.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// `text` with every secret replaced.
    pub fn text<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = Cow::Owned(out.replace(secret.as_str(), REDACTED));
            }
        }
        out
    }

    /// `bytes` (a log line) with every secret replaced.
    pub fn bytes<'a>(&self, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        if self.is_empty() {
            return Cow::Borrowed(bytes);
        }
        match self.text(&String::from_utf8_lossy(bytes)) {
            Cow::Owned(text) => Cow::Owned(text.into_bytes()),
            Cow::Borrowed(_) => Cow::Borrowed(bytes),
        }
    }

    /// Redacts a failure's message and stderr tail in place.
    pub fn failure(&self, failure: &mut JobFailure) {
        if self.is_empty() {
            return;
        }
        if let Cow::Owned(m) = self.text(&failure.message) {
            failure.message = m;
        }
        if let Some(tail) = &mut failure.stderr_tail {
            if let Cow::Owned(t) = self.text(tail) {
                *tail = t;
            }
        }
    }

    /// Redacts every string (and object key) in `value`, in place.
    pub fn value(&self, value: &mut Value) {
        if self.is_empty() {
            return;
        }
        match value {
            Value::String(s) => {
                if let Cow::Owned(t) = self.text(s) {
                    *s = t;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.value(v)),
            Value::Object(map) => {
                let keys: Vec<String> = map.keys().cloned().collect();
                for key in keys {
                    if let Cow::Owned(clean) = self.text(&key) {
                        if let Some(v) = map.remove(&key) {
                            map.insert(clean, v);
                        }
                    }
                }
                map.values_mut().for_each(|v| self.value(v));
            }
            _ => {}
        }
    }
}

/// The password of a `redis://user:password@host` URL, as written and percent-decoded.
fn redis_password(url: &str) -> Vec<String> {
    let Some(rest) = url.split_once("://").map(|(_, rest)| rest) else {
        return Vec::new();
    };
    let Some((userinfo, _)) = rest.rsplit_once('@') else {
        return Vec::new();
    };
    let Some((_, password)) = userinfo.split_once(':') else {
        return Vec::new();
    };
    let decoded = percent_encoding::percent_decode_str(password).decode_utf8_lossy();
    let mut out = vec![password.to_string()];
    if decoded != password {
        out.push(decoded.into_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_replaced_everywhere_and_short_ones_are_left_alone() {
        let r = Redactor::new(["sk-secret-123".to_string(), "ab".to_string()]);
        assert_eq!(
            r.text("HTTP 401: Authorization: Bearer sk-secret-123 (ab)"),
            "HTTP 401: Authorization: Bearer [REDACTED] (ab)"
        );
        let mut f = JobFailure::new(
            crate::failure::FailureKind::LlmError,
            "bad key sk-secret-123",
            false,
        );
        f.stderr_tail = Some("token=sk-secret-123\n".into());
        r.failure(&mut f);
        assert_eq!(f.message, "bad key [REDACTED]");
        assert_eq!(f.stderr_tail.as_deref(), Some("token=[REDACTED]\n"));
        let mut v = serde_json::json!({"a": ["x sk-secret-123"], "sk-secret-123": 1});
        r.value(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"a": ["x [REDACTED]"], "[REDACTED]": 1})
        );
        assert_eq!(
            &*r.bytes(b"line sk-secret-123\n"),
            b"line [REDACTED]\n".as_slice()
        );
        assert!(!format!("{r:?}").contains("sk-"));
    }

    #[test]
    fn a_redis_password_is_found_as_written_and_decoded() {
        assert_eq!(
            redis_password("redis://user:p%40ss-word@host:6379/0"),
            vec!["p%40ss-word".to_string(), "p@ss-word".to_string()]
        );
        assert_eq!(redis_password("redis://:hunter22@h"), vec!["hunter22"]);
        assert!(redis_password("redis://127.0.0.1:6379").is_empty());
    }

    #[test]
    fn credentials_written_into_server_headers_and_env_are_secrets_other_values_are_not() {
        let config: Config = toml::from_str(
            r#"
[servers.remote]
url = "http://127.0.0.1:9/mcp"
headers = { Authorization = "Bearer tok-header-123", "X-Team" = "billing" }
[servers.gh]
command = "gh-mcp"
env = { GITHUB_TOKEN = "ghp_env_secret", DEBUG = "true" }
"#,
        )
        .expect("config");
        let r = Redactor::from_config(&config);
        let shown =
            r.text("401 for Bearer tok-header-123 / ghp_env_secret, team billing, debug true");
        assert_eq!(
            shown,
            "401 for [REDACTED] / [REDACTED], team billing, debug true"
        );
        assert_eq!(
            r.text("token tok-header-123 alone"),
            "token [REDACTED] alone"
        );
    }
}
