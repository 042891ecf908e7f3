//! `hindsight query` against a real dataset written by the pipeline (real model, sample files
//! with quarantined records): counts agree with the manifest and the run report, the README
//! examples run, CSV/JSONL/Parquet outputs hold the result, and bad SQL exits 2 writing nothing.

use crate::common::{hindsight, ok, sample};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

/// README examples (docs/README_SNIPPET_9.md); they must run on a real dataset.
const RELEVANCE_BY_SOURCE: &str =
    "SELECT source_format, count(*) AS rows, avg(relevance) AS mean_relevance, \
     min(relevance) AS min_relevance FROM dataset GROUP BY source_format ORDER BY source_format";
const TOKENS_PER_DAY: &str = "SELECT date_trunc('day', event_time) AS day, count(*) AS rows, \
     sum(num_completion_tokens) AS response_tokens, sum(cardinality(prompt_ids)) AS prompt_tokens \
     FROM dataset GROUP BY 1 ORDER BY 1";
const LEAST_RELEVANT: &str = "SELECT relevance, source_uri, source_record, privileged_context \
     FROM dataset WHERE source_kind = 'chat_log' ORDER BY relevance ASC, sample_id LIMIT 20";

/// One dataset for all tests of this file: chat logs (WildChat, OpenAI with a bad line) plus a
/// truncated ShareGPT dump, so both tables have rows.
fn dataset() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = std::env::temp_dir().join(format!("hindsight-sqlq-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("temp dir");
        let out = root.join("ds");
        let inputs = [
            sample("wildchat_1m.jsonl"),
            sample("openai_messages.jsonl"),
            sample("sharegpt_truncated.json"),
        ];
        let paths: Vec<String> = inputs.iter().map(|p| format!("{p:?}")).collect();
        let pipeline = root.join("p.toml");
        std::fs::write(
            &pipeline,
            format!(
                "name = \"q\"\n[input]\npaths = [{}]\nchunk_records = 4\n[output]\ndir = {:?}\nshard_max_rows = 5\n",
                paths.join(", "),
                out.display().to_string()
            ),
        )
        .expect("pipeline");
        ok(&hindsight(&["run", pipeline.to_str().expect("utf8"), "--no-progress"]));
        out
    })
}

fn query(args: &[&str]) -> Output {
    let dir = dataset().to_str().expect("utf8").to_string();
    let mut all = vec!["query", dir.as_str()];
    all.extend_from_slice(args);
    hindsight(&all)
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("json")
}

fn csv_rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .skip(1)
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

#[test]
fn counts_agree_with_manifest_and_run_report() {
    let manifest = json(&dataset().join("manifest.json"));
    assert!(manifest["shards"].as_array().expect("shards").len() >= 2);
    let rows = manifest["totals"]["rows"].as_u64().expect("rows");
    assert!(rows > 0);
    let out = ok(&query(&[
        "SELECT count(*) AS n, sum(num_completion_tokens) AS t FROM dataset",
        "--format",
        "csv",
    ]));
    let got = csv_rows(&out);
    assert_eq!(got[0][0], rows.to_string());
    assert_eq!(got[0][1], manifest["totals"]["response_tokens"].to_string());

    // Quarantine table: the same per-reason counts as the run report.
    let report = json(&dataset().join("run_report.json"));
    let want = report["ingest"]["records_quarantined"]
        .as_object()
        .expect("quarantined");
    assert!(!want.is_empty(), "the inputs have bad records");
    let out = ok(&query(&[
        "SELECT reason, count(*) AS n FROM quarantine GROUP BY reason ORDER BY reason",
        "--format",
        "csv",
    ]));
    let got = csv_rows(&out);
    assert_eq!(got.len(), want.len());
    for r in got {
        assert_eq!(want[&r[0]].to_string(), r[1], "{r:?}");
    }

    // A stray Parquet file in the directory is not part of the table.
    let stray = dataset().join("part-stray.parquet");
    std::fs::copy(
        dataset().join(manifest["shards"][0]["file"].as_str().expect("file")),
        &stray,
    )
    .expect("copy");
    let out = ok(&query(&["SELECT count(*) FROM dataset", "--format", "csv"]));
    std::fs::remove_file(&stray).expect("rm");
    assert_eq!(csv_rows(&out)[0][0], rows.to_string());
}

#[test]
fn readme_examples_run_and_print_tables() {
    for sql in [RELEVANCE_BY_SOURCE, TOKENS_PER_DAY, LEAST_RELEVANT] {
        let text = ok(&query(&[sql]));
        assert!(text.contains("+--"), "table borders: {text}");
        assert!(
            text.trim_end().ends_with("rows") || text.trim_end().ends_with("row"),
            "{text}"
        );
    }
    let text = ok(&query(&[RELEVANCE_BY_SOURCE]));
    assert!(
        text.contains("wildchat") && text.contains("mean_relevance"),
        "{text}"
    );
    // Long cells are cut, rows capped.
    let text = ok(&query(&[
        "SELECT privileged_context, prompt FROM dataset",
        "--max-rows",
        "2",
        "--max-width",
        "20",
    ]));
    assert!(text.contains('…'), "{text}");
    assert!(text.contains("(2 shown"), "{text}");
    for line in text.lines().filter(|l| l.starts_with('|')) {
        assert!(line.chars().count() <= 2 * 20 + 10, "{line}");
    }
}

