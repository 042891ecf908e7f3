//! Sharded runs with the real binary and model: three tasks (run concurrently on one directory)
//! plus `finalize` give the same rows, by sample_id and content, and the same counts as one
//! single-task run; `finalize` refuses while a task is missing; rows duplicated across tasks are
//! dropped as the single run drops them.

use crate::common::{model_path, ok, sample, temp_dir};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hindsight::sink::{batch_to_rows, Manifest, OutputRow};

const BIN: &str = env!("CARGO_BIN_EXE_hindsight");

fn cmd(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args).env("HINDSIGHT_MODEL", model_path());
    c
}

fn run(args: &[&str]) -> Output {
    cmd(args).output().expect("run hindsight")
}

/// One record per chunk, ingest dedup off so that a copied file yields rows whose sample_id is
/// already in the dataset (the pipeline's own cross-chunk dedup must drop them).
fn pipeline(dir: &Path, inputs: &[String]) -> PathBuf {
    let paths: Vec<String> = inputs.iter().map(|p| format!("{p:?}")).collect();
    let text = format!(
        "name = \"sharded\"\n[input]\npaths = [{}]\nchunk_records = 1\n\
         [episode.prefilter]\ndedup = false\n[output]\ndir = \"unused\"\n",
        paths.join(", ")
    );
    let p = dir.join("pipeline.toml");
    std::fs::write(&p, text).expect("write pipeline");
    p
}

/// Every row of a dataset directory, by sample_id.
fn rows(dir: &Path) -> BTreeMap<String, OutputRow> {
    let manifest = Manifest::read(dir).expect("manifest");
    let mut out = BTreeMap::new();
    for s in &manifest.shards {
        let f = std::fs::File::open(dir.join(&s.file)).expect("shard");
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
            .expect("parquet")
            .build()
            .expect("reader");
        for batch in reader {
            for row in batch_to_rows(&batch.expect("batch")).expect("rows") {
                let prev = out.insert(row.sample_id.clone(), row);
                assert!(prev.is_none(), "sample_id twice in {}", dir.display());
            }
        }
    }
    out
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("read json")).expect("json")
}

