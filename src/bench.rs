//! Throughput measurements of the model path. Speed goals live here (printed numbers), never in
//! timed tests.

use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use crate::error::Result;
use crate::model::{PackedBatch, Transformer};
use crate::score::{ScoreRequest, ScoreStats, Scorer, ScorerConfig};
use crate::tokenize::Tokenizer;

/// Raw forward throughput at one sequence length.
#[derive(Debug, Clone, Serialize)]
pub struct ForwardBench {
    pub seq_len: usize,
    pub repeats: usize,
    /// Tokens/s through the transformer body only.
    pub body_tokens_per_s: f64,
    /// Tokens/s with the LM head and log-softmax at every position (what a naive scorer does).
    pub full_logits_tokens_per_s: f64,
}

/// Scoring throughput on a set of requests.
#[derive(Debug, Clone, Serialize)]
pub struct ScoringBench {
    pub label: String,
    pub episodes: usize,
    pub seconds: f64,
    pub episodes_per_s: f64,
    pub response_tokens_per_s: f64,
    pub stats: ScoreStats,
    /// Estimated forward FLOPs (body + LM head, excluding attention scores).
    pub flops: u64,
}

/// A deterministic token sequence of `len` ids from natural text (repeated as needed).
pub fn synthetic_ids(tok: &Tokenizer, len: usize) -> Result<Vec<u32>> {
    const TEXT: &str = "The pipeline reads raw interaction logs, builds student and teacher \
        contexts, scores every response token with the model, and writes Parquet shards with \
        checksums. Users run it nightly, validate dataset schemas with it, and feed trainers. ";
    let base = tok.encode_text(TEXT)?;
    Ok(base.iter().copied().cycle().take(len).collect())
}

/// Rows per LM-head call in the raw forward measurement (the log-softmax of a chunk runs on all
/// cores, as the scorer's does).
const HEAD_ROWS: usize = 128;

/// Measures the forward pass over one sequence of `seq_len` tokens.
pub fn forward(
    model: &Transformer,
    tok: &Tokenizer,
    seq_len: usize,
    repeats: usize,
) -> Result<ForwardBench> {
    let ids = synthetic_ids(tok, seq_len)?;
    let mut batch = PackedBatch::default();
    batch.push_segment(&ids, 0, None);
    // Warm-up (allocations, thread pool).
    model.forward_hidden(&batch)?;
    let repeats = repeats.max(1);
    let t = Instant::now();
    for _ in 0..repeats {
        model.forward_hidden(&batch)?;
    }
    let body = t.elapsed().as_secs_f64() / repeats as f64;
    let t = Instant::now();
    for _ in 0..repeats {
        let h = model.forward_hidden(&batch)?;
        let mut start = 0;
        let vocab = model.config.vocab_size;
        while start < seq_len {
            let n = HEAD_ROWS.min(seq_len - start);
            let logits = model.logits(&h.narrow(0, start, n)?)?;
            let rows = logits.flatten_all()?.to_vec1::<f32>()?;
            let lse: f64 = rows
                .par_chunks(vocab)
                .map(crate::score::logprobs::log_sum_exp)
                .sum();
            std::hint::black_box(lse);
            start += n;
        }
    }
    let full = t.elapsed().as_secs_f64() / repeats as f64;
    Ok(ForwardBench {
        seq_len,
        repeats,
        body_tokens_per_s: seq_len as f64 / body,
        full_logits_tokens_per_s: seq_len as f64 / full,
    })
}

/// Scores `requests` under each `(label, config)` `repeats` times (after a warm-up on the
/// first request) and reports each config's fastest run, with the FLOPs of its work. The
/// configs take turns within each repeat, so a slow spell of a shared machine hits them all
/// rather than one: the ratios between them are what the bench is read for.
pub fn scoring(
    model: &Transformer,
    requests: &[ScoreRequest],
    configs: &[(&str, ScorerConfig)],
    repeats: usize,
) -> Result<Vec<ScoringBench>> {
    let scorers: Vec<Scorer> = configs
        .iter()
        .map(|(_, cfg)| Scorer::new(model, cfg.clone()))
        .collect();
    if let Some(first) = requests.first() {
        for s in &scorers {
            s.score(std::slice::from_ref(first))?;
        }
    }
    let mut seconds = vec![f64::INFINITY; scorers.len()];
    let mut stats = vec![ScoreStats::default(); scorers.len()];
    for _ in 0..repeats.max(1) {
        for (i, s) in scorers.iter().enumerate() {
            let t = Instant::now();
            stats[i] = s.score(requests)?.1;
            seconds[i] = seconds[i].min(t.elapsed().as_secs_f64());
        }
    }
    let c = &model.config;
    Ok(configs
        .iter()
        .zip(seconds)
        .zip(stats)
        .map(|(((label, _), seconds), stats)| ScoringBench {
            label: label.to_string(),
            episodes: requests.len(),
            seconds,
            episodes_per_s: requests.len() as f64 / seconds,
            response_tokens_per_s: stats.response_tokens as f64 / seconds,
            flops: stats.forward_tokens * c.body_flops_per_token()
                + stats.head_rows * c.head_flops_per_row(),
            stats,
        })
        .collect())
}

