//! Laying scoring requests out as packed forward batches, with prefix sharing.
//!
//! A request has two or three contexts (student, teacher, control) followed by the same response.
//! With prefix sharing the longest common token prefix of the contexts becomes one segment and each
//! context's remainder plus the response becomes a child segment attending to it; without it each
//! context is a segment of its own. The final response token is never fed: nothing reads the
//! prediction it would make.

use super::{ScoreRequest, ScorerConfig};
use crate::model::PackedBatch;

/// Where one request's scoring rows ended up in a packed batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLayout {
    /// Index of the request in the caller's slice.
    pub request: usize,
    /// Packed row predicting response token 0 in each context; token `t` is that row + `t`.
    pub student_rows: usize,
    pub teacher_rows: usize,
    pub control_rows: Option<usize>,
}

/// One forward batch and the requests it carries.
#[derive(Debug, Clone, Default)]
pub struct Pack {
    pub batch: PackedBatch,
    pub layouts: Vec<RequestLayout>,
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

fn contexts<'a>(r: &'a ScoreRequest, cfg: &ScorerConfig) -> Vec<&'a [u32]> {
    let mut v = vec![r.prompt_ids.as_slice(), r.teacher_prompt_ids.as_slice()];
    if cfg.control {
        if let Some(c) = &r.control_prompt_ids {
            v.push(c.as_slice());
        }
    }
    v
}

/// Length of the prefix shared by all contexts that can be computed once: capped one short of the
/// shortest context so every scoring row lies in a branch.
pub fn shared_prefix_len(r: &ScoreRequest, cfg: &ScorerConfig) -> usize {
    if !cfg.prefix_sharing {
        return 0;
    }
    let ctx = contexts(r, cfg);
    let mut l = ctx[0].len();
    for c in &ctx[1..] {
        l = l.min(common_prefix(ctx[0], c));
    }
    let shortest = ctx.iter().map(|c| c.len()).min().unwrap_or(0);
    l.min(shortest.saturating_sub(1))
}

/// Tokens the request adds to a packed batch.
pub fn request_cost(r: &ScoreRequest, cfg: &ScorerConfig) -> usize {
    let ctx = contexts(r, cfg);
    let l = shared_prefix_len(r, cfg);
    let resp = r.completion_ids.len().saturating_sub(1);
    l + ctx.iter().map(|c| c.len() - l + resp).sum::<usize>()
}

fn push_request(pack: &mut Pack, index: usize, r: &ScoreRequest, cfg: &ScorerConfig) {
    let ctx = contexts(r, cfg);
    let l = shared_prefix_len(r, cfg);
    let resp = &r.completion_ids[..r.completion_ids.len().saturating_sub(1)];
    let parent = (l > 0).then(|| pack.batch.push_segment(&ctx[0][..l], 0, None));
    let mut rows = Vec::with_capacity(ctx.len());
    for c in &ctx {
        let mut tokens = Vec::with_capacity(c.len() - l + resp.len());
        tokens.extend_from_slice(&c[l..]);
        tokens.extend_from_slice(resp);
        let seg = pack.batch.push_segment(&tokens, l, parent);
        let start = pack.batch.segments[seg].start;
        rows.push(start + c.len() - 1 - l);
    }
    pack.layouts.push(RequestLayout {
        request: index,
        student_rows: rows[0],
        teacher_rows: rows[1],
        control_rows: rows.get(2).copied(),
    });
}

/// Packs requests, longest first, into batches of at most `cfg.token_budget` tokens (a request
/// larger than the budget gets a batch of its own). Deterministic for a given input order.
pub fn pack_requests(requests: &[ScoreRequest], cfg: &ScorerConfig) -> Vec<Pack> {
    let mut order: Vec<(usize, usize)> = requests
        .iter()
        .enumerate()
        .map(|(i, r)| (i, request_cost(r, cfg)))
        .collect();
    order.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut packs = Vec::new();
    let mut current = Pack::default();
    for (i, cost) in order {
        if !current.layouts.is_empty() && current.batch.len() + cost > cfg.token_budget {
            packs.push(std::mem::take(&mut current));
        }
        push_request(&mut current, i, &requests[i], cfg);
    }
    if !current.layouts.is_empty() {
        packs.push(current);
    }
    packs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(p: &[u32], t: &[u32], c: &[u32]) -> ScoreRequest {
        ScoreRequest {
            prompt_ids: p.to_vec(),
            teacher_prompt_ids: t.to_vec(),
            control_prompt_ids: Some(t[..2].iter().chain(&[99]).copied().collect()),
            completion_ids: c.to_vec(),
        }
    }

    #[test]
    fn shared_prefix_is_computed_once_and_rows_point_at_predictions() {
        let cfg = ScorerConfig::default();
        let r = req(&[1, 2, 3, 4], &[1, 2, 7, 8, 9], &[5, 6]);
        let packs = pack_requests(std::slice::from_ref(&r), &cfg);
        assert_eq!(packs.len(), 1);
        let b = &packs[0].batch;
        // prefix [1,2]; student [3,4,5]; teacher [7,8,9,5]; control [99,5]
        assert_eq!(b.tokens, vec![1, 2, 3, 4, 5, 7, 8, 9, 5, 99, 5]);
        assert_eq!(b.positions, vec![0, 1, 2, 3, 4, 2, 3, 4, 5, 2, 3]);
        let l = &packs[0].layouts[0];
        assert_eq!(b.tokens[l.student_rows], 4); // last prompt token predicts completion[0]
        assert_eq!(b.tokens[l.teacher_rows], 9);
        assert_eq!(b.tokens[l.control_rows.unwrap_or(0)], 99);
        assert_eq!(request_cost(&r, &cfg), b.len());
    }

    #[test]
    fn budget_splits_batches_longest_first() {
        let cfg = ScorerConfig {
            token_budget: 12,
            control: false,
            prefix_sharing: false,
            ..ScorerConfig::default()
        };
        let short = req(&[1, 2], &[1, 3], &[4]);
        let long = req(&[1, 2, 3, 4, 5], &[1, 2, 3, 4, 6], &[7, 8]);
        let packs = pack_requests(&[short.clone(), long, short], &cfg);
        let order: Vec<Vec<usize>> = packs
            .iter()
            .map(|p| p.layouts.iter().map(|l| l.request).collect())
            .collect();
        assert_eq!(order, vec![vec![1], vec![0, 2]]);
    }
}
