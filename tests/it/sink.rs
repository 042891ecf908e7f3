//! The dataset sink end to end with the real model and real files: hint episodes from
//! `sample-data/` are scored, written as shards + manifest, read back, re-written for byte
//! identity, and deliberately broken in each way `validate` must catch.

use crate::common;
use crate::common::temp_dir;

use std::path::Path;
use std::sync::OnceLock;

use arrow_array::{
    Array, FixedSizeListArray, Float32Array, Int32Array, LargeListArray, RecordBatch,
};
use hindsight::pipeline::steps::score::output_row;
use hindsight::score::contexts::{followup_probe, prepare_episode};
use hindsight::score::{RelevanceMethod, Scorer, ScorerConfig};
use hindsight::sink::schema::{column_nullable, column_type, type_name};
use hindsight::sink::CONTRACT;
use hindsight::sink::{
    batch_to_rows, contract_schema, dataset_stats, rows_to_batch, validate, DatasetMeta, Encoding,
    Layout, Manifest, OutputRow, ShardConfig, ShardWriter, ValidationReport,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// Scored rows of `sample-data/hints.jsonl` (3 episodes after dedup) and the run's metadata.
fn scored() -> &'static (Vec<OutputRow>, DatasetMeta) {
    static ROWS: OnceLock<(Vec<OutputRow>, DatasetMeta)> = OnceLock::new();
    ROWS.get_or_init(|| {
        let m = common::model();
        let run = common::run(&[&common::sample("hints.jsonl")], None);
        assert_eq!(run.episodes.len(), 3);
        let prepared: Vec<_> = run
            .episodes
            .iter()
            .map(|ep| {
                let t = hindsight::template::builtin(&ep.teacher_template).expect("template");
                let mut p = prepare_episode(&m.tokenizer, ep, Some(&t)).expect("prepare");
                let response = ep.completion.as_deref().expect("logged response");
                p.request.followup = followup_probe(&m.tokenizer, ep, response, true);
                assert!(p.request.followup.is_some());
                p
            })
            .collect();
        let requests: Vec<_> = prepared.iter().map(|p| p.request.clone()).collect();
        let cfg = ScorerConfig {
            followup: true,
            ..ScorerConfig::default()
        };
        let (scores, _) = Scorer::new(&m.transformer, cfg.clone())
            .score(&requests)
            .expect("score");
        let rows = run
            .episodes
            .iter()
            .zip(&prepared)
            .zip(&scores)
            .map(|((ep, p), s)| output_row(ep, p, s, RelevanceMethod::Pmi))
            .collect();
        let config = serde_json::json!({"scorer": cfg, "inputs": ["sample-data/hints.jsonl"]});
        let meta = DatasetMeta::new(&m.info, cfg.top_k, RelevanceMethod::Pmi, None, &config);
        (rows, meta)
    })
}

/// Two rows per shard, one row per row group: 3 rows give 2 shards with several row groups.
fn small_shards() -> ShardConfig {
    ShardConfig {
        max_rows: 2,
        row_group_rows: 1,
        ..ShardConfig::default()
    }
}

fn run_stats() -> serde_json::Value {
    serde_json::json!({"records_in": 4, "episodes_built": 4, "filtered": {"duplicate": 1}, "rows_written": 3})
}

fn write_dataset(dir: &Path, rows: &[OutputRow], meta: &DatasetMeta) -> Manifest {
    let mut w = ShardWriter::new(dir, "c0", meta.clone(), small_shards()).expect("writer");
    w.write_rows(rows.iter().cloned()).expect("write");
    let shards = w.finish().expect("finish");
    let m = Manifest::new(meta.clone(), shards, run_stats());
    m.write(dir).expect("manifest");
    m
}

fn read_batches(path: &Path) -> Vec<RecordBatch> {
    let f = std::fs::File::open(path).expect("open shard");
    ParquetRecordBatchReaderBuilder::try_new(f)
        .expect("parquet")
        .build()
        .expect("reader")
        .collect::<Result<_, _>>()
        .expect("batches")
}

fn assert_only(rep: &ValidationReport, column: Option<&str>, needle: &str) {
    let hits = rep.find(column, needle);
    assert!(
        !hits.is_empty(),
        "no violation {column:?} '{needle}' in:\n{rep}"
    );
}

