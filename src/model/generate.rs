//! Sampling responses from the student (on-policy rollouts) with the same model code the scorer
//! uses: a prompt is prefilled once, its KV cache is cloned for each of the `n` samples, and all
//! live samples advance together, one token per step, as one packed batch.
//!
//! Every sample has its own random stream seeded from (seed, prompt index, sample index), so a
//! sample does not depend on which other samples share its batch, and a resumed run reproduces
//! it. Sampled ids are returned as they are: never decoded and re-encoded.

use candle_core::Tensor;
use candle_transformers::generation::{LogitsProcessor, Sampling};
use serde::{Deserialize, Serialize};

use super::decoder::{KvCache, PackedBatch, Transformer};
use crate::error::{Error, Result};

/// Sampling settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenerationConfig {
    pub max_new_tokens: usize,
    /// 0 means greedy (argmax).
    pub temperature: f64,
    pub top_p: Option<f64>,
    pub top_k: Option<usize>,
    /// Samples per prompt.
    pub n: usize,
    pub seed: u64,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 256,
            temperature: 1.0,
            top_p: None,
            top_k: None,
            n: 1,
            seed: 0,
        }
    }
}

/// Why a sample stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The end-of-turn token was sampled (it is the last id).
    Stop,
    /// `max_new_tokens` was reached.
    Length,
}

/// One sampled response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    pub prompt_index: usize,
    pub sample_index: usize,
    pub completion_ids: Vec<u32>,
    pub finish_reason: StopReason,
}

fn sampling(cfg: &GenerationConfig) -> Sampling {
    if cfg.temperature <= 0.0 {
        return Sampling::ArgMax;
    }
    let temperature = cfg.temperature;
    match (cfg.top_k, cfg.top_p) {
        (Some(k), Some(p)) => Sampling::TopKThenTopP { k, p, temperature },
        (Some(k), None) => Sampling::TopK { k, temperature },
        (None, Some(p)) => Sampling::TopP { p, temperature },
        (None, None) => Sampling::All { temperature },
    }
}

fn sample_seed(seed: u64, prompt: usize, sample: usize) -> u64 {
    // SplitMix64 over the three inputs: independent, reproducible streams.
    let mut z = seed
        .wrapping_add((prompt as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add((sample as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct Live {
    prompt_index: usize,
    sample_index: usize,
    cache: KvCache,
    processor: LogitsProcessor,
    ids: Vec<u32>,
    next: u32,
}

/// Samples `cfg.n` responses for every prompt; results are ordered by (prompt, sample).
pub fn generate(
    model: &Transformer,
    prompts: &[Vec<u32>],
    end_of_turn: u32,
    cfg: &GenerationConfig,
) -> Result<Vec<Sample>> {
    let mut done: Vec<Sample> = Vec::new();
    let mut live: Vec<Live> = Vec::new();
    for (pi, prompt) in prompts.iter().enumerate() {
        if prompt.is_empty() {
            return Err(Error::Request {
                id: Some(pi.to_string()),
                message: "empty prompt cannot be continued".into(),
            });
        }
        if prompt.len() + cfg.max_new_tokens > model.max_positions() {
            return Err(Error::Request {
                id: Some(pi.to_string()),
                message: format!(
                    "prompt of {} tokens + max_new_tokens {} exceeds the model's {} positions",
                    prompt.len(),
                    cfg.max_new_tokens,
                    model.max_positions()
                ),
            });
        }
        let mut cache = KvCache::default();
        let mut batch = PackedBatch::default();
        batch.push_segment(prompt, 0, None);
        let hidden = model.forward_cached(&batch, std::slice::from_mut(&mut cache))?;
        let last = hidden.narrow(0, prompt.len() - 1, 1)?;
        let logits = model.logits(&last)?.squeeze(0)?;
        for si in 0..cfg.n.max(1) {
            let mut processor =
                LogitsProcessor::from_sampling(sample_seed(cfg.seed, pi, si), sampling(cfg));
            let next = processor.sample(&logits)?;
            live.push(Live {
                prompt_index: pi,
                sample_index: si,
                cache: cache.clone(),
                processor,
                ids: Vec::new(),
                next,
            });
        }
    }
    while !live.is_empty() {
        // Record the tokens just sampled; retire finished samples.
        let mut still = Vec::with_capacity(live.len());
        for mut s in live {
            s.ids.push(s.next);
            let reason = if s.next == end_of_turn {
                Some(StopReason::Stop)
            } else if s.ids.len() >= cfg.max_new_tokens {
                Some(StopReason::Length)
            } else {
                None
            };
            match reason {
                Some(finish_reason) => done.push(Sample {
                    prompt_index: s.prompt_index,
                    sample_index: s.sample_index,
                    completion_ids: s.ids,
                    finish_reason,
                }),
                None => still.push(s),
            }
        }
        live = still;
        if live.is_empty() {
            break;
        }
        let mut batch = PackedBatch::default();
        for s in &live {
            batch.push_segment(&[s.next], s.cache.len(), None);
        }
        let mut caches: Vec<KvCache> = live
            .iter_mut()
            .map(|s| std::mem::take(&mut s.cache))
            .collect();
        let hidden = model.forward_cached(&batch, &mut caches)?;
        let logits = model.logits(&hidden)?;
        for (i, (s, cache)) in live.iter_mut().zip(caches).enumerate() {
            s.cache = cache;
            let row: Tensor = logits.get(i)?;
            s.next = s.processor.sample(&row)?;
        }
    }
    done.sort_by_key(|s| (s.prompt_index, s.sample_index));
    Ok(done)
}
