//! From messages to token streams: the canonical encoding of an episode's student, teacher and
//! control contexts plus its response, ready for the scorer.

use crate::episode::{Episode, Message, SourceKind};
use crate::error::{Error, Result};
use crate::template::TeacherTemplate;
use crate::tokenize::Tokenizer;

use super::{FollowupProbe, ScoreRequest};

/// A scoring request plus the rendered texts it was built from (kept for output rows).
#[derive(Debug, Clone)]
pub struct Prepared {
    pub request: ScoreRequest,
    pub rendered_prompt: String,
    pub rendered_teacher_prompt: String,
}

/// Encodes the contexts and the response. `completion_ids` must come from the engine that
/// produced the response or from [`Tokenizer::encode_completion`]; they are never re-derived.
pub fn prepare(
    tok: &Tokenizer,
    prompt: &[Message],
    teacher_prompt: &[Message],
    control_prompt: Option<&[Message]>,
    completion_ids: Vec<u32>,
) -> Result<Prepared> {
    let student = tok.encode_chat(prompt, true)?;
    let teacher = tok.encode_chat(teacher_prompt, true)?;
    let control = match control_prompt {
        Some(c) => Some(tok.encode_chat(c, true)?.ids),
        None => None,
    };
    Ok(Prepared {
        request: ScoreRequest {
            prompt_ids: student.ids,
            teacher_prompt_ids: teacher.ids,
            control_prompt_ids: control,
            completion_ids,
            followup: None,
        },
        rendered_prompt: student.rendered,
        rendered_teacher_prompt: teacher.rendered,
    })
}

/// Prepares an episode with a logged response; `template` builds the control context.
pub fn prepare_episode(
    tok: &Tokenizer,
    episode: &Episode,
    template: Option<&TeacherTemplate>,
) -> Result<Prepared> {
    let completion = episode
        .completion
        .as_deref()
        .ok_or_else(|| Error::Request {
            id: episode.provenance.conversation_id.clone(),
            message: "episode has no response yet (it needs a rollout)".into(),
        })?;
    let completion_ids = tok.encode_completion(completion, episode.ends_turn())?;
    let control = match template {
        Some(t) => Some(
            t.apply_control(&episode.prompt)
                .map_err(|e| Error::Template(e.to_string()))?,
        ),
        None => None,
    };
    prepare(
        tok,
        &episode.prompt,
        &episode.teacher_prompt,
        control.as_deref(),
        completion_ids,
    )
}

/// The feedback scored as the next user turn (the PMI relevance methods): chat-log follow-ups,
/// hints and unit-test output are each what the user (or the environment) said after the
/// response. Demonstrations get none: a demonstration is not a reaction to the sampled response.
/// `None` too when the template cannot render a context (the PMI columns are then null).
/// The history-only context (`pmi_answer`) is built only `with_history`.
pub fn followup_probe(
    tok: &Tokenizer,
    episode: &Episode,
    response: &str,
    with_history: bool,
) -> Option<FollowupProbe> {
    if episode.source_kind == SourceKind::Demonstration {
        return None;
    }
    let feedback = episode.privileged.text.trim();
    if feedback.is_empty() {
        return None;
    }
    let turn = |role: &str, text: &str| Message {
        role: role.into(),
        content: text.into(),
    };
    let mut after = episode.prompt.clone();
    after.push(turn("assistant", response));
    after.push(turn("user", feedback));
    // Some templates refuse two user turns in a row; `pmi_answer` is then not available.
    let after_history = with_history
        .then(|| {
            let mut history = episode.prompt.clone();
            history.push(turn("user", feedback));
            tok.encode_chat_before_last(&history).ok()
        })
        .flatten();
    Some(FollowupProbe {
        after_response: tok.encode_chat_before_last(&after).ok()?,
        after_history,
        bare: tok
            .encode_chat_before_last(&[turn("user", feedback)])
            .ok()?,
        target: tok.encode_text(feedback).ok()?,
    })
}