#[test]
fn schema_json_agrees_with_arrow_schema() {
    let p = format!(
        "{}/schemas/dataset_v2.schema.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p).expect("schema file")).expect("json");
    assert_eq!(doc["schema_version"], 2);
    let cols = doc["columns"].as_array().expect("columns");
    let lossless = Layout {
        student_top_k: 20,
        ..Layout::lossless(20)
    };
    let compact = Layout {
        encoding: Encoding::Compact,
        ..lossless
    };
    let schema = contract_schema(&lossless);
    assert_eq!(cols.len(), schema.fields().len());
    assert_eq!(CONTRACT.len(), schema.fields().len());
    for (c, f) in cols.iter().zip(schema.fields()) {
        assert_eq!(c["name"], f.name().as_str());
        assert_eq!(
            c["arrow_type"],
            type_name(f.data_type()).as_str(),
            "{}",
            f.name()
        );
        assert_eq!(c["nullable"], f.is_nullable(), "{}", f.name());
        assert_eq!(
            Some(f.data_type().clone()),
            column_type(f.name(), &lossless)
        );
        assert_eq!(column_nullable(f.name()), f.is_nullable());
        // The compact encoding's type: one-byte codes where the JSON says codes, else the same.
        let want = match c["compact"].as_str().expect("compact") {
            "sorted_codes" | "codes" => "large_list<fixed_size_list<uint8, K>>".to_string(),
            "same" | "ids" | "null" => type_name(f.data_type()),
            other => panic!("unknown compact rule {other}"),
        };
        let got = column_type(f.name(), &compact).expect("column");
        assert_eq!(type_name(&got), want, "{}", f.name());
        let column = hindsight::sink::columns::column(f.name()).expect("column");
        assert_eq!(
            compact.omitted(column),
            c["compact"] == "null",
            "{}",
            f.name()
        );
    }
    // The label columns' allowed values are the ones the JSON schema lists ("a | b | c").
    let mut labels = 0;
    for (c, json) in CONTRACT.iter().zip(cols) {
        if let Some(allowed) = c.allowed {
            labels += 1;
            let listed: Vec<&str> = json["description"]
                .as_str()
                .expect("description")
                .split(" | ")
                .collect();
            assert_eq!(listed, allowed, "{}", c.name);
        }
    }
    assert_eq!(
        labels, 4,
        "source_kind, source_format, method, finish_reason"
    );
    let (_, meta) = (
        (),
        DatasetMeta::new(
            &common::model().info,
            20,
            RelevanceMethod::Kl,
            None,
            &serde_json::json!({}),
        ),
    );
    let keys: Vec<String> = meta.key_values().into_iter().map(|(k, _)| k).collect();
    let doc_keys: Vec<String> = doc["metadata_keys"]
        .as_object()
        .expect("metadata_keys")
        .keys()
        .cloned()
        .collect();
    let (mut a, mut b) = (keys, doc_keys);
    a.sort();
    b.sort();
    assert_eq!(a, b);
    // K is really in the type: another K gives another schema.
    assert_ne!(
        contract_schema(&Layout::lossless(20)),
        contract_schema(&Layout::lossless(5))
    );
}

#[test]
fn valid_dataset_validates_and_reads_back() {
    let (rows, meta) = scored();
    let dir = temp_dir("valid");
    let m = write_dataset(&dir, rows, meta);
    assert_eq!(m.shards.len(), 2);
    assert_eq!(m.shards[0].file, "part-c0-00000.parquet");
    assert_eq!(m.totals.rows, 3);
    let tokens: u64 = rows.iter().map(|r| r.completion_ids.len() as u64).sum();
    assert_eq!(m.totals.response_tokens, tokens);
    let rep = validate(&dir).expect("validate");
    assert!(rep.is_ok(), "{rep}");
    assert_eq!(
        (rep.shards_checked, rep.rows_checked, rep.response_tokens),
        (2, 3, tokens)
    );

    // Read back with the plain parquet Arrow reader.
    let mut back = Vec::new();
    for s in &m.shards {
        let path = dir.join(&s.file);
        let f = std::fs::File::open(&path).expect("open");
        let b = ParquetRecordBatchReaderBuilder::try_new(f).expect("parquet");
        let kv = b
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .expect("kv")
            .clone();
        let get = |k: &str| kv.iter().find(|x| x.key == k).and_then(|x| x.value.clone());
        assert_eq!(get("schema_version").as_deref(), Some("2"));
        assert_eq!(get("student_top_k").as_deref(), Some("0"));
        assert_eq!(get("encoding").as_deref(), Some("lossless"));
        assert_eq!(get("top_k").as_deref(), Some("20"));
        assert_eq!(get("teacher_temperature").as_deref(), Some("1.0"));
        assert_eq!(get("weights_sha256"), Some(meta.weights_sha256.clone()));
        assert_eq!(get("relevance_method").as_deref(), Some("pmi"));
        assert_eq!(
            b.metadata().num_row_groups(),
            s.rows as usize,
            "one row per group"
        );
        assert_eq!(
            b.metadata().file_metadata().created_by(),
            Some(hindsight::sink::shard::created_by().as_str())
        );
        let batches = read_batches(&path);
        for batch in &batches {
            assert_eq!(
                batch.schema().fields(),
                contract_schema(&Layout::lossless(20)).fields()
            );
            back.extend(batch_to_rows(batch).expect("rows"));
        }
        // Independently of batch_to_rows: raw Arrow values of the first row of the shard.
        let first = &batches[0];
        let row = &rows[back.len() - s.rows as usize];
        let ids = first
            .column_by_name("completion_ids")
            .and_then(|c| c.as_any().downcast_ref::<LargeListArray>())
            .expect("completion_ids");
        let v = ids.value(0);
        let v = v.as_any().downcast_ref::<Int32Array>().expect("int32");
        assert_eq!(v.values().to_vec(), row.completion_ids);
        let topk = first
            .column_by_name("teacher_topk_logprobs")
            .and_then(|c| c.as_any().downcast_ref::<LargeListArray>())
            .expect("topk");
        let tk = topk.value(0);
        let fsl = tk
            .as_any()
            .downcast_ref::<FixedSizeListArray>()
            .expect("fsl");
        assert_eq!(fsl.value_length(), 20);
        assert_eq!(fsl.len(), row.completion_ids.len());
        let vals = fsl
            .values()
            .as_any()
            .downcast_ref::<Float32Array>()
            .expect("f32");
        assert_eq!(vals.values().to_vec(), row.teacher_topk_logprobs);
    }
    assert_eq!(&back, rows);
    let r0 = &back[0];
    assert_eq!(
        (
            r0.source_kind.as_str(),
            r0.source_format.as_str(),
            r0.method.as_str()
        ),
        ("hint", "hint", "opd")
    );
    assert_eq!(r0.finish_reason, "stop");
    assert!(r0.loss_mask.iter().all(|&x| x == 1));
    assert_eq!(r0.completion, "Sydney is the capital of Australia.");
    assert_eq!(r0.sample_id.len(), 32);

    // Manifest round trip.
    let read = Manifest::read(&dir).expect("read manifest");
    assert_eq!(read, m);

    let stats = dataset_stats(&dir).expect("stats");
    assert_eq!(
        (stats.rows, stats.shards, stats.response_tokens),
        (3, 2, tokens)
    );
    assert_eq!(stats.by_source_kind.get("hint"), Some(&3));
    assert_eq!(stats.run["rows_written"], 3);
    println!("{stats}");
}

#[test]
fn writing_twice_is_byte_identical() {
    let (rows, meta) = scored();
    let (a, b) = (temp_dir("det-a"), temp_dir("det-b"));
    let ma = write_dataset(&a, rows, meta);
    let mb = write_dataset(&b, rows, meta);
    assert_eq!(ma, mb);
    for s in &ma.shards {
        let x = std::fs::read(a.join(&s.file)).expect("a");
        let y = std::fs::read(b.join(&s.file)).expect("b");
        assert!(x == y, "{} differs", s.file);
    }
    let x = std::fs::read(a.join("manifest.json")).expect("a");
    let y = std::fs::read(b.join("manifest.json")).expect("b");
    assert_eq!(x, y);
    // No temporary files are left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&a)
        .expect("ls")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn corrupted_shard_is_caught() {
    let (rows, meta) = scored();
    let dir = temp_dir("corrupt");
    let m = write_dataset(&dir, rows, meta);
    let path = dir.join(&m.shards[0].file);
    let mut bytes = std::fs::read(&path).expect("read");
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 16] {
        *b ^= 0xff;
    }
    std::fs::write(&path, bytes).expect("write");
    let rep = validate(&dir).expect("validate");
    assert!(!rep.is_ok());
    assert_only(&rep, None, "sha256 mismatch");
    assert_eq!(
        rep.find(None, "sha256 mismatch")[0].file.as_deref(),
        Some(m.shards[0].file.as_str())
    );
}

#[test]
fn wrong_manifest_checksum_is_caught() {
    let (rows, meta) = scored();
    let dir = temp_dir("badsha");
    let mut m = write_dataset(&dir, rows, meta);
    m.shards[1].sha256 = "0".repeat(64);
    m.write(&dir).expect("manifest");
    let rep = validate(&dir).expect("validate");
    assert_eq!(rep.violations.len(), 1, "{rep}");
    assert_only(&rep, None, "sha256 mismatch");
    assert_eq!(
        rep.violations[0].file.as_deref(),
        Some("part-c0-00001.parquet")
    );
}

#[test]
fn misaligned_list_is_caught() {
    let (rows, meta) = scored();
    let dir = temp_dir("misaligned");
    let mut bad = rows[1].clone();
    bad.student_logprobs.pop();
    // The normal write path refuses such a row ...
    let mut w = ShardWriter::new(&dir, "x", meta.clone(), ShardConfig::default()).expect("writer");
    let err = w
        .write_row(bad.clone())
        .expect_err("misaligned row must be refused");
    assert!(err.to_string().contains("student_logprobs"), "{err}");
    drop(w);
    let _ = std::fs::remove_dir_all(&dir);
    // ... so write it raw.
    let mut w = ShardWriter::new(&dir, "c0", meta.clone(), ShardConfig::default()).expect("writer");
    let batch =
        rows_to_batch(&[rows[0].clone(), bad, rows[2].clone()], &meta.layout()).expect("batch");
    w.write_raw_batch(&batch).expect("raw");
    let shards = w.finish().expect("finish");
    Manifest::new(meta.clone(), shards, run_stats())
        .write(&dir)
        .expect("manifest");
    let rep = validate(&dir).expect("validate");
    assert_eq!(rep.violations.len(), 1, "{rep}");
    let v = &rep.violations[0];
    assert_eq!(
        (v.row, v.column.as_deref()),
        (Some(1), Some("student_logprobs"))
    );
    assert!(
        v.message.contains("length") && v.message.contains("!= T"),
        "{v}"
    );
}

#[test]
fn missing_and_unlisted_shards_and_leftover_tmp_are_caught() {
    let (rows, meta) = scored();
    let dir = temp_dir("missing");
    let m = write_dataset(&dir, rows, meta);
    let first = dir.join(&m.shards[0].file);
    std::fs::copy(&first, dir.join("part-extra-00000.parquet")).expect("copy");
    std::fs::write(dir.join("part-c0-00002.parquet.tmp"), b"partial").expect("tmp");
    std::fs::remove_file(&first).expect("rm");
    let rep = validate(&dir).expect("validate");
    assert_only(&rep, None, "missing shard");
    assert_eq!(
        rep.find(None, "missing shard")[0].file.as_deref(),
        Some("part-c0-00000.parquet")
    );
    assert_only(&rep, None, "unlisted shard");
    assert_eq!(
        rep.find(None, "unlisted shard")[0].file.as_deref(),
        Some("part-extra-00000.parquet")
    );
    assert_only(&rep, None, "leftover temporary file");
    assert_eq!(rep.violations.len(), 3, "{rep}");
}

#[test]
fn wrong_advantages_and_other_row_invariants_are_caught() {
    let (rows, meta) = scored();
    let dir = temp_dir("adv");
    let mut rs = rows.clone();
    rs[0].advantages[2] += 0.5;
    rs[2].teacher_topk_logprobs.swap(0, 1); // breaks the descending order
    rs[2].teacher_topk_ids.swap(0, 1);
    rs[1].sample_id = rs[0].sample_id.clone();
    rs[1].teacher_topk_ids[3] = meta.vocab_size as i32;
    write_dataset(&dir, &rs, meta);
    let rep = validate(&dir).expect("validate");
    let adv = rep.find(Some("advantages"), "teacher - student");
    assert_eq!(adv.len(), 1, "{rep}");
    assert_eq!(adv[0].row, Some(0));
    assert!(adv[0].message.starts_with("advantages[2]"), "{}", adv[0]);
    assert_only(&rep, Some("teacher_topk_logprobs"), "not sorted descending");
    assert_only(&rep, Some("sample_id"), "duplicate sample_id");
    assert_only(&rep, Some("teacher_topk_ids"), "outside the vocabulary");
    assert_eq!(rep.violations.len(), 4, "{rep}");
}

#[test]
fn relevance_column_invariants_are_caught() {
    let (rows, meta) = scored();
    // Every row of the fixture has all five methods, `relevance` = `relevance_pmi`.
    for r in rows {
        assert_eq!(r.relevance, r.relevance_pmi, "{}", r.sample_id);
        assert!(r.relevance_pmi.is_some() && r.relevance_pmi_mean.is_some());
        assert!(r.relevance_pmi_answer.is_some() && r.relevance_control_kl.is_some());
    }
    let dir = temp_dir("relevance");
    let mut rs = rows.clone();
    // Row 0: `relevance` is another method's value.
    rs[0].relevance = rs[0].relevance_control_kl;
    // Row 1: PMI sum and mean disagree in sign, and pmi_answer without pmi on row 2.
    rs[1].relevance_pmi_mean = rs[1]
        .relevance_pmi
        .map(|x| if x > 0.0 { -1.0 } else { 1.0 });
    rs[2].relevance_pmi = None;
    rs[2].relevance_pmi_mean = None;
    rs[2].relevance = None;
    write_dataset(&dir, &rs, meta);
    let rep = validate(&dir).expect("validate");
    let wrong = rep.find(Some("relevance"), "relevance_method is 'pmi'");
    assert_eq!(wrong.len(), 1, "{rep}");
    assert_eq!(wrong[0].row, Some(0));
    assert_only(&rep, Some("relevance_pmi_mean"), "another sign");
    assert_only(&rep, Some("relevance_pmi_answer"), "relevance_pmi is null");
    assert_eq!(rep.violations.len(), 3, "{rep}");

    // A threshold above a kept row's relevance: that row should have been dropped.
    let dir = temp_dir("relevance-threshold");
    let mut m = meta.clone();
    let lowest = rows
        .iter()
        .filter_map(|r| r.relevance)
        .fold(f32::INFINITY, f32::min);
    m.relevance_threshold = Some(f64::from(lowest) + 1e-3);
    write_dataset(&dir, rows, &m);
    let rep = validate(&dir).expect("validate");
    assert_only(&rep, Some("relevance"), "should have been dropped");
    assert_eq!(rep.violations.len(), 1, "{rep}");
}

#[test]
fn metadata_mismatch_is_caught() {
    let (rows, meta) = scored();
    let dir = temp_dir("meta");
    let mut m = write_dataset(&dir, rows, meta);
    m.dataset.tokenizer_sha256 = "f".repeat(64);
    m.write(&dir).expect("manifest");
    let rep = validate(&dir).expect("validate");
    assert_only(&rep, None, "metadata 'tokenizer_sha256'");
    // K in the manifest drives the schema check.
    m.dataset.tokenizer_sha256 = meta.tokenizer_sha256.clone();
    m.dataset.top_k = 5;
    m.write(&dir).expect("manifest");
    let rep = validate(&dir).expect("validate");
    assert_only(&rep, Some("teacher_topk_ids"), "differs from the contract");
}

#[test]
fn cli_exit_codes() {
    let (rows, meta) = scored();
    let dir = temp_dir("cli");
    let m = write_dataset(&dir, rows, meta);
    let bin = env!("CARGO_BIN_EXE_hindsight");
    let run = |args: &[&str]| {
        std::process::Command::new(bin)
            .args(args)
            .output()
            .expect("run hindsight")
    };
    let d = dir.to_str().expect("utf8 path");
    let ok = run(&["validate", d]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let stats = run(&["stats", d, "--json"]);
    assert_eq!(stats.status.code(), Some(0));
    let js: serde_json::Value = serde_json::from_slice(&stats.stdout).expect("stats json");
    assert_eq!(js["rows"], 3);
    std::fs::remove_file(dir.join(&m.shards[1].file)).expect("rm");
    let bad = run(&["validate", d]);
    assert_eq!(bad.status.code(), Some(1));
    let out = String::from_utf8_lossy(&bad.stdout);
    assert!(
        out.contains("part-c0-00001.parquet: missing shard"),
        "{out}"
    );
    let none = run(&["validate", "/nonexistent/hindsight-dataset"]);
    assert_eq!(none.status.code(), Some(2));
}

#[test]
fn shards_roll_by_bytes_and_names_are_deterministic() {
    let (rows, meta) = scored();
    let dir = temp_dir("roll");
    let cfg = ShardConfig {
        max_bytes: 1,
        row_group_rows: 64,
        ..ShardConfig::default()
    };
    let mut w = ShardWriter::new(&dir, "chunk-7", meta.clone(), cfg).expect("writer");
    w.write_rows(rows.iter().cloned()).expect("write");
    let shards = w.finish().expect("finish");
    // The byte limit is checked after each row group, so 3 rows need more than one shard only
    // when a row group is smaller than the shard; with 64-row groups it is one shard ...
    assert_eq!(shards.len(), 1);
    // ... and with one-row groups every row closes a shard.
    let dir = temp_dir("roll1");
    let cfg = ShardConfig {
        max_bytes: 1,
        row_group_rows: 1,
        ..ShardConfig::default()
    };
    let mut w = ShardWriter::new(&dir, "chunk-7", meta.clone(), cfg).expect("writer");
    w.write_rows(rows.iter().cloned()).expect("write");
    let shards = w.finish().expect("finish");
    let names: Vec<&str> = shards.iter().map(|s| s.file.as_str()).collect();
    assert_eq!(
        names,
        [
            "part-chunk-7-00000.parquet",
            "part-chunk-7-00001.parquet",
            "part-chunk-7-00002.parquet"
        ]
    );
    assert!(shards.iter().all(|s| s.rows == 1));
    Manifest::new(meta.clone(), shards, run_stats())
        .write(&dir)
        .expect("manifest");
    let rep = validate(&dir).expect("validate");
    assert!(rep.is_ok(), "{rep}");
    // Chunk ids cannot escape the directory.
    assert!(ShardWriter::new(&dir, "../x", meta.clone(), ShardConfig::default()).is_err());
}

/// Runs the binary and fails on a panic (exit 101 or a panic message): crafted datasets get
/// errors or violations, never a crash.
fn no_panic(args: &[&str]) -> std::process::Output {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hindsight"))
        .args(args)
        .output()
        .expect("run hindsight");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() != Some(101) && !stderr.contains("panicked"),
        "`hindsight {}` panicked:\n{stderr}",
        args.join(" ")
    );
    out
}

/// Crafted datasets (issue 14): names that leave the directory, absurd K, overflowing counts,
/// zero-length rows, a garbage shard. `validate`, `stats`, `report`, `query` and `inspect` end
/// with an error or a violation, never a panic, and never open or write outside the dataset.
#[test]
fn crafted_datasets_never_panic_or_escape() {
    let (rows, meta) = scored();
    let root = temp_dir("crafted");
    let sample_id = rows[0].sample_id.clone();
    // A file outside every dataset that a `../` name would reach.
    let outside = root.join("outside.parquet");
    std::fs::write(&outside, b"not yours").expect("write");
    let commands = |d: &str, html: &str| -> Vec<Vec<String>> {
        [
            vec!["validate", d],
            vec!["stats", d, "--json"],
            vec!["report", d, "--out", html],
            vec![
                "query",
                d,
                "SELECT count(*) AS n, sum(num_completion_tokens) FROM dataset",
            ],
            vec!["inspect", d, "--sample-id", &sample_id],
        ]
        .into_iter()
        .map(|v| v.into_iter().map(String::from).collect())
        .collect()
    };
    type Craft = Box<dyn Fn(&Path, &mut serde_json::Value)>;
    let crafts: Vec<(&str, Craft)> = vec![
        (
            "escaping-name",
            Box::new(|_, m| m["shards"][0]["file"] = "../outside.parquet".into()),
        ),
        (
            "absolute-name",
            Box::new(|_, m| m["shards"][0]["file"] = "/etc/hostname".into()),
        ),
        (
            "absurd-k",
            Box::new(|_, m| m["dataset"]["top_k"] = serde_json::json!(u64::MAX >> 1)),
        ),
        (
            "zero-k",
            Box::new(|_, m| m["dataset"]["top_k"] = serde_json::json!(0)),
        ),
        (
            "overflowing-counts",
            Box::new(|_, m| {
                m["totals"]["rows"] = serde_json::json!(u64::MAX);
                m["totals"]["response_tokens"] = serde_json::json!(u64::MAX);
                m["shards"][0]["rows"] = serde_json::json!(u64::MAX);
                m["shards"][1]["rows"] = serde_json::json!(u64::MAX);
                m["stats"]["rows_written"] = serde_json::json!(u64::MAX);
            }),
        ),
        (
            "garbage-shard",
            Box::new(|dir, m| {
                let name = m["shards"][0]["file"].as_str().expect("name").to_string();
                std::fs::write(dir.join(name), b"PAR1 garbage PAR1").expect("write");
            }),
        ),
        (
            "truncated-shard",
            Box::new(|dir, m| {
                let name = m["shards"][1]["file"].as_str().expect("name").to_string();
                let p = dir.join(name);
                let bytes = std::fs::read(&p).expect("read");
                std::fs::write(&p, &bytes[..bytes.len() / 2]).expect("write");
            }),
        ),
    ];
    for (name, craft) in &crafts {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).expect("mkdir");
        write_dataset(&dir, rows, meta);
        let path = dir.join("manifest.json");
        let mut m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        craft(&dir, &mut m);
        std::fs::write(&path, serde_json::to_vec_pretty(&m).expect("json")).expect("write");
        let d = dir.to_str().expect("utf8");
        let html = root.join(format!("{name}.html"));
        for args in commands(d, html.to_str().expect("utf8")) {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = no_panic(&args);
            if name.ends_with("-name") {
                assert!(!out.status.success(), "{name}: {args:?} succeeded");
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                assert!(
                    text.contains("not a plain file name"),
                    "{name} {args:?}: {text}"
                );
            }
        }
        assert_eq!(std::fs::read(&outside).expect("outside"), b"not yours");
    }

    // Rows with zero-length token lists (T = 0) are written, read and summarised without a
    // panic; validate reports what the contract forbids.
    let dir = root.join("zero-length");
    let mut empty = rows[0].clone();
    empty.sample_id = "empty-row".into();
    for v in [
        &mut empty.completion_ids,
        &mut empty.prompt_ids,
        &mut empty.teacher_prompt_ids,
    ] {
        v.clear();
    }
    empty.loss_mask.clear();
    empty.teacher_logprobs.clear();
    empty.student_logprobs.clear();
    empty.advantages.clear();
    empty.teacher_topk_ids.clear();
    empty.teacher_topk_logprobs.clear();
    empty.student_topk_logprobs = Some(Vec::new());
    empty.teacher_logz.clear();
    empty.student_logz.clear();
    empty.teacher_tail_logmass.clear();
    empty.num_completion_tokens = 0;
    std::fs::create_dir_all(&dir).expect("mkdir");
    write_dataset(&dir, &[empty], meta);
    let d = dir.to_str().expect("utf8");
    let html = root.join("zero-length.html");
    for args in commands(d, html.to_str().expect("utf8")) {
        let args: Vec<String> = args
            .into_iter()
            .map(|a| {
                if a == sample_id {
                    "empty-row".into()
                } else {
                    a
                }
            })
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        no_panic(&args);
    }
}
