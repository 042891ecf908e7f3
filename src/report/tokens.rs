//! Per-token display texts and the per-token view of a row that the HTML heatmap and the
//! terminal `inspect` both draw.

use serde::Serialize;

use crate::sink::OutputRow;
use crate::tokenize::Tokenizer;

/// How many bytes a byte-level piece can leave pending before a character completes (UTF-8
/// needs at most 4 bytes, so a longer pending run is malformed and is shown as it is).
const MAX_PENDING_TOKENS: usize = 4;

/// Display text of each id, one entry per id. A character split across several byte-level
/// tokens is shown on the token that completes it (the earlier ones show as empty), so that
/// concatenating the pieces gives the decoded text and no token shows a replacement character.
/// Without a tokenizer the ids themselves are shown.
pub fn token_pieces(tok: Option<&Tokenizer>, ids: &[u32]) -> Vec<String> {
    let Some(tok) = tok else {
        return ids.iter().map(|id| format!("#{id}")).collect();
    };
    let mut out = Vec::with_capacity(ids.len());
    let mut start = 0;
    for i in 0..ids.len() {
        let text = tok
            .decode(&ids[start..=i])
            .unwrap_or_else(|_| format!("#{}", ids[i]));
        let incomplete = text.ends_with('\u{FFFD}');
        if incomplete && i + 1 < ids.len() && i + 1 - start < MAX_PENDING_TOKENS {
            out.push(String::new());
            continue;
        }
        out.push(text);
        start = i + 1;
    }
    out
}

/// One response token as the views show it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TokenView {
    /// Display text.
    pub text: String,
    /// Token id.
    pub id: u32,
    /// log p_teacher − log p_student.
    pub advantage: f32,
    /// log p_student(y_t).
    pub student: f32,
    /// log p_teacher(y_t).
    pub teacher: f32,
    /// 1 where a trainer learns from this token.
    pub mask: u8,
    /// The teacher's most likely tokens here: (text, log-prob).
    pub alternatives: Vec<(String, f32)>,
}

/// The per-token view of a row, with the teacher's first `alternatives` top-k entries.
pub fn token_views(
    tok: Option<&Tokenizer>,
    row: &OutputRow,
    alternatives: usize,
) -> Vec<TokenView> {
    let ids: Vec<u32> = row
        .completion_ids
        .iter()
        .map(|&i| i.max(0) as u32)
        .collect();
    let pieces = token_pieces(tok, &ids);
    let k = row.k.max(1);
    let show = alternatives.min(row.k);
    pieces
        .into_iter()
        .enumerate()
        .map(|(t, text)| {
            let alts = (0..show)
                .filter_map(|j| {
                    let id = *row.teacher_topk_ids.get(t * k + j)?;
                    let lp = *row.teacher_topk_logprobs.get(t * k + j)?;
                    let id = id.max(0) as u32;
                    Some((
                        token_pieces(tok, &[id])
                            .into_iter()
                            .next()
                            .unwrap_or_default(),
                        lp,
                    ))
                })
                .collect();
            TokenView {
                text,
                id: ids[t],
                advantage: row.advantages.get(t).copied().unwrap_or(0.0),
                student: row.student_logprobs.get(t).copied().unwrap_or(0.0),
                teacher: row.teacher_logprobs.get(t).copied().unwrap_or(0.0),
                mask: row.loss_mask.get(t).copied().unwrap_or(1),
                alternatives: alts,
            }
        })
        .collect()
}
