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
//! Guarantees:
//! - Templates are checked when the job is submitted (syntax, and that every name exists
//!   at that step: an earlier named step, a key of `input`), so a typo is a usage error,
//!   not a failed job. `include`, `import`, `from ... import` and `extends` are refused
//!   there and at run time: there are no other templates to load.
//! - At run time a missing value is an error, never an empty string.
//! - A template's work is bounded (minijinja fuel, [`FUEL`]), and what one render
//!   produces is bounded too: all the templates of one render (a step's arguments, a
//!   reply) together make at most [`MAX_OUTPUT_BYTES`] (the *template output limit*;
//!   text counts its bytes, a whole expression its JSON).
//!
//! Caveat: the values a template builds on the way (`"a" * 100000000`, `a ~ a`, filters
//! such as `center` or `indent`) are not counted here: an allocation that fails aborts
//! the whole process. So the worker never calls [`Templates::render`] itself: it renders
//! in a memory-limited child process ([`crate::agent::template_sandbox`]), which may die in its
//! place.

use std::collections::BTreeSet;
use std::io;

use minijinja::machinery::{parse, parse_expr, tokenize, Token, WhitespaceConfig};
use minijinja::syntax::SyntaxConfig;
use minijinja::{Environment, UndefinedBehavior};
use serde_json::Value;

/// Bound on the work of one template (minijinja "fuel": roughly instructions).
pub const FUEL: u64 = 100_000;

/// The template output limit: the most one render (every template of a step's arguments
/// together, or of a reply) may produce, in bytes. Text counts its bytes, a whole
/// expression (`"{{ steps.fetch.result }}"`) the length of its JSON. 4 MiB is far above
/// any tool argument we have seen, and small enough that a job cannot make the worker
/// hold or send much more than its own payload.
pub const MAX_OUTPUT_BYTES: usize = 4 * 1024 * 1024;

/// The template source limit: the longest one template string may be, in bytes.
/// Checking parses it in the calling process (the worker, `mcpq submit`), and a parse
/// tree is many times the size of its source; 64 KiB is far above any argument a plan
/// needs to template.
pub const MAX_SOURCE_BYTES: usize = 64 * 1024;

/// The most template text one job may hold (every template string together), in bytes:
/// bounds the time and memory of checking a job, whatever its payload size.
pub const MAX_JOB_SOURCE_BYTES: usize = 1024 * 1024;

/// Statements that load another template: there is no loader, so they can never work.
const LOADER_STATEMENTS: &[&str] = &["include", "import", "from", "extends"];

/// Why a template could not be checked or rendered.
#[derive(Debug, Clone, PartialEq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[error("template {template:?}: {message}")]
pub struct TemplateError {
    /// The template text (cut to 200 characters).
    pub template: String,
    /// What is wrong.
    pub message: String,
}

