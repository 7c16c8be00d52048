//! `${...}` references in the MCP JSON files of other clients, and how mcpq resolves them.
//!
//! Forms (one table for every file format, so a reference means the same thing in a
//! Claude Desktop, Cursor or VS Code file):
//! - `${VAR}` and `${env:VAR}`: the environment variable `VAR` of the process reading the
//!   config (the worker, `mcpq`, `mcpq serve`);
//! - `${input:ID}`: a VS Code input, which VS Code prompts for. mcpq cannot prompt, so it
//!   reads the environment variable [`input_env_var`]`(ID)`: `MCPQ_INPUT_` + `ID`
//!   uppercased, each character that is not an ASCII letter or digit made `_`
//!   (`gh-token` -> `MCPQ_INPUT_GH_TOKEN`). `ID` must be declared in the file's `inputs`;
//! - `${userHome}`: `$HOME`.
//!
//! Everything else inside `${...}` is refused, naming it: the other editor variables
//! (`${workspaceFolder}`, `${file}`, `${pathSeparator}`, `${/}`, ...) describe an editor
//! window mcpq does not have, and `${config:...}`, `${command:...}` or shell-style
//! defaults (`${VAR:-x}`) are not supported. A `$` not followed by `{` is kept as it is;
//! an unclosed `${` is an error.
//!
//! Guarantees: a value is expanded once (a variable's value that itself holds `${...}`
//! is kept verbatim: no recursion, no injection); an unresolved reference is an error
//! ([`VarError`]) that names the reference and the variable to set, never a value (they
//! are often tokens). Tested by the `tests` module below.

use std::collections::BTreeSet;

/// Why a `${...}` reference could not be resolved. The message names the reference and
/// what to set; it never holds the value of any variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VarError {
    /// `${VAR}`, `${env:VAR}` or `${userHome}` (`HOME`) names a variable that is not set
    /// (or not UTF-8).
    #[error("`${{{reference}}}`: the environment variable {var} is not set")]
    Unset {
        /// What was inside `${...}`.
        reference: String,
        /// The variable looked up.
        var: String,
    },
    /// `${input:ID}`: its stand-in variable is not set.
    #[error(
        "`${{input:{id}}}` is a VS Code input, which mcpq cannot prompt for: set the \
         environment variable {var}"
    )]
    InputUnset {
        /// The input's id.
        id: String,
        /// The variable that stands in for it ([`input_env_var`]).
        var: String,
    },
    /// `${input:ID}` with no `{"id": "ID"}` in the file's `inputs`.
    #[error("`${{input:{id}}}`: no input with id `{id}` in the file's `inputs`")]
    InputNotDeclared {
        /// The input's id.
        id: String,
    },
    /// A form mcpq does not resolve (`${workspaceFolder}`, `${config:x}`, `${A:-b}`).
    #[error(
        "`${{{reference}}}` is not supported (mcpq resolves ${{VAR}}, ${{env:VAR}}, \
         ${{input:ID}} and ${{userHome}}; it has no editor workspace)"
    )]
    Unsupported {
        /// What was inside `${...}`.
        reference: String,
    },
    /// `${` with no `}` after it.
    #[error("`${{` is not closed by `}}`")]
    Unclosed,
}

/// The environment variable that stands in for VS Code input `id`: `MCPQ_INPUT_` and
/// `id` uppercased, every character but ASCII letters and digits made `_`.
pub fn input_env_var(id: &str) -> String {
    let tail: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("MCPQ_INPUT_{tail}")
}

/// VS Code's predefined variables other than `userHome`: names of the editor's state,
/// refused rather than read from the environment (a variable called `file` would be a
/// surprising thing to find).
const EDITOR_VARIABLES: &[&str] = &[
    "workspaceFolder",
    "workspaceFolderBasename",
    "workspaceRoot",
    "file",
    "fileWorkspaceFolder",
    "relativeFile",
    "relativeFileDirname",
    "fileBasename",
    "fileBasenameNoExtension",
    "fileExtname",
    "fileDirname",
    "fileDirnameBasename",
    "cwd",
    "lineNumber",
    "columnNumber",
    "selectedText",
    "execPath",
    "defaultBuildTask",
    "pathSeparator",
];

/// Resolves `${...}` references against an environment.
pub struct Expander<'a> {
    /// Reads one environment variable (`std::env::var(..).ok()` in production; tests pass
    /// a map, so they need no process-wide state).
    lookup: &'a dyn Fn(&str) -> Option<String>,
    /// The ids declared in the file's `inputs`.
    inputs: &'a BTreeSet<String>,
    /// Values read from the environment (and inputs) that may be secrets: redacted
    /// from logs and stored errors ([`Expander::secrets`]).
    secrets: std::cell::RefCell<Vec<String>>,
}

/// Shortest substituted value taken for a secret (shorter ones, `1`, `true`, would
/// blank out ordinary words).
const MIN_SECRET_CHARS: usize = 8;

impl<'a> Expander<'a> {
    /// An expander reading variables through `lookup`, accepting `${input:ID}` for the
    /// ids in `inputs`.
    pub fn new(lookup: &'a dyn Fn(&str) -> Option<String>, inputs: &'a BTreeSet<String>) -> Self {
        Expander {
            lookup,
            inputs,
            secrets: Default::default(),
        }
    }

    /// `text` with every reference replaced (see the module doc).
    pub fn expand(&self, text: &str) -> Result<String, VarError> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after.find('}').ok_or(VarError::Unclosed)?;
            out.push_str(&self.resolve(&after[..end])?);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// The value of one reference (what is inside `${...}`).
    /// The substituted values that may be secrets (at least [`MIN_SECRET_CHARS`], not a
    /// path): tokens in a URL or an argument are redacted like those in headers.
    pub fn secrets(&self) -> Vec<String> {
        self.secrets.borrow().clone()
    }

