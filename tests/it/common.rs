//! Shared test helpers: the real embedded model (loaded once for the whole test binary), paths
//! of fixtures and sample data, fresh temporary directories, checked runs of the binary.

#![allow(dead_code)]

use hindsight::episode::{ingest, Episode, IngestOptions, IngestStats, SourceFormat};
use hindsight::ingest::QuarantineEntry;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use hindsight::model::{self, ComputeMode, LoadedModel};

/// Path of a file under `tests/fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The embedded SmolLM2 model (f32). Tests need it provisioned: `scripts/fetch-model.sh`.
pub fn model() -> &'static LoadedModel {
    static MODEL: OnceLock<LoadedModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        let path = model::resolve_model_path(None)
            .unwrap_or_else(|e| panic!("{e}\nrun scripts/fetch-model.sh before the tests"));
        model::load(&path, ComputeMode::F32, &candle_core::Device::Cpu)
            .unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
    })
}

/// Reads a JSONL fixture into JSON values.
pub fn read_jsonl(name: &str) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(fixture(name)).expect("fixture readable");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("fixture line is JSON"))
        .collect()
}

/// Path of a file in `sample-data/`.
pub fn sample(name: &str) -> String {
    format!("{}/sample-data/{}", env!("CARGO_MANIFEST_DIR"), name)
}

/// Path of the embedded model file (provisioned by `scripts/fetch-model.sh`), for runs of the
/// binary that pass it explicitly.
pub fn model_path() -> String {
    format!(
        "{}/models/SmolLM2-135M-Instruct.Q4_1.gguf",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// Runs the `hindsight` binary with the embedded model, capturing its output.
pub fn hindsight(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_hindsight"))
        .args(args)
        .env("HINDSIGHT_MODEL", model_path())
        .output()
        .expect("run hindsight")
}

/// A fresh, empty directory under the system temp dir. Unique per call (process id + counter):
/// every test module shares this process, so two tests using the same tag never collide.
pub fn temp_dir(tag: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("hindsight-it-{}-{n}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// A pipeline file in `dir` over copies of the named sample-data files (in `dir/in`), with
/// `chunk_records` records per chunk and `extra` TOML appended (e.g. a `[score]` table).
pub fn sample_pipeline(
    dir: &std::path::Path,
    files: &[&str],
    chunk_records: usize,
    extra: &str,
) -> PathBuf {
    let inputs = dir.join("in");
    std::fs::create_dir_all(&inputs).expect("inputs");
    for f in files {
        std::fs::copy(sample(f), inputs.join(f)).expect("copy");
    }
    let p = dir.join("pipeline.toml");
    std::fs::write(
        &p,
        format!(
            "name = \"test\"\n[input]\npaths = [{:?}]\nchunk_records = {chunk_records}\n\
             [output]\ndir = \"unused\"\n{extra}",
            inputs.display().to_string()
        ),
    )
    .expect("pipeline");
    p
}

/// Asserts that a run of the binary succeeded (showing its stderr if not); returns its stdout.
pub fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "hindsight failed: {}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Result of ingesting some inputs with default settings (quarantine kept in memory).
pub struct Run {
    pub episodes: Vec<Episode>,
    pub stats: IngestStats,
    pub quarantine: Vec<QuarantineEntry>,
}

pub fn run_with(opts: IngestOptions) -> Run {
    let mut stream = ingest(opts).expect("ingest opens");
    let episodes: Vec<Episode> = stream.by_ref().collect();
    let quarantine = stream.quarantined().to_vec();
    let stats = stream.finish().expect("finish");
    assert!(stats.reconciles(), "counts do not reconcile: {stats:#?}");
    Run {
        episodes,
        stats,
        quarantine,
    }
}

pub fn run(inputs: &[&str], format: Option<SourceFormat>) -> Run {
    run_with(IngestOptions {
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        format,
        ..IngestOptions::default()
    })
}

/// Builds a reason→count map from pairs.
pub fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// (record_index, reason) of each quarantine entry, in order.
pub fn reasons(q: &[QuarantineEntry]) -> Vec<(i64, &'static str)> {
    q.iter()
        .map(|e| (e.record_index, e.reason.as_str()))
        .collect()
}

/// Every row of a dataset directory, in manifest order (shards read with the real Parquet
/// reader).
pub fn manifest_rows(dir: &std::path::Path) -> Vec<hindsight::sink::OutputRow> {
    let manifest = hindsight::sink::Manifest::read(dir).expect("manifest");
    let mut out = Vec::new();
    for s in &manifest.shards {
        let f = std::fs::File::open(dir.join(&s.file)).expect("shard");
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
            .expect("parquet")
            .build()
            .expect("reader");
        for batch in reader {
            out.extend(hindsight::sink::batch_to_rows(&batch.expect("batch")).expect("rows"));
        }
    }
    out
}
