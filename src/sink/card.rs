//! The dataset card: a `README.md` at the top of every dataset, in the form the Hugging Face Hub
//! and `datasets` read. Its YAML header's `configs` names the shards (`part-*.parquet`) as the
//! one split, so `datasets.load_dataset(DIR)` and `push_to_hub` load exactly the rows, never
//! `manifest.json`, `quarantine.jsonl` or `_state/`. Features are not repeated in the YAML: the
//! shards' Parquet schema is the contract, and `datasets` reads the types from it. The body
//! records what made the data (the manifest's hashes) and the columns, for people.

use super::columns::CONTRACT;
use super::manifest::Manifest;
use super::schema::arrow_type;

/// The card's file name.
pub const CARD_FILE: &str = "README.md";

/// The card for a dataset whose manifest is `m` (deterministic: the same manifest gives the
/// same bytes).
pub fn dataset_card(m: &Manifest) -> String {
    let d = &m.dataset;
    let mut s = String::new();
    s.push_str("---\n");
    s.push_str("configs:\n- config_name: default\n  data_files:\n  - split: train\n");
    s.push_str("    path: \"part-*.parquet\"\n");
    s.push_str("tags:\n- self-distillation\n- hindsight\n");
    s.push_str("---\n\n");
    s.push_str("# Self-distillation dataset (hindsight)\n\n");
    s.push_str(
        "Per-token teacher and student log-probabilities, the teacher's top-k and tail mass, \
         advantages and relevance scores, written by hindsight (its docs/DATASET.md and \
         docs/CONTRACT.md explain every column). `manifest.json` lists every shard with its \
         size and sha256; check it before training.\n\n",
    );
    s.push_str("| | |\n|---|---|\n");
    let rows = [
        ("schema version", m.schema_version.to_string()),
        ("model", format!("`{}`", d.model_id)),
        ("weights sha256", format!("`{}`", d.weights_sha256)),
        ("tokenizer sha256", format!("`{}`", d.tokenizer_sha256)),
        (
            "chat template sha256",
            format!("`{}`", d.chat_template_sha256),
        ),
        ("compute dtype", d.compute_dtype.clone()),
        ("top-k", d.top_k.to_string()),
        ("relevance method", d.relevance_method.clone()),
        (
            "relevance threshold",
            d.relevance_threshold
                .map_or_else(|| "none".to_string(), |t| t.to_string()),
        ),
        (
            "pipeline config sha256",
            format!("`{}`", d.pipeline_config_sha256),
        ),
        ("hindsight version", d.hindsight_version.clone()),
        ("shards", m.totals.shards.to_string()),
        ("rows", m.totals.rows.to_string()),
        ("response tokens", m.totals.response_tokens.to_string()),
        ("bytes", m.totals.bytes.to_string()),
    ];
    for (k, v) in rows {
        s.push_str(&format!("| {k} | {v} |\n"));
    }
    s.push_str("\n## Loading\n\n```python\nimport datasets\n");
    s.push_str("ds = datasets.load_dataset(\"path/to/this/directory\", split=\"train\")\n```\n\n");
    s.push_str("## Columns\n\n| column | Arrow type | nullable |\n|---|---|---|\n");
    for c in CONTRACT.iter() {
        s.push_str(&format!(
            "| `{}` | `{}` | {} |\n",
            c.name,
            arrow_type(c, &d.layout()),
            if c.nullable { "yes" } else { "no" }
        ));
    }
    s
}
