//! One dataset row as Axolotl's knowledge-distillation plugin reads it (`axolotl.integrations.kd`,
//! pre-tokenized, `skip_prepare_dataset: true`).
//!
//! Axolotl pairs row `j` of `target_*` with the student's hidden state at position `j` and does
//! not shift it (only the cross-entropy labels are shifted), so row `j` must describe the
//! distribution over `input_ids[j + 1]`. With the student sequence `prompt_ids ++
//! completion_ids` (length `P + T`), completion token `t` is predicted at position `P - 1 + t`:
//! rows `P - 1 .. P + T - 1` carry the teacher's top-k, every other row (the prompt's first
//! `P - 1` positions and the last position, which predicts nothing) is padding with mask 0, as
//! Axolotl's own collator pads (id 0, log-prob -1e9). docs/CONTRACT.md has a worked example.

use std::sync::Arc;

use arrow_array::{ArrayRef, Float32Array, Int32Array, Int8Array, ListArray, RecordBatch};
use arrow_buffer::OffsetBuffer;
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use super::ExportError;
use crate::sink::OutputRow;

/// The label of a position the loss ignores (PyTorch's `ignore_index`).
pub const IGNORE_INDEX: i32 = -100;

/// The log-prob of a padding entry, as Axolotl's collator pads missing rows.
pub const PAD_LOGPROB: f32 = -1e9;

/// Whose top-k the targets name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Support {
    /// The teacher's top-K (`teacher_topk_ids` / `teacher_topk_logprobs`): forward KL on what
    /// the teacher finds likely.
    Teacher,
    /// The student's top-K_s at scoring time with the teacher's log-probs there
    /// (`student_topk_ids` / `teacher_logprobs_at_student_topk`): what the student would say,
    /// judged by the teacher.
    Student,
}

impl Support {
    /// The name used on the command line and in the export manifest.
    pub fn as_str(self) -> &'static str {
        match self {
            Support::Teacher => "teacher",
            Support::Student => "student",
        }
    }
}

/// What to do with a row whose student sequence is longer than `max_len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Overflow {
    /// Leave the row out (counted, listed in `skipped.jsonl`).
    Refuse,
    /// Keep the first `max_len` tokens (the response is cut; counted).
    Truncate,
}

/// How rows are turned into Axolotl rows.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AxolotlOptions {
    /// Whose top-k the targets name.
    pub support: Support,
    /// Longest student sequence (prompt + response tokens) written; `None`: no limit.
    pub max_len: Option<usize>,
    /// What happens to a longer row.
    pub overflow: Overflow,
    /// Renormalise the teacher's log-probs over the written ids (what Axolotl's own KD dataset
    /// preparation does before its `kd_normalize_topk` loss); `false` writes them as stored
    /// (normalised over the full vocabulary).
    pub normalize_topk: bool,
}

/// Why a row is not written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Longer than `max_len` with `Overflow::Refuse`.
    TooLong,
    /// Cutting at `max_len` leaves no response token (the prompt alone fills it).
    PromptTooLong,
    /// No response token has `loss_mask` 1: nothing to learn.
    NoTrainableToken,
}

impl Skip {
    /// The reason's name in counts and `skipped.jsonl`.
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::TooLong => "too_long",
            Skip::PromptTooLong => "prompt_too_long",
            Skip::NoTrainableToken => "no_trainable_token",
        }
    }
}

/// One row in Axolotl's layout; `targets` are `len(input_ids) * k` values, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct AxolotlRow {
    pub input_ids: Vec<i32>,
    pub labels: Vec<i32>,
    pub target_token_ids: Vec<i32>,
    pub target_logprobs: Vec<f32>,
    pub target_mask: Vec<i8>,
    /// Width of each target row.
    pub k: usize,
    /// Whether the response was cut at `max_len`.
    pub truncated: bool,
}

impl AxolotlRow {
    /// Positions whose label is a token (what Axolotl counts as `num_items_in_batch`).
    pub fn trainable_tokens(&self) -> usize {
        self.labels.iter().filter(|&&l| l != IGNORE_INDEX).count()
    }
}

/// The target ids and log-probs of one row on the chosen support, `T * k` each.
fn support_of(row: &OutputRow, support: Support) -> Result<(&[i32], &[f32], usize), ExportError> {
    match support {
        Support::Teacher => Ok((&row.teacher_topk_ids, &row.teacher_topk_logprobs, row.k)),
        Support::Student => match (&row.student_topk_ids, &row.teacher_logprobs_at_student_topk) {
            (Some(ids), Some(lps)) if row.ks > 0 => Ok((ids, lps, row.ks)),
            _ => Err(ExportError::Options(
                "--support student needs the student-side columns: score the dataset with \
                 score.student_top_k > 0"
                    .into(),
            )),
        },
    }
}

