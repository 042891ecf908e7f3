//! Episodes: (student messages, privileged context, response, provenance), built from records.
//!
//! An [`Episode`] is what the scorer consumes: the student prompt, the teacher prompt (a
//! [`crate::template::TeacherTemplate`] applied to it), the logged response (or `None` when the
//! student must roll one out) and where it all came from. [`build::EpisodeBuilder`] applies the
//! extraction rules of each input kind, [`prefilter::Prefilters`] the configurable filters,
//! and [`stream::ingest`] wires readers → episodes with quarantine and reconciled counts.

pub mod build;
pub mod config;
pub mod pii;
pub mod prefilter;
pub mod stats;
pub mod stream;

use serde::{Deserialize, Serialize};

pub use build::{EpisodeBuilder, RecordFilter, Rejection};
pub use config::{
    EpisodeConfig, LeadingAssistantPolicy, Prefilter, RolePolicy, SdpoContext, TemplateChoice,
};
pub use prefilter::{ApproxTokenCounter, EpisodeFilter, Prefilters, TokenCounter};
pub use stats::IngestStats;
pub use stream::{ingest, ingest_files, EpisodeStream, IngestOptions};

// The shared record types live in a leaf module; episode paths keep working.
pub use crate::record::{
    last_user, FinishReason, Message, Method, PrivilegedContext, Provenance, SourceFormat,
    SourceKind, UnknownFormat,
};

/// One unit of scoring: a student context, a teacher context and a response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Episode {
    /// Input kind.
    pub source_kind: SourceKind,
    /// Input format.
    pub source_format: SourceFormat,
    /// Distillation method.
    pub method: Method,
    /// Where it came from.
    pub provenance: Provenance,
    /// Student conversation; ends with a user message.
    pub prompt: Vec<Message>,
    /// Teacher-only context.
    pub privileged: PrivilegedContext,
    /// Template id.
    pub teacher_template: String,
    /// Template applied to `prompt`.
    pub teacher_prompt: Vec<Message>,
    /// Logged response; `None` means it must be rolled out from the student (demonstrations).
    pub completion: Option<String>,
    /// The logged response's reasoning when the log keeps it apart from the content
    /// (`reasoning_content`); the chat template decides whether it is part of the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
    /// How the response ended: `Stop` (append the end-of-turn token when scoring), `Length`
    /// (cut by a length limit, in the log or in rollout) or `Unknown`.
    pub finish_reason: FinishReason,
    /// The response is (or will be) sampled from this very model.
    pub is_on_policy: bool,
    /// Cheap annotations, e.g. `ack_only_followup`, `merged_turns`, `privileged_truncated`.
    pub flags: Vec<String>,
}

impl Episode {
    /// Whether the response ended normally, so its end-of-turn token is scored.
    pub fn ends_turn(&self) -> bool {
        self.finish_reason == FinishReason::Stop
    }

    /// Whether a flag is set.
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }
}
