//! `hindsight bench`: forward and scoring throughput on this machine.

use std::process::ExitCode;

use clap::Args;

use super::ModelArgs;
use crate::bench;
use crate::score::{ScorerConfig, StatsPlacement};

/// Arguments of `hindsight bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Sequence lengths for the raw forward measurement.
    #[arg(long, value_delimiter = ',', default_value = "512,1024")]
    pub seq_lens: Vec<usize>,
    /// Repeats per forward and scoring measurement (the fastest one is reported).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Chat-log inputs whose episodes are scored for the episodes/s numbers.
    #[arg(long, default_values_t = [
        "sample-data/wildchat_1m.jsonl".to_string(),
        "sample-data/sharegpt.json".to_string(),
        "sample-data/openai_messages.jsonl".to_string(),
    ])]
    pub episodes: Vec<String>,
    /// Also print the results as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Write the scored episodes' token ids (student, teacher and control context, response) as
    /// JSONL here, for a reference implementation to score the same work
    /// (`scripts/bench_score_python.py`).
    #[arg(long)]
    pub dump_requests: Option<std::path::PathBuf>,
    /// Where the scoring statistics run: `auto` (host on a CPU, device on a GPU), `host`,
    /// or `device` (the GPU code path, also on a CPU).
    #[arg(long, default_value = "auto", value_parser = parse_stats)]
    pub stats: StatsPlacement,
    /// Only what the comparison with a reference needs: the raw forward and the default
    /// pipeline's scoring line (no generation, no other scoring variants).
    #[arg(long)]
    pub pipeline_only: bool,
}

fn parse_stats(s: &str) -> Result<StatsPlacement, String> {
    StatsPlacement::parse(s).ok_or_else(|| format!("{s:?}: expected auto, host or device"))
}