/// Converts one contract row; `Ok(Err(skip))` is a row left out for a counted reason.
pub fn convert(
    row: &OutputRow,
    opts: &AxolotlOptions,
) -> Result<Result<AxolotlRow, Skip>, ExportError> {
    let (ids, lps, k) = support_of(row, opts.support)?;
    let p = row.prompt_ids.len();
    let t_all = row.completion_ids.len();
    if p == 0 || ids.len() != t_all * k || lps.len() != t_all * k || row.loss_mask.len() != t_all {
        return Err(ExportError::Row(format!(
            "sample {}: {} prompt tokens, {} response tokens, {} target values, {} mask values \
             do not fit the contract (run `hindsight validate`)",
            row.sample_id,
            p,
            t_all,
            ids.len(),
            row.loss_mask.len()
        )));
    }
    let mut t = t_all;
    let mut truncated = false;
    if let Some(max) = opts.max_len {
        if p + t_all > max {
            match opts.overflow {
                Overflow::Refuse => return Ok(Err(Skip::TooLong)),
                Overflow::Truncate if p >= max => return Ok(Err(Skip::PromptTooLong)),
                Overflow::Truncate => {
                    t = max - p;
                    truncated = true;
                }
            }
        }
    }
    if !row.loss_mask[..t].contains(&1) {
        return Ok(Err(Skip::NoTrainableToken));
    }
    let len = p + t;
    let mut input_ids = Vec::with_capacity(len);
    input_ids.extend_from_slice(&row.prompt_ids);
    input_ids.extend_from_slice(&row.completion_ids[..t]);
    let mut labels = vec![IGNORE_INDEX; len];
    let mut target_token_ids = vec![0i32; len * k];
    let mut target_logprobs = vec![PAD_LOGPROB; len * k];
    let mut target_mask = vec![0i8; len * k];
    for i in 0..t {
        if row.loss_mask[i] != 1 {
            continue;
        }
        labels[p + i] = row.completion_ids[i];
        // Row p - 1 + i: the logits there predict completion token i.
        let at = (p - 1 + i) * k;
        target_token_ids[at..at + k].copy_from_slice(&ids[i * k..(i + 1) * k]);
        let src = &lps[i * k..(i + 1) * k];
        let dst = &mut target_logprobs[at..at + k];
        if opts.normalize_topk {
            let m = src.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b as f64));
            let lse = m + src.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = (s as f64 - lse) as f32;
            }
        } else {
            dst.copy_from_slice(src);
        }
        target_mask[at..at + k].fill(1);
    }
    Ok(Ok(AxolotlRow {
        input_ids,
        labels,
        target_token_ids,
        target_logprobs,
        target_mask,
        k,
        truncated,
    }))
}

/// The Arrow schema of the exported shards: plain (32-bit offset) lists, which `datasets` hands
/// to Axolotl's collator as the nested Python lists it pads.
pub fn schema() -> SchemaRef {
    let list = |dt: DataType| DataType::List(Arc::new(Field::new("item", dt, false)));
    Arc::new(Schema::new(vec![
        Field::new("input_ids", list(DataType::Int32), false),
        Field::new("attention_mask", list(DataType::Int8), false),
        Field::new("labels", list(DataType::Int32), false),
        Field::new("target_token_ids", list(list(DataType::Int32)), false),
        Field::new("target_logprobs", list(list(DataType::Float32)), false),
        Field::new("target_mask", list(list(DataType::Int8)), false),
    ]))
}

fn offsets(lens: impl Iterator<Item = usize>) -> Result<OffsetBuffer<i32>, ExportError> {
    let mut out = vec![0i32];
    let mut total: i64 = 0;
    for l in lens {
        total += l as i64;
        let v = i32::try_from(total).map_err(|_| {
            ExportError::Row("a batch holds more than 2^31 values; lower the batch size".into())
        })?;
        out.push(v);
    }
    Ok(OffsetBuffer::new(out.into()))
}

fn flat_list(values: ArrayRef, lens: impl Iterator<Item = usize>) -> Result<ArrayRef, ExportError> {
    let field = Arc::new(Field::new("item", values.data_type().clone(), false));
    let list = ListArray::try_new(field, offsets(lens)?, values, None)
        .map_err(|e| ExportError::Row(format!("building a list column: {e}")))?;
    Ok(Arc::new(list))
}

/// `len(input_ids)` rows of `k` values each, per row.
fn nested_list(values: ArrayRef, rows: &[AxolotlRow]) -> Result<ArrayRef, ExportError> {
    let inner = flat_list(
        values,
        rows.iter()
            .flat_map(|r| std::iter::repeat_n(r.k, r.input_ids.len())),
    )?;
    flat_list(inner, rows.iter().map(|r| r.input_ids.len()))
}