#[test]
fn three_tasks_plus_finalize_equal_one_task_and_finalize_refuses_a_missing_task() {
    let dir = temp_dir("sharded");
    // The copy comes last: its rows are duplicates of the first file's and must be dropped.
    let copy = dir.join("hints_copy.jsonl");
    std::fs::copy(sample("hints.jsonl"), &copy).expect("copy");
    let inputs = vec![
        sample("hints.jsonl"),
        sample("unit_tests.jsonl"),
        copy.display().to_string(),
    ];
    let p = pipeline(&dir, &inputs);
    let ps = p.to_str().expect("utf8");

    let single = dir.join("single");
    let single_s = single.to_str().expect("utf8");
    ok(&run(&["run", ps, "--output", single_s, "--no-progress"]));
    let single_report = json(&single.join("run_report.json"));
    let dup_single = single_report["counts"]["filtered:duplicate_across_runs"]
        .as_u64()
        .unwrap_or(0);
    assert!(dup_single >= 1, "the copied file should give duplicates");

    // Tasks 0 and 2 of 3, concurrently on the same directory.
    let sharded = dir.join("sharded");
    let sharded_s = sharded.to_str().expect("utf8");
    let task = |i: &str| {
        cmd(&[
            "run",
            ps,
            "--output",
            sharded_s,
            "--no-progress",
            "--task-index",
            i,
            "--num-tasks",
            "3",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn task")
    };
    let t0 = task("0");
    let t2 = task("2");
    for t in [t0, t2] {
        ok(&t.wait_with_output().expect("task"));
    }
    assert!(
        !sharded.join("manifest.json").exists(),
        "tasks must not write the manifest"
    );

    // Task 1 is missing: finalize refuses and names it; the directory stays unfinalized.
    let refused = run(&["finalize", sharded_s]);
    assert_eq!(
        refused.status.code(),
        Some(75),
        "finalize before every task has finished is 'not ready' (75)"
    );
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("1 of 3 tasks have not finished") && err.contains("task index(es) 1"),
        "unexpected message: {err}"
    );
    assert!(!sharded.join("manifest.json").exists());
    // A plain run must not mix with an unfinalized sharded run.
    let plain = run(&["run", ps, "--output", sharded_s, "--no-progress"]);
    assert!(!plain.status.success());
    assert!(String::from_utf8_lossy(&plain.stderr).contains("hindsight finalize"));

    let t1 = run(&[
        "run",
        ps,
        "--output",
        sharded_s,
        "--no-progress",
        "--task-index",
        "1",
        "--num-tasks",
        "3",
    ]);
    ok(&t1);
    ok(&run(&["finalize", sharded_s]));
    ok(&run(&["validate", sharded_s]));

    // Same rows (by sample_id) with the same content, including which copy of a duplicate won.
    let a = rows(&single);
    let b = rows(&sharded);
    assert_eq!(
        a.len() as u64,
        single_report["counts"]["rows_written"]
            .as_u64()
            .unwrap_or(0)
    );
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "different sample ids"
    );
    for (id, row) in &a {
        assert_eq!(Some(row), b.get(id), "row {id} differs");
    }
    assert!(a
        .values()
        .all(|r| !r.source_uri.ends_with("hints_copy.jsonl")));

    // Same totals and per-reason counts in the manifests.
    let ma = json(&single.join("manifest.json"));
    let mb = json(&sharded.join("manifest.json"));
    assert_eq!(ma["totals"]["rows"], mb["totals"]["rows"]);
    assert_eq!(
        ma["totals"]["response_tokens"],
        mb["totals"]["response_tokens"]
    );
    assert_eq!(ma["stats"]["episodes"], mb["stats"]["episodes"]);
    assert_eq!(
        ma["stats"]["ingest_last_run"],
        mb["stats"]["ingest_last_run"]
    );
    let fin = json(&sharded.join("run_report.json"));
    assert_eq!(fin["num_tasks"].as_u64(), Some(3));
    // Some duplicates fall in chunks of the same task (that task drops them); the rest are
    // across tasks and only finalize can drop them. Together they are the single run's.
    let across = fin["duplicates_removed"].as_u64().unwrap_or(0);
    assert!(
        across >= 1,
        "no duplicate across tasks was exercised: {fin}"
    );
    assert_eq!(
        fin["counts"]["filtered:duplicate_across_runs"].as_u64(),
        Some(dup_single),
        "{fin}"
    );

    // Finalize again: nothing changes.
    let before = std::fs::read(sharded.join("manifest.json")).expect("manifest");
    ok(&run(&["finalize", sharded_s]));
    assert_eq!(
        std::fs::read(sharded.join("manifest.json")).expect("m"),
        before
    );
    // A later plain run over the same inputs is a no-op.
    ok(&run(&["run", ps, "--output", sharded_s, "--no-progress"]));
    assert_eq!(rows(&sharded), b);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_task_flags_and_a_cuda_device_without_the_feature_are_clear_errors() {
    let dir = temp_dir("taskflags");
    let p = pipeline(&dir, &[sample("hints.jsonl")]);
    let ps = p.to_str().expect("utf8");
    let out = dir.join("out");
    let os = out.to_str().expect("utf8");
    let o = run(&[
        "run",
        ps,
        "--output",
        os,
        "--task-index",
        "3",
        "--num-tasks",
        "3",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("out of range"));
    let o = run(&["run", ps, "--output", os, "--task-index", "0"]);
    assert!(!o.status.success(), "--task-index without --num-tasks");
    let o = run(&["finalize", os]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no sharded task has finished"));
    if !cfg!(feature = "cuda") {
        let o = run(&["run", ps, "--output", os, "--device", "cuda:0"]);
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("--features cuda"), "unexpected message: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
