//! `hindsight export --to axolotl-kd` with the real binary, model and Parquet reader: every
//! written row is the source row in Axolotl's layout (row j of the targets describes
//! input_ids[j+1]), counts reconcile with the source, a rerun reuses every shard byte for byte,
//! a grown or compacted source re-exports only what changed, and other options are refused.

use std::collections::BTreeMap;
use std::path::Path;

use arrow_array::{Array, Float32Array, Int32Array, Int8Array, ListArray};
use hindsight::sink::OutputRow;

use crate::common::{hindsight, manifest_rows, ok, sample_pipeline, temp_dir};

/// One exported row, read back with the Parquet reader.
struct Exported {
    input_ids: Vec<i32>,
    attention_mask: Vec<i8>,
    labels: Vec<i32>,
    ids: Vec<Vec<i32>>,
    lps: Vec<Vec<f32>>,
    mask: Vec<Vec<i8>>,
}

fn ints(a: &dyn Array) -> Vec<i32> {
    a.as_any()
        .downcast_ref::<Int32Array>()
        .expect("int32")
        .values()
        .to_vec()
}
fn bytes(a: &dyn Array) -> Vec<i8> {
    a.as_any()
        .downcast_ref::<Int8Array>()
        .expect("int8")
        .values()
        .to_vec()
}
fn floats(a: &dyn Array) -> Vec<f32> {
    a.as_any()
        .downcast_ref::<Float32Array>()
        .expect("f32")
        .values()
        .to_vec()
}
fn nested<T>(a: &dyn Array, f: fn(&dyn Array) -> Vec<T>) -> Vec<Vec<T>> {
    let l = a.as_any().downcast_ref::<ListArray>().expect("list");
    (0..l.len()).map(|i| f(l.value(i).as_ref())).collect()
}

fn read_export(dir: &Path) -> (serde_json::Value, Vec<Exported>) {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).expect("manifest"))
            .expect("json");
    let mut rows = Vec::new();
    for s in m["shards"].as_array().expect("shards") {
        let f = std::fs::File::open(dir.join(s["file"].as_str().expect("file"))).expect("open");
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
            .expect("parquet")
            .build()
            .expect("reader");
        for b in reader {
            let b = b.expect("batch");
            let col = |n: &str| {
                b.column_by_name(n)
                    .expect(n)
                    .as_any()
                    .downcast_ref::<ListArray>()
                    .expect("list")
                    .clone()
            };
            for i in 0..b.num_rows() {
                rows.push(Exported {
                    input_ids: ints(col("input_ids").value(i).as_ref()),
                    attention_mask: bytes(col("attention_mask").value(i).as_ref()),
                    labels: ints(col("labels").value(i).as_ref()),
                    ids: nested(col("target_token_ids").value(i).as_ref(), ints),
                    lps: nested(col("target_logprobs").value(i).as_ref(), floats),
                    mask: nested(col("target_mask").value(i).as_ref(), bytes),
                });
            }
        }
    }
    (m, rows)
}

