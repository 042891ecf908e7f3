//! Step 1, rollout: episodes without a logged response (demonstrations: SDFT is on-policy) get
//! `rollout.n` responses sampled from the student, the whole batch in one generation call; the
//! others pass through. Each episode's seed comes from the run seed and the episode's content
//! (the ingest dedup hash: kind, template, prompt, privileged context), so its samples are the
//! same whatever else is in its batch and wherever it is read: a resumed run, or a sharded task
//! that reads an episode another task's share repeats, samples the same rows (and finalize's
//! `sample_id` dedup then keeps one, as a single run's ingest dedup would).

use super::counts::{DropReason, StepCounts};
use crate::episode::Episode;
use crate::model::generate::{generate, GenerationConfig, GenerationPrompt, Sample};
use crate::model::LoadedModel;
use crate::record::FinishReason;
use crate::util::sha256_hex;

/// An episode with a response, and the response's exact ids when it was sampled here (a
/// rolled-out response is never re-encoded from its decoded text).
pub struct Candidate {
    /// The episode, its `completion` set.
    pub episode: Episode,
    /// The sampled ids (end-of-turn included when the sample stopped), for rollouts.
    pub sampled: Option<Vec<u32>>,
}

/// Rolls out every episode of `batch` that has no response; keeps the batch's order.
pub fn rollout_batch(
    m: &LoadedModel,
    batch: &[Episode],
    cfg: &GenerationConfig,
    counts: &mut StepCounts,
) -> Vec<Candidate> {
    // Per episode: its candidates, or `None` when its rollout failed.
    let mut slots: Vec<Option<Vec<Candidate>>> = Vec::with_capacity(batch.len());
    // The prompts to generate, with the slot each belongs to.
    let mut prompts: Vec<GenerationPrompt> = Vec::new();
    let mut owners: Vec<usize> = Vec::new();
    for (i, ep) in batch.iter().enumerate() {
        if ep.completion.is_some() {
            slots.push(Some(vec![Candidate {
                episode: ep.clone(),
                sampled: None,
            }]));
            continue;
        }
        slots.push(None);
        match rollout_prompt(m, ep, cfg) {
            Ok(p) => {
                prompts.push(p);
                owners.push(i);
            }
            Err(e) => failed(ep, &e),
        }
    }
    if !prompts.is_empty() {
        match generate(&m.transformer, &prompts, m.tokenizer.eot_id(), cfg) {
            Ok(samples) => {
                let mut per_prompt: Vec<Vec<Sample>> = vec![Vec::new(); prompts.len()];
                for s in samples {
                    if let Some(v) = per_prompt.get_mut(s.prompt_index) {
                        v.push(s);
                    }
                }
                for (slot, samples) in owners.iter().zip(per_prompt) {
                    let ep = &batch[*slot];
                    match candidates(m, ep, samples) {
                        Ok(c) => {
                            counts.rollout_prompts += 1;
                            counts.rollouts += c.len() as u64;
                            slots[*slot] = Some(c);
                        }
                        Err(e) => failed(ep, &e),
                    }
                }
            }
            Err(e) => {
                for slot in &owners {
                    failed(&batch[*slot], &e);
                }
            }
        }
    }
    let mut out = Vec::with_capacity(batch.len());
    for slot in slots {
        match slot {
            Some(c) => out.extend(c),
            None => counts.drop(DropReason::RolloutError),
        }
    }
    out
}

fn failed(ep: &Episode, e: &crate::error::Error) {
    tracing::warn!(uri = %crate::util::terminal_safe(&ep.provenance.source_uri), record = ep.provenance.source_record, "rollout failed: {}", crate::util::terminal_safe(&e.to_string()));
}

/// The episode's prompt ids and seed. The seed is derived from the run seed and the episode's
/// content hash; the prompt must leave room for `max_new_tokens` (checked here, so one long
/// prompt fails alone instead of failing its batch).
fn rollout_prompt(
    m: &LoadedModel,
    ep: &Episode,
    cfg: &GenerationConfig,
) -> crate::error::Result<GenerationPrompt> {
    let ids = m.tokenizer.encode_chat(&ep.prompt, true)?.ids;
    let max = m.transformer.max_positions();
    if ids.is_empty() || ids.len() + cfg.max_new_tokens > max {
        return Err(crate::error::Error::Request {
            id: None,
            message: format!(
                "prompt of {} tokens + max_new_tokens {} does not fit the model's {max} positions",
                ids.len(),
                cfg.max_new_tokens
            ),
        });
    }
    let key = format!(
        "{}\0{:032x}",
        cfg.seed,
        crate::episode::prefilter::content_hash(ep)
    );
    let seed = u64::from_str_radix(&sha256_hex(key.as_bytes())[..16], 16).unwrap_or(cfg.seed);
    Ok(GenerationPrompt { ids, seed })
}

/// Each sample as an episode (response text decoded for reading) with its exact sampled ids.
fn candidates(
    m: &LoadedModel,
    ep: &Episode,
    samples: Vec<Sample>,
) -> crate::error::Result<Vec<Candidate>> {
    let mut out = Vec::with_capacity(samples.len());
    for s in samples {
        let finish = FinishReason::from(s.finish_reason);
        let stopped = finish == FinishReason::Stop;
        let body = if stopped {
            &s.completion_ids[..s.completion_ids.len().saturating_sub(1)]
        } else {
            &s.completion_ids[..]
        };
        let text = m.tokenizer.decode(body)?;
        let mut e = ep.clone();
        e.is_on_policy = true;
        e.finish_reason = finish;
        if finish == FinishReason::Length {
            e.flags.push("stopped_by_length".into());
        }
        e.flags.push(format!("rollout_sample_{}", s.sample_index));
        e.completion = Some(text);
        out.push(Candidate {
            episode: e,
            sampled: Some(s.completion_ids),
        });
    }
    Ok(out)
}