    fn resolve(&self, reference: &str) -> Result<String, VarError> {
        let value = self.lookup_reference(reference)?;
        if reference != "userHome"
            && value.chars().count() >= MIN_SECRET_CHARS
            && !value.starts_with('/')
        {
            self.secrets.borrow_mut().push(value.clone());
        }
        Ok(value)
    }

    fn lookup_reference(&self, reference: &str) -> Result<String, VarError> {
        let env = |var: &str| {
            (self.lookup)(var).ok_or_else(|| VarError::Unset {
                reference: reference.to_string(),
                var: var.to_string(),
            })
        };
        if let Some(var) = reference.strip_prefix("env:") {
            if is_identifier(var) {
                return env(var);
            }
        } else if let Some(id) = reference.strip_prefix("input:") {
            if !self.inputs.contains(id) {
                return Err(VarError::InputNotDeclared { id: id.to_string() });
            }
            let var = input_env_var(id);
            return (self.lookup)(&var).ok_or_else(|| VarError::InputUnset {
                id: id.to_string(),
                var,
            });
        } else if reference == "userHome" {
            return env("HOME");
        } else if is_identifier(reference) && !EDITOR_VARIABLES.contains(&reference) {
            return env(reference);
        }
        Err(VarError::Unsupported {
            reference: reference.to_string(),
        })
    }
}

/// A POSIX-style variable name: a letter or `_`, then letters, digits, `_`.
fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn expand(text: &str, vars: &[(&str, &str)], inputs: &[&str]) -> Result<String, VarError> {
        let vars: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |name: &str| vars.get(name).cloned();
        let inputs: BTreeSet<String> = inputs.iter().map(|s| s.to_string()).collect();
        Expander::new(&lookup, &inputs).expand(text)
    }

    #[test]
    fn substituted_values_that_may_be_secrets_are_kept_for_redaction() {
        let vars = [
            ("KEY", "sk-live-0123456789"),
            ("SHORT", "1"),
            ("DIR", "/srv/mcp/data"),
            ("HOME", "/home/someone-long"),
        ];
        let lookup = |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        let inputs: BTreeSet<String> = BTreeSet::new();
        let expander = Expander::new(&lookup, &inputs);
        let url = expander
            .expand("https://x.test/mcp?key=${KEY}&n=${SHORT}&d=${DIR}&h=${userHome}")
            .expect("expands");
        assert!(url.contains("sk-live-0123456789"));
        assert_eq!(expander.secrets(), vec!["sk-live-0123456789".to_string()]);
    }

    #[test]
    fn plain_and_env_forms_read_the_environment_once() {
        let vars = [("TOKEN", "t-123"), ("TRICK", "${TOKEN}")];
        assert_eq!(
            expand("Bearer ${TOKEN}/${env:TOKEN}", &vars, &[]),
            Ok("Bearer t-123/t-123".to_string())
        );
        // No recursion: a value holding a reference stays as it is.
        assert_eq!(expand("${TRICK}", &vars, &[]), Ok("${TOKEN}".to_string()));
        assert_eq!(
            expand("${userHome}/x", &[("HOME", "/home/a")], &[]),
            Ok("/home/a/x".to_string())
        );
    }

    #[test]
    fn a_dollar_not_followed_by_a_brace_is_kept() {
        assert_eq!(expand("a$b $ $$ $", &[], &[]), Ok("a$b $ $$ $".to_string()));
        assert_eq!(expand("${", &[], &[]), Err(VarError::Unclosed));
    }

    #[test]
    fn an_unset_variable_names_the_variable_and_no_value() {
        let e =
            expand("x ${env:MISSING_ONE}", &[("OTHER", "secret-value")], &[]).expect_err("unset");
        assert_eq!(
            e,
            VarError::Unset {
                reference: "env:MISSING_ONE".to_string(),
                var: "MISSING_ONE".to_string()
            }
        );
        let text = e.to_string();
        assert!(text.contains("MISSING_ONE"), "{text}");
        assert!(!text.contains("secret-value"), "{text}");
    }

    #[test]
    fn inputs_come_from_mcpq_input_variables_when_declared() {
        assert_eq!(input_env_var("gh-token.v2"), "MCPQ_INPUT_GH_TOKEN_V2");
        let vars = [("MCPQ_INPUT_GH_TOKEN", "ghp-1")];
        assert_eq!(
            expand("${input:gh-token}", &vars, &["gh-token"]),
            Ok("ghp-1".to_string())
        );
        let e = expand("${input:api-key}", &vars, &["api-key"]).expect_err("unset");
        assert!(
            e.to_string().contains("MCPQ_INPUT_API_KEY") && e.to_string().contains("api-key"),
            "{e}"
        );
        assert_eq!(
            expand("${input:gh-token}", &vars, &[]),
            Err(VarError::InputNotDeclared {
                id: "gh-token".to_string()
            })
        );
    }

    #[test]
    fn editor_variables_and_other_forms_are_refused_by_name() {
        for reference in [
            "workspaceFolder",
            "/",
            "config:editor.tabSize",
            "A:-default",
            "env:",
        ] {
            let e = expand(
                &format!("${{{reference}}}"),
                &[("workspaceFolder", "w")],
                &[],
            )
            .expect_err(reference);
            assert_eq!(
                e,
                VarError::Unsupported {
                    reference: reference.to_string()
                }
            );
            assert!(e.to_string().contains(reference), "{e}");
        }
    }
}
