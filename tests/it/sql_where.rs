//! Input filters in SQL (`input.where` / `run --where`) on real files: a WildChat-shaped Parquet
//! file with several row groups (written here with the parquet writer), the same rows as JSONL,
//! and the binary end to end. Checks the selected records and their provenance against an
//! unfiltered run, the `where` counts, row-group pruning, and up-front errors for bad predicates.

use std::collections::BTreeSet;
use std::path::Path;

use std::sync::Arc;

use crate::common::{hindsight, run_with, temp_dir, Run};
use hindsight::episode::{ingest, IngestOptions};
use hindsight::ingest::{IngestError, PredicateError};
use hindsight::sql::SqlWhere;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

const ROWS: usize = 24;
const ROW_GROUP: usize = 4;
/// The example predicate.
const PREDICATE: &str =
    "language = 'English' AND NOT toxic AND model LIKE 'gpt-4%' AND timestamp >= '2024-01-01'";

struct Row {
    language: &'static str,
    toxic: bool,
    model: &'static str,
    /// Days after 2023-07-01.
    day: i64,
}

/// Row `i`: times increase through the file (20 days apart, so the first row groups are all
/// before 2024), the last row group is all Chinese, the rest mixes English/French, toxic flags
/// and four models.
fn row(i: usize) -> Row {
    Row {
        language: if i >= 20 {
            "Chinese"
        } else if i.is_multiple_of(3) {
            "French"
        } else {
            "English"
        },
        toxic: i.is_multiple_of(5),
        model: [
            "gpt-3.5-turbo",
            "gpt-4-0314",
            "gpt-4-1106-preview",
            "gpt-3.5-turbo-0613",
        ][i % 4],
        day: 20 * i as i64,
    }
}

fn timestamp(day: i64) -> String {
    // 2023-07-01 + day days, at 10:00 UTC.
    let base = hindsight::ingest::parquet_rows::days_from_civil(2023, 7, 1);
    let (y, m, d) = hindsight::ingest::parquet_rows::civil_from_days(base + day);
    format!("{y:04}-{m:02}-{d:02}T10:00:00Z")
}

/// The rows the predicate selects, computed independently of DataFusion.
fn expected() -> BTreeSet<i64> {
    let cutoff = 184; // 2024-01-01 is 184 days after 2023-07-01
    (0..ROWS)
        .filter(|&i| {
            let r = row(i);
            r.language == "English" && !r.toxic && r.model.starts_with("gpt-4") && r.day >= cutoff
        })
        .map(|i| i as i64)
        .collect()
}

fn record_json(i: usize) -> serde_json::Value {
    let r = row(i);
    let ts = timestamp(r.day);
    serde_json::json!({
        "conversation_hash": format!("hash-{i:03}"),
        "model": r.model,
        "timestamp": ts,
        "conversation": [
            {"content": format!("Question number {i}: how do I sort a list of {i} numbers in Python?"), "role": "user", "timestamp": null},
            {"content": format!("Use sorted() on the {i} numbers; it returns a new list."), "role": "assistant", "timestamp": ts},
            {"content": format!("No, I needed the list of {i} numbers sorted in place, not a copy."), "role": "user", "timestamp": null},
        ],
        "turn": 2,
        "language": r.language,
        "toxic": r.toxic,
        "redacted": false,
    })
}

/// Writes the WildChat-shaped Parquet file (row groups of 4 rows, with statistics).
fn write_parquet(path: &Path) {
    use arrow_schema::{DataType, Field, Fields, Schema, TimeUnit};
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let turn = Fields::from(vec![
        Field::new("content", DataType::Utf8, false),
        Field::new("role", DataType::Utf8, false),
        Field::new("timestamp", ts.clone(), true),
    ]);
    let schema = Arc::new(Schema::new(vec![
        Field::new("conversation_hash", DataType::Utf8, false),
        Field::new("model", DataType::Utf8, false),
        Field::new("timestamp", ts, false),
        Field::new(
            "conversation",
            DataType::List(Arc::new(Field::new("item", DataType::Struct(turn), true))),
            false,
        ),
        Field::new("turn", DataType::Int64, false),
        Field::new("language", DataType::Utf8, false),
        Field::new("toxic", DataType::Boolean, false),
        Field::new("redacted", DataType::Boolean, false),
    ]));
    let mut decoder = datafusion::arrow::json::ReaderBuilder::new(schema.clone())
        .build_decoder()
        .expect("decoder");
    let rows: Vec<serde_json::Value> = (0..ROWS).map(record_json).collect();
    decoder.serialize(&rows).expect("rows fit the schema");
    let batch = decoder.flush().expect("flush").expect("a batch");
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(ROW_GROUP))
        .build();
    let file = std::fs::File::create(path).expect("create parquet");
    let mut w = ArrowWriter::try_new(file, schema, Some(props)).expect("writer");
    w.write(&batch).expect("write");
    let meta = w.close().expect("close");
    assert_eq!(meta.num_row_groups(), ROWS / ROW_GROUP);
}

