//! Step 2, prepare: the teacher template, canonical tokenization of the three contexts
//! (student, teacher, control), the feedback probes of `pmi` runs, and the context fit.

use std::collections::HashMap;

use super::counts::{DropReason, StepCounts};
use super::rollout::Candidate;
use crate::episode::Episode;
use crate::model::LoadedModel;
use crate::score::prepare::{prepare, prepare_episode, try_followup_probe, Prepared, Response};
use crate::template::{TeacherTemplate, TemplateDef};

/// An episode ready for the forward pass.
pub struct Ready {
    /// The episode (its response set).
    pub episode: Episode,
    /// Its token ids and scoring request.
    pub prepared: Prepared,
}

/// The prepare step: resolves each template id once per run.
pub struct PrepareStep<'m> {
    model: &'m LoadedModel,
    custom: Vec<TemplateDef>,
    templates: HashMap<String, Option<TeacherTemplate>>,
    /// Whether the run's relevance method needs the feedback probes.
    probes: bool,
}

impl<'m> PrepareStep<'m> {
    /// A prepare step for `model`, with the config's custom templates.
    pub fn new(model: &'m LoadedModel, custom: Vec<TemplateDef>, probes: bool) -> Self {
        PrepareStep {
            model,
            custom,
            templates: HashMap::new(),
            probes,
        }
    }

    /// Prepares every candidate; drops (and counts) those that cannot be scored.
    pub fn apply(&mut self, candidates: Vec<Candidate>, counts: &mut StepCounts) -> Vec<Ready> {
        let m = self.model;
        let max_positions = m.transformer.max_positions();
        let mut out = Vec::with_capacity(candidates.len());
        for Candidate {
            episode: ep,
            sampled,
        } in candidates
        {
            let custom = &self.custom;
            let tpl = self
                .templates
                .entry(ep.teacher_template.clone())
                .or_insert_with(|| crate::template::resolve(&ep.teacher_template, custom).ok())
                .clone();
            let outcome = match &sampled {
                // Rollouts keep the sampled ids exactly; only logged responses are encoded.
                Some(ids) => prepare_sampled(m, &ep, tpl.as_ref(), ids.clone()),
                None => prepare_episode(&m.tokenizer, &ep, tpl.as_ref()),
            };
            let mut p = match outcome {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(uri = %crate::util::terminal_safe(&ep.provenance.source_uri), record = ep.provenance.source_record, "cannot tokenize episode: {}", crate::util::terminal_safe(&e.to_string()));
                    counts.drop(match e {
                        crate::error::Error::TemplateMismatch(_) => DropReason::TemplateMismatch,
                        _ => DropReason::TokenizationError,
                    });
                    continue;
                }
            };
            // The feedback probes, in runs with a `pmi` method (then all three PMI columns are
            // recorded). An episode whose probe cannot be built or does not fit the model's
            // context is dropped with its reason: kept, it would pass the filter unfiltered.
            if self.probes && sampled.is_none() {
                let response = ep.completion.as_deref().unwrap_or_default();
                match try_followup_probe(&m.tokenizer, &ep, response, true) {
                    Ok(probe) => p.request.followup = probe,
                    Err(e) => {
                        tracing::warn!(uri = %crate::util::terminal_safe(&ep.provenance.source_uri), record = ep.provenance.source_record, "cannot build the feedback probe: {}", crate::util::terminal_safe(&e.to_string()));
                        counts.drop(DropReason::ProbeUnavailable);
                        continue;
                    }
                }
            }
            let r = &p.request;
            let probe = r.followup.as_ref().map_or(0, |f| {
                let context = f
                    .after_response
                    .len()
                    .max(f.bare.len())
                    .max(f.after_history.as_ref().map_or(0, Vec::len));
                context + f.target.len()
            });
            let contexts = r
                .prompt_ids
                .len()
                .max(r.teacher_prompt_ids.len())
                .max(r.control_prompt_ids.as_ref().map_or(0, Vec::len));
            let longest = (contexts + r.completion_ids.len()).max(probe);
            if longest > max_positions {
                counts.drop(DropReason::ExceedsModelContext);
            } else if r.completion_ids.is_empty() {
                counts.drop(DropReason::EmptyCompletion);
            } else {
                out.push(Ready {
                    episode: ep,
                    prepared: p,
                });
            }
        }
        out
    }
}

/// Prepares a rolled-out episode from its sampled ids (never re-encoded from text).
fn prepare_sampled(
    m: &LoadedModel,
    ep: &Episode,
    template: Option<&TeacherTemplate>,
    ids: Vec<u32>,
) -> crate::error::Result<Prepared> {
    let control = match template {
        Some(t) => Some(
            t.apply_control(&ep.prompt)
                .map_err(|e| crate::error::Error::Template(e.to_string()))?,
        ),
        None => None,
    };
    prepare(
        &m.tokenizer,
        &ep.prompt,
        &ep.teacher_prompt,
        control.as_deref(),
        Response::Sampled(ids),
    )
}
