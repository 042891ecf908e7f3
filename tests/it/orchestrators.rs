//! What a nightly run tells its platform (issue 29), checked by independent readers:
//!
//! - OpenLineage: two nights write START/COMPLETE and START/FAIL events to a file and POST them
//!   to an HTTP endpoint; every event passes the official OpenLineage 2-0-2 JSON schema and its
//!   facet schemas (tests/openlineage/, validated by the `jsonschema` package), and the facets
//!   agree with the dataset as the Parquet reader and the manifest see it.
//! - Dagster: the real Dagster (PyPI `dagster`) materializes deploy/dagster/hindsight_assets.py,
//!   which launches the binary through Dagster Pipes; Dagster records the materialization with
//!   the dataset's metadata and the `audit` asset check, and on a drifted night the failed check
//!   and the failed step.
//!
//! The Python side lives in `.venv-test` (scripts/test.sh installs it; `HINDSIGHT_TEST_PYTHON`
//! points elsewhere). A missing package fails the test with how to install it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use crate::common::{hindsight, manifest_rows, ok, sample, sample_pipeline, temp_dir};

/// The test virtualenv's Python, checked for a module.
fn python_with(module: &str) -> PathBuf {
    let py = std::env::var("HINDSIGHT_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-test/bin/python"));
    let has = Command::new(&py)
        .args(["-c", &format!("import {module}")])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        has,
        "{} cannot import {module}: run scripts/test.sh (it installs .venv-test), or \
         `.venv-test/bin/pip install 'jsonschema[format-nongpl]==4.26.0' dagster==1.13.29`, or \
         point HINDSIGHT_TEST_PYTHON at a Python that has it",
        py.display()
    );
    py
}

/// A minimal HTTP/1.1 endpoint that answers 201 to every POST and keeps the bodies: the
/// receiving side of OpenLineage's HTTP transport.
fn lineage_endpoint() -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let (mut line, mut len, mut path) = (String::new(), 0usize, String::new());
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                if path.is_empty() {
                    path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
                line.clear();
            }
            let mut body = vec![0u8; len];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            if path == "/api/v1/lineage" {
                if let Ok(v) = serde_json::from_slice(&body) {
                    sink.lock().expect("lock").push(v);
                }
            }
            let mut stream = reader.into_inner();
            let _ = stream.write_all(b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n");
        }
    });
    (url, got)
}

