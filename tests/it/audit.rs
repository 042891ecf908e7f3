//! Write–audit–publish (issue 29): a run checks the shards it is about to make visible with the
//! contract checks of `validate` and publishes the manifest only when they pass. A crafted bad
//! shard (a committed chunk of a staged run, its rows changed to break the contract, its
//! checksum made consistent) fails the resumed run with the quality-guard status (4), and the
//! previous manifest stays what readers see.

use hindsight::sink::{Manifest, ShardConfig, ShardWriter};

use crate::common::{hindsight, manifest_rows, ok, sample, sample_pipeline, temp_dir};

#[test]
fn the_audit_refuses_a_bad_shard_and_keeps_the_previous_manifest() {
    let dir = temp_dir("audit");
    let p = sample_pipeline(&dir, &["hints.jsonl"], 2, "");
    let ps = p.to_str().expect("utf8");
    let out = dir.join("ds");
    let os = out.to_str().expect("utf8");
    ok(&hindsight(&["run", ps, "--output", os, "--no-progress"]));
    let night1 = std::fs::read(out.join("manifest.json")).expect("manifest");
    let m1 = Manifest::read(&out).expect("manifest");
    let rows1 = manifest_rows(&out).len();

    // Night 2, staged: one chunk of a new file is committed, nothing is published yet.
    std::fs::copy(sample("unit_tests.jsonl"), dir.join("in/unit_tests.jsonl")).expect("copy");
    let staged = [
        "run",
        ps,
        "--output",
        os,
        "--no-progress",
        "--max-chunks",
        "1",
    ];
    ok(&hindsight(&staged));
    assert!(
        std::fs::read(out.join("manifest.json")).expect("m") == night1,
        "a staged run publishes nothing"
    );

    // Its shard is replaced by one whose first row has a positive teacher log-prob.
    let listed: Vec<String> = m1.shards.iter().map(|s| s.file.clone()).collect();
    let chunks = out.join("_state/chunks");
    let state_path = std::fs::read_dir(&chunks)
        .expect("chunks")
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.extension().is_some_and(|x| x == "json") && {
                let text = std::fs::read_to_string(p).expect("state");
                text.contains("part-") && !listed.iter().any(|f| text.contains(f.as_str()))
            }
        })
        .expect("the staged chunk");
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_path).expect("state")).expect("json");
    let old_shard = state["shards"][0]["file"]
        .as_str()
        .expect("shard")
        .to_string();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(out.join(&old_shard)).expect("shard"),
    )
    .expect("parquet")
    .build()
    .expect("reader");
    let mut rows = Vec::new();
    for b in reader {
        rows.extend(hindsight::sink::batch_to_rows(&b.expect("batch")).expect("rows"));
    }
    rows[0].teacher_logprobs[0] = 0.5;
    let mut w = ShardWriter::new(&out, "tampered", m1.dataset.clone(), ShardConfig::default())
        .expect("writer");
    w.write_rows(rows).expect("rows");
    let shards = w.finish().expect("finish");
    state["shards"] = serde_json::to_value(&shards).expect("shards");
    std::fs::write(&state_path, serde_json::to_vec(&state).expect("json")).expect("state");
    std::fs::remove_file(out.join(&old_shard)).expect("old shard");

    // The resumed night: the audit fails, the previous manifest stays.
    let resumed = hindsight(&["run", ps, "--output", os, "--no-progress"]);
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert_eq!(resumed.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("audit failed"), "{stderr}");
    assert!(
        std::fs::read(out.join("manifest.json")).expect("manifest") == night1,
        "readers still see night 1"
    );
    let audit = std::fs::read_to_string(out.join("audit_report.txt")).expect("audit report");
    assert!(audit.contains(&shards[0].file), "{audit}");
    assert_eq!(manifest_rows(&out).len(), rows1);
    // validate sees the unpublished shards beside the manifest and says so.
    let v = hindsight(&["validate", os]);
    assert_eq!(v.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&v.stdout).contains("unlisted shard"));
}
