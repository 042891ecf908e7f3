//! `hindsight bench`: forward and scoring throughput on this machine.

use std::process::ExitCode;

use clap::Args;

use super::ModelArgs;
use crate::bench;

/// Arguments of `hindsight bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Sequence lengths for the raw forward measurement.
    #[arg(long, value_delimiter = ',', default_value = "512,1024")]
    pub seq_lens: Vec<usize>,
    /// Repeats per forward measurement.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Also print the results as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
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
    let mut forward = Vec::new();
    for &len in &a.seq_lens {
        let f = bench::forward(&m.transformer, &m.tokenizer, len, a.repeats)?;
        println!(
            "forward  T={:>5}: body {:>7.1} tokens/s | with LM head + log-softmax at every position {:>7.1} tokens/s",
            f.seq_len, f.body_tokens_per_s, f.full_logits_tokens_per_s
        );
        forward.push(f);
    }
    if a.json {
        println!("{}", serde_json::json!({ "forward": forward }));
    }
    Ok(ExitCode::SUCCESS)
}
