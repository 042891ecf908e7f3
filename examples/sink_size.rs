//! Storage cost and fidelity of the output encodings on real data: scores every episode of
//! `sample-data/` that has a logged response, writes the dataset in the lossless and in the
//! compact encoding with the default shard settings, and prints for each the dataset stats and
//! the compressed bytes of each column per response token (footer excluded); then the compact
//! encoding's error against the lossless values (log-probs, probabilities, KL both ways).
//! Run: `cargo run --release --example sink_size [-- [--student-top-k N] [OUT_DIR]]`.

use std::collections::BTreeMap;
use std::path::Path;

use hindsight::episode::{ingest, IngestOptions};
use hindsight::model::{self, ComputeMode};
use hindsight::pipeline::steps::score::output_row;
use hindsight::score::contexts::prepare_episode;
use hindsight::score::logprobs::kl_topk_tail;
use hindsight::score::{Scorer, ScorerConfig};
use hindsight::sink::encoding::CODE_FLOOR;
use hindsight::sink::{
    batch_to_rows, dataset_stats, validate, DatasetMeta, Encoding, Manifest, OutputRow,
    ShardConfig, ShardWriter,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::reader::{FileReader, SerializedFileReader};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut student_top_k = 0usize;
    let mut out = std::path::PathBuf::from("/tmp/hindsight-sink-size");
    while let Some(a) = args.next() {
        if a == "--student-top-k" {
            student_top_k = args.next().unwrap_or_default().parse()?;
        } else {
            out = a.into();
        }
    }
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
    let cfg = ScorerConfig {
        student_top_k,
        ..ScorerConfig::default()
    };
    let requests: Vec<_> = prepared.iter().map(|p| p.request.clone()).collect();
    let (scores, _) = Scorer::new(&m.transformer, cfg.clone()).score(&requests)?;
    let mut read_back = Vec::new();
    for encoding in [Encoding::Lossless, Encoding::Compact] {
        let out = out.join(encoding.as_str());
        let _ = std::fs::remove_dir_all(&out);
        let meta = DatasetMeta::new(
            &m.info,
            cfg.top_k,
            cfg.relevance,
            None,
            &serde_json::to_value(&cfg)?,
        )
        .with_layout(student_top_k, encoding);
        let mut w = ShardWriter::new(&out, "sample", meta.clone(), ShardConfig::default())?;
        for ((ep, p), s) in eps.iter().zip(&prepared).zip(&scores) {
            w.write_row(output_row(ep, p, s, cfg.relevance))?;
        }
        let shards = w.finish()?;
        Manifest::new(meta, shards.clone(), serde_json::to_value(&ingest_stats)?).write(&out)?;
        println!(
            "== encoding {} (K=20, K_s={student_top_k})",
            encoding.as_str()
        );
        let rep = validate(&out)?;
        println!("{rep}");
        let st = dataset_stats(&out)?;
        print!("{st}");
        let mut per_col: BTreeMap<String, i64> = BTreeMap::new();
        let mut rows = Vec::new();
        for s in &shards {
            let r = SerializedFileReader::new(std::fs::File::open(out.join(&s.file))?)?;
            for rg in r.metadata().row_groups() {
                for c in rg.columns() {
                    let top = c.column_path().parts()[0].clone();
                    *per_col.entry(top).or_default() += c.compressed_size();
                }
            }
            rows.extend(read_rows(&out.join(&s.file))?);
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
            println!("  {c:34} {:8.1} B/token", b as f64 / toks);
        }
        read_back.push(rows);
    }
    fidelity(&read_back[0], &read_back[1]);
    Ok(())
}

fn read_rows(path: &Path) -> anyhow::Result<Vec<OutputRow>> {
    let mut rows = Vec::new();
    for b in ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path)?)?.build()? {
        rows.extend(batch_to_rows(&b?)?);
    }
    Ok(rows)
}

/// Max and mean of absolute errors.
#[derive(Default)]
struct Err {
    max: f64,
    sum: f64,
    n: usize,
}

impl Err {
    fn add(&mut self, e: f64) {
        self.max = self.max.max(e.abs());
        self.sum += e.abs();
        self.n += 1;
    }
    fn show(&self, what: &str) {
        println!(
            "  {what:52} max {:.5}  mean {:.6}  (n={})",
            self.max,
            self.sum / self.n.max(1) as f64,
            self.n
        );
    }
}

/// The compact encoding's error against the lossless values of the same rows.
fn fidelity(exact: &[OutputRow], compact: &[OutputRow]) {
    let (mut lp, mut prob, mut kl, mut rkl, mut at_s) = Default::default();
    let (mut kl_sum, mut rkl_sum) = (0f64, 0f64);
    let mut below_floor = 0usize;
    for (x, c) in exact.iter().zip(compact) {
        let k = x.k;
        let s_topk = x.student_topk_logprobs.as_deref().unwrap_or_default();
        for (&a, &b) in x.teacher_topk_logprobs.iter().zip(&c.teacher_topk_logprobs) {
            if f64::from(a) < CODE_FLOOR {
                below_floor += 1;
            } else {
                Err::add(&mut lp, f64::from(b) - f64::from(a));
            }
            Err::add(&mut prob, f64::from(b).exp() - f64::from(a).exp());
        }
        let f = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
        for t in 0..x.completion_ids.len() {
            let r = t * k..(t + 1) * k;
            let s = f(&s_topk[r.clone()]);
            let want = kl_topk_tail(&f(&x.teacher_topk_logprobs[r.clone()]), &s);
            let got = kl_topk_tail(&f(&c.teacher_topk_logprobs[r]), &s);
            kl_sum += want;
            Err::add(&mut kl, got - want);
        }
        if let (Some(ids), Some(own), Some(te), Some(tc)) = (
            x.student_topk_ids.as_deref(),
            x.student_topk_logprobs_self.as_deref(),
            x.teacher_logprobs_at_student_topk.as_deref(),
            c.teacher_logprobs_at_student_topk.as_deref(),
        ) {
            let ks = x.ks;
            for t in 0..ids.len() / ks.max(1) {
                let r = t * ks..(t + 1) * ks;
                let own = f(&own[r.clone()]);
                let want = kl_topk_tail(&own, &f(&te[r.clone()]));
                let got = kl_topk_tail(&own, &f(&tc[r.clone()]));
                rkl_sum += want;
                Err::add(&mut rkl, got - want);
                for (&a, &b) in te[r.clone()].iter().zip(&tc[r]) {
                    if f64::from(a) >= CODE_FLOOR {
                        Err::add(&mut at_s, f64::from(b) - f64::from(a));
                    }
                }
            }
        }
    }
    println!("== compact vs lossless fidelity");
    lp.show("teacher top-k log-prob (nats, above the floor)");
    prob.show("teacher top-k probability");
    println!("  teacher top-k values below the floor {CODE_FLOOR:.2}: {below_floor}");
    kl.show("KL(teacher || student) per token, top-k + tail");
    println!(
        "  mean KL(teacher || student) per token (lossless)          {:.5}",
        kl_sum / kl.n.max(1) as f64
    );
    if rkl.n > 0 {
        at_s.show("teacher log-prob at student top-k (nats)");
        rkl.show("KL(student || teacher) per token on student top-k");
        println!(
            "  mean KL(student || teacher) per token (lossless)          {:.5}",
            rkl_sum / rkl.n as f64
        );
    }
}