#[test]
fn outputs_are_written_in_each_format() {
    let manifest = json(&dataset().join("manifest.json"));
    let rows = manifest["totals"]["rows"].as_u64().expect("rows");
    let dir = std::env::temp_dir().join(format!("hindsight-sqlq-out-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");

    let csv = dir.join("least.csv");
    ok(&query(&[
        "SELECT sample_id, relevance, source_kind FROM dataset ORDER BY relevance, sample_id",
        "--out",
        csv.to_str().expect("utf8"),
    ]));
    let text = std::fs::read_to_string(&csv).expect("csv");
    assert!(
        text.starts_with("sample_id,relevance,source_kind\n"),
        "{text}"
    );
    assert_eq!(text.lines().count() as u64, rows + 1);
    assert!(
        text.contains(",chat_log"),
        "dictionary column written as text: {text}"
    );

    let jsonl = dir.join("rows.jsonl");
    ok(&query(&[
        "SELECT sample_id, completion_ids, prompt FROM dataset",
        "--out",
        jsonl.to_str().expect("utf8"),
    ]));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&jsonl)
        .expect("jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len() as u64, rows);
    assert!(lines[0]["completion_ids"]
        .as_array()
        .is_some_and(|a| !a.is_empty()));
    assert!(lines[0]["prompt"][0]["role"].is_string());

    let pq = dir.join("all.parquet");
    ok(&query(&[
        "SELECT * FROM dataset",
        "--out",
        pq.to_str().expect("utf8"),
    ]));
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(&pq).expect("open"),
    )
    .expect("parquet")
    .build()
    .expect("reader");
    let n: usize = reader.map(|b| b.expect("batch").num_rows()).sum();
    assert_eq!(n as u64, rows);

    // Nothing else was left in the directory (no temporary files).
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["all.parquet", "least.csv", "rows.jsonl"]);
}

#[test]
fn bad_sql_exits_2_and_writes_nothing() {
    let dir = std::env::temp_dir().join(format!("hindsight-sqlq-bad-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let out = dir.join("result.csv");
    let copy_target = dir.join("copied.csv");
    let copy = format!("COPY (SELECT 1) TO '{}'", copy_target.display());
    for (sql, needle) in [
        ("SELEC * FROM dataset", "SELEC"),
        ("SELECT nope FROM dataset", "nope"),
        ("SELECT * FROM missing_table", "missing_table"),
        ("CREATE TABLE t AS SELECT 1", "error"),
        (copy.as_str(), "error"),
        // CSV cannot hold list columns: refused before anything is written.
        ("SELECT prompt_ids FROM dataset", "CSV"),
    ] {
        let o = query(&[sql, "--out", out.to_str().expect("utf8")]);
        assert_eq!(o.status.code(), Some(2), "{sql}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(needle), "{sql}: {err}");
        assert!(o.stdout.is_empty(), "{sql}");
        let left: Vec<_> = std::fs::read_dir(&dir).expect("ls").collect();
        assert!(left.is_empty(), "{sql} left files behind: {left:?}");
    }
    // Not a dataset directory.
    let o = hindsight(&["query", dir.to_str().expect("utf8"), "SELECT 1"]);
    assert_eq!(o.status.code(), Some(2));
    // Unknown output extension.
    let o = query(&[
        "SELECT 1",
        "--out",
        dir.join("x.xlsx").to_str().expect("utf8"),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(std::fs::read_dir(&dir).expect("ls").next().is_none());
}

/// After a `kill -9` mid-write, `quarantine.jsonl` may end in half a line: `query` skips that
/// torn last line instead of failing, and still sees every complete entry.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("list") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
}

/// Glob characters in the dataset's path are part of the name, not a pattern: a copy at
/// `runs[1]*?` gives the same counts as the original (read as a glob, the path matches no
/// shard of its own, only the sibling `runs1xy`, which has none).
#[test]
fn glob_characters_in_the_dataset_path_do_not_change_results() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let odd = tmp.path().join("runs[1]*?");
    copy_dir(dataset(), &odd);
    std::fs::create_dir_all(tmp.path().join("runs1xy")).expect("mkdir");
    let sql = "SELECT count(*) AS n, sum(num_completion_tokens) AS t FROM dataset";
    let want = ok(&hindsight(&[
        "query",
        dataset().to_str().expect("utf8"),
        sql,
        "--format",
        "csv",
    ]));
    let got = ok(&hindsight(&[
        "query",
        odd.to_str().expect("utf8"),
        sql,
        "--format",
        "csv",
    ]));
    assert_eq!(csv_rows(&got), csv_rows(&want));
}

#[test]
fn a_torn_last_quarantine_line_does_not_break_query() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let copy = tmp.path().join("ds");
    copy_dir(dataset(), &copy);
    let qpath = copy.join("quarantine.jsonl");
    let complete = std::fs::read_to_string(&qpath).expect("quarantine");
    let lines = complete.lines().filter(|l| !l.trim().is_empty()).count();
    assert!(lines > 0, "the fixture dataset has quarantined records");
    // Half of a real line, cut inside a multi-byte-safe ASCII prefix, with no newline.
    let first = complete.lines().next().expect("line");
    let mut torn = complete.clone();
    torn.push_str(&first[..first.len() / 2]);
    std::fs::write(&qpath, torn).expect("write");
    let o = hindsight(&[
        "query",
        copy.to_str().expect("utf8"),
        "SELECT count(*) AS n FROM quarantine",
        "--format",
        "csv",
    ]);
    let out = ok(&o);
    assert_eq!(csv_rows(&out), vec![vec![lines.to_string()]], "{out}");
    // A malformed line in the middle is still an error: only a torn tail is forgiven.
    std::fs::write(&qpath, format!("{{not json\n{complete}")).expect("write");
    let o = hindsight(&[
        "query",
        copy.to_str().expect("utf8"),
        "SELECT count(*) FROM quarantine",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("line 1"));
}
