//! Episodes: what one scored row is made of (student messages, privileged context, response).

use serde::{Deserialize, Serialize};

/// One chat message (TRL-compatible `{role, content}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}
