//! Sampling responses from the student (on-policy rollouts) with the same model code the scorer
//! uses: a prompt is prefilled once, its KV cache is cloned for each of the `n` samples, and all
//! live samples advance together, one token per step, as one packed batch.
//!
//! Every prompt carries its own seed and every sample its own random stream, seeded from (the
//! prompt's seed, sample index), so a sample does not depend on which other prompts or samples
//! share its batch, and a resumed run reproduces it. Many prompts are generated together: each
//! is prefilled once, then all live samples of all prompts advance one token per step as one
//! packed batch. Sampled ids are returned as they are: never decoded and re-encoded.

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
    /// The run seed: every prompt's seed is derived from it ([`GenerationPrompt::seeded`], or
    /// the pipeline's provenance-based seeds).
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

impl From<StopReason> for crate::record::FinishReason {
    /// A sample's stop reason is the row's `finish_reason`, never a guess from flags.
    fn from(r: StopReason) -> Self {
        match r {
            StopReason::Stop => crate::record::FinishReason::Stop,
            StopReason::Length => crate::record::FinishReason::Length,
        }
    }
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

/// Golden-ratio step between the seeds of consecutive prompts of [`GenerationPrompt::seeded`].
const PROMPT_STEP: u64 = 0x9E37_79B9_7F4A_7C15;

fn sample_seed(prompt_seed: u64, sample: usize) -> u64 {
    // SplitMix64 over the prompt's seed and the sample index: independent, reproducible streams.
    let mut z = prompt_seed.wrapping_add((sample as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One prompt to continue, with the seed of its samples' random streams (the pipeline derives
/// it from the run seed and the episode's provenance, so a sample is the same whatever else is
/// in its batch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationPrompt {
    /// The prompt's token ids (chat template applied, generation prompt included).
    pub ids: Vec<u32>,
    /// The seed of this prompt's samples.
    pub seed: u64,
}

impl GenerationPrompt {
    /// Prompts seeded from one run seed: prompt `i` gets `seed + i × golden ratio`, so each has
    /// its own streams.
    pub fn seeded(prompts: &[Vec<u32>], seed: u64) -> Vec<GenerationPrompt> {
        prompts
            .iter()
            .enumerate()
            .map(|(i, ids)| GenerationPrompt {
                ids: ids.clone(),
                seed: seed.wrapping_add((i as u64).wrapping_mul(PROMPT_STEP)),
            })
            .collect()
    }
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
/// `cfg.seed` is not used: each prompt carries its seed.
pub fn generate(
    model: &Transformer,
    prompts: &[GenerationPrompt],
    end_of_turn: u32,
    cfg: &GenerationConfig,
) -> Result<Vec<Sample>> {
    let mut done: Vec<Sample> = Vec::new();
    let mut live: Vec<Live> = Vec::new();
    for (pi, GenerationPrompt { ids: prompt, seed }) in prompts.iter().enumerate() {
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
                LogitsProcessor::from_sampling(sample_seed(*seed, si), sampling(cfg));
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