/// Scoring requests (with control contexts) for the chat-log episodes found in `inputs`.
pub fn episode_requests(tok: &Tokenizer, inputs: &[String]) -> anyhow::Result<Vec<ScoreRequest>> {
    let opts = crate::episode::IngestOptions {
        inputs: inputs.to_vec(),
        ..Default::default()
    };
    let mut stream = crate::episode::ingest(opts)?;
    let mut requests = Vec::new();
    for ep in stream.by_ref() {
        if ep.completion.is_none() {
            continue;
        }
        let tpl = crate::template::builtin(&ep.teacher_template);
        match crate::score::contexts::prepare_episode(tok, &ep, tpl.as_ref()) {
            Ok(mut p) => {
                // What a run of the default method adds (only scored when the scorer's
                // `followup` is on): the history-only probe only for `pmi_answer`.
                let response = ep.completion.as_deref().unwrap_or_default();
                let history = crate::score::RelevanceMethod::default().needs_history_probe();
                p.request.followup =
                    crate::score::contexts::followup_probe(tok, &ep, response, history);
                requests.push(p.request)
            }
            Err(e) => tracing::warn!("skipping episode: {e}"),
        }
    }
    stream.finish()?;
    Ok(requests)
}

/// Generation throughput: `batch` samples of one prompt decoded together for `new_tokens`
/// steps (no early stop counted: tokens actually generated / wall time).
pub fn generation(
    model: &Transformer,
    tok: &Tokenizer,
    batch: usize,
    new_tokens: usize,
) -> Result<f64> {
    use crate::model::generate::{generate, GenerationConfig, GenerationPrompt};
    let prompt = synthetic_ids(tok, 64)?;
    let cfg = GenerationConfig {
        max_new_tokens: new_tokens,
        temperature: 1.0,
        n: batch,
        seed: 1,
        ..GenerationConfig::default()
    };
    // An id the model never samples stands in for end-of-turn so every sample runs to length.
    let never = u32::MAX;
    let t = Instant::now();
    let samples = generate(
        model,
        &GenerationPrompt::seeded(&[prompt], cfg.seed),
        never,
        &cfg,
    )?;
    let secs = t.elapsed().as_secs_f64();
    let tokens: usize = samples.iter().map(|s| s.completion_ids.len()).sum();
    Ok(tokens as f64 / secs)
}

/// The CPU's vector and matrix extensions that decide which kernels run, and which f32 matmul
/// kernels candle's `gemm` picks at run time. Speed numbers are only comparable between machines
/// with the same flags, so `hindsight bench` prints them beside every number.
#[derive(Debug, Clone, Serialize)]
pub struct CpuKernels {
    /// The CPU model (`/proc/cpuinfo` "model name"), when known.
    pub model: Option<String>,
    /// The relevant extensions present (avx2, fma, the AVX-512 subsets, avx512bf16,
    /// avx512vnni, amx_tile, amx_bf16, amx_int8).
    pub flags: Vec<&'static str>,
    /// The f32 matmul kernels gemm uses on this CPU: `avx2+fma` or `baseline` (its AVX-512
    /// kernels are not built, see README "Measured").
    pub f32_matmul: &'static str,
    /// The bf16 matmul of `--compute bf16`: hindsight's AVX512_BF16 kernel where the CPU has it
    /// (and `HINDSIGHT_CPU_KERNELS` does not switch it off), else candle's.
    pub bf16_matmul: &'static str,
}

/// Detects [`CpuKernels`] of the running machine.
pub fn cpu_kernels() -> CpuKernels {
    let model = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    });
    #[allow(unused_mut)]
    let mut flags: Vec<&'static str> = Vec::new();
    #[cfg(not(target_arch = "x86_64"))]
    let f32_matmul = "baseline";
    #[cfg(target_arch = "x86_64")]
    let f32_matmul = {
        macro_rules! probe {
            ($($f:tt),*) => {
                $(if std::arch::is_x86_feature_detected!($f) { flags.push($f); })*
            };
        }
        probe!(
            "avx2",
            "fma",
            "avx512f",
            "avx512bw",
            "avx512cd",
            "avx512dq",
            "avx512vl",
            "avx512bf16",
            "avx512vnni"
        );
        // AMX is not in `is_x86_feature_detected!` on stable; the kernel's flags name it.
        if let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") {
            let line = info.lines().find(|l| l.starts_with("flags")).unwrap_or("");
            for amx in ["amx_tile", "amx_bf16", "amx_int8"] {
                if line.split_whitespace().any(|f| f == amx) {
                    flags.push(amx);
                }
            }
        }
        let has = |f: &str| flags.contains(&f);
        // gemm is built without its `x86-v4` (AVX-512) kernels: measured slower on an AVX-512
        // AMD EPYC (README, "Measured"), so AVX2 + FMA is the best it dispatches to.
        if has("avx2") && has("fma") {
            "avx2+fma"
        } else {
            "baseline"
        }
    };
    let bf16_matmul = if crate::model::bf16_gemm::available() {
        "avx512bf16 (hindsight's kernel)"
    } else {
        "candle (converted to f32 inside gemm)"
    };
    CpuKernels {
        model,
        flags,
        f32_matmul,
        bf16_matmul,
    }
}