fn write_jsonl(path: &Path, extra: &[serde_json::Value]) {
    let mut text = String::new();
    for i in 0..ROWS {
        text.push_str(&record_json(i).to_string());
        text.push('\n');
    }
    for v in extra {
        text.push_str(&v.to_string());
        text.push('\n');
    }
    std::fs::write(path, text).expect("write jsonl");
}

fn opts(path: &Path, predicate: Option<&str>) -> IngestOptions {
    IngestOptions {
        inputs: vec![path.display().to_string()],
        predicate: SqlWhere::optional(predicate),
        ..IngestOptions::default()
    }
}

fn records(r: &Run) -> BTreeSet<i64> {
    r.episodes
        .iter()
        .map(|e| e.provenance.source_record)
        .collect()
}

/// The filtered run's episodes are exactly the unfiltered run's episodes of the selected rows,
/// provenance included.
fn assert_subset_of_unfiltered(all: &Run, filtered: &Run, selected: &BTreeSet<i64>) {
    let want: Vec<_> = all
        .episodes
        .iter()
        .filter(|e| selected.contains(&e.provenance.source_record))
        .cloned()
        .collect();
    assert_eq!(filtered.episodes, want);
}

#[test]
fn parquet_where_prunes_row_groups_and_keeps_provenance() {
    let dir = temp_dir("pq");
    let path = dir.join("wildchat_where.parquet");
    write_parquet(&path);
    let all = run_with(opts(&path, None));
    let filtered = run_with(opts(&path, Some(PREDICATE)));
    let want = expected();
    assert_eq!(
        want.len(),
        3,
        "the fixture should select a few rows: {want:?}"
    );
    assert_eq!(records(&filtered), want);
    assert_subset_of_unfiltered(&all, &filtered, &want);

    let s = &filtered.stats;
    assert_eq!(
        s.records_read, ROWS as u64,
        "pruned rows still count as read"
    );
    assert_eq!(all.stats.records_read, ROWS as u64);
    assert_eq!(s.records_filtered.get("where"), Some(&(ROWS as u64 - 3)));
    assert_eq!(s.records_with_episodes, 3);
    let w = s.where_filter.as_ref().expect("where stats");
    assert_eq!(w.predicate, PREDICATE);
    assert_eq!(w.parquet_row_groups, 6);
    // Groups 0-1 end before 2024, group 5 is all Chinese: their statistics rule them out.
    assert_eq!(w.parquet_row_groups_pruned, 3, "{w:?}");
    assert_eq!(w.parquet_rows_pruned, 12);
    assert_eq!(w.records_evaluated, 12);
    assert!(all.stats.where_filter.is_none());

    // Each condition alone, against the same independent computation.
    for (pred, keep) in [
        (
            "timestamp >= '2024-01-01'",
            (10..ROWS as i64).collect::<BTreeSet<_>>(),
        ),
        (
            "language = 'French'",
            (0..20).filter(|i| i % 3 == 0).collect(),
        ),
        (
            "NOT toxic AND language <> 'French'",
            (0..ROWS as i64)
                .filter(|&i| i % 5 != 0 && (i >= 20 || i % 3 != 0))
                .collect(),
        ),
    ] {
        let r = run_with(opts(&path, Some(pred)));
        // Toxic rows are also dropped by the default prefilter; compare before it.
        let built: BTreeSet<i64> = keep.iter().copied().filter(|&i| i % 5 != 0).collect();
        assert_eq!(records(&r), built, "{pred}");
        let rejected = ROWS as u64 - keep.len() as u64;
        assert_eq!(
            r.stats.records_filtered.get("where").copied().unwrap_or(0),
            rejected,
            "{pred}"
        );
    }
}

#[test]
fn jsonl_where_selects_the_same_records_and_missing_fields_are_null() {
    let dir = temp_dir("jsonl");
    let path = dir.join("wildchat_where.jsonl");
    // Row 24: like row 13 (selected) but without `language` → NULL → not selected.
    let mut no_lang = record_json(13);
    no_lang["conversation_hash"] = "no-language".into();
    no_lang["conversation"] = record_json(100)["conversation"].clone(); // not a duplicate
    no_lang.as_object_mut().expect("object").remove("language");
    write_jsonl(&path, &[no_lang]);
    let all = run_with(opts(&path, None));
    let filtered = run_with(opts(&path, Some(PREDICATE)));
    assert_eq!(records(&filtered), expected());
    assert_subset_of_unfiltered(&all, &filtered, &expected());
    assert!(
        records(&all).contains(&(ROWS as i64)),
        "row 24 makes an episode unfiltered"
    );
    let s = &filtered.stats;
    assert_eq!(s.records_read, ROWS as u64 + 1);
    assert_eq!(
        s.records_filtered.get("where"),
        Some(&(ROWS as u64 + 1 - 3))
    );
    let w = s.where_filter.as_ref().expect("where stats");
    assert_eq!(w.records_evaluated, ROWS as u64 + 1);
    assert_eq!(w.parquet_row_groups, 0);

    // Parquet and JSONL agree record for record (same indices, same episodes modulo source).
    let pq = dir.join("same.parquet");
    write_parquet(&pq);
    let from_pq = run_with(opts(&pq, Some(PREDICATE)));
    assert_eq!(records(&from_pq), records(&filtered));
}