/// Checks one exported row against its source row: sequence, labels, and the targets at
/// row P-1+t equal to the source's top-k of response token t (renormalised when asked).
fn check_row(src: &OutputRow, e: &Exported, student: bool, normalized: bool, max_len: usize) {
    let p = src.prompt_ids.len();
    let t = e.input_ids.len() - p;
    assert!(t >= 1 && e.input_ids.len() <= max_len);
    assert_eq!(&e.input_ids[..p], &src.prompt_ids[..]);
    assert_eq!(&e.input_ids[p..], &src.completion_ids[..t]);
    assert!(e.attention_mask.iter().all(|&a| a == 1));
    let (ids, lps, k) = if student {
        let ids = src.student_topk_ids.as_ref().expect("student ids");
        let lps = src
            .teacher_logprobs_at_student_topk
            .as_ref()
            .expect("teacher at student");
        (ids, lps, src.ks)
    } else {
        (&src.teacher_topk_ids, &src.teacher_topk_logprobs, src.k)
    };
    assert_eq!(e.ids.len(), e.input_ids.len());
    for j in 0..e.input_ids.len() {
        assert_eq!(e.ids[j].len(), k);
        let token = j + 1;
        let learn = token >= p && token < p + t && src.loss_mask[token - p] == 1;
        assert_eq!(
            e.labels[j],
            if j >= p && src.loss_mask[j - p] == 1 {
                src.completion_ids[j - p]
            } else {
                -100
            }
        );
        if !learn {
            assert!(e.mask[j].iter().all(|&m| m == 0), "row {j} must be padding");
            continue;
        }
        assert!(e.mask[j].iter().all(|&m| m == 1));
        let i = token - p;
        assert_eq!(
            &e.ids[j][..],
            &ids[i * k..(i + 1) * k],
            "row {j} = response token {i}"
        );
        let stored = &lps[i * k..(i + 1) * k];
        let shift = if normalized {
            let mass: f64 = e.lps[j].iter().map(|&v| (v as f64).exp()).sum();
            assert!((mass - 1.0).abs() < 1e-4, "renormalised mass {mass}");
            e.lps[j][0] - stored[0]
        } else {
            0.0
        };
        for (a, b) in e.lps[j].iter().zip(stored) {
            assert!((a - b - shift).abs() < 1e-5, "{a} vs {b} + {shift}");
        }
    }
}