impl TemplateError {
    /// An error in `template` (its first 200 characters are kept): `message` says what.
    pub fn new(template: &str, message: impl Into<String>) -> Self {
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

/// Jinja's default delimiters, the only ones a job's templates have.
// `SyntaxConfig` is a unit struct only without minijinja's `custom_syntax` feature.
#[allow(clippy::default_constructed_unit_structs)]
fn syntax() -> SyntaxConfig {
    SyntaxConfig::default()
}

/// How many bytes of template text `value` holds (strings with `{{` or `{%`), for
/// [`MAX_JOB_SOURCE_BYTES`].
pub fn template_bytes(value: &Value) -> usize {
    match value {
        Value::String(s) if is_template(s) => s.len(),
        Value::Array(items) => items.iter().map(template_bytes).sum(),
        Value::Object(map) => map.values().map(template_bytes).sum(),
        _ => 0,
    }
}

/// True when `value` holds a template anywhere (a string with `{{` or `{%`); anything
/// else renders to itself.
pub fn has_templates(value: &Value) -> bool {
    match value {
        Value::String(s) => is_template(s),
        Value::Array(items) => items.iter().any(has_templates),
        Value::Object(map) => map.values().any(has_templates),
        _ => false,
    }
}

/// Refuses `{% include %}`, `{% import %}`, `{% from %}` and `{% extends %}`, found on
/// the token stream (so text, comments and `{% raw %}` blocks that merely mention them
/// are fine). Syntax errors are left to the parser, which words them better.
fn refuse_loader_statements(s: &str) -> Result<(), TemplateError> {
    let tokens = tokenize(s, false, syntax(), WhitespaceConfig::default());
    let mut after_block_start = false;
    for token in tokens {
        let Ok((token, _)) = token else {
            return Ok(());
        };
        if let (true, Token::Ident(name)) = (after_block_start, &token) {
            if LOADER_STATEMENTS.contains(name) {
                return Err(TemplateError::new(
                    s,
                    format!(
                        "`{{% {name} %}}` is not supported: a template cannot load other \
                         templates (include, import, from, extends); write the text inline"
                    ),
                ));
            }
        }
        after_block_start = matches!(token, Token::BlockStart);
    }
    Ok(())
}

/// `source` (the template `template`, or its whole expression) with every string
/// literal replaced by `''` and every number by `0`, for reading its names: the same
/// syntax and the same names, but constants that fold to almost nothing. A number right
/// after a dot (`input.0`) is part of a name and stays.
fn without_literals(template: &str, source: &str, in_expr: bool) -> Result<String, TemplateError> {
    let tokens = tokenize(source, in_expr, syntax(), WhitespaceConfig::default());
    let mut out = String::with_capacity(source.len());
    let mut copied = 0;
    let mut after_dot = false;
    for token in tokens {
        let (token, span) = token.map_err(|e| TemplateError::new(template, e.to_string()))?;
        let blank = match token {
            Token::Str(_) | Token::String(_) => Some("''"),
            Token::Int(_) | Token::Int128(_) | Token::Float(_) if !after_dot => Some("0"),
            _ => None,
        };
        after_dot = matches!(token, Token::Dot);
        let (start, end) = (span.start_offset as usize, span.end_offset as usize);
        if let (Some(blank), Some(before)) = (blank, source.get(copied..start)) {
            out.push_str(before);
            out.push_str(blank);
            copied = end;
        }
    }
    out.push_str(source.get(copied..).unwrap_or_default());
    Ok(out)
}

/// An `io::Write` that keeps what it is given until the budget of one render is spent,
/// then fails (and remembers that it did, to name the limit in the error).
struct CappedOutput<'a> {
    out: Vec<u8>,
    left: &'a mut usize,
    exceeded: bool,
}

impl io::Write for CappedOutput<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() > *self.left {
            self.exceeded = true;
            return Err(io::Error::other("template output limit exceeded"));
        }
        *self.left -= buf.len();
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The error for a render past [`MAX_OUTPUT_BYTES`].
fn output_limit_error(template: &str) -> TemplateError {
    TemplateError::new(
        template,
        format!(
            "the rendered output is larger than the template output limit of {} MiB \
             (all templates of one step's arguments, or of one reply, together)",
            MAX_OUTPUT_BYTES / (1024 * 1024)
        ),
    )
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
    ///
    /// Never evaluates anything, not even constants: minijinja folds constant
    /// expressions when it compiles (`"a" * 100000000 ~ "a" * 100000000` becomes a 200 MB
    /// string), so the syntax is checked with the parser alone and the names are read
    /// from a copy whose literals are emptied ([`without_literals`]).
    pub fn references(&self, s: &str) -> Result<BTreeSet<String>, TemplateError> {
        if s.len() > MAX_SOURCE_BYTES {
            return Err(TemplateError::new(
                s,
                format!(
                    "the template is {} bytes; the template source limit is {} KiB",
                    s.len(),
                    MAX_SOURCE_BYTES / 1024
                ),
            ));
        }
        refuse_loader_statements(s)?;
        let error = |e: minijinja::Error| TemplateError::new(s, e.to_string());
        let names = match whole_expression(s) {
            Some(expr) => {
                parse_expr(expr).map_err(error)?;
                self.env
                    .compile_expression(&without_literals(s, expr, true)?)
                    .map_err(error)?
                    .undeclared_variables(true)
            }
            None => {
                parse(s, "<string>", syntax(), WhitespaceConfig::default()).map_err(error)?;
                self.env
                    .template_from_str(&without_literals(s, s, false)?)
                    .map_err(error)?
                    .undeclared_variables(true)
            }
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

    /// Renders every template inside `value` with the data `data` (see the module doc);
    /// all of them together may produce at most [`MAX_OUTPUT_BYTES`].
    ///
    /// Runs in the calling process: see the module's caveat before calling it on a
    /// job's templates anywhere but in the sandbox.
    pub fn render(&self, value: &Value, data: &Value) -> Result<Value, TemplateError> {
        let mut left = MAX_OUTPUT_BYTES;
        self.render_within(value, data, &mut left)
    }

    fn render_within(
        &self,
        value: &Value,
        data: &Value,
        left: &mut usize,
    ) -> Result<Value, TemplateError> {
        match value {
            Value::String(s) if is_template(s) => self.render_one(s, data, left),
            Value::Array(items) => items
                .iter()
                .map(|v| self.render_within(v, data, left))
                .collect::<Result<_, _>>()
                .map(Value::Array),
            Value::Object(map) => map
                .iter()
                .map(|(k, v)| Ok((k.clone(), self.render_within(v, data, left)?)))
                .collect::<Result<_, _>>()
                .map(Value::Object),
            other => Ok(other.clone()),
        }
    }

    /// One template string, within what is `left` of the render's output budget.
    fn render_one(&self, s: &str, data: &Value, left: &mut usize) -> Result<Value, TemplateError> {
        refuse_loader_statements(s)?;
        if let Some(expr) = whole_expression(s) {
            let v = self
                .env
                .compile_expression(expr)
                .and_then(|e| e.eval(data))
                .map_err(|e| TemplateError::new(s, e.to_string()))?;
            // Strict mode errors when undefined is printed, not when an expression
            // evaluates to it: refuse it here too.
            if v.is_undefined() {
                return Err(TemplateError::new(s, format!("`{expr}` is undefined")));
            }
            // Measure the JSON through the capped writer first: a value past the limit
            // is refused without being copied.
            let mut sink = CappedOutput {
                out: Vec::new(),
                left,
                exceeded: false,
            };
            if let Err(e) = serde_json::to_writer(&mut sink, &v) {
                return Err(if sink.exceeded {
                    output_limit_error(s)
                } else {
                    TemplateError::new(s, e.to_string())
                });
            }
            return serde_json::from_slice(&sink.out)
                .map_err(|e| TemplateError::new(s, e.to_string()));
        }
        let template = self
            .env
            .template_from_str(s)
            .map_err(|e| TemplateError::new(s, e.to_string()))?;
        let mut sink = CappedOutput {
            out: Vec::new(),
            left,
            exceeded: false,
        };
        match template.render_captured_to(data, &mut sink) {
            Ok(_) => String::from_utf8(sink.out)
                .map(Value::String)
                .map_err(|e| TemplateError::new(s, e.to_string())),
            Err(_) if sink.exceeded => Err(output_limit_error(s)),
            Err(e) => Err(TemplateError::new(s, e.to_string())),
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

    #[test]
    fn checking_a_template_evaluates_none_of_its_constants() {
        let t = Templates::new();
        let c = ctx(&["city"], &["fetch"]);
        // Folded at compile time, this would be 50 strings of 100 MB, concatenated.
        let huge = vec!["(\"a\" * 100000000)"; 50].join(" ~ ");
        for template in [
            format!("{{{{ {huge} }}}}"),
            format!("x {{{{ {huge} }}}} {{% set a = {huge} %}}{{{{ a ~ input.city }}}}"),
        ] {
            assert!(t.check(&json!(template), &c).is_ok(), "{template}");
        }
        // Names are read as written: numbers after a dot and literals elsewhere.
        let names = t
            .references("{{ steps.fetch.text ~ input.city ~ 'input.town' ~ steps.fetch.result.0 }}")
            .expect("names");
        assert_eq!(
            names.into_iter().collect::<Vec<_>>(),
            ["input.city", "steps.fetch.result", "steps.fetch.text"]
        );
    }

    #[test]
    fn a_render_past_the_output_limit_fails_naming_the_limit() {
        let t = Templates::new();
        // One string: 100 MB would be built in memory, but writing stops at the limit.
        let err = t
            .render(
                &json!("{% for i in range(50) %}{{ 'a' * 1000000 }}{% endfor %}"),
                &json!({}),
            )
            .expect_err("output limit");
        assert!(
            err.message.contains("template output limit of 4 MiB"),
            "{err}"
        );
        // Many strings of one render share the budget.
        let half = json!({"x": "{{ 'a' * 3000000 }}!", "y": "{{ 'b' * 3000000 }}!"});
        let err = t.render(&half, &json!({})).expect_err("shared budget");
        assert!(err.message.contains("template output limit"), "{err}");
        // A whole expression is measured as JSON.
        let err = t
            .render(&json!("{{ 'a' * 5000000 }}"), &json!({}))
            .expect_err("whole expression");
        assert!(err.message.contains("template output limit"), "{err}");
        // Just under the limit is fine.
        let ok = t
            .render(&json!("{{ 'a' * 4000000 }}"), &json!({}))
            .expect("under the limit");
        assert_eq!(ok.as_str().map(str::len), Some(4_000_000));
    }

    #[test]
    fn include_import_from_and_extends_are_refused_at_submit_and_at_run_time() {
        let t = Templates::new();
        let c = ctx(&[], &[]);
        for template in [
            "{% include 'x' %}",
            "a {%- import 'm' as m %}",
            "{%from 'm' import f %}",
            "{% extends 'base' %}{% block b %}{% endblock %}",
            "{% if true %}{% include input.x %}{% endif %}",
        ] {
            let e = t.check(&json!(template), &c).expect_err(template);
            assert!(e.message.contains("is not supported"), "{template}: {e}");
            let e = t.render(&json!(template), &json!({})).expect_err(template);
            assert!(
                e.message.contains("cannot load other templates"),
                "{template}: {e}"
            );
        }
        // Text, comments and raw blocks that only mention them are fine.
        for template in [
            "include {{ 'this' }} import",
            "{# {% include 'x' %} #}{{ 1 }}",
            "{% raw %}{% include 'x' %}{% endraw %}",
            "{% set from = 1 %}{{ from }}",
        ] {
            assert!(t.check(&json!(template), &c).is_ok(), "{template}");
            assert!(t.render(&json!(template), &json!({})).is_ok(), "{template}");
        }
    }
}