#[test]
fn a_record_the_predicate_cannot_be_evaluated_on_is_quarantined() {
    let dir = temp_dir("werr");
    let path = dir.join("typed.jsonl");
    // `turn` is a number in every record but one, where it is a string.
    let mut odd = record_json(14);
    odd["conversation_hash"] = "odd-turn".into();
    odd["turn"] = "two".into();
    write_jsonl(&path, &[odd]);
    let r = run_with(opts(&path, Some("turn * 2 = 4 AND language = 'English'")));
    let q: Vec<_> = r
        .quarantine
        .iter()
        .map(|e| (e.record_index, e.reason.as_str()))
        .collect();
    assert_eq!(q, vec![(ROWS as i64, "where_error")]);
    assert!(
        r.quarantine[0].detail.contains("--where"),
        "{}",
        r.quarantine[0].detail
    );
    assert_eq!(r.stats.records_quarantined.get("where_error"), Some(&1));
    // English, non-toxic rows (turn = 2 everywhere) make episodes.
    let english_ok = (0..ROWS)
        .filter(|&i| row(i).language == "English" && i % 5 != 0)
        .count();
    assert_eq!(r.episodes.len(), english_ok);
}

#[test]
fn bad_predicates_fail_before_reading_with_clear_messages() {
    let dir = temp_dir("bad");
    let pq = dir.join("w.parquet");
    write_parquet(&pq);
    let jl = dir.join("w.jsonl");
    write_jsonl(&jl, &[]);
    for path in [&pq, &jl] {
        for (pred, needle) in [
            ("language = ", "Expected: an expression"),
            ("lang = 'English'", "No field named lang"),
            ("language", "not boolean"),
            ("1 = 1", "names no input column"),
            ("  ", "empty"),
            ("language + 1 > 2", "Cannot coerce arithmetic expression"),
        ] {
            let err = match ingest(opts(path, Some(pred))) {
                Ok(_) => panic!("`{pred}` on {} should fail", path.display()),
                Err(e) => e,
            };
            // The needle is looked for in the message alone: the error's display starts with
            // "--where `PRED`:", which already contains the predicate's own words.
            let IngestError::Where(PredicateError { predicate, message }) = &err else {
                panic!("`{pred}`: not a predicate error: {err:?}");
            };
            assert_eq!(predicate, pred);
            assert!(message.contains(needle), "`{pred}`: {message}");
            assert!(err.to_string().starts_with(&format!("--where `{pred}`: ")));
        }
    }
}

#[test]
fn run_where_counts_filtered_records_and_binds_the_dataset() {
    let dir = temp_dir("cli");
    let input = dir.join("wildchat_where.parquet");
    write_parquet(&input);
    let out = dir.join("out");
    let pipeline = dir.join("p.toml");
    std::fs::write(
        &pipeline,
        format!(
            "name = \"where\"\n[input]\npaths = [{:?}]\nchunk_records = 4\n[output]\ndir = {:?}\n",
            input.display().to_string(),
            out.display().to_string()
        ),
    )
    .expect("pipeline");
    let p = pipeline.to_str().expect("utf8");
    let o = hindsight(&["run", p, "--where", PREDICATE, "--no-progress"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("run_report.json")).expect("report"),
    )
    .expect("json");
    let ingest = &report["ingest"];
    assert_eq!(ingest["records_read"], 24);
    assert_eq!(ingest["records_filtered"]["where"], 21);
    assert_eq!(ingest["where_filter"]["parquet_row_groups_pruned"], 3);
    assert_eq!(ingest["where_filter"]["parquet_rows_pruned"], 12);
    assert!(hindsight(&["validate", out.to_str().expect("utf8")])
        .status
        .success());

    // The rows in the dataset come from the selected records only (read back with SQL).
    let q = hindsight(&[
        "query",
        out.to_str().expect("utf8"),
        "SELECT DISTINCT source_record FROM dataset ORDER BY source_record",
        "--format",
        "csv",
    ]);
    assert!(q.status.success(), "{}", String::from_utf8_lossy(&q.stderr));
    let text = String::from_utf8_lossy(&q.stdout);
    let got: BTreeSet<i64> = text
        .lines()
        .skip(1)
        .map(|l| l.parse().expect("int"))
        .collect();
    assert!(!got.is_empty() && got.is_subset(&expected()), "{got:?}");

    // The predicate is part of the dataset identity: another one is refused on this directory.
    let o = hindsight(&["run", p, "--where", "language = 'French'", "--no-progress"]);
    assert!(!o.status.success());
    // The same predicate through --set is the same config: a no-op rerun.
    let set = format!("input.where={PREDICATE:?}");
    let o = hindsight(&["run", p, "--set", &set, "--no-progress"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // A bad predicate: exit 2 before the output directory exists.
    let fresh = dir.join("fresh");
    let o = hindsight(&[
        "run",
        p,
        "--output",
        fresh.to_str().expect("utf8"),
        "--where",
        "languge = 'English'",
        "--no-progress",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("languge"), "{err}");
    assert!(!fresh.exists());
}