#[test]
fn axolotl_export_aligns_counts_resumes_and_follows_the_source() {
    let dir = temp_dir("export");
    let p = sample_pipeline(
        &dir,
        &["hints.jsonl", "unit_tests.jsonl"],
        2,
        "[score]\nstudent_top_k = 4\ntop_k = 6\n[contract]\nencoding = \"compact\"\n",
    );
    let src = dir.join("ds");
    let ss = src.to_str().expect("utf8");
    ok(&hindsight(&[
        "run",
        p.to_str().expect("utf8"),
        "--output",
        ss,
        "--no-progress",
    ]));
    let source_rows = manifest_rows(&src);
    assert!(source_rows.len() >= 4);
    let by_id: BTreeMap<&str, &OutputRow> = source_rows
        .iter()
        .map(|r| (r.sample_id.as_str(), r))
        .collect();
    let longest = source_rows
        .iter()
        .map(|r| r.prompt_ids.len() + r.completion_ids.len())
        .max()
        .expect("rows");

    // Teacher support, renormalised, no limit: every row written.
    let out = dir.join("teacher");
    let os = out.to_str().expect("utf8");
    let export = |extra: &[&str], o: &str| {
        let mut args = vec!["export", ss, "--to", "axolotl-kd", "--out", o];
        args.extend_from_slice(extra);
        hindsight(&args)
    };
    ok(&export(&[], os));
    let (m, rows) = read_export(&out);
    assert_eq!(rows.len(), source_rows.len());
    assert_eq!(m["totals"]["rows_in"], source_rows.len());
    for (src_row, e) in source_rows.iter().zip(&rows) {
        check_row(src_row, e, false, true, usize::MAX);
    }
    let trainable: usize = rows
        .iter()
        .map(|r| r.labels.iter().filter(|&&l| l != -100).count())
        .sum();
    assert_eq!(m["totals"]["trainable_tokens"], trainable);

    // A rerun reuses every shard, byte for byte.
    let before: Vec<Vec<u8>> = m["shards"]
        .as_array()
        .expect("shards")
        .iter()
        .map(|s| std::fs::read(out.join(s["file"].as_str().expect("f"))).expect("read"))
        .collect();
    let again = String::from_utf8_lossy(&export(&[], os).stderr).into_owned();
    assert!(again.contains("0 written"), "{again}");
    let (m2, _) = read_export(&out);
    assert_eq!(m, m2);
    for (s, b) in m["shards"].as_array().expect("shards").iter().zip(&before) {
        assert_eq!(
            &std::fs::read(out.join(s["file"].as_str().expect("f"))).expect("read"),
            b
        );
    }

    // A kill after a shard's rename but before its record (and before the manifest), with a
    // temp file left behind: the rerun redoes that shard and ends with the same bytes.
    let first = m["shards"][0]["source_file"]
        .as_str()
        .expect("source")
        .to_string();
    std::fs::remove_file(out.join("_export").join(format!("{first}.json"))).expect("record");
    std::fs::remove_file(out.join("manifest.json")).expect("manifest");
    std::fs::write(out.join(format!("{first}.123-abc.tmp")), b"partial").expect("tmp");
    let resumed = String::from_utf8_lossy(&export(&[], os).stderr).into_owned();
    assert!(resumed.contains("1 written"), "{resumed}");
    assert_eq!(read_export(&out).0, m);
    assert!(!out.join(format!("{first}.123-abc.tmp")).exists());
    // The same kill on a first export (no record at all yet) resumes too.
    let fresh = dir.join("fresh");
    let fs = fresh.to_str().expect("utf8");
    ok(&export(&[], fs));
    std::fs::remove_dir_all(fresh.join("_export")).expect("records");
    std::fs::remove_file(fresh.join("manifest.json")).expect("manifest");
    std::fs::remove_file(fresh.join("README.md")).expect("card");
    std::fs::remove_file(fresh.join("skipped.jsonl")).expect("skipped");
    ok(&export(&[], fs));
    assert_eq!(read_export(&fresh).0["shards"], m["shards"]);
    // A directory holding anything else is refused.
    let other = dir.join("other");
    std::fs::create_dir_all(&other).expect("other");
    std::fs::write(other.join("notes.txt"), b"mine").expect("notes");
    let refused = export(&[], other.to_str().expect("utf8"));
    assert_eq!(refused.status.code(), Some(3));

    // Other options into the same directory are refused.
    let refused = export(&["--support", "student"], os);
    assert_eq!(refused.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("other options"));

    // Student support, raw log-probs, a length limit: long rows refused and listed.
    let limit = longest - 1;
    let ls = limit.to_string();
    let out2 = dir.join("student");
    let o2 = out2.to_str().expect("utf8");
    ok(&export(
        &["--support", "student", "--raw-logprobs", "--max-len", &ls],
        o2,
    ));
    let (m, rows) = read_export(&out2);
    let skipped: Vec<serde_json::Value> = std::fs::read_to_string(out2.join("skipped.jsonl"))
        .expect("skipped")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert!(!skipped.is_empty());
    assert!(skipped.iter().all(|s| s["reason"] == "too_long"));
    assert_eq!(m["totals"]["skipped"]["too_long"], skipped.len());
    assert_eq!(rows.len() + skipped.len(), source_rows.len());
    let skipped_ids: Vec<&str> = skipped
        .iter()
        .map(|s| s["sample_id"].as_str().expect("id"))
        .collect();
    let kept: Vec<&OutputRow> = source_rows
        .iter()
        .filter(|r| !skipped_ids.contains(&r.sample_id.as_str()))
        .collect();
    for id in &skipped_ids {
        let r = by_id[id];
        assert!(r.prompt_ids.len() + r.completion_ids.len() > limit);
    }
    for (src_row, e) in kept.iter().zip(&rows) {
        check_row(src_row, e, true, false, limit);
    }

    // Truncation keeps those rows, cut.
    let out3 = dir.join("truncated");
    let o3 = out3.to_str().expect("utf8");
    ok(&export(&["--max-len", &ls, "--overflow", "truncate"], o3));
    let (m, rows) = read_export(&out3);
    assert_eq!(rows.len(), source_rows.len());
    assert_eq!(m["totals"]["truncated"], skipped.len());
    for (src_row, e) in source_rows.iter().zip(&rows) {
        check_row(src_row, e, false, true, limit);
    }

    // The source is compacted: its shards are replaced, the export follows on the next run.
    ok(&hindsight(&["compact", ss]));
    let report = String::from_utf8_lossy(&export(&[], os).stderr).into_owned();
    assert!(report.contains("1 written"), "{report}");
    let (m, rows) = read_export(&out);
    assert_eq!(m["totals"]["shards"], 1);
    assert_eq!(rows.len(), source_rows.len());
    let parts = std::fs::read_dir(&out)
        .expect("list")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".parquet"))
        .count();
    assert_eq!(
        parts, 1,
        "outputs of the replaced source shards are deleted"
    );
    for (src_row, e) in manifest_rows(&src).iter().zip(&rows) {
        check_row(src_row, e, false, true, usize::MAX);
    }
}
