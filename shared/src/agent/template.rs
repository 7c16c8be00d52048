//! Templates in plan steps: a step's arguments may use the job's input, earlier steps'
//! results and (in email jobs) the email.
//!
//! The syntax is Jinja2's, through minijinja: `{{ input.city }}`,
//! `{{ steps.fetch.text }}`, `{{ email.subject | upper }}`,
//! `{% for a in attachments %}{{ a.path }} {% endfor %}`.
//!
//! - A string that is exactly one `{{ expression }}` is replaced by the expression's
//!   value with its JSON type: `"{{ input.count }}"` gives the number `3`, and
//!   `"{{ steps.search.structured }}"` an object.
//! - Any other string holding `{{` or `{%` is rendered as text.
//! - Everything else (other strings, numbers, ...) is left as it is.
//!
//! Names a template may use (see [`TemplateContext`]):
//! - `input.KEY`: the job's `input` object;
//! - `steps.NAME.text` (the tool result's text parts, joined by newlines),
//!   `steps.NAME.result` (the whole MCP result), `steps.NAME.structured` (its
//!   `structuredContent`), `steps.NAME.is_error`, `steps.NAME.error` (the failure of a
//!   `continue_on_error` step): an *earlier* step, by its `name`;
//! - `job.id`;
//! - in email jobs, `email.*` (`from`, `to`, `cc`, `subject`, `text`, `html`,
//!   `message_id`, `date`) and `attachments` (a list of `name`, `path`, `size`,
//!   `content_type`).
//!
//! Guarantees: templates are checked when the job is submitted (syntax, and that every
//! name exists at that step: an earlier named step, a key of `input`), so a typo is a
//! usage error, not a failed job. At run time a missing value is an error, never an
//! empty string, and a template's work is bounded (minijinja fuel), so a template cannot
//! hang a worker.

use std::collections::BTreeSet;

use minijinja::{Environment, UndefinedBehavior};
use serde_json::Value;

/// Bound on the work of one template (minijinja "fuel": roughly instructions).
const FUEL: u64 = 100_000;

/// Why a template could not be checked or rendered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("template {template:?}: {message}")]
pub struct TemplateError {
    /// The template text (cut to 200 characters).
    pub template: String,
    /// What is wrong.
    pub message: String,
}

impl TemplateError {
    fn new(template: &str, message: impl Into<String>) -> Self {
        TemplateError {
            template: template.chars().take(200).collect(),
            message: message.into(),
        }
    }
}

/// Which names exist where a template is used (for the submit-time check).
#[derive(Debug, Clone, Default)]
pub struct TemplateContext {
    /// Keys of the job's `input`.
    pub input: BTreeSet<String>,
    /// Names of the steps before this one.
    pub steps: BTreeSet<String>,
    /// True in email jobs: `email` and `attachments` exist.
    pub email: bool,
    /// True in an email reply of LLM mode: `answer` exists.
    pub answer: bool,
}

/// Renders and checks templates; one per process is enough.
pub struct Templates {
    env: Environment<'static>,
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Templates")
    }
}

/// The expression inside a string that is exactly one `{{ ... }}`.
fn whole_expression(s: &str) -> Option<&str> {
    let inner = s.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    (!inner.contains("{{") && !inner.contains("}}") && !inner.contains("{%"))
        .then_some(inner.trim())
}

fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%")
}

impl Templates {
    /// A strict environment: undefined names are errors; work is bounded.
    pub fn new() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_fuel(Some(FUEL));
        // Inside text, write booleans, null, lists and objects as JSON (`true`, not
        // Jinja's Python-style `True`): tools read JSON.
        env.set_formatter(|out, state, value| {
            use minijinja::value::ValueKind;
            match value.kind() {
                ValueKind::Bool | ValueKind::None | ValueKind::Map | ValueKind::Seq => {
                    let json = serde_json::to_string(value).map_err(|e| {
                        minijinja::Error::new(minijinja::ErrorKind::BadSerialization, e.to_string())
                    })?;
                    std::fmt::Write::write_str(out, &json).map_err(minijinja::Error::from)
                }
                _ => minijinja::escape_formatter(out, state, value),
            }
        });
        Templates { env }
    }

    /// The names `s` uses (dotted, e.g. `steps.fetch.text`), or its syntax error.
    pub fn references(&self, s: &str) -> Result<BTreeSet<String>, TemplateError> {
        let names = match whole_expression(s) {
            Some(expr) => self
                .env
                .compile_expression(expr)
                .map_err(|e| TemplateError::new(s, e.to_string()))?
                .undeclared_variables(true),
            None => self
                .env
                .template_from_str(s)
                .map_err(|e| TemplateError::new(s, e.to_string()))?
                .undeclared_variables(true),
        };
        Ok(names.into_iter().collect())
    }

    /// Checks every template inside `value` against what exists at this point.
    pub fn check(&self, value: &Value, ctx: &TemplateContext) -> Result<(), TemplateError> {
        match value {
            Value::String(s) if is_template(s) => {
                for name in self.references(s)? {
                    check_name(s, &name, ctx)?;
                }
                Ok(())
            }
            Value::Array(items) => items.iter().try_for_each(|v| self.check(v, ctx)),
            Value::Object(map) => map.values().try_for_each(|v| self.check(v, ctx)),
            _ => Ok(()),
        }
    }

    /// Renders every template inside `value` with the data `data` (see the module doc).
    pub fn render(&self, value: &Value, data: &Value) -> Result<Value, TemplateError> {
        match value {
            Value::String(s) if is_template(s) => {
                let rendered = match whole_expression(s) {
                    Some(expr) => {
                        let v = self
                            .env
                            .compile_expression(expr)
                            .and_then(|e| e.eval(data))
                            .map_err(|e| TemplateError::new(s, e.to_string()))?;
                        // Strict mode errors when undefined is printed, not when an
                        // expression evaluates to it: refuse it here too.
                        if v.is_undefined() {
                            return Err(TemplateError::new(s, format!("`{expr}` is undefined")));
                        }
                        serde_json::to_value(&v)
                            .map_err(|e| TemplateError::new(s, e.to_string()))?
                    }
                    None => Value::String(
                        self.env
                            .render_str(s, data)
                            .map_err(|e| TemplateError::new(s, e.to_string()))?,
                    ),
                };
                Ok(rendered)
            }
            Value::Array(items) => items
                .iter()
                .map(|v| self.render(v, data))
                .collect::<Result<_, _>>()
                .map(Value::Array),
            Value::Object(map) => map
                .iter()
                .map(|(k, v)| Ok((k.clone(), self.render(v, data)?)))
                .collect::<Result<_, _>>()
                .map(Value::Object),
            other => Ok(other.clone()),
        }
    }
}

