//! Running hindsight like infrastructure (issue 17): `plan` before a run (no weights loaded,
//! nothing written, the config diff against an existing dataset), the exit-code table, JSON logs
//! that parse line by line (per-chunk events, the report, errors), quality guards, the metrics
//! file and the dataset card.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use crate::common::{model_path, ok, sample, temp_dir};

fn cmd(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hindsight"));
    c.args(args).env("HINDSIGHT_MODEL", model_path());
    for v in [
        "JOB_COMPLETION_INDEX",
        "SLURM_ARRAY_TASK_ID",
        "SLURM_ARRAY_TASK_COUNT",
        "HINDSIGHT_NUM_TASKS",
    ] {
        c.env_remove(v);
    }
    c
}

fn run(args: &[&str]) -> Output {
    cmd(args).output().expect("run hindsight")
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every file under `dir` with its size and modification time: a plan must change none.
fn listing(dir: &Path) -> BTreeMap<String, (u64, std::time::SystemTime)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let m = e.metadata().expect("metadata");
            if m.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).expect("prefix").display().to_string();
                out.insert(rel, (m.len(), m.modified().expect("mtime")));
            }
        }
    }
    out
}

/// Each stderr line as JSON (all must parse).
fn json_lines(o: &Output) -> Vec<serde_json::Value> {
    stderr(o)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn plan_shows_the_run_without_loading_or_writing_and_a_nightly_run_is_observable() {
    let dir = temp_dir("ops");
    let out = dir.join("out");
    let o = out.to_str().expect("utf8");
    let p = "pipelines/hints.toml";
    let hints = sample("hints.jsonl");
    let base = ["--input", hints.as_str(), "--output", o];

    // A fresh dataset: the plan names the model's header and a new input, and writes nothing.
    let plan = run(&[&["plan", p, "--json"][..], &base].concat());
    ok(&plan);
    assert!(!out.exists(), "plan created the output directory");
    let j: serde_json::Value = serde_json::from_slice(&plan.stdout).expect("plan json");
    assert_eq!(j["dataset"]["exists"], false);
    assert_eq!(j["model"]["architecture"], "llama");
    assert_eq!(j["model"]["format"], "gguf");
    assert_eq!(j["model"]["context"], 8192);
    assert_eq!(j["model"]["vocab_size"], 49152);
    assert!(
        j["model"]["weight_dtypes"]["Q4_1"].as_u64().unwrap_or(0) > 0,
        "{j}"
    );
    assert_eq!(j["inputs"][0]["state"], "new");
    assert_eq!(j["config_sha256"].as_str().map(str::len), Some(64));
    assert_eq!(j["refusals"].as_array().map(Vec::len), Some(0));

    // The nightly run, in JSON log mode, with metrics and a guard that passes.
    let textfiles = dir.join("textfiles");
    std::fs::create_dir_all(&textfiles).expect("mkdir");
    let metrics = textfiles.join("hindsight.prom");
    let m = metrics.to_str().expect("utf8");
    let night = run(&[
        &[
            "--log-format",
            "json",
            "run",
            p,
            "--no-progress",
            "--metrics-file",
            m,
        ][..],
        &["--min-rows", "1"],
        &base,
    ]
    .concat());
    ok(&night);
    let events = json_lines(&night);
    let chunks: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["target"] == "hindsight::chunk")
        .collect();
    assert!(!chunks.is_empty(), "no per-chunk event");
    let last = &chunks[chunks.len() - 1]["fields"];
    assert!(
        last["input_bytes_total"].as_u64().unwrap_or(0) > 0,
        "{last}"
    );
    assert!(last["episodes_per_second"].as_f64().is_some(), "{last}");
    let report: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["target"] == "hindsight::report")
        .collect();
    assert_eq!(report.len(), 1, "one report event");
    let rows = report[0]["fields"]["report"]["counts"]["rows_written"]
        .as_u64()
        .expect("rows in the report event");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).expect("manifest"))
            .expect("json");
    assert_eq!(manifest["totals"]["rows"].as_u64(), Some(rows));
    assert_eq!(last["rows_total"].as_u64(), Some(rows));
    let prom = std::fs::read_to_string(&metrics).expect("metrics file");
    assert!(
        prom.contains(&format!("\nhindsight_rows_written_total {rows}\n")),
        "{prom}"
    );
    assert!(prom.contains("\nhindsight_run_finished 1\n"), "{prom}");
    // What node_exporter's textfile collector (the real one) makes of the file: typed counters,
    // no parse error.
    let scraped = scrape_textfile_collector(&textfiles);
    assert!(
        scraped.contains("\nnode_textfile_scrape_error 0\n"),
        "{scraped}"
    );
    assert!(
        scraped.contains("# TYPE hindsight_rows_written_total counter\n")
            && scraped.contains(&format!("\nhindsight_rows_written_total {rows}\n")),
        "{scraped}"
    );
    assert!(
        scraped.contains("# TYPE hindsight_run_finished gauge\nhindsight_run_finished 1\n"),
        "{scraped}"
    );
    // The dataset card names the shards for `datasets.load_dataset(DIR)` (tested in Python by
    // scripts/test.sh) and records the manifest's hashes.
    let card = std::fs::read_to_string(out.join("README.md")).expect("card");
    assert!(card.starts_with("---\nconfigs:\n") && card.contains("path: \"part-*.parquet\""));
    let weights = manifest["dataset"]["weights_sha256"].as_str().expect("sha");
    assert!(card.contains(weights), "card lacks the weights hash");

    // The same plan again: the input is committed; a changed key is named, and refused (3).
    let before = listing(&out);
    let again = run(&[&["plan", p, "--json"][..], &base].concat());
    ok(&again);
    let j: serde_json::Value = serde_json::from_slice(&again.stdout).expect("json");
    assert_eq!(j["inputs"][0]["state"], "committed", "{j}");
    assert_eq!(j["dataset"]["exists"], true);
    let changed = run(&[&["plan", p, "--set", "score.top_k=10"][..], &base].concat());
    assert_eq!(code(&changed), 3, "{}", stderr(&changed));
    let text = String::from_utf8_lossy(&changed.stdout);
    assert!(text.contains("score.top_k: 20 -> 10"), "{text}");
    assert_eq!(listing(&out), before, "plan changed the dataset");
    // Performance-only settings are not part of the identity: a GPU pod may change them.
    let faster = run(&[
        &["plan", p, "--json", "--set", "score.token_budget=16384"][..],
        &[
            "--set",
            "score.batch_episodes=4",
            "--set",
            "score.prefix_sharing=false",
        ],
        &base,
    ]
    .concat());
    ok(&faster);
    let j: serde_json::Value = serde_json::from_slice(&faster.stdout).expect("json");
    assert_eq!(j["dataset"]["config_changes"], serde_json::json!([]), "{j}");
    // The run itself is refused with the same key named, and exit 3.
    let refused = run(&[
        &["run", p, "--no-progress", "--set", "score.top_k=10"][..],
        &base,
    ]
    .concat());
    assert_eq!(code(&refused), 3, "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("score.top_k: 20 -> 10"),
        "{}",
        stderr(&refused)
    );
    // `run --dry-run` is the plan (the refused run above took the lock, so look again).
    let before = listing(&out);
    let dry = run(&[&["run", p, "--dry-run"][..], &base].concat());
    ok(&dry);
    assert!(String::from_utf8_lossy(&dry.stdout).contains("1 chunks committed"));
    assert_eq!(listing(&out), before, "--dry-run changed the dataset");

    // A night with nothing new writes no rows: --min-rows fails the job (4), the dataset is
    // still published and valid.
    let empty = run(&[&["run", p, "--no-progress", "--min-rows", "1"][..], &base].concat());
    assert_eq!(code(&empty), 4, "{}", stderr(&empty));
    assert!(
        stderr(&empty).contains("fewer than --min-rows 1"),
        "{}",
        stderr(&empty)
    );
    ok(&run(&["validate", o]));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn exit_codes_tell_usage_quarantine_guards_and_not_ready_apart() {
    let dir = temp_dir("exit-codes");
    let o = dir.join("out");
    let o = o.to_str().expect("utf8");
    let p = "pipelines/hints.toml";

    // Usage errors: 2, reported as a JSON error event in JSON mode.
    let bad_where = run(&[
        "--log-format",
        "json",
        "run",
        p,
        "--output",
        o,
        "--where",
        "no_such_column = 1",
    ]);
    assert_eq!(code(&bad_where), 2, "{}", stderr(&bad_where));
    let events = json_lines(&bad_where);
    let err = events
        .iter()
        .find(|e| e["level"] == "ERROR")
        .expect("an error event");
    assert_eq!(err["fields"]["exit_code"], 2);
    assert!(err["fields"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("No field named no_such_column")));
    let bad_key = run(&["run", p, "--output", o, "--set", "score.no_such_key=1"]);
    assert_eq!(code(&bad_key), 2, "{}", stderr(&bad_key));
    let index_only = run(&["run", p, "--output", o, "--task-index", "1"]);
    assert_eq!(code(&index_only), 2, "{}", stderr(&index_only));
    assert!(stderr(&index_only).contains("no task count"));
    let env_only = cmd(&["run", p, "--output", o])
        .env("JOB_COMPLETION_INDEX", "2")
        .output()
        .expect("run");
    assert_eq!(code(&env_only), 2, "{}", stderr(&env_only));
    assert!(stderr(&env_only).contains("JOB_COMPLETION_INDEX"));

    // Inputs that changed format: everything quarantined, the guard fails the job (4).
    let broken = dir.join("broken.jsonl");
    let good = std::fs::read_to_string(sample("hints.jsonl")).expect("hints");
    let first = good.lines().next().expect("a line");
    std::fs::write(
        &broken,
        format!("{first}\n{{\"not\": \"a hint\"}}\n{{broken\n"),
    )
    .expect("w");
    let b = broken.to_str().expect("utf8");
    let guarded = run(&[
        "run",
        p,
        "--no-progress",
        "--input",
        b,
        "--output",
        o,
        "--max-quarantine-fraction",
        "0.5",
    ]);
    assert_eq!(code(&guarded), 4, "{}", stderr(&guarded));
    assert!(
        stderr(&guarded).contains("2 of 3 records quarantined"),
        "{}",
        stderr(&guarded)
    );
    assert!(
        dir.join("out/manifest.json").exists(),
        "the run still publishes"
    );

    // finalize before the tasks have finished: 75 (try again later).
    let sharded = dir.join("sharded");
    let s = sharded.to_str().expect("utf8");
    let hints = sample("hints.jsonl");
    let task = cmd(&["run", p, "--no-progress", "--input", &hints, "--output", s])
        .env("JOB_COMPLETION_INDEX", "0")
        .env("HINDSIGHT_NUM_TASKS", "2")
        .output()
        .expect("task");
    ok(&task);
    assert!(
        sharded.join("_state/tasks/2/0.json").exists(),
        "task 0 of 2 from the environment"
    );
    let early = run(&["finalize", s]);
    assert_eq!(code(&early), 75, "{}", stderr(&early));
    assert!(
        stderr(&early).contains("task index(es) 1"),
        "{}",
        stderr(&early)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Starts Debian's `prometheus-node-exporter` (or `$HINDSIGHT_NODE_EXPORTER`) with only the
/// textfile collector on `dir`, and returns one scrape of its `/metrics`.
fn scrape_textfile_collector(dir: &Path) -> String {
    use std::io::{Read, Write};
    let bin = std::env::var("HINDSIGHT_NODE_EXPORTER")
        .unwrap_or_else(|_| "/usr/bin/prometheus-node-exporter".into());
    assert!(
        Path::new(&bin).is_file(),
        "node_exporter is needed for the metrics test: `apt-get install prometheus-node-exporter` \
         (scripts/test.sh does it) or set HINDSIGHT_NODE_EXPORTER"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut child = Command::new(&bin)
        .args([
            "--collector.disable-defaults",
            "--collector.textfile",
            &format!("--collector.textfile.directory={}", dir.display()),
            &format!("--web.listen-address=127.0.0.1:{port}"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start node_exporter");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let body = loop {
        let attempt = std::net::TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
            s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        });
        match attempt {
            Ok(text) if text.starts_with("HTTP/1.0 200") => break text,
            _ if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(100))
            }
            other => {
                let _ = child.kill();
                panic!("node_exporter did not answer: {other:?}");
            }
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    body
}
