//! Laying scoring requests out as packed forward batches, sharing every common prefix.
//!
//! Each request contributes two or three token sequences (student, teacher and control context,
//! each followed by the same response; the control by only its first tokens), plus the feedback
//! probes of the PMI methods. With prefix sharing, all sequences of a batch are
//! inserted into a radix tree of tokens: a token run shared by several sequences becomes one
//! segment computed once, and the sequences branch from it. That shares the system prompt and
//! conversation history between the student and teacher of one episode, and between consecutive
//! episodes of one conversation (turn k's context contains turn k-1's whole exchange). Without
//! sharing, every sequence is a segment of its own. The final response token is never fed:
//! nothing reads the prediction it would make.
//!
//! Packing needs no padding, so batches are filled in input order (keeping a conversation's
//! episodes together) up to the token budget rather than sorted by length.

use super::{ScoreRequest, ScorerConfig};
use crate::model::PackedBatch;

/// Where one request's scoring rows ended up in a packed batch: for each response token `t`, the
/// packed row whose logits predict it, in each context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLayout {
    /// Index of the request in the caller's slice.
    pub request: usize,
    pub student_rows: Vec<usize>,
    pub teacher_rows: Vec<usize>,
    pub control_rows: Option<Vec<usize>>,
    /// Rows predicting the feedback's tokens in each probe context, when probed.
    pub followup_rows: Option<FollowupRows>,
}

/// Rows predicting each feedback token, per [`super::FollowupProbe`] context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowupRows {
    pub after_response: Vec<usize>,
    pub bare: Vec<usize>,
    pub after_history: Option<Vec<usize>>,
}

/// One fed sequence: context then target (minus its last token), and which rows to read.
struct Seq {
    tokens: Vec<u32>,
    ctx_len: usize,
    target_len: usize,
}

/// One forward batch and the requests it carries.
#[derive(Debug, Clone, Default)]
pub struct Pack {
    pub batch: PackedBatch,
    pub layouts: Vec<RequestLayout>,
}

/// The control context, when the request has one and the config scores it.
fn control_context<'a>(r: &'a ScoreRequest, cfg: &ScorerConfig) -> Option<&'a [u32]> {
    r.control_prompt_ids.as_deref().filter(|_| cfg.control)
}

fn seq(context: &[u32], target: &[u32]) -> Seq {
    let fed = &target[..target.len().saturating_sub(1)];
    let mut tokens = Vec::with_capacity(context.len() + fed.len());
    tokens.extend_from_slice(context);
    tokens.extend_from_slice(fed);
    Seq {
        tokens,
        ctx_len: context.len(),
        target_len: target.len(),
    }
}

/// The probe contexts a request is scored in (after_response, bare, [after_history]).
fn probes<'a>(r: &'a ScoreRequest, cfg: &ScorerConfig) -> Vec<&'a [u32]> {
    match &r.followup {
        Some(p)
            if cfg.followup
                && !p.target.is_empty()
                && !p.after_response.is_empty()
                && !p.bare.is_empty()
                && p.after_history.as_ref().is_none_or(|h| !h.is_empty()) =>
        {
            let mut v = vec![p.after_response.as_slice(), p.bare.as_slice()];
            if let Some(h) = &p.after_history {
                v.push(h.as_slice());
            }
            v
        }
        _ => Vec::new(),
    }
}

/// The sequences a request feeds: the student and teacher contexts followed by the response
/// minus its last token, the control context followed by the response's first
/// `cfg.control_tokens`, then each probe context followed by the feedback's first
/// `cfg.pmi_tokens` (each minus its last token).
fn sequences(r: &ScoreRequest, cfg: &ScorerConfig) -> Vec<Seq> {
    let y = &r.completion_ids;
    let mut v = vec![seq(&r.prompt_ids, y), seq(&r.teacher_prompt_ids, y)];
    if let Some(c) = control_context(r, cfg) {
        v.push(seq(c, &y[..cfg.control_len(y.len())]));
    }
    if let Some(p) = &r.followup {
        let f = &p.target[..cfg.pmi_len(p.target.len())];
        v.extend(probes(r, cfg).into_iter().map(|c| seq(c, f)));
    }
    v
}

