//! Write–audit–publish (issue 29): a run checks the shards it is about to make visible with the
//! contract checks of `validate` and publishes the manifest only when they pass. A crafted bad
//! shard (a committed chunk of a staged run, its rows changed to break the contract, its
//! checksum made consistent) fails the resumed run with the quality-guard status (4), and the
//! previous manifest stays what readers see.

use std::path::PathBuf;

use hindsight::sink::{Manifest, ShardConfig, ShardWriter};

use crate::common::{hindsight, manifest_rows, ok, sample, sample_pipeline, temp_dir};

/// Night 1 of a dataset: the sample hints, published; (directory, pipeline, dataset).
fn night_one(name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let dir = temp_dir(name);
    let p = sample_pipeline(&dir, &["hints.jsonl"], 2, "");
    let out = dir.join("ds");
    let (ps, os) = (p.to_str().expect("utf8"), out.to_str().expect("utf8"));
    ok(&hindsight(&["run", ps, "--output", os, "--no-progress"]));
    (dir, p, out)
}

#[test]
fn the_audit_refuses_a_bad_shard_and_keeps_the_previous_manifest() {
    let (dir, p, out) = night_one("audit");
    let (ps, os) = (p.to_str().expect("utf8"), out.to_str().expect("utf8"));
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

/// Drift guards (issue 29): night 2 brings rows of another kind (unit-test feedback, responses
/// three times as long as night 1's hints). With `guards.max_tokens_per_row_change` set, its
/// publish is refused (exit 4, night 1's manifest kept, the drift named in the report); the
/// guards are not part of the dataset identity (night 1 ran without them); `--accept-drift`
/// publishes the same night, and the next night compares with it.
#[test]
fn a_night_that_drifts_is_not_published_until_accepted() {
    let (dir, p, out) = night_one("drift");
    let (ps, os) = (p.to_str().expect("utf8"), out.to_str().expect("utf8"));
    let night1 = std::fs::read(out.join("manifest.json")).expect("manifest");
    let rows1 = manifest_rows(&out);
    let tokens1: usize = rows1.iter().map(|r| r.response_tokens()).sum();
    let per_row1 = tokens1 as f64 / rows1.len() as f64;

    std::fs::copy(sample("unit_tests.jsonl"), dir.join("in/unit_tests.jsonl")).expect("copy");
    let guards = [
        "--set",
        "guards.min_rows=1",
        "--set",
        "guards.max_tokens_per_row_change=0.5",
        "--set",
        "guards.max_drop_rate_change=0.9",
    ];
    let mut night2 = vec!["run", ps, "--output", os, "--no-progress"];
    night2.extend(guards);
    let refused = hindsight(&night2);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("drift against the previous night"),
        "{stderr}"
    );
    assert!(stderr.contains("tokens_per_row"), "{stderr}");
    assert!(
        std::fs::read(out.join("manifest.json")).expect("manifest") == night1,
        "readers still see night 1"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("run_report.json")).expect("report"))
            .expect("json");
    let audit = &report["audit"];
    assert_eq!(audit["passed"], false);
    assert_eq!(audit["violations_total"], 0);
    let check = audit["drift"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == "tokens_per_row")
        .expect("tokens_per_row check");
    // The baseline is night 1 as its shards hold it, independently of the report.
    let baseline = check["baseline"].as_f64().expect("baseline");
    assert!(
        (baseline - per_row1).abs() < 1e-9,
        "{baseline} vs {per_row1}"
    );
    assert_eq!(check["passed"], false);
    assert!(check["value"].as_f64().expect("value") > 0.5);
    let text = std::fs::read_to_string(out.join("audit_report.txt")).expect("audit report");
    assert!(text.contains("tokens_per_row"), "{text}");

    // Accepted: the same night publishes both nights' rows; nothing is scored again.
    let mut accepted = night2.clone();
    accepted.push("--accept-drift");
    ok(&hindsight(&accepted));
    let rows2 = manifest_rows(&out);
    assert!(rows2.len() > rows1.len());
    let added: Vec<_> = rows2
        .iter()
        .filter(|r| r.source_uri.ends_with("unit_tests.jsonl"))
        .collect();
    assert_eq!(added.len(), rows2.len() - rows1.len());
    let per_row2 =
        added.iter().map(|r| r.response_tokens()).sum::<usize>() as f64 / added.len() as f64;
    let m = hindsight::sink::Manifest::read(&out).expect("manifest");
    let next = &m.stats["drift_baseline"];
    assert_eq!(next["rows"].as_u64(), Some(added.len() as u64));
    let recorded = next["response_tokens"].as_f64().expect("tokens") / added.len() as f64;
    assert!((recorded - per_row2).abs() < 1e-9);

    // Night 3 has nothing new: the checks are skipped, the publish goes through.
    let quiet = hindsight(&night2);
    ok(&quiet);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("run_report.json")).expect("report"))
            .expect("json");
    assert_eq!(report["audit"]["passed"], true);
    assert!(report["audit"]["drift"]
        .as_array()
        .expect("checks")
        .iter()
        .all(|c| c["skipped"].is_string()));
}
