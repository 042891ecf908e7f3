//! Sharded runs with the real binary and model: three tasks (run concurrently on one directory)
//! plus `finalize` give the same rows, by sample_id and content, and the same counts as one
//! single-task run; `finalize` refuses while a task is missing; rows duplicated across tasks are
//! dropped as the single run drops them.

use crate::common::{manifest_rows, model_path, ok, sample, temp_dir};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hindsight::sink::OutputRow;

const BIN: &str = env!("CARGO_BIN_EXE_hindsight");

fn cmd(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args).env("HINDSIGHT_MODEL", model_path());
    c
}

fn run(args: &[&str]) -> Output {
    cmd(args).output().expect("run hindsight")
}

/// Task `i` of 3 of pipeline `ps` into `out` (plus `extra` flags).
fn task_of_3(ps: &str, out: &str, i: &str, extra: &[&str]) -> Command {
    let mut args = vec![
        "run",
        ps,
        "--output",
        out,
        "--no-progress",
        "--task-index",
        i,
        "--num-tasks",
        "3",
    ];
    args.extend_from_slice(extra);
    cmd(&args)
}

/// A plain run of pipeline `ps` into `out`.
fn plain_run(ps: &str, out: &Path) {
    ok(&run(&[
        "run",
        ps,
        "--output",
        out.to_str().expect("utf8"),
        "--no-progress",
    ]));
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
    let mut out = BTreeMap::new();
    for row in manifest_rows(dir) {
        let prev = out.insert(row.sample_id.clone(), row);
        assert!(prev.is_none(), "sample_id twice in {}", dir.display());
    }
    out
}

