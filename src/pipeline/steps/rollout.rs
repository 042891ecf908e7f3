//! Step 1, rollout: episodes without a logged response (demonstrations: SDFT is on-policy) get
//! `rollout.n` responses sampled from the student; the others pass through.

use super::counts::{DropReason, StepCounts};
use crate::episode::Episode;
use crate::model::generate::{generate, GenerationConfig, StopReason};
use crate::model::LoadedModel;
use crate::util::sha256_hex;

/// An episode with a response, and the response's exact ids when it was sampled here (a
/// rolled-out response is never re-encoded from its decoded text).
pub struct Candidate {
    /// The episode, its `completion` set.
    pub episode: Episode,
    /// The sampled ids (end-of-turn included when the sample stopped), for rollouts.
    pub sampled: Option<Vec<u32>>,
}

/// Rolls out every episode of `batch` that has no response.
pub fn rollout_batch(
    m: &LoadedModel,
    batch: &[Episode],
    cfg: &GenerationConfig,
    counts: &mut StepCounts,
) -> Vec<Candidate> {
    let mut out = Vec::with_capacity(batch.len());
    for ep in batch {
        if ep.completion.is_some() {
            out.push(Candidate {
                episode: ep.clone(),
                sampled: None,
            });
            continue;
        }
        match rollout(m, ep, cfg) {
            Ok(samples) => {
                counts.rollout_prompts += 1;
                counts.rollouts += samples.len() as u64;
                out.extend(samples);
            }
            Err(e) => {
                tracing::warn!(uri = %crate::util::terminal_safe(&ep.provenance.source_uri), record = ep.provenance.source_record, "rollout failed: {}", crate::util::terminal_safe(&e.to_string()));
                counts.drop(DropReason::RolloutError);
            }
        }
    }
    out
}

/// Samples `cfg.n` student responses for an episode without one. The seed is derived from the
/// run seed and the episode's provenance, so a resumed run samples the same tokens whatever else
/// is in its batch. Returns each sample as an episode (response text decoded for reading) with
/// its exact sampled ids.
fn rollout(
    m: &LoadedModel,
    ep: &Episode,
    cfg: &GenerationConfig,
) -> crate::error::Result<Vec<Candidate>> {
    let prompt = m.tokenizer.encode_chat(&ep.prompt, true)?.ids;
    let p = &ep.provenance;
    let key = format!(
        "{}\0{}\0{}\0{}",
        cfg.seed, p.source_uri, p.source_record, p.turn_index
    );
    let seed = u64::from_str_radix(&sha256_hex(key.as_bytes())[..16], 16).unwrap_or(cfg.seed);
    let run_cfg = GenerationConfig {
        seed,
        ..cfg.clone()
    };
    let eot = m.tokenizer.eot_id();
    let samples = generate(&m.transformer, &[prompt], eot, &run_cfg)?;
    let mut out = Vec::with_capacity(samples.len());
    for s in samples {
        let stopped = s.finish_reason == StopReason::Stop;
        let body = if stopped {
            &s.completion_ids[..s.completion_ids.len().saturating_sub(1)]
        } else {
            &s.completion_ids[..]
        };
        let text = m.tokenizer.decode(body)?;
        let mut e = ep.clone();
        e.is_on_policy = true;
        e.ends_turn = stopped;
        if !stopped {
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
