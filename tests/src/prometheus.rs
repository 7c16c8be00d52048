//! Scraping a `/metrics` endpoint with the reference parser (pip `prometheus-client`,
//! in scripts/test-deps' venv): the tests' counters are read from what Prometheus
//! itself would read.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::text;

/// Fetches URL (argv[1], with the bearer token argv[2] if given) and prints its samples as JSON, parsed by prometheus_client.
pub const PARSE: &str = r#"
import json, sys, urllib.request
try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:
    print("prometheus_client is missing from this venv: run scripts/test-deps", file=sys.stderr)
    sys.exit(3)
request = urllib.request.Request(sys.argv[1])
if len(sys.argv) > 2:
    request.add_header("Authorization", "Bearer " + sys.argv[2])
with urllib.request.urlopen(request, timeout=10) as answer:
    content_type = answer.headers.get("Content-Type", "")
    body = answer.read().decode("utf-8")
families = []
for family in text_string_to_metric_families(body):
    families.append({"name": family.name, "type": family.type, "samples": [
        {"name": s.name, "labels": s.labels, "value": s.value} for s in family.samples]})
print(json.dumps({"content_type": content_type, "families": families}))
"#;

/// The scrape, parsed: family types, and every sample by name and sorted labels.
pub struct Scrape {
    /// The answer's Content-Type.
    pub content_type: String,
    /// Each family's type, by name.
    pub types: BTreeMap<String, String>,
    /// Every sample's value, by name and sorted labels.
    pub samples: BTreeMap<(String, Vec<(String, String)>), f64>,
}

impl Scrape {
    /// The sample `name` with exactly `labels`, if there is one.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        labels.sort();
        self.samples.get(&(name.to_string(), labels)).copied()
    }
}

/// Fetches `url` (with `token` as a bearer token) and parses it with `python`'s
/// prometheus_client (scripts/test-deps' venv).
pub fn scrape(python: &Path, url: &str, token: Option<&str>) -> Scrape {
    let out = Command::new(python)
        .args(["-c", PARSE, url])
        .args(token)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "the Prometheus parser failed: {}",
        text(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("parser JSON");
    let mut types = BTreeMap::new();
    let mut samples = BTreeMap::new();
    for family in v["families"].as_array().expect("families") {
        let name = family["name"].as_str().expect("name").to_string();
        types.insert(name, family["type"].as_str().expect("type").to_string());
        for s in family["samples"].as_array().expect("samples") {
            let mut labels: Vec<(String, String)> = s["labels"]
                .as_object()
                .expect("labels")
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().expect("label value").to_string()))
                .collect();
            labels.sort();
            let name = s["name"].as_str().expect("sample name").to_string();
            samples.insert((name, labels), s["value"].as_f64().expect("value"));
        }
    }
    Scrape {
        content_type: v["content_type"].as_str().unwrap_or_default().to_string(),
        types,
        samples,
    }
}