/// Same sample ids, and each row equal, naming the first that differs.
fn assert_same_rows(a: &BTreeMap<String, OutputRow>, b: &BTreeMap<String, OutputRow>) {
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "different sample ids"
    );
    for (id, row) in a {
        assert_eq!(Some(row), b.get(id), "row {id} differs");
    }
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
    // A copy of a row already written is skipped before scoring (`already_in_dataset`) when its
    // run has the row; across tasks, finalize drops it after both scored it
    // (`duplicate_across_runs`). Together they count the same copies.
    let dups = |r: &serde_json::Value| {
        [
            "filtered:already_in_dataset",
            "filtered:duplicate_across_runs",
        ]
        .iter()
        .map(|k| r["counts"][*k].as_u64().unwrap_or(0))
        .sum::<u64>()
    };
    let dup_single = dups(&single_report);
    assert!(dup_single >= 1, "the copied file should give duplicates");

    // Tasks 0 and 2 of 3, concurrently on the same directory.
    let sharded = dir.join("sharded");
    let sharded_s = sharded.to_str().expect("utf8");
    let task = |i: &str| {
        task_of_3(ps, sharded_s, i, &[])
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

    ok(&task_of_3(ps, sharded_s, "1", &[]).output().expect("task 1"));
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
    assert_same_rows(&a, &b);
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
    // The counts agree but for where a copy is caught: a single run skips it unscored, a
    // sharded run whose copy is in another task scores it and finalize drops it.
    let (ea, eb) = (&ma["stats"]["episodes"], &mb["stats"]["episodes"]);
    for k in ["episodes_in", "rows_written", "response_tokens"] {
        assert_eq!(ea[k], eb[k], "{k}: {ea} vs {eb}");
    }
    let n = |e: &serde_json::Value, k: &str| e[k].as_u64().unwrap_or(0);
    let copies = |e: &serde_json::Value| {
        n(e, "filtered:already_in_dataset") + n(e, "filtered:duplicate_across_runs")
    };
    assert_eq!(copies(ea), copies(eb), "{ea} vs {eb}");
    assert_eq!(
        n(eb, "episodes_scored"),
        n(ea, "episodes_scored") + n(eb, "filtered:duplicate_across_runs"),
        "{ea} vs {eb}"
    );
    assert_eq!(
        ma["stats"]["ingest_last_run"],
        mb["stats"]["ingest_last_run"]
    );
    // Each task read only its share: consecutive file ranges, disjoint, covering the input,
    // and the records the tasks read add up to the single run's.
    let mut next = 0;
    let mut files_read = Vec::new();
    let mut records = 0;
    for i in 0..3 {
        let marker = json(&sharded.join(format!("_state/tasks/3/{i}.json")));
        let share = &marker["report"]["input"];
        assert_eq!(share["first_file"].as_u64(), Some(next), "{share}");
        let end = share["end_file"].as_u64().expect("end_file");
        assert_eq!(share["files_total"].as_u64(), Some(3));
        assert_eq!(
            marker["report"]["ingest"]["files"].as_u64(),
            Some(end - next),
            "task {i} opened files outside its share"
        );
        for f in share["files"].as_array().expect("files") {
            files_read.push(f.as_str().expect("uri").to_string());
        }
        records += marker["report"]["ingest"]["records_read"]
            .as_u64()
            .expect("records_read");
        next = end;
    }
    assert_eq!(next, 3);
    assert_eq!(
        files_read, inputs,
        "the shares' union is the input, in order"
    );
    assert_eq!(
        Some(records),
        single_report["ingest"]["records_read"].as_u64(),
        "every record read exactly once across the tasks"
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
    assert_eq!(dups(&fin), dup_single, "{fin}");

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

/// Ingest dedup on, and the repeated episodes need a rollout: a demonstration file copied into
/// another task's share. The tasks sample the same responses for the copies as for the
/// originals (seeds come from the content), so finalize drops them and the rows equal the
/// single run's; only where the copies are counted differs (documented).
#[test]
fn episodes_repeated_across_shares_give_the_single_runs_rows() {
    let dir = temp_dir("sharded_rollout");
    let copy = dir.join("demonstrations_copy.jsonl");
    std::fs::copy(sample("demonstrations.jsonl"), &copy).expect("copy");
    let inputs = [
        sample("demonstrations.jsonl"),
        sample("hints.jsonl"),
        copy.display().to_string(),
    ];
    let paths: Vec<String> = inputs.iter().map(|p| format!("{p:?}")).collect();
    let text = format!(
        "name = \"sharded_rollout\"\n[input]\npaths = [{}]\nchunk_records = 2\n\
         [rollout]\nn = 1\nmax_new_tokens = 6\n[output]\ndir = \"unused\"\n",
        paths.join(", ")
    );
    let p = dir.join("pipeline.toml");
    std::fs::write(&p, text).expect("write pipeline");
    let ps = p.to_str().expect("utf8");

    let single = dir.join("single");
    plain_run(ps, &single);
    let sharded = dir.join("sharded");
    let ss = sharded.to_str().expect("utf8");
    for i in ["0", "1", "2"] {
        ok(&task_of_3(ps, ss, i, &[]).output().expect("task"));
    }
    ok(&run(&["finalize", ss]));
    ok(&run(&["validate", ss]));

    let a = rows(&single);
    let b = rows(&sharded);
    assert!(
        a.values().any(|r| r.is_on_policy),
        "the demonstrations must be rolled out"
    );
    assert_same_rows(&a, &b);

    // The single run filters the copies at ingest; the tasks score them and finalize drops
    // their rows instead.
    let ma = json(&single.join("manifest.json"));
    let mb = json(&sharded.join("manifest.json"));
    let dups = |m: &serde_json::Value| {
        m["stats"]["ingest_last_run"]["episodes_filtered"]["duplicate"]
            .as_u64()
            .unwrap_or(0)
    };
    // The sample file repeats one of its own records (each share filters that one itself).
    let ingest_dups = dups(&ma) - dups(&mb);
    assert!(ingest_dups >= 1, "{}\n{}", ma["stats"], mb["stats"]);
    let across = |m: &serde_json::Value| {
        m["stats"]["episodes"]["filtered:duplicate_across_runs"]
            .as_u64()
            .unwrap_or(0)
    };
    let rollouts = |m: &serde_json::Value| m["stats"]["episodes"]["rollouts"].as_u64();
    assert_eq!(rollouts(&mb), rollouts(&ma).map(|r| r + ingest_dups));
    assert_eq!(across(&mb), across(&ma) + ingest_dups, "{}", mb["stats"]);
    assert_eq!(ma["totals"]["rows"], mb["totals"]["rows"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--finalize-if-last`: three tasks started together, no finalize step. Exactly one of them
/// finalizes, and the dataset equals a plain run's.
#[test]
fn the_last_task_to_finish_finalizes_exactly_once() {
    let dir = temp_dir("sharded_last");
    let inputs = vec![
        sample("hints.jsonl"),
        sample("unit_tests.jsonl"),
        sample("openai_messages.jsonl"),
    ];
    let p = pipeline(&dir, &inputs);
    let ps = p.to_str().expect("utf8");
    let single = dir.join("single");
    plain_run(ps, &single);

    let sharded = dir.join("sharded");
    let ss = sharded.to_str().expect("utf8");
    let children: Vec<_> = ["0", "1", "2"]
        .iter()
        .map(|i| {
            task_of_3(ps, ss, i, &["--finalize-if-last"])
                .env("HINDSIGHT_RUN_ID", "night-1")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn task")
        })
        .collect();
    let mut finalized = 0;
    for c in children {
        let out = c.wait_with_output().expect("task");
        ok(&out);
        if String::from_utf8_lossy(&out.stderr).contains("finalized 3 tasks") {
            finalized += 1;
        }
    }
    assert_eq!(finalized, 1, "exactly one task finalizes");
    ok(&run(&["validate", ss]));
    assert_same_rows(&rows(&single), &rows(&sharded));
    let claim = std::fs::read_to_string(sharded.join("_state/tasks/3/runs/night-1/finalize.claim"))
        .expect("claim");
    assert!(["0", "1", "2"].contains(&claim.as_str()), "{claim}");

    // Without a run id the flag is a usage error, before anything runs.
    let o = cmd(&[
        "run",
        ps,
        "--output",
        ss,
        "--task-index",
        "0",
        "--num-tasks",
        "3",
        "--finalize-if-last",
    ])
    .env_remove("HINDSIGHT_RUN_ID")
    .env_remove("SLURM_ARRAY_JOB_ID")
    .output()
    .expect("run");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--run-id"));
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