/// Checks one dotted name against what exists.
fn check_name(template: &str, name: &str, ctx: &TemplateContext) -> Result<(), TemplateError> {
    let mut parts = name.split('.');
    let root = parts.next().unwrap_or_default();
    let second = parts.next();
    let fail = |m: String| Err(TemplateError::new(template, m));
    match (root, second) {
        ("input", Some(key)) if !ctx.input.contains(key) => fail(format!(
            "`input.{key}`: the job's input has no `{key}` (it has: {})",
            list(&ctx.input)
        )),
        ("input", _) | ("job", _) => Ok(()),
        ("steps", Some(step)) if !ctx.steps.contains(step) => fail(format!(
            "`steps.{step}`: no earlier step is named `{step}` (earlier named steps: {})",
            list(&ctx.steps)
        )),
        ("steps", _) => Ok(()),
        ("email" | "attachments", _) if ctx.email => Ok(()),
        ("answer", _) if ctx.answer => Ok(()),
        ("email" | "attachments", _) => fail(format!("`{root}` exists only in email jobs")),
        // minijinja's own functions and tests (range, loop, ...) are not data.
        ("range" | "loop" | "dict" | "namespace" | "debug" | "lipsum" | "cycler" | "joiner", _) => {
            Ok(())
        }
        _ => fail(format!(
            "unknown name `{root}`: use input.*, steps.NAME.*, job.id{}",
            if ctx.email {
                ", email.*, attachments"
            } else {
                ""
            }
        )),
    }
}

fn list(names: &BTreeSet<String>) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.iter().cloned().collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ctx(input: &[&str], steps: &[&str]) -> TemplateContext {
        TemplateContext {
            input: input.iter().map(|s| s.to_string()).collect(),
            steps: steps.iter().map(|s| s.to_string()).collect(),
            email: false,
            answer: false,
        }
    }

    #[test]
    fn a_whole_expression_keeps_its_json_type_and_text_is_interpolated() {
        let t = Templates::new();
        let data = json!({"input": {"n": 3, "city": "Oslo"}, "steps": {"s": {"structured": {"a": [1, 2]}}}});
        let args = json!({
            "count": "{{ input.n }}",
            "obj": "{{ steps.s.structured }}",
            "text": "weather in {{ input.city | upper }}, {{ input.n + 1 }} days, {{ input.n > 2 }} {{ steps.s.structured }}",
            "plain": "no template", "num": 7,
        });
        assert_eq!(
            t.render(&args, &data).expect("render"),
            json!({"count": 3, "obj": {"a": [1, 2]}, "text": "weather in OSLO, 4 days, true {\"a\":[1,2]}", "plain": "no template", "num": 7})
        );
    }

    #[test]
    fn a_missing_value_at_run_time_is_an_error_not_an_empty_string() {
        let t = Templates::new();
        let err = t
            .render(&json!("x {{ input.nope }}"), &json!({"input": {}}))
            .expect_err("strict");
        assert!(err.message.contains("undefined"), "{err}");
    }

    #[test]
    fn submit_time_checks_name_the_problem() {
        let t = Templates::new();
        let c = ctx(&["city"], &["fetch"]);
        assert!(t
            .check(&json!({"a": "{{ steps.fetch.text }} {{ input.city }}"}), &c)
            .is_ok());
        let e = t
            .check(&json!("{{ steps.later.text }}"), &c)
            .expect_err("later step");
        assert!(
            e.message.contains("no earlier step is named `later`"),
            "{e}"
        );
        let e = t
            .check(&json!("{{ input.town }}"), &c)
            .expect_err("missing input");
        assert!(e.message.contains("has no `town`"), "{e}");
        let e = t
            .check(&json!("{{ email.subject }}"), &c)
            .expect_err("not email");
        assert!(e.message.contains("only in email jobs"), "{e}");
        let e = t.check(&json!("{{ oops }}"), &c).expect_err("unknown");
        assert!(e.message.contains("unknown name `oops`"), "{e}");
        let e = t.check(&json!("{{ input.city "), &c).expect_err("syntax");
        assert!(!e.message.is_empty());
        // Loop variables are not data names.
        let c = TemplateContext { email: true, ..c };
        assert!(t
            .check(
                &json!("{% for a in attachments %}{{ a.path }}{% endfor %}"),
                &c
            )
            .is_ok());
    }

    #[test]
    fn a_runaway_template_is_stopped() {
        let t = Templates::new();
        let err = t
            .render(&json!("{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}"), &json!({}))
            .expect_err("fuel");
        assert!(!err.message.is_empty());
    }
}
