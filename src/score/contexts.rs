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

/// The response an episode is scored on.
#[derive(Debug, Clone)]
pub enum Response<'a> {
    /// Token ids sampled from the student (rollouts): kept exactly, never re-encoded.
    Sampled(Vec<u32>),
    /// A logged assistant message, encoded as the model's chat template renders it after the
    /// prompt ([`Tokenizer::completion_after`]); `ends_turn` keeps the end-of-turn token.
    Logged {
        /// The assistant message (content and any separate reasoning).
        message: &'a Message,
        /// Whether the turn ended normally.
        ends_turn: bool,
    },
}

/// Encodes the contexts and the response. A logged response must render to the same tokens
/// after the student's and the teacher's contexts (the template's rendering of the whole
/// conversation is the contract); otherwise the episode is refused.
pub fn prepare(
    tok: &Tokenizer,
    prompt: &[Message],
    teacher_prompt: &[Message],
    control_prompt: Option<&[Message]>,
    response: Response<'_>,
) -> Result<Prepared> {
    let student = tok.encode_chat(prompt, true)?;
    let teacher = tok.encode_chat(teacher_prompt, true)?;
    let control = match control_prompt {
        Some(c) => Some(tok.encode_chat(c, true)?.ids),
        None => None,
    };
    let completion_ids = match response {
        Response::Sampled(ids) => ids,
        Response::Logged { message, ends_turn } => {
            let ids = tok.completion_after(&student.ids, prompt, message, ends_turn)?;
            let after_teacher =
                tok.completion_after(&teacher.ids, teacher_prompt, message, ends_turn)?;
            if after_teacher != ids {
                return Err(Error::TemplateMismatch(
                    "the chat template renders the response differently after the teacher's \
                     context than after the student's"
                        .into(),
                ));
            }
            ids
        }
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

/// The assistant message of an episode's logged response.
pub fn response_message(episode: &Episode, completion: &str) -> Message {
    Message {
        role: "assistant".into(),
        content: completion.into(),
        reasoning: episode.reasoning.as_deref().map(Into::into),
    }
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
    let message = response_message(episode, completion);
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
        Response::Logged {
            message: &message,
            ends_turn: episode.ends_turn(),
        },
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
    try_followup_probe(tok, episode, response, with_history)
        .ok()
        .flatten()
}

/// [`followup_probe`] that tells apart "no probe applies" (`Ok(None)`: a demonstration, no
/// feedback) from "the probe cannot be built" (`Err`: the template refuses the context), so a
/// run can drop the episode with a reason instead of keeping it unfiltered.
pub fn try_followup_probe(
    tok: &Tokenizer,
    episode: &Episode,
    response: &str,
    with_history: bool,
) -> Result<Option<FollowupProbe>> {
    if episode.source_kind == SourceKind::Demonstration {
        return Ok(None);
    }
    let feedback = episode.privileged.text.trim();
    if feedback.is_empty() {
        return Ok(None);
    }
    let turn = |role: &str, text: &str| Message::new(role, text);
    let mut after = episode.prompt.clone();
    after.push(response_message(episode, response));
    after.push(turn("user", feedback));
    // Some templates refuse two user turns in a row; `pmi_answer` is then not available.
    let after_history = with_history
        .then(|| {
            let mut history = episode.prompt.clone();
            history.push(turn("user", feedback));
            tok.encode_chat_before_last(&history).ok()
        })
        .flatten();
    Ok(Some(FollowupProbe {
        after_response: tok.encode_chat_before_last(&after)?,
        after_history,
        bare: tok.encode_chat_before_last(&[turn("user", feedback)])?,
        target: tok.encode_text(feedback)?,
    }))
}
