//! End-to-end runs of the `hindsight` binary on real sample files with the real model: the
//! dataset validates, a run killed with SIGKILL at several points resumes to byte-identical
//! output, a second concurrent run is refused, reruns are no-ops and new inputs add only new
//! shards (with dedup across increments).

use crate::common::{model_path, ok, sample, temp_dir};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_hindsight");

/// A pipeline file over `inputs` writing to `out`, one record per chunk (many chunks).
fn pipeline(dir: &Path, out: &Path, inputs: &[String]) -> PathBuf {
    let paths: Vec<String> = inputs.iter().map(|p| format!("{p:?}")).collect();
    let text = format!(
        "name = \"test\"\n[input]\npaths = [{}]\nchunk_records = 1\n[output]\ndir = {:?}\n",
        paths.join(", "),
        out.display().to_string()
    );
    let p = dir.join("pipeline.toml");
    std::fs::write(&p, text).expect("write pipeline");
    p
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("HINDSIGHT_MODEL", model_path())
        .output()
        .expect("run hindsight")
}

/// Shards and manifest by name → bytes.
fn snapshot(out: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut m = BTreeMap::new();
    for e in std::fs::read_dir(out).expect("out dir") {
        let p = e.expect("entry").path();
        let name = p.file_name().expect("name").to_string_lossy().into_owned();
        if name.starts_with("part-") || name == "manifest.json" {
            m.insert(name, std::fs::read(&p).expect("read"));
        }
    }
    m
}

fn committed_chunks(out: &Path) -> usize {
    std::fs::read_dir(out.join("_state/chunks"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                .count()
        })
        .unwrap_or(0)
}

/// The `task` tag of every committed chunk's state record (null once merged).
fn chunk_task_tags(out: &Path) -> Vec<serde_json::Value> {
    let mut tags = Vec::new();
    for e in std::fs::read_dir(out.join("_state/chunks"))
        .expect("chunks")
        .flatten()
    {
        if e.path().extension().is_some_and(|x| x == "json") {
            let s: serde_json::Value =
                serde_json::from_slice(&std::fs::read(e.path()).expect("state")).expect("json");
            tags.push(s["task"].clone());
        }
    }
    tags
}

fn report(out: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(out.join("run_report.json")).expect("run report");
    serde_json::from_str(&text).expect("report json")
}

/// The scoring counts of a run report reconcile with the episodes ingest handed over: every
/// episode in is written or dropped for a reason (a rolled-out prompt becomes its samples), and
/// every scored episode is written or dropped by the relevance filter or dedup.
fn assert_reconciles(r: &serde_json::Value) {
    let c = &r["counts"];
    let n = |k: &str| c.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
    let dropped: u64 = c
        .as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, _)| k.starts_with("filtered:"))
                .filter_map(|(_, v)| v.as_u64())
                .sum()
        })
        .unwrap_or(0);
    if r["chunks_already_committed"].as_u64() == Some(0) {
        assert_eq!(
            n("episodes_in"),
            r["ingest"]["episodes_emitted"].as_u64().unwrap_or(u64::MAX),
            "every emitted episode reaches the scoring steps: {r}"
        );
    }
    assert_eq!(
        n("episodes_in") + n("rollouts"),
        n("rows_written") + dropped + n("rollout_prompts"),
        "{c}"
    );
    assert_eq!(
        n("episodes_scored"),
        n("rows_written") + n("filtered:low_relevance") + n("filtered:duplicate_across_runs"),
        "{c}"
    );
}

fn inputs() -> Vec<String> {
    vec![
        sample("wildchat_1m.jsonl"),
        sample("hints.jsonl"),
        sample("unit_tests.jsonl"),
    ]
}

