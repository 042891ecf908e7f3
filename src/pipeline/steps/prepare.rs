//! Step 2, prepare: the teacher template, canonical tokenization of the three contexts
//! (student, teacher, control), the feedback probes of `pmi` runs, and the context fit.

use std::collections::HashMap;

use rayon::prelude::*;

use super::counts::{DropReason, StepCounts};
use super::rollout::Candidate;
use crate::episode::Episode;
use crate::model::LoadedModel;
use crate::score::contexts::{prepare, prepare_episode, try_followup_probe, Prepared, Response};
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
    /// Which feedback probes the run's relevance method needs.
    probes: Probes,
}

/// The feedback probes a run scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probes {
    /// The probes after the response and after the preamble (every PMI method).
    pub feedback: bool,
    /// Also the history-only probe (`pmi_answer` only).
    pub history: bool,
}

impl Probes {
    /// What `method` reads.
    pub fn for_method(method: crate::record::RelevanceMethod) -> Self {
        Probes {
            feedback: method.needs_followup(),
            history: method.needs_history_probe(),
        }
    }
}

impl<'m> PrepareStep<'m> {
    /// A prepare step for `model`, with the config's custom templates.
    pub fn new(model: &'m LoadedModel, custom: Vec<TemplateDef>, probes: Probes) -> Self {
        PrepareStep {
            model,
            custom,
            templates: HashMap::new(),
            probes,
        }
    }

    /// Prepares every candidate; drops (and counts) those that cannot be scored. Candidates
    /// are tokenized in parallel (on a GPU the host's cores would otherwise idle between
    /// forwards); drops are counted and logged in input order, so runs stay deterministic.
    pub fn apply(&mut self, candidates: Vec<Candidate>, counts: &mut StepCounts) -> Vec<Ready> {
        for c in &candidates {
            let custom = &self.custom;
            self.templates
                .entry(c.episode.teacher_template.clone())
                .or_insert_with(|| {
                    crate::template::resolve(&c.episode.teacher_template, custom).ok()
                });
        }
        let (m, templates, probes) = (self.model, &self.templates, self.probes);
        let outcomes: Vec<Outcome> = candidates
            .into_par_iter()
            .map(|c| {
                let tpl = templates
                    .get(&c.episode.teacher_template)
                    .and_then(Option::as_ref);
                prepare_one(m, c, tpl, probes)
            })
            .collect();
        let mut out = Vec::with_capacity(outcomes.len());
        for o in outcomes {
            match o {
                Outcome::Ready(r) => out.push(*r),
                Outcome::Dropped { reason, warning } => {
                    if let Some((ep, what, e)) = warning {
                        tracing::warn!(uri = %crate::util::terminal_safe(&ep.provenance.source_uri), record = ep.provenance.source_record, "{what}: {}", crate::util::terminal_safe(&e));
                    }
                    counts.drop(reason);
                }
            }
        }
        out
    }
}

/// What preparing one candidate gave: an episode ready to score, or a drop with its reason
/// (and the warning to log, for errors).
enum Outcome {
    Ready(Box<Ready>),
    Dropped {
        reason: DropReason,
        warning: Option<(Box<Episode>, &'static str, String)>,
    },
}

fn prepare_one(
    m: &LoadedModel,
    Candidate {
        episode: ep,
        sampled,
    }: Candidate,
    tpl: Option<&TeacherTemplate>,
    probes: Probes,
) -> Outcome {
    let outcome = match &sampled {
        // Rollouts keep the sampled ids exactly; only logged responses are encoded.
        Some(ids) => prepare_sampled(m, &ep, tpl, ids.clone()),
        None => prepare_episode(&m.tokenizer, &ep, tpl),
    };
    let mut p = match outcome {
        Ok(p) => p,
        Err(e) => {
            let reason = match e {
                crate::error::Error::TemplateMismatch(_) => DropReason::TemplateMismatch,
                _ => DropReason::TokenizationError,
            };
            return Outcome::Dropped {
                reason,
                warning: Some((Box::new(ep), "cannot tokenize episode", e.to_string())),
            };
        }
    };
    // The feedback probes, in runs with a `pmi` method (then `pmi` and `pmi_mean` are
    // recorded, and `pmi_answer` in `pmi_answer` runs). An episode whose probe cannot be
    // built or does not fit the model's context is dropped with its reason: kept, it would
    // pass the filter unfiltered.
    if probes.feedback && sampled.is_none() {
        let response = ep.completion.as_deref().unwrap_or_default();
        match try_followup_probe(&m.tokenizer, &ep, response, probes.history) {
            Ok(probe) => p.request.followup = probe,
            Err(e) => {
                return Outcome::Dropped {
                    reason: DropReason::ProbeUnavailable,
                    warning: Some((
                        Box::new(ep),
                        "cannot build the feedback probe",
                        e.to_string(),
                    )),
                };
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
    let reason = if longest > m.transformer.max_positions() {
        DropReason::ExceedsModelContext
    } else if r.completion_ids.is_empty() {
        DropReason::EmptyCompletion
    } else {
        return Outcome::Ready(Box::new(Ready {
            episode: ep,
            prepared: p,
        }));
    };
    Outcome::Dropped {
        reason,
        warning: None,
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
