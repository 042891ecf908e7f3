//! `hindsight compact` with the real binary, model and Parquet reader: a dataset of one shard
//! per chunk becomes one shard with the same rows in the same order; a rerun is still a no-op;
//! a later night adds its own shards, and compacting again folds only those in.

use crate::common::{hindsight, manifest_rows, ok, sample, sample_pipeline, temp_dir};
use std::path::Path;

use hindsight::sink::{Manifest, OutputRow};

/// The `part-*.parquet` files in the directory.
fn part_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("list")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("part-") && n.ends_with(".parquet"))
        .collect();
    v.sort();
    v
}

fn by_id(rows: &[OutputRow]) -> std::collections::BTreeMap<&str, &OutputRow> {
    rows.iter().map(|r| (r.sample_id.as_str(), r)).collect()
}

#[test]
fn compact_folds_chunk_shards_into_one_and_keeps_rows_resume_and_increments() {
    let dir = temp_dir("compact");
    let p = sample_pipeline(&dir, &["hints.jsonl", "unit_tests.jsonl"], 1, "");
    let ps = p.to_str().expect("utf8");
    let out = dir.join("ds");
    let os = out.to_str().expect("utf8");
    let run = || ok(&hindsight(&["run", ps, "--output", os, "--no-progress"]));
    run();
    let before = manifest_rows(&out);
    let manifest_before = Manifest::read(&out).expect("manifest");
    let n_before = manifest_before.shards.len();
    assert!(
        n_before >= 4,
        "one shard per chunk expected, got {n_before}"
    );

    ok(&hindsight(&["compact", os]));
    let after = manifest_rows(&out);
    let manifest = Manifest::read(&out).expect("manifest");
    assert_eq!(manifest.shards.len(), 1, "{:?}", manifest.shards);
    assert!(manifest.shards[0].file.starts_with("part-c"));
    assert_eq!(
        part_files(&out),
        vec![manifest.shards[0].file.clone()],
        "old shards deleted"
    );
    assert_eq!(before.len(), after.len());
    assert!(before == after, "not the same rows in the same order");
    assert_eq!(manifest.totals.rows, manifest_before.totals.rows);
    assert_eq!(
        manifest.totals.response_tokens,
        manifest_before.totals.response_tokens
    );
    assert_eq!(manifest.stats, manifest_before.stats, "run statistics kept");
    ok(&hindsight(&["validate", os]));
    // Compacting again finds nothing to do.
    let again = ok(&hindsight(&["compact", os]));
    assert_eq!(again.trim(), os);
    assert_eq!(Manifest::read(&out).expect("m").shards, manifest.shards);

    // A rerun over the same inputs is a no-op: the compacted chunks count as committed.
    run();
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("run_report.json")).expect("report"))
            .expect("json");
    assert_eq!(report["chunks_committed"].as_u64(), Some(0), "{report}");
    assert_eq!(manifest_rows(&out), after);

    // The next night adds a file: its chunks get their own shards beside the compacted one.
    std::fs::copy(
        sample("openai_messages.jsonl"),
        dir.join("in").join("openai_messages.jsonl"),
    )
    .expect("copy");
    run();
    let night2 = manifest_rows(&out);
    let m2 = Manifest::read(&out).expect("manifest");
    assert!(m2.shards.len() > 2, "{:?}", m2.shards);
    assert!(night2.len() > after.len());
    ok(&hindsight(&["validate", os]));
    ok(&hindsight(&["compact", os, "--max-shard-mib", "64"]));
    let m3 = Manifest::read(&out).expect("manifest");
    assert_eq!(m3.shards.len(), 2, "the first compaction and the second");
    assert_eq!(part_files(&out).len(), 2);
    assert_eq!(by_id(&manifest_rows(&out)), by_id(&night2));
    assert_eq!(m3.totals.rows, m2.totals.rows);
    ok(&hindsight(&["validate", os]));
    let _ = std::fs::remove_dir_all(&dir);
}