/// `hindsight run PIPELINE` in the background, output discarded (to be killed).
fn spawn_run(pipeline: &Path) -> std::process::Child {
    Command::new(BIN)
        .args(["run", pipeline.to_str().expect("utf8"), "--no-progress"])
        .env("HINDSIGHT_MODEL", model_path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn")
}

/// An uninterrupted multi-chunk run into `DIR/reference`: its shards + manifest and chunk count.
fn reference_run(dir: &Path) -> (BTreeMap<String, Vec<u8>>, usize) {
    let reference_out = dir.join("reference");
    let p = pipeline(dir, &reference_out, &inputs());
    ok(&run(&["run", p.to_str().expect("utf8"), "--no-progress"]));
    let chunks = committed_chunks(&reference_out);
    assert!(chunks >= 6, "expected many chunks, got {chunks}");
    (snapshot(&reference_out), chunks)
}

#[test]
fn killed_runs_resume_to_byte_identical_output_and_locks_refuse_a_second_run() {
    let dir = temp_dir("resume");
    let reference_out = dir.join("reference");
    let (reference, chunks) = reference_run(&dir);
    let v = run(&["validate", reference_out.to_str().expect("utf8")]);
    ok(&v);

    // Kill at several points: during start-up (no chunk yet), after 1 chunk, after half.
    for kill_after in [0usize, 1, chunks / 2] {
        let out = dir.join(format!("killed-{kill_after}"));
        let p = pipeline(&dir, &out, &inputs());
        let mut child = spawn_run(&p);
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let done = committed_chunks(&out);
            let started = out.join("_state/dataset.json").exists();
            if (kill_after == 0 && started) || (kill_after > 0 && done >= kill_after) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "run never reached {kill_after} chunks"
            );
            if child.try_wait().expect("wait").is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if kill_after == 1 {
            // While the first run holds the directory, a second run must be refused.
            let second = run(&["run", p.to_str().expect("utf8"), "--no-progress"]);
            assert!(!second.status.success(), "concurrent run was not refused");
            let err = String::from_utf8_lossy(&second.stderr);
            assert!(
                err.contains("another hindsight run"),
                "unexpected message: {err}"
            );
        }
        child.kill().expect("kill -9");
        child.wait().expect("reap");
        let partial = committed_chunks(&out);
        assert!(
            partial < chunks,
            "the run finished before it could be killed"
        );
        // The manifest is published once, at the end: a killed first run leaves none, and its
        // committed chunks are tagged as task 0 of 1 (a plain run is a one-task sharded run).
        assert!(
            !out.join("manifest.json").exists(),
            "a killed run published a manifest"
        );
        let tags = chunk_task_tags(&out);
        assert_eq!(tags.len(), partial);
        for t in &tags {
            assert_eq!(
                (t["index"].as_u64(), t["num_tasks"].as_u64()),
                (Some(0), Some(1))
            );
        }
        ok(&run(&["run", p.to_str().expect("utf8"), "--no-progress"]));
        let resumed = report(&out);
        assert_eq!(
            resumed["chunks_already_committed"].as_u64(),
            Some(partial as u64)
        );
        assert_eq!(
            snapshot(&out),
            reference,
            "resume after a kill at {kill_after} chunks differs"
        );
        // The resumed run merged every chunk: none is tagged any more.
        assert!(chunk_task_tags(&out).iter().all(|t| t.is_null()));
        ok(&run(&["validate", out.to_str().expect("utf8")]));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Soak (issue 14): 20 SIGKILLs at pseudo-random moments (fixed seed) spread over four
/// datasets of a multi-chunk run, 5 kills each: each kill waits for a random number of further
/// chunk commits (possibly none: start-up) plus a random 0-400 ms, so kills land during model
/// loading, scoring and writing. Each dataset is then resumed to completion and must be
/// byte-identical to an uninterrupted run and validate.
#[test]
fn twenty_random_kills_resume_to_byte_identical_datasets() {
    let dir = temp_dir("soak");
    let (reference, chunks) = reference_run(&dir);
    // xorshift64*, fixed seed: the kill moments are reproducible.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let mut kills = 0;
    let mut landed_mid_run = 0;
    for d in 0..4 {
        let out = dir.join(format!("soak-{d}"));
        let p = pipeline(&dir, &out, &inputs());
        for _ in 0..5 {
            let before = committed_chunks(&out);
            let target = before + (next() % (chunks - before).max(1) as u64) as usize;
            let extra = Duration::from_millis(next() % 400);
            let mut child = spawn_run(&p);
            let deadline = Instant::now() + Duration::from_secs(300);
            while committed_chunks(&out) < target
                && child.try_wait().expect("wait").is_none()
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            std::thread::sleep(extra);
            let finished = child.try_wait().expect("wait").is_some();
            child.kill().ok();
            child.wait().expect("reap");
            kills += 1;
            let done = committed_chunks(&out);
            if !finished && done < chunks {
                landed_mid_run += 1;
            }
            eprintln!(
                "soak-{d}: kill after chunk {target} + {} ms: {done}/{chunks} committed",
                extra.as_millis()
            );
        }
        ok(&run(&["run", p.to_str().expect("utf8"), "--no-progress"]));
        assert_eq!(
            snapshot(&out),
            reference,
            "soak-{d}: the resumed dataset differs from the uninterrupted run"
        );
        ok(&run(&["validate", out.to_str().expect("utf8")]));
    }
    assert_eq!(kills, 20);
    assert!(
        landed_mid_run >= 15,
        "only {landed_mid_run} of 20 kills interrupted unfinished work"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn nightly_increments_add_only_new_shards_and_dedup_across_runs() {
    let dir = temp_dir("increment");
    let out = dir.join("out");
    let first = vec![sample("hints.jsonl")];
    let p = pipeline(&dir, &out, &first);
    let ps = p.to_str().expect("utf8");
    ok(&run(&["run", ps, "--no-progress"]));
    let night1 = snapshot(&out);
    let rows1 = report(&out)["counts"]["rows_written"].as_u64().unwrap_or(0);
    assert_eq!(rows1, 3);
    assert_reconciles(&report(&out));

    // Same inputs again: nothing is scored, nothing changes.
    ok(&run(&["run", ps, "--no-progress"]));
    assert_eq!(snapshot(&out), night1);
    assert_eq!(report(&out)["chunks_already_committed"].as_u64(), Some(3));
    assert!(report(&out)["counts"].get("episodes_scored").is_none());

    // A new input file: only its shards are added; old shards are untouched.
    let wild = sample("wildchat_1m.jsonl");
    ok(&run(&[
        "run",
        ps,
        "--no-progress",
        "--input",
        &first[0],
        "--input",
        &wild,
    ]));
    let night2 = snapshot(&out);
    for (name, bytes) in &night1 {
        if name != "manifest.json" {
            assert_eq!(night2.get(name), Some(bytes), "old shard {name} changed");
        }
    }
    assert!(night2.len() > night1.len());
    let manifest: serde_json::Value =
        serde_json::from_slice(&night2["manifest.json"]).expect("manifest");
    let listed = manifest["shards"].as_array().map(|a| a.len()).unwrap_or(0);
    assert_eq!(listed, night2.len() - 1);

    // The same records under another file name are rows the dataset has: skipped unscored.
    let copy = dir.join("hints_copy.jsonl");
    std::fs::copy(&first[0], &copy).expect("copy");
    ok(&run(&[
        "run",
        ps,
        "--no-progress",
        "--input",
        copy.to_str().expect("utf8"),
    ]));
    let r = report(&out);
    assert_eq!(r["counts"]["filtered:already_in_dataset"].as_u64(), Some(3));
    assert!(r["counts"].get("episodes_scored").is_none(), "{r}");
    assert!(r["counts"].get("rows_written").is_none());
    assert_reconciles(&r);
    ok(&run(&["validate", out.to_str().expect("utf8")]));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_changed_config_is_refused_on_an_existing_dataset() {
    let dir = temp_dir("binding");
    let out = dir.join("out");
    let p = pipeline(&dir, &out, &[sample("hints.jsonl")]);
    let ps = p.to_str().expect("utf8");
    ok(&run(&["run", ps, "--no-progress"]));
    let o = run(&["run", ps, "--no-progress", "--set", "score.top_k=5"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("different pipeline config"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn demonstrations_are_rolled_out_on_policy_and_reproducibly() {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let dir = temp_dir("rollout");
    let pipeline = format!(
        "{}/pipelines/demonstrations.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut snapshots = Vec::new();
    for run_no in 0..2 {
        let out = dir.join(format!("out{run_no}"));
        ok(&run(&[
            "run",
            &pipeline,
            "--no-progress",
            "--input",
            &sample("demonstrations.jsonl"),
            "--output",
            out.to_str().expect("utf8"),
            "--set",
            "rollout.max_new_tokens=8",
        ]));
        ok(&run(&["validate", out.to_str().expect("utf8")]));
        let counts = &report(&out)["counts"];
        assert_eq!(
            counts["rollouts"].as_u64(),
            Some(6),
            "3 prompts x n=2: {counts}"
        );
        assert_eq!(counts["rows_written"].as_u64(), Some(6));
        assert_eq!(counts["episodes_in"].as_u64(), Some(3), "{counts}");
        assert_eq!(counts["rollout_prompts"].as_u64(), Some(3), "{counts}");
        assert_reconciles(&report(&out));
        snapshots.push(snapshot(&out));
    }
    assert_eq!(
        snapshots[0], snapshots[1],
        "same seed must sample the same tokens"
    );
    let out = dir.join("out0");
    for (name, _) in snapshots[0].iter().filter(|(n, _)| n.starts_with("part-")) {
        let file = std::fs::File::open(out.join(name)).expect("shard");
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .expect("parquet")
            .build()
            .expect("reader");
        for batch in reader {
            let batch = batch.expect("batch");
            let rows = hindsight::sink::batch_to_rows(&batch).expect("rows");
            for r in rows {
                assert!(r.is_on_policy);
                assert!(r.num_completion_tokens <= 8);
                assert!(r.finish_reason == "stop" || r.finish_reason == "length");
                if r.finish_reason == "length" {
                    assert_eq!(r.num_completion_tokens, 8);
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `score.relevance = "pmi"` runs end to end (issue 15): the feedback probes are scored in the
/// run, the dataset validates and records the method, and `relevance` is the PMI, not the KL.
#[test]
fn a_pmi_run_writes_pmi_relevance_and_validates() {
    let dir = temp_dir("pmi");
    let out = dir.join("out");
    let p = pipeline(&dir, &out, &[sample("hints.jsonl")]);
    ok(&run(&[
        "run",
        p.to_str().expect("utf8"),
        "--no-progress",
        "--set",
        "score.relevance=pmi",
    ]));
    ok(&run(&["validate", out.to_str().expect("utf8")]));
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("manifest.json")).expect("manifest"),
    )
    .expect("json");
    assert_eq!(manifest["dataset"]["relevance_method"], "pmi");
    let q = run(&[
        "query",
        out.to_str().expect("utf8"),
        "SELECT relevance, relevance_kl FROM dataset",
        "--format",
        "csv",
    ]);
    ok(&q);
    let text = String::from_utf8_lossy(&q.stdout);
    let rows: Vec<(f64, f64)> = text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let (a, b) = l.split_once(',')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .collect();
    assert_eq!(rows.len(), 3, "{text}");
    for (pmi, kl) in rows {
        assert!((pmi - kl).abs() > 1e-6, "relevance fell back to kl: {text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 29: a log that only grows. Night 2 re-reads the file but scores only the episodes of
/// the appended records: unchanged chunks keep their content ids (skipped as committed), and
/// the episodes of the one chunk that grew which are already in the dataset are skipped before
/// scoring. The dataset then holds exactly the rows of a one-shot run over the whole file.
#[test]
fn a_log_that_grows_is_scored_only_for_its_new_records() {
    let dir = temp_dir("append");
    let inputs = dir.join("in");
    std::fs::create_dir_all(&inputs).expect("inputs");
    let bytes = std::fs::read(sample("followups.jsonl")).expect("sample");
    let lines: Vec<&[u8]> = bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    assert!(lines.len() >= 10);
    let joined = |n: usize| -> Vec<u8> {
        lines[..n]
            .iter()
            .flat_map(|l| l.iter().copied().chain([b'\n']))
            .collect()
    };
    let log = inputs.join("log.jsonl");
    std::fs::write(&log, joined(5)).expect("night 1 log");
    let p = dir.join("pipeline.toml");
    std::fs::write(
        &p,
        format!(
            "name = \"append\"\n[input]\npaths = [{:?}]\nchunk_records = 2\n\
             [score]\nrelevance_threshold = -1000000.0\n[output]\ndir = \"unused\"\n",
            inputs.display().to_string()
        ),
    )
    .expect("pipeline");
    let ps = p.to_str().expect("utf8");
    let nightly = dir.join("nightly");
    let ns = nightly.to_str().expect("utf8");
    ok(&run(&["run", ps, "--output", ns, "--no-progress"]));
    let r1 = report(&nightly);

    std::fs::write(&log, joined(10)).expect("night 2 log");
    ok(&run(&["run", ps, "--output", ns, "--no-progress"]));
    let r2 = report(&nightly);
    assert_reconciles(&r2);
    let oneshot = dir.join("oneshot");
    ok(&run(&[
        "run",
        ps,
        "--output",
        oneshot.to_str().expect("utf8"),
        "--no-progress",
    ]));
    let r0 = report(&oneshot);
    let n = |r: &serde_json::Value, k: &str| r["counts"][k].as_u64().unwrap_or(0);

    // Every episode is scored once over the two nights, as in the one-shot run.
    assert_eq!(
        n(&r1, "episodes_scored") + n(&r2, "episodes_scored"),
        n(&r0, "episodes_scored"),
        "night 1 {r1}\nnight 2 {r2}\none-shot {r0}"
    );
    assert!(n(&r2, "episodes_scored") < n(&r0, "episodes_scored"));
    assert_eq!(r2["chunks_already_committed"].as_u64(), Some(2), "{r2}");
    assert!(n(&r2, "filtered:already_in_dataset") >= 1, "{r2}");
    assert_eq!(n(&r2, "filtered:duplicate_across_runs"), 0, "{r2}");

    let by_id =
        |rows: Vec<hindsight::sink::OutputRow>| -> BTreeMap<String, hindsight::sink::OutputRow> {
            rows.into_iter().map(|r| (r.sample_id.clone(), r)).collect()
        };
    let grown = by_id(crate::common::manifest_rows(&nightly));
    let whole = by_id(crate::common::manifest_rows(&oneshot));
    assert_eq!(grown.len(), whole.len());
    assert!(
        grown == whole,
        "the two nights' rows differ from the one-shot run's"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