#[test]
fn lineage_events_pass_the_openlineage_schema_and_describe_the_nights() {
    let py = python_with("jsonschema");
    let dir = temp_dir("lineage");
    let p = sample_pipeline(&dir, &["hints.jsonl"], 2, "");
    let out = dir.join("ds");
    let events = dir.join("lineage.jsonl");
    let (url, posted) = lineage_endpoint();
    let args = |extra: &[&str]| {
        let mut v: Vec<String> = [
            "run",
            p.to_str().expect("utf8"),
            "--output",
            out.to_str().expect("utf8"),
            "--no-progress",
            "--openlineage-file",
            events.to_str().expect("utf8"),
            "--openlineage-url",
            &url,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let night1 = args(&[]);
    ok(&hindsight(
        &night1.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    // Night 2 drifts (unit-test feedback, longer responses) and is refused.
    std::fs::copy(sample("unit_tests.jsonl"), dir.join("in/unit_tests.jsonl")).expect("copy");
    let night2 = args(&[
        "--set",
        "guards.min_rows=1",
        "--set",
        "guards.max_tokens_per_row_change=0.5",
    ]);
    let refused = hindsight(&night2.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(refused.status.code(), Some(4));

    // The official schemas, through an independent validator.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openlineage");
    let v = Command::new(&py)
        .arg(root.join("validate_openlineage.py"))
        .arg(root.join("schemas"))
        .arg(&events)
        .output()
        .expect("validator");
    let report = String::from_utf8_lossy(&v.stdout);
    assert!(
        v.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&v.stderr)
    );
    assert!(report.contains("4 events valid"), "{report}");

    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&events)
        .expect("events")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let kinds: Vec<&str> = lines
        .iter()
        .filter_map(|e| e["eventType"].as_str())
        .collect();
    assert_eq!(kinds, ["START", "COMPLETE", "START", "FAIL"]);
    assert_eq!(lines[0]["run"]["runId"], lines[1]["run"]["runId"]);
    assert_ne!(lines[1]["run"]["runId"], lines[2]["run"]["runId"]);
    // The HTTP endpoint got the same events.
    let posted = posted.lock().expect("lock").clone();
    assert_eq!(posted, lines);

    // Night 1's COMPLETE: the dataset as it is on disk.
    let complete = &lines[1];
    let output = &complete["outputs"][0];
    assert_eq!(output["namespace"], "file");
    assert_eq!(
        output["name"].as_str().expect("name"),
        std::path::absolute(&out)
            .expect("abs")
            .display()
            .to_string()
    );
    let rows = manifest_rows(&out);
    let stats = &output["outputFacets"]["outputStatistics"];
    assert_eq!(stats["rowCount"].as_u64(), Some(rows.len() as u64));
    let m = hindsight::sink::Manifest::read(&out).expect("manifest");
    assert_eq!(stats["size"].as_u64(), Some(m.totals.bytes));
    assert_eq!(stats["fileCount"].as_u64(), Some(m.totals.shards));
    // The schema facet lists the columns a Parquet reader finds in the shard.
    let shard = std::fs::File::open(out.join(&m.shards[0].file)).expect("shard");
    let builder =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(shard).expect("pq");
    let columns: Vec<String> = builder
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let listed: Vec<String> = output["facets"]["schema"]["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .map(|f| f["name"].as_str().expect("name").to_string())
        .collect();
    assert_eq!(listed, columns);
    let inputs: Vec<&str> = complete["inputs"]
        .as_array()
        .expect("inputs")
        .iter()
        .filter_map(|i| i["name"].as_str())
        .collect();
    assert_eq!(inputs.len(), 1);
    assert!(inputs[0].ends_with("in/hints.jsonl"), "{inputs:?}");

    // Night 2's FAIL: the error, the failed drift assertion, no output statistics.
    let fail = &lines[3];
    let message = fail["run"]["facets"]["errorMessage"]["message"]
        .as_str()
        .expect("message");
    assert!(message.contains("tokens_per_row"), "{message}");
    let assertions = fail["outputs"][0]["facets"]["dataQualityAssertions"]["assertions"]
        .as_array()
        .expect("assertions");
    let drift = assertions
        .iter()
        .find(|a| a["name"] == "tokens_per_row")
        .expect("drift assertion");
    assert_eq!(drift["success"], false);
    assert!(assertions
        .iter()
        .any(|a| a["assertion"] == "contract" && a["success"] == true));
    assert!(fail["outputs"][0].get("outputFacets").is_none());
    assert_eq!(fail["inputs"].as_array().map(Vec::len), Some(2));
}

/// Runs deploy/dagster/hindsight_assets.py's asset with the real Dagster; what it recorded.
fn dagster_materialize(py: &Path, pipeline: &Path, out: &Path, args: &str) -> serde_json::Value {
    let job = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/orchestrators/dagster_job.py");
    let result = out.with_extension("dagster.json");
    let o = Command::new(py)
        .arg(job)
        .arg(&result)
        .env("HINDSIGHT_BIN", env!("CARGO_BIN_EXE_hindsight"))
        .env("HINDSIGHT_PIPELINE", pipeline)
        .env("HINDSIGHT_OUTPUT", out)
        .env("HINDSIGHT_ARGS", args)
        .output()
        .expect("dagster");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read(&result).expect("dagster_job.py's result");
    serde_json::from_slice(&text).expect("json")
}

#[test]
fn dagster_records_the_materialization_and_the_audit_check() {
    let py = python_with("dagster");
    let dir = temp_dir("dagster");
    let p = sample_pipeline(&dir, &["hints.jsonl"], 2, "");
    let out = dir.join("ds");
    let night1 = dagster_materialize(&py, &p, &out, "");
    assert_eq!(night1["run_success"], true, "{night1:#}");
    let meta = &night1["materialization"]["metadata"];
    let m = hindsight::sink::Manifest::read(&out).expect("manifest");
    let rows = manifest_rows(&out);
    assert_eq!(meta["rows"].as_u64(), Some(rows.len() as u64));
    assert_eq!(meta["rows_added"].as_u64(), Some(rows.len() as u64));
    let tokens: usize = rows.iter().map(|r| r.response_tokens()).sum();
    assert_eq!(meta["response_tokens"].as_u64(), Some(tokens as u64));
    assert_eq!(meta["bytes"].as_u64(), Some(m.totals.bytes));
    let bpt = meta["bytes_per_token"].as_f64().expect("float");
    assert!((bpt - m.totals.bytes as f64 / tokens as f64).abs() < 1e-9);
    assert_eq!(
        meta["relevance_threshold"].as_f64(),
        Some(f64::from(
            hindsight::score::RelevanceMethod::default().default_threshold()
        ))
    );
    assert!(meta["dropped"].is_object());
    let types = &night1["materialization"]["metadata_types"];
    assert_eq!(types["rows"], "IntMetadataValue");
    assert_eq!(types["bytes_per_token"], "FloatMetadataValue");
    let checks = night1["checks"].as_array().expect("checks");
    assert_eq!(checks.len(), 1, "{night1:#}");
    assert_eq!(checks[0]["check_name"], "audit");
    assert_eq!(checks[0]["passed"], true);
    assert_eq!(
        checks[0]["metadata"]["rows_checked"].as_u64(),
        Some(rows.len() as u64)
    );
    assert!(night1.get("pipes_warnings").is_none(), "{night1:#}");

    // A drifted night: the check fails, the step fails, nothing is materialized or published.
    let before = std::fs::read(out.join("manifest.json")).expect("manifest");
    std::fs::copy(sample("unit_tests.jsonl"), dir.join("in/unit_tests.jsonl")).expect("copy");
    let night2 = dagster_materialize(
        &py,
        &p,
        &out,
        "--set guards.min_rows=1 --set guards.max_tokens_per_row_change=0.5",
    );
    assert_eq!(night2["run_success"], false, "{night2:#}");
    assert!(night2["materialization"].is_null(), "{night2:#}");
    let checks = night2["checks"].as_array().expect("checks");
    assert_eq!(checks.len(), 1, "{night2:#}");
    assert_eq!(checks[0]["passed"], false);
    assert_eq!(checks[0]["severity"], "ERROR");
    let drift = checks[0]["metadata"]["drift"].as_array().expect("drift");
    assert!(drift
        .iter()
        .any(|c| c["name"] == "tokens_per_row" && c["passed"] == false));
    assert!(night2["step_failures"][0]
        .as_str()
        .is_some_and(|f| f.contains("audit failed")));
    assert!(std::fs::read(out.join("manifest.json")).expect("manifest") == before);
}

/// The real Airflow (`.venv-airflow`, scripts/test.sh installs it; `HINDSIGHT_TEST_AIRFLOW`
/// points elsewhere) runs deploy/airflow/hindsight_nightly.py with `airflow dags test`: the
/// dataset is published and exported, and hindsight's OpenLineage run names the Airflow task
/// run its provider reported as its parent.
#[test]
fn airflow_runs_the_nightly_dag_and_hindsights_lineage_names_its_task() {
    let airflow = std::env::var("HINDSIGHT_TEST_AIRFLOW")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-airflow/bin/airflow")
        });
    assert!(
        airflow.is_file(),
        "{} missing: run scripts/test.sh (it installs .venv-airflow), or `python3 -m venv \
         .venv-airflow && .venv-airflow/bin/pip install apache-airflow==3.3.2 \
         apache-airflow-providers-openlineage==2.20.3`, or point HINDSIGHT_TEST_AIRFLOW at an \
         airflow executable",
        airflow.display()
    );
    let dir = temp_dir("airflow");
    let p = sample_pipeline(&dir, &["hints.jsonl"], 2, "");
    let (out, export) = (dir.join("ds"), dir.join("ds-axolotl"));
    let (ours, theirs) = (dir.join("hindsight-ol.jsonl"), dir.join("airflow-ol.jsonl"));
    let airflow_cmd = |args: &[&str]| {
        let o = Command::new(&airflow)
            .args(args)
            .env("AIRFLOW_HOME", dir.join("airflow-home"))
            .env(
                "AIRFLOW__CORE__DAGS_FOLDER",
                Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/airflow"),
            )
            .env("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
            .env("AIRFLOW__OPENLINEAGE__NAMESPACE", "airflow-test")
            .env(
                "AIRFLOW__OPENLINEAGE__TRANSPORT",
                serde_json::json!({"type": "file", "log_file_path": theirs, "append": true})
                    .to_string(),
            )
            .env("HINDSIGHT_BIN", env!("CARGO_BIN_EXE_hindsight"))
            .env("HINDSIGHT_PIPELINE", &p)
            .env("HINDSIGHT_OUTPUT", &out)
            .env("HINDSIGHT_EXPORT", &export)
            .env(
                "HINDSIGHT_ARGS",
                format!("--openlineage-file {}", ours.display()),
            )
            .output()
            .expect("airflow");
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.status.success(), "airflow {args:?}: {log}");
        log
    };
    airflow_cmd(&["db", "migrate"]);
    let log = airflow_cmd(&["dags", "test", "hindsight_nightly", "2026-12-06"]);
    assert!(
        log.contains("state=success") || log.contains("DagRun Finished"),
        "{log}"
    );

    // Both tasks did their work.
    let rows = manifest_rows(&out);
    assert!(!rows.is_empty());
    let exported: serde_json::Value =
        serde_json::from_slice(&std::fs::read(export.join("manifest.json")).expect("export"))
            .expect("json");
    assert!(exported.is_object());

    // Airflow's provider reported the `score` task; hindsight's run names it as its parent.
    let read = |p: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect()
    };
    let task_run = read(&theirs)
        .into_iter()
        .find(|e| e["job"]["name"] == "hindsight_nightly.score" && e["eventType"] == "START")
        .expect("Airflow's START of the score task");
    let ours = read(&ours);
    assert_eq!(ours.len(), 2);
    for e in &ours {
        let parent = &e["run"]["facets"]["parent"];
        assert_eq!(parent["run"]["runId"], task_run["run"]["runId"], "{e:#}");
        assert_eq!(parent["job"]["name"], "hindsight_nightly.score");
        assert_eq!(parent["job"]["namespace"], "airflow-test");
    }
    assert_eq!(
        ours[1]["outputs"][0]["outputFacets"]["outputStatistics"]["rowCount"].as_u64(),
        Some(rows.len() as u64)
    );
}