/// A radix tree of token sequences; each node becomes one packed segment.
#[derive(Debug, Default)]
struct Trie {
    nodes: Vec<Node>,
    roots: Vec<usize>,
    tokens: usize,
}

#[derive(Debug)]
struct Node {
    tokens: Vec<u32>,
    /// Position of the node's first token in every sequence passing through it.
    start: usize,
    children: Vec<usize>,
}

impl Trie {
    fn children_of(&self, parent: Option<usize>) -> &[usize] {
        match parent {
            Some(p) => &self.nodes[p].children,
            None => &self.roots,
        }
    }

    /// The nodes `seq` runs through from the root, with how many of each node's tokens it
    /// matches (only the last may be matched partially).
    fn walk(&self, seq: &[u32]) -> Vec<(usize, usize)> {
        let mut path = Vec::new();
        let mut parent = None;
        let mut pos = 0;
        while pos < seq.len() {
            let Some(&c) = self
                .children_of(parent)
                .iter()
                .find(|&&c| self.nodes[c].tokens[0] == seq[pos])
            else {
                break;
            };
            let m = common_prefix(&self.nodes[c].tokens, &seq[pos..]);
            path.push((c, m));
            pos += m;
            if m < self.nodes[c].tokens.len() {
                break;
            }
            parent = Some(c);
        }
        path
    }

    /// Tokens of `seq` not yet in the tree (what inserting it would add).
    fn new_tokens(&self, seq: &[u32]) -> usize {
        seq.len() - self.walk(seq).iter().map(|&(_, m)| m).sum::<usize>()
    }

    fn insert(&mut self, seq: &[u32]) {
        let mut parent: Option<usize> = None;
        let mut pos = 0;
        while pos < seq.len() {
            let found = self
                .children_of(parent)
                .iter()
                .copied()
                .find(|&c| self.nodes[c].tokens[0] == seq[pos]);
            let Some(c) = found else {
                let id = self.nodes.len();
                self.nodes.push(Node {
                    tokens: seq[pos..].to_vec(),
                    start: pos,
                    children: Vec::new(),
                });
                match parent {
                    Some(p) => self.nodes[p].children.push(id),
                    None => self.roots.push(id),
                }
                self.tokens += seq.len() - pos;
                return;
            };
            let m = common_prefix(&self.nodes[c].tokens, &seq[pos..]);
            if m < self.nodes[c].tokens.len() {
                // Split `c` after its first m tokens; the tail keeps c's children.
                let tail_tokens = self.nodes[c].tokens.split_off(m);
                let tail = self.nodes.len();
                let moved = std::mem::take(&mut self.nodes[c].children);
                self.nodes.push(Node {
                    tokens: tail_tokens,
                    start: pos + m,
                    children: moved,
                });
                self.nodes[c].children.push(tail);
            }
            pos += m;
            parent = Some(c);
        }
    }

    /// Emits nodes depth-first (parents first) as segments; returns each node's segment index.
    fn emit(&self, batch: &mut PackedBatch) -> Vec<usize> {
        let mut seg_of = vec![usize::MAX; self.nodes.len()];
        let mut stack: Vec<(usize, Option<usize>)> =
            self.roots.iter().rev().map(|&r| (r, None)).collect();
        while let Some((n, parent_seg)) = stack.pop() {
            let node = &self.nodes[n];
            let seg = batch.push_segment(&node.tokens, node.start, parent_seg);
            seg_of[n] = seg;
            for &c in node.children.iter().rev() {
                stack.push((c, Some(seg)));
            }
        }
        seg_of
    }