/// Runs the benchmark and prints a table.
pub fn run(a: BenchArgs) -> anyhow::Result<ExitCode> {
    let m = a.model.load()?;
    println!(
        "model {} ({}, {} threads)",
        m.info.model_id,
        m.info.compute_dtype,
        candle_core::utils::get_num_threads()
    );
    let cpu = bench::cpu_kernels();
    println!(
        "cpu {} | flags: {} | f32 matmul kernels: {} | bf16 matmul: {}",
        cpu.model.as_deref().unwrap_or("unknown"),
        if cpu.flags.is_empty() {
            "none of note".to_string()
        } else {
            cpu.flags.join(" ")
        },
        cpu.f32_matmul,
        cpu.bf16_matmul
    );
    let mut forward = Vec::new();
    for &len in &a.seq_lens {
        let f = bench::forward(&m.transformer, &m.tokenizer, len, a.repeats)?;
        println!(
            "forward  T={:>5}: body {:>7.1} tokens/s | with LM head + log-softmax at every position {:>7.1} tokens/s",
            f.seq_len, f.body_tokens_per_s, f.full_logits_tokens_per_s
        );
        forward.push(f);
    }
    let mut generation = Vec::new();
    let batches: &[usize] = if a.pipeline_only { &[] } else { &[1, 8] };
    for &batch in batches {
        let tps = bench::generation(&m.transformer, &m.tokenizer, batch, 32)?;
        println!("generate batch {batch:>2}: {tps:>7.1} generated tokens/s (64-token prompt, 32 new tokens, KV cache)");
        generation.push(serde_json::json!({ "batch": batch, "tokens_per_s": tps }));
    }
    let requests = bench::episode_requests(&m.tokenizer, &a.episodes)?;
    let resp: usize = requests.iter().map(|r| r.completion_ids.len()).sum();
    if let Some(path) = &a.dump_requests {
        let mut out = String::new();
        for r in &requests {
            let line = serde_json::json!({
                "prompt_ids": r.prompt_ids,
                "teacher_prompt_ids": r.teacher_prompt_ids,
                "control_prompt_ids": r.control_prompt_ids,
                "completion_ids": r.completion_ids,
                // The windows the default pipeline scores the control and the probes on.
                "control_tokens": crate::score::DEFAULT_CONTROL_TOKENS,
                "pmi_tokens": crate::score::DEFAULT_PMI_TOKENS,
                "followup": r.followup.as_ref().map(|f| serde_json::json!({
                    "after_response": f.after_response,
                    "after_history": f.after_history,
                    "bare": f.bare,
                    "target": f.target,
                })),
            });
            out.push_str(&line.to_string());
            out.push('\n');
        }
        std::fs::write(path, out)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    }
    println!(
        "scoring {} chat-log episodes ({} response tokens), K=20:",
        requests.len(),
        resp
    );
    let variants = [
        ("shared prefix, +control", true, true, false, 0),
        ("separate contexts, +control", false, true, false, 0),
        ("shared prefix, student+teacher", true, false, false, 0),
        ("separate contexts, student+teacher", false, false, false, 0),
        // What `pmi` / `pmi_mean` add: the feedback after the response and after the preamble.
        ("shared prefix, +control +pmi probes", true, true, true, 0),
        // The student-side columns: one more top-k per scored row, no more forward tokens.
        ("shared prefix, +control, K_s=20", true, true, false, 20),
    ];
    // The default pipeline's work (`pmi_control`: its control context and probes) is index 4.
    let chosen: Vec<_> = if a.pipeline_only {
        vec![variants[4]]
    } else {
        variants.to_vec()
    };
    let configs: Vec<(&str, ScorerConfig)> = chosen
        .iter()
        .map(|&(label, sharing, control, followup, student_top_k)| {
            let cfg = ScorerConfig {
                prefix_sharing: sharing,
                control,
                followup,
                student_top_k,
                stats: a.stats,
                ..ScorerConfig::default()
            };
            (label, cfg)
        })
        .collect();
    let scoring = bench::scoring(&m.transformer, &requests, &configs, a.repeats)?;
    for b in &scoring {
        println!(
            "  {:<36} {:>6.2} episodes/s {:>7.1} response tokens/s | forward tokens {:>6} | {:.2} GFLOP/episode",
            b.label,
            b.episodes_per_s,
            b.response_tokens_per_s,
            b.stats.forward_tokens,
            b.flops as f64 / b.episodes.max(1) as f64 / 1e9
        );
    }
    if a.pipeline_only {
        if a.json {
            println!(
                "{}",
                serde_json::json!({ "cpu": cpu, "forward": forward, "scoring": scoring })
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let ratio = |a: usize, b: usize| scoring[b].flops as f64 / scoring[a].flops.max(1) as f64;
    println!(
        "  prefix sharing saves {:.2}x forward FLOPs (student+teacher), {:.2}x (with control)",
        ratio(2, 3),
        ratio(0, 1)
    );
    let extra = scoring[4].stats.forward_tokens as f64 - scoring[0].stats.forward_tokens as f64;
    // The probes' share of the default pipeline's scoring time, next to their share of its
    // forward tokens: equal shares mean the probes cost what their tokens cost.
    let seconds = |b: &bench::ScoringBench| 1.0 / b.episodes_per_s.max(1e-9);
    let time_share = 1.0 - seconds(&scoring[0]) / seconds(&scoring[4]);
    let token_share = extra / scoring[4].stats.forward_tokens.max(1) as f64;
    println!(
        "  pmi probes: +{:.1} forward tokens per episode ({:.2}x the FLOPs of +control); {:.0}% of the forward tokens, {:.0}% of the scoring time",
        extra / requests.len().max(1) as f64,
        ratio(0, 4),
        100.0 * token_share,
        100.0 * time_share
    );
    // Everything the default relevance method costs (its control context and probes) against
    // scoring without relevance (student + teacher only).
    println!(
        "  relevance ({} default: control context + probes): +{:.0}% scoring time, +{:.0}% FLOPs over student+teacher alone",
        crate::score::RelevanceMethod::default().as_str(),
        100.0 * (seconds(&scoring[4]) / seconds(&scoring[2]) - 1.0),
        100.0 * (ratio(2, 4) - 1.0)
    );
    if a.json {
        println!(
            "{}",
            serde_json::json!({ "cpu": cpu, "forward": forward, "generation": generation, "scoring": scoring })
        );
    }
    Ok(ExitCode::SUCCESS)
}