/// Rows as one record batch of [`schema`].
pub fn to_batch(rows: &[AxolotlRow]) -> Result<RecordBatch, ExportError> {
    let lens = || rows.iter().map(|r| r.input_ids.len());
    let input_ids =
        Int32Array::from_iter_values(rows.iter().flat_map(|r| r.input_ids.iter().copied()));
    let attention = Int8Array::from_iter_values(
        rows.iter()
            .flat_map(|r| std::iter::repeat_n(1i8, r.input_ids.len())),
    );
    let labels = Int32Array::from_iter_values(rows.iter().flat_map(|r| r.labels.iter().copied()));
    let ids =
        Int32Array::from_iter_values(rows.iter().flat_map(|r| r.target_token_ids.iter().copied()));
    let lps =
        Float32Array::from_iter_values(rows.iter().flat_map(|r| r.target_logprobs.iter().copied()));
    let mask = Int8Array::from_iter_values(rows.iter().flat_map(|r| r.target_mask.iter().copied()));
    let columns: Vec<ArrayRef> = vec![
        flat_list(Arc::new(input_ids), lens())?,
        flat_list(Arc::new(attention), lens())?,
        flat_list(Arc::new(labels), lens())?,
        nested_list(Arc::new(ids), rows)?,
        nested_list(Arc::new(lps), rows)?,
        nested_list(Arc::new(mask), rows)?,
    ];
    RecordBatch::try_new(schema(), columns)
        .map_err(|e| ExportError::Row(format!("building the export batch: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> OutputRow {
        let mut r = OutputRow::empty(2);
        r.sample_id = "s".into();
        r.prompt_ids = vec![10, 11, 12];
        r.completion_ids = vec![20, 21];
        r.loss_mask = vec![1, 1];
        r.teacher_topk_ids = vec![20, 5, 21, 6];
        r.teacher_topk_logprobs = vec![-0.5, -1.5, -0.1, -3.0];
        r
    }

    fn opts() -> AxolotlOptions {
        AxolotlOptions {
            support: Support::Teacher,
            max_len: None,
            overflow: Overflow::Refuse,
            normalize_topk: false,
        }
    }

    #[test]
    fn row_j_describes_the_next_input_token() {
        let a = convert(&row(), &opts()).unwrap().unwrap();
        assert_eq!(a.input_ids, vec![10, 11, 12, 20, 21]);
        assert_eq!(a.labels, vec![-100, -100, -100, 20, 21]);
        // Row 2 (the last prompt token) predicts input_ids[3] = completion token 0.
        assert_eq!(&a.target_token_ids[4..6], &[20, 5]);
        assert_eq!(&a.target_logprobs[4..6], &[-0.5, -1.5]);
        assert_eq!(&a.target_token_ids[6..8], &[21, 6]);
        assert_eq!(a.target_mask, vec![0, 0, 0, 0, 1, 1, 1, 1, 0, 0]);
        assert_eq!(a.target_logprobs[8], PAD_LOGPROB);
        assert_eq!(a.trainable_tokens(), 2);
    }

    #[test]
    fn truncation_cuts_the_response_and_refusal_counts() {
        let mut o = opts();
        o.max_len = Some(4);
        assert_eq!(convert(&row(), &o).unwrap(), Err(Skip::TooLong));
        o.overflow = Overflow::Truncate;
        let a = convert(&row(), &o).unwrap().unwrap();
        assert!(a.truncated);
        assert_eq!(a.input_ids, vec![10, 11, 12, 20]);
        assert_eq!(a.target_mask.len(), 8);
        o.max_len = Some(3);
        assert_eq!(convert(&row(), &o).unwrap(), Err(Skip::PromptTooLong));
    }

    #[test]
    fn normalised_targets_sum_to_one_and_masked_tokens_are_ignored() {
        let mut r = row();
        r.loss_mask = vec![0, 1];
        let mut o = opts();
        o.normalize_topk = true;
        let a = convert(&r, &o).unwrap().unwrap();
        assert_eq!(a.labels, vec![-100, -100, -100, -100, 21]);
        assert_eq!(&a.target_mask[4..6], &[0, 0]);
        let mass: f64 = a.target_logprobs[6..8]
            .iter()
            .map(|&v| (v as f64).exp())
            .sum();
        assert!((mass - 1.0).abs() < 1e-6, "{mass}");
        r.loss_mask = vec![0, 0];
        assert_eq!(convert(&r, &o).unwrap(), Err(Skip::NoTrainableToken));
    }

    #[test]
    fn the_student_support_needs_its_columns() {
        let mut o = opts();
        o.support = Support::Student;
        assert!(convert(&row(), &o).is_err());
    }
}
