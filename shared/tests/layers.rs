//! The layer ratchet: imports inside `mcpq-core` and `mcpq-shared` only go down.
//!
//! The layers (docs/ARCHITECTURE.md): 1 data and validation, no I/O (`duration`, `tls`,
//! `failure`, `template`, `job`, `config`, `backoff`, `metrics`, `terminal`, `tool_pattern`, `outcome_text`, `cli_error`) -> 2 `queue` (Redis),
//! `backend` (apalis over it), `limiter` (waits for the cluster-wide limits), `retry_after` -> 3 `supervisor` (processes) -> 4 `mcp` (sessions, pool,
//! job sessions) -> 5 runners and their helpers (`result_budget`, `agent`, `email`,
//! `redact`) -> 6 `fate`, `runner` -> the binaries. Layers 1 and 2 but `tls`, `metrics` and
//! `backend` are the crate `mcpq-core` (`core/src`), which cannot name the rest at all
//! (it does not depend on `mcpq-shared`); `mcpq-shared` re-exports them, so its files
//! name them as `crate::job` and so on, and this test ranks those imports too.
//! Within a layer the modules are ordered too (the rank below), so no two modules can
//! import each other: an import may only name a module of the same or a lower rank.
//!
//! This test reads every `shared/src/**/*.rs` (outside comments and `#[cfg(test)]`
//! modules), finds each `crate::MODULE` it names, and fails on an upward edge that is
//! not in [`ALLOWED_UPWARD`]. The list only shrinks: an allowed edge that no longer
//! exists fails the test too, so whoever removes an edge removes its line.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// Each top-level module, the crate directory it lives in, its layer, and its rank (the
/// order within layers).
const LAYERS: &[(&str, &str, u32, u32)] = &[
    // A leaf (it imports nothing), first so `job::eml` can escape raw header text with it.
    ("public_address", "core", 1, 8),
    ("terminal", "core", 1, 9),
    // A leaf: SERVER__TOOL patterns, used by `job` and `config`.
    ("tool_pattern", "core", 1, 9),
    ("logging", "core", 1, 8),
    ("duration", "core", 1, 10),
    ("tls", "shared", 1, 11),
    ("failure", "core", 1, 12),
    ("template", "core", 1, 13),
    ("job", "core", 1, 14),
    ("config", "core", 1, 15),
    ("backoff", "core", 1, 16),
    ("lines", "core", 1, 17),
    ("cli_error", "core", 1, 18),
    // How an outcome reads in a terminal (failure, terminal).
    ("outcome_text", "core", 1, 18),
    // A leaf: the counters every higher layer increments.
    ("metrics", "shared", 1, 19),
    ("queue", "core", 2, 20),
    ("backend", "shared", 2, 21),
    // Waits for the cluster-wide limits (queue::limits) before a tool or model call.
    ("limiter", "shared", 2, 22),
    // Reads a 429's `Retry-After`, capped at queue::limits::MAX_PAUSE.
    ("retry_after", "shared", 2, 23),
    ("supervisor", "shared", 3, 30),
    ("mcp", "shared", 4, 40),
    ("result_budget", "shared", 5, 50),
    ("agent", "shared", 5, 51),
    ("email", "shared", 5, 52),
    ("redact", "shared", 5, 53),
    ("webhook", "shared", 5, 54),
    ("fate", "shared", 6, 60),
    ("runner", "shared", 6, 61),
];

/// The crate directories, beside each other in the workspace.
const CRATES: &[&str] = &["core", "shared"];

/// Today's upward imports, (file under `shared/`, module it names). May only shrink.
const ALLOWED_UPWARD: &[(&str, &str)] = &[];

