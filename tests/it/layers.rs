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
    // Rows, shards, manifest, validation: the dataset side, which links no model (a reader of
    // a dataset needs none).
    &["sink"],
    // The model (weights, forward pass, generation).
    &["model"],
    // Scoring requests → log-probs, top-k, relevance.
    &["score"],
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

/// The top-level modules a piece of code names with `crate::x` (comments are not code).
fn crate_refs(code: &str) -> Vec<String> {
    crate_refs_in(code).into_iter().map(|(_, m)| m).collect()
}

/// Every `crate::x` of a file's code with its 1-based line, groups included however they are
/// laid out: `use crate::{a::X, b::{Y, Z}};` over one line or many names `a` and `b`.
fn crate_refs_in(text: &str) -> Vec<(usize, String)> {
    // Comments out, line structure kept.
    let code: String = text
        .lines()
        .map(|line| {
            if line.trim_start().starts_with("//") {
                ""
            } else {
                line.split(" //").next().unwrap_or(line)
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(found) = code[from..].find("crate::") {
        let pos = from + found;
        from = pos + "crate::".len();
        // `hindsight_crate::` or the like is not a path into this crate.
        if code[..pos]
            .chars()
            .last()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
        {
            continue;
        }
        let line = code[..pos].matches('\n').count() + 1;
        let rest = &code[from..];
        let Some(group) = rest.strip_prefix('{') else {
            out.push((line, ident(rest)));
            continue;
        };
        // The group's top-level items: split on commas outside nested braces.
        let (mut depth, mut start) = (0usize, 0usize);
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    out.push((line, ident(&group[start..i])));
                    break;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    out.push((line, ident(&group[start..i])));
                    start = i + 1;
                }
                _ => {}
            }
        }
    }
    out.retain(|(_, m)| !m.is_empty());
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
        let lines: Vec<&str> = text.lines().collect();
        for (n, target) in crate_refs_in(&text) {
            let line = lines.get(n - 1).copied().unwrap_or_default();
            let n = n - 1;
            {
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
    // Groups over several lines, nested groups.
    let grouped = "use crate::{\n    episode::{Message, Role},\n    // crate::cli\n    ingest::IngestError,\n};\nfn f() { crate::util::x(); }";
    assert_eq!(
        crate_refs_in(grouped),
        [
            (1, "episode".to_string()),
            (1, "ingest".to_string()),
            (6, "util".to_string())
        ]
    );
}
