//! The module graph only points down (docs/ARCHITECTURE.md): every top-level module of the
//! crate has a layer, and a module may only use modules of lower layers. A `use crate::x` (or
//! any `crate::x::` path in code) from a module to one of the same or a higher layer fails here
//! with the file and line, so a cycle cannot creep back in unnoticed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The layers, bottom up. Keep in step with the picture in docs/ARCHITECTURE.md.
const LAYERS: &[&[&str]] = &[
    // Leaves: shared record types, the model/tokenizer error, small helpers.
    &["record", "error", "util"],
    // The GGUF file format, object stores, teacher templates.
    &["gguf", "store", "template"],
    // Readers: files and objects → raw records (predicate supplied from above).
    &["ingest"],
    // Records → episodes; text → token ids.
    &["episode", "tokenize"],
    // The model (weights, forward pass, generation).
    &["model"],
    // Scoring requests → log-probs, top-k, relevance.
    &["score"],
    // Rows, shards, manifest, validation.
    &["sink"],
    // SQL over inputs and datasets; the pipeline configuration.
    &["sql", "config"],
    // The run, its reports, the benchmark.
    &["pipeline", "report", "bench"],
    // Finished datasets in trainers' layouts (uses the run lock); what a run tells the platform
    // (OpenLineage events, Dagster Pipes messages).
    &["export", "lineage", "orchestrator"],
    // The command line.
    &["cli"],
];

fn layer_of() -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::new();
    for (i, layer) in LAYERS.iter().enumerate() {
        for name in *layer {
            m.insert(*name, i);
        }
    }
    m
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules a line of code names with `crate::x` (comments are not code).
fn crate_refs(line: &str) -> Vec<String> {
    let code = line.trim_start();
    if code.starts_with("//") {
        return Vec::new();
    }
    let code = code.split(" //").next().unwrap_or(code);
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(pos) = rest.find("crate::") {
        let before = rest[..pos].chars().last();
        rest = &rest[pos + "crate::".len()..];
        // `hindsight_crate::` or the like is not a path into this crate.
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a::X, b};`
            let inner = group.split('}').next().unwrap_or("");
            for part in inner.split(',') {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                out.push(name);
            }
            continue;
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        out.push(name);
    }
    out
}

#[test]
fn modules_only_use_lower_layers() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let layers = layer_of();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut modules_seen = 0;
    let mut violations = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).expect("under src");
        let first = rel.components().next().expect("a component");
        let module = first
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        let Some(&own) = layers.get(module.as_str()) else {
            panic!("src/{module} has no layer: add it to LAYERS in tests/it/layers.rs and to docs/ARCHITECTURE.md");
        };
        modules_seen += 1;
        let text = std::fs::read_to_string(file).expect("read source");
        for (n, line) in text.lines().enumerate() {
            for target in crate_refs(line) {
                if target == module || target == "self" || target.is_empty() {
                    continue;
                }
                // Re-exports at the crate root (`crate::Error`, `crate::Result`) are the error leaf.
                let target_layer = match target.as_str() {
                    "Error" | "Result" => 0,
                    t => *layers.get(t).unwrap_or_else(|| {
                        panic!("{}:{}: unknown module `crate::{t}`", rel.display(), n + 1)
                    }),
                };
                if target_layer >= own {
                    violations.push(format!(
                        "src/{}:{}: `{module}` (layer {own}) uses `crate::{target}` (layer {target_layer}): {}",
                        rel.display(),
                        n + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(modules_seen > 50, "only {modules_seen} source files found");
    assert!(
        violations.is_empty(),
        "imports that point up or sideways:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_checker_sees_grouped_and_inline_paths() {
    assert_eq!(crate_refs("use crate::sql::SqlWhere;"), ["sql"]);
    assert_eq!(
        crate_refs("use crate::{episode::Message, ingest::IngestError};"),
        ["episode", "ingest"]
    );
    assert_eq!(
        crate_refs("    let x = crate::sink::schema::COLUMNS; // crate::cli"),
        ["sink"]
    );
    assert!(crate_refs("/// see [`crate::cli`]").is_empty());
}