fn rank(module: &str) -> Option<(u32, u32)> {
    LAYERS
        .iter()
        .find(|(name, _, _, _)| *name == module)
        .map(|(_, _, layer, rank)| (*layer, *rank))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file under `CRATE/src/` belongs to (`None` for `lib.rs`).
fn module_of(relative: &Path) -> Option<String> {
    let mut parts = relative.components().skip(2); // "CRATE", "src"
    let first = parts.next()?.as_os_str().to_str()?.to_string();
    let module = first.strip_suffix(".rs").unwrap_or(&first).to_string();
    (module != "lib").then_some(module)
}

/// The code of a file without comments and without `#[cfg(test)]` modules.
fn code_lines(text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut pending_test_attr = false;
    let mut skip_depth: Option<i64> = None;
    for line in text.lines() {
        if let Some(depth) = skip_depth.as_mut() {
            *depth += line.matches('{').count() as i64 - line.matches('}').count() as i64;
            if *depth <= 0 {
                skip_depth = None;
            }
            continue;
        }
        let trimmed = line.trim_start();
        if trimmed.starts_with("//") {
            continue;
        }
        if trimmed.starts_with("#[cfg(test)]") {
            pending_test_attr = true;
            continue;
        }
        if pending_test_attr && !trimmed.starts_with("#[") {
            pending_test_attr = false;
            let is_mod = trimmed.starts_with("mod ") || trimmed.starts_with("pub mod ");
            if is_mod && trimmed.ends_with('{') {
                skip_depth = Some(1);
                continue;
            }
        }
        let code = match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        };
        lines.push(code.to_string());
    }
    lines
}

/// Every module named as `crate::MODULE` in a line.
fn named_modules(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        let after = &rest[at + "crate::".len()..];
        if !before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            let name: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push(name);
            }
        }
        rest = after;
    }
    found
}

#[test]
fn imports_only_go_down_the_layers() {
    let workspace = workspace();
    let mut files = Vec::new();
    for krate in CRATES {
        rust_files(&workspace.join(krate).join("src"), &mut files);
    }
    files.sort();

    let mut upward = BTreeSet::new();
    let mut problems = Vec::new();
    for path in &files {
        let relative = path
            .strip_prefix(&workspace)
            .expect("file under the workspace");
        let Some(module) = module_of(relative) else {
            continue;
        };
        let krate = relative
            .components()
            .next()
            .map(|c| c.as_os_str().to_string_lossy().to_string());
        if LAYERS
            .iter()
            .any(|(name, home, _, _)| *name == module && Some(home.to_string()) != krate)
        {
            problems.push(format!(
                "{}: module `{module}` is not in the crate LAYERS says",
                relative.display()
            ));
        }
        let Some((layer, own)) = rank(&module) else {
            problems.push(format!(
                "{}: module `{module}` has no layer: add it to LAYERS",
                relative.display()
            ));
            continue;
        };
        let text = fs::read_to_string(path).expect("readable source");
        for line in code_lines(&text) {
            for target in named_modules(&line) {
                if target == module {
                    continue;
                }
                let Some((target_layer, theirs)) = rank(&target) else {
                    problems.push(format!(
                        "{}: names `crate::{target}`, which has no layer: add it to LAYERS",
                        relative.display()
                    ));
                    continue;
                };
                if theirs > own {
                    let file = relative.to_string_lossy().replace('\\', "/");
                    if upward.insert((file.clone(), target.clone()))
                        && !ALLOWED_UPWARD.contains(&(file.as_str(), target.as_str()))
                    {
                        problems.push(format!(
                            "{file} (`{module}`, layer {layer}) imports `crate::{target}` \
                             (layer {target_layer}, higher): imports only go down; \
                             move the item down instead"
                        ));
                    }
                }
            }
        }
    }
    for (file, target) in ALLOWED_UPWARD {
        if !upward.contains(&(file.to_string(), target.to_string())) {
            problems.push(format!(
                "{file} no longer imports `crate::{target}`: remove it from ALLOWED_UPWARD"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_layer_module_exists() {
    let workspace = workspace();
    for (module, krate, _, _) in LAYERS {
        let src = workspace.join(krate).join("src");
        let exists = src.join(format!("{module}.rs")).is_file() || src.join(module).is_dir();
        assert!(
            exists,
            "LAYERS names `{module}`, which is not in {krate}/src/"
        );
    }
}

/// The workspace root (this crate's parent directory).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate sits in the workspace")
        .to_path_buf()
}