    /// Packed row of every position of `seq` (which must have been inserted).
    fn rows(&self, seq: &[u32], seg_of: &[usize], batch: &PackedBatch) -> Vec<usize> {
        let mut rows = Vec::with_capacity(seq.len());
        for (node, matched) in self.walk(seq) {
            let start = batch.segments[seg_of[node]].start;
            rows.extend(start..start + matched);
        }
        rows
    }
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Tokens a request would add to an empty batch.
#[cfg(test)]
fn request_cost(r: &ScoreRequest, cfg: &ScorerConfig) -> usize {
    let mut t = Trie::default();
    for s in sequences(r, cfg) {
        if cfg.prefix_sharing {
            t.insert(&s.tokens);
        } else {
            t.tokens += s.tokens.len();
        }
    }
    t.tokens
}

impl RequestLayout {
    /// Builds a layout from the scoring rows of each sequence, in [`sequences`] order.
    fn from_sequences(
        request: usize,
        rows: Vec<Vec<usize>>,
        has_control: bool,
        probes: usize,
    ) -> Self {
        let mut it = rows.into_iter();
        let student_rows = it.next().unwrap_or_default();
        let teacher_rows = it.next().unwrap_or_default();
        let control_rows = if has_control { it.next() } else { None };
        let followup_rows = (probes >= 2).then(|| FollowupRows {
            after_response: it.next().unwrap_or_default(),
            bare: it.next().unwrap_or_default(),
            after_history: it.next(),
        });
        RequestLayout {
            request,
            student_rows,
            teacher_rows,
            control_rows,
            followup_rows,
        }
    }
}

fn build_pack(requests: &[ScoreRequest], members: &[usize], cfg: &ScorerConfig) -> Pack {
    let mut pack = Pack::default();
    let seqs: Vec<Vec<Seq>> = members
        .iter()
        .map(|&i| sequences(&requests[i], cfg))
        .collect();
    // Row of every fed position, per member and context.
    let positions: Vec<Vec<Vec<usize>>> = if cfg.prefix_sharing {
        let mut trie = Trie::default();
        for s in seqs.iter().flatten() {
            trie.insert(&s.tokens);
        }
        let seg_of = trie.emit(&mut pack.batch);
        seqs.iter()
            .map(|ss| {
                ss.iter()
                    .map(|s| trie.rows(&s.tokens, &seg_of, &pack.batch))
                    .collect()
            })
            .collect()
    } else {
        seqs.iter()
            .map(|ss| {
                ss.iter()
                    .map(|s| {
                        let seg = pack.batch.push_segment(&s.tokens, 0, None);
                        let start = pack.batch.segments[seg].start;
                        (start..start + s.tokens.len()).collect()
                    })
                    .collect()
            })
            .collect()
    };
    for ((&i, ss), rows) in members.iter().zip(&seqs).zip(positions) {
        // The last context token's row predicts target token 0.
        let scoring = ss
            .iter()
            .zip(rows)
            .map(|(s, r)| r[s.ctx_len - 1..s.ctx_len - 1 + s.target_len].to_vec())
            .collect();
        let r = &requests[i];
        let has_control = control_context(r, cfg).is_some();
        let probes = probes(r, cfg).len();
        pack.layouts.push(RequestLayout::from_sequences(
            i,
            scoring,
            has_control,
            probes,
        ));
    }
    pack
}

/// Packs requests in input order into batches of about `cfg.token_budget` tokens (a request
/// larger than the budget gets a batch of its own). Deterministic for a given input.
pub(crate) fn pack_requests(requests: &[ScoreRequest], cfg: &ScorerConfig) -> Vec<Pack> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut members: Vec<usize> = Vec::new();
    let mut trie = Trie::default();
    for (i, r) in requests.iter().enumerate() {
        let seqs = sequences(r, cfg);
        let cost: usize = if cfg.prefix_sharing {
            // An upper bound: the request's own sequences may also share with each other.
            seqs.iter().map(|s| trie.new_tokens(&s.tokens)).sum()
        } else {
            seqs.iter().map(|s| s.tokens.len()).sum()
        };
        if !members.is_empty() && trie.tokens + cost > cfg.token_budget {
            groups.push(std::mem::take(&mut members));
            trie = Trie::default();
        }
        for s in &seqs {
            if cfg.prefix_sharing {
                trie.insert(&s.tokens);
            } else {
                trie.tokens += s.tokens.len();
            }
        }
        members.push(i);
    }
    if !members.is_empty() {
        groups.push(members);
    }
    groups
        .iter()
        .map(|g| build_pack(requests, g, cfg))
        .collect()
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
            followup: None,
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
        // The row of the last context token predicts completion[0]; the next one completion[1].
        let toks = |rows: &[usize]| rows.iter().map(|&i| b.tokens[i]).collect::<Vec<_>>();
        assert_eq!(toks(&l.student_rows), vec![4, 5]);
        assert_eq!(toks(&l.teacher_rows), vec![9, 5]);
        assert_eq!(
            toks(l.control_rows.as_deref().unwrap_or_default()),
            vec![99, 5]
        );
        assert_eq!(request_cost(&r, &cfg), b.len());
    }

    #[test]
    fn control_and_probes_are_fed_only_their_windows() {
        let cfg = ScorerConfig {
            control_tokens: 2,
            followup: true,
            pmi_tokens: 3,
            ..ScorerConfig::default()
        };
        let mut r = req(&[1, 2, 3, 4], &[1, 2, 7, 8, 9], &[5, 6, 10, 11]);
        r.followup = Some(super::super::FollowupProbe {
            after_response: vec![1, 2, 3, 4, 5, 6, 10, 11, 40],
            after_history: None,
            bare: vec![1, 41],
            target: vec![50, 51, 52, 53, 54],
        });
        let packs = pack_requests(std::slice::from_ref(&r), &cfg);
        let b = &packs[0].batch;
        let l = &packs[0].layouts[0];
        let toks = |rows: &[usize]| rows.iter().map(|&i| b.tokens[i]).collect::<Vec<_>>();
        // Student and teacher predict all four response tokens; the control only the first two,
        // and the response's later tokens are never fed after the control context.
        assert_eq!(toks(&l.student_rows), vec![4, 5, 6, 10]);
        assert_eq!(toks(&l.teacher_rows), vec![9, 5, 6, 10]);
        assert_eq!(
            toks(l.control_rows.as_deref().unwrap_or_default()),
            vec![99, 5]
        );
        // The probes predict the feedback's first three tokens.
        let f = l.followup_rows.as_ref().expect("probed");
        assert_eq!(toks(&f.after_response), vec![40, 50, 51]);
        assert_eq!(toks(&f.bare), vec![41, 50, 51]);
        assert!(!b.tokens.contains(&52) && !b.tokens.contains(&53));
        // 0 means the whole response / feedback.
        let all = ScorerConfig {
            control_tokens: 0,
            pmi_tokens: 0,
            ..cfg
        };
        let l = &pack_requests(std::slice::from_ref(&r), &all)[0].layouts[0];
        assert_eq!(l.control_rows.as_ref().map(Vec::len), Some(4));
        assert_eq!(l.followup_rows.as_ref().map(|f| f.bare.len()), Some(5));
    }

    #[test]
    fn consecutive_turns_of_a_conversation_share_their_history() {
        let cfg = ScorerConfig {
            control: false,
            ..ScorerConfig::default()
        };
        // Turn 2's student context continues turn 1's student sequence.
        let t1 = req(&[1, 2, 3], &[1, 2, 3, 8], &[4, 5]);
        let t2 = req(&[1, 2, 3, 4, 5, 6], &[1, 2, 3, 4, 5, 6, 9], &[7, 2]);
        let packs = pack_requests(&[t1.clone(), t2.clone()], &cfg);
        assert_eq!(packs.len(), 1);
        let shared = packs[0].batch.len();
        let separate = request_cost(&t1, &cfg) + request_cost(&t2, &cfg);
        assert!(shared < separate, "{shared} vs {separate}");
        let b = &packs[0].batch;
        let l2 = &packs[0].layouts[1];
        let toks = |rows: &[usize]| rows.iter().map(|&i| b.tokens[i]).collect::<Vec<_>>();
        assert_eq!(toks(&l2.student_rows), vec![6, 7]);
        assert_eq!(toks(&l2.teacher_rows), vec![9, 7]);
        // Positions along every path are contiguous 0..len.
        for (rows, ctx) in [(&l2.student_rows, 6usize), (&l2.teacher_rows, 7)] {
            assert_eq!(b.positions[rows[0]] as usize, ctx - 1);
        }
    }

    #[test]
    fn budget_splits_batches_in_input_order() {
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
        assert_eq!(order, vec![vec![0], vec![1], vec![2]]);
    }
}
