//! Storage cost of the output format on real data: scores every episode of `sample-data/` that
//! has a logged response, writes a dataset with the default shard settings, and prints the
//! dataset stats plus the compressed bytes of each column per response token (footer excluded).
//! Run: `cargo run --release --example sink_size [-- OUT_DIR]`.

use std::collections::BTreeMap;

use hindsight::episode::{ingest, IngestOptions};
use hindsight::model::{self, ComputeMode};
use hindsight::score::prepare::prepare_episode;
use hindsight::score::{Scorer, ScorerConfig};
use hindsight::sink::{
    dataset_stats, validate, DatasetMeta, Manifest, OutputRow, ShardConfig, ShardWriter,
};
use parquet::file::reader::{FileReader, SerializedFileReader};

fn main() -> anyhow::Result<()> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/tmp/hindsight-sink-size".into());
    let out = std::path::PathBuf::from(out);
    let _ = std::fs::remove_dir_all(&out);
    let m = model::load(
        &model::resolve_model_path(None)?,
        ComputeMode::F32,
        &candle_core::Device::Cpu,
    )?;
    let dir = format!("{}/sample-data", env!("CARGO_MANIFEST_DIR"));
    let mut stream = ingest(IngestOptions {
        inputs: vec![dir],
        ..IngestOptions::default()
    })?;
    let episodes: Vec<_> = stream.by_ref().filter(|e| e.completion.is_some()).collect();
    let ingest_stats = stream.finish()?;
    let mut eps = Vec::new();
    let mut prepared = Vec::new();
    for ep in episodes {
        let t = hindsight::template::builtin(&ep.teacher_template);
        if let Ok(p) = prepare_episode(&m.tokenizer, &ep, t.as_ref()) {
            eps.push(ep);
            prepared.push(p);
        }
    }
    let cfg = ScorerConfig::default();
    let requests: Vec<_> = prepared.iter().map(|p| p.request.clone()).collect();
    let (scores, _) = Scorer::new(&m.transformer, cfg.clone()).score(&requests)?;
    let meta = DatasetMeta::new(
        &m.info,
        cfg.top_k,
        cfg.relevance,
        None,
        &serde_json::to_value(&cfg)?,
    );
    let mut w = ShardWriter::new(&out, "sample", meta.clone(), ShardConfig::default())?;
    for ((ep, p), s) in eps.iter().zip(&prepared).zip(&scores) {
        w.write_row(OutputRow::new(ep, p, s, cfg.relevance))?;
    }
    let shards = w.finish()?;
    Manifest::new(meta, shards.clone(), serde_json::to_value(&ingest_stats)?).write(&out)?;
    let rep = validate(&out)?;
    println!("{rep}");
    let st = dataset_stats(&out)?;
    print!("{st}");
    let mut per_col: BTreeMap<String, i64> = BTreeMap::new();
    for s in &shards {
        let r = SerializedFileReader::new(std::fs::File::open(out.join(&s.file))?)?;
        for rg in r.metadata().row_groups() {
            for c in rg.columns() {
                let top = c.column_path().parts()[0].clone();
                *per_col.entry(top).or_default() += c.compressed_size();
            }
        }
    }
    let toks = st.response_tokens as f64;
    let data: i64 = per_col.values().sum();
    println!(
        "column data {} B = {:.1} B/response token (file total {:.1})",
        data,
        data as f64 / toks,
        st.bytes_per_response_token
    );
    let mut v: Vec<_> = per_col.into_iter().collect();
    v.sort_by_key(|(_, b)| -*b);
    for (c, b) in v {
        println!("  {c:24} {:8.1} B/token", b as f64 / toks);
    }
    Ok(())
}
