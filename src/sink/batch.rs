//! Rows ⇄ Arrow record batches, against the contract schema. Writing builds each column
//! directly from flat value buffers and offsets (no per-value builders), reading decodes a batch
//! back into [`OutputRow`]s so the validator and tests check plain Rust values.

use std::sync::Arc;

use arrow_array::types::Int32Type;
use arrow_array::{
    Array, ArrayRef, BooleanArray, DictionaryArray, FixedSizeListArray, Float32Array, Int32Array,
    Int64Array, LargeListArray, LargeStringArray, ListArray, OffsetSizeTrait, RecordBatch,
    StringArray, StructArray, TimestampMicrosecondArray, UInt16Array, UInt8Array,
};
use arrow_buffer::{OffsetBuffer, ScalarBuffer};
use arrow_schema::DataType;

use super::error::{SinkError, SinkResult};
use super::row::OutputRow;
use super::schema::{contract_schema, item, message_fields};
use crate::episode::Message;

/// Offsets from lengths with overflow checked (a batch whose total would not fit is an error,
/// not a wrapped offset).
fn offsets<O: OffsetSizeTrait>(
    column: &str,
    lengths: impl Iterator<Item = usize>,
) -> SinkResult<OffsetBuffer<O>> {
    let mut out = vec![O::usize_as(0)];
    let mut acc: usize = 0;
    for len in lengths {
        acc = acc
            .checked_add(len)
            .ok_or_else(|| SinkError::column(column, "offset overflow"))?;
        let o = O::from_usize(acc).ok_or_else(|| {
            SinkError::column(column, "too many values in one batch for the offset type")
        })?;
        out.push(o);
    }
    Ok(OffsetBuffer::new(ScalarBuffer::from(out)))
}

fn large_list_of(
    column: &str,
    dt: DataType,
    lengths: impl Iterator<Item = usize>,
    values: ArrayRef,
) -> SinkResult<ArrayRef> {
    let offs = offsets::<i64>(column, lengths)?;
    Ok(Arc::new(LargeListArray::try_new(
        item(dt),
        offs,
        values,
        None,
    )?))
}

fn i32_lists<'a>(
    column: &str,
    rows: impl Iterator<Item = &'a Vec<i32>> + Clone,
) -> SinkResult<ArrayRef> {
    let flat: Vec<i32> = rows.clone().flat_map(|v| v.iter().copied()).collect();
    large_list_of(
        column,
        DataType::Int32,
        rows.map(Vec::len),
        Arc::new(Int32Array::from(flat)),
    )
}

fn f32_lists<'a>(
    column: &str,
    rows: impl Iterator<Item = &'a Vec<f32>> + Clone,
) -> SinkResult<ArrayRef> {
    let flat: Vec<f32> = rows.clone().flat_map(|v| v.iter().copied()).collect();
    large_list_of(
        column,
        DataType::Float32,
        rows.map(Vec::len),
        Arc::new(Float32Array::from(flat)),
    )
}

/// `large_list<fixed_size_list<T, k>>` from per-row flat `T * k` vectors.
fn topk_lists(column: &str, k: usize, lens: &[usize], values: ArrayRef) -> SinkResult<ArrayRef> {
    let dt = values.data_type().clone();
    let width = i32::try_from(k).map_err(|_| SinkError::Config(format!("top-k {k} too large")))?;
    let fsl = FixedSizeListArray::try_new(item(dt.clone()), width, values, None)?;
    large_list_of(
        column,
        DataType::FixedSizeList(item(dt), width),
        lens.iter().map(|l| l / k),
        Arc::new(fsl),
    )
}

fn messages(column: &str, rows: &[&Vec<Message>]) -> SinkResult<ArrayRef> {
    let roles: Vec<&str> = rows
        .iter()
        .flat_map(|m| m.iter().map(|x| x.role.as_str()))
        .collect();
    let contents: Vec<&str> = rows
        .iter()
        .flat_map(|m| m.iter().map(|x| &*x.content))
        .collect();
    let structs = StructArray::try_new(
        message_fields(),
        vec![
            Arc::new(StringArray::from(roles)) as ArrayRef,
            Arc::new(LargeStringArray::from(contents)) as ArrayRef,
        ],
        None,
    )?;
    let offs = offsets::<i32>(column, rows.iter().map(|m| m.len()))?;
    Ok(Arc::new(ListArray::try_new(
        item(DataType::Struct(message_fields())),
        offs,
        Arc::new(structs),
        None,
    )?))
}

fn dict<'a>(values: impl Iterator<Item = &'a str>) -> ArrayRef {
    Arc::new(values.collect::<DictionaryArray<Int32Type>>())
}

/// Builds one record batch of `rows` with the contract schema for top-k width `k`. Fails (instead
/// of writing a malformed shard) when a row's top-k vectors are not a multiple of `k` long.
pub fn rows_to_batch(rows: &[OutputRow], k: usize) -> SinkResult<RecordBatch> {
    if k == 0 {
        return Err(SinkError::Config("top-k width must be at least 1".into()));
    }
    for r in rows {
        for (name, len) in [
            ("teacher_topk_ids", r.teacher_topk_ids.len()),
            ("teacher_topk_logprobs", r.teacher_topk_logprobs.len()),
            ("student_topk_logprobs", r.student_topk_logprobs.len()),
        ] {
            if len % k != 0 {
                return Err(SinkError::InvalidRow(format!(
                    "sample {}: {name} has {len} values, not a multiple of K={k}",
                    r.sample_id
                )));
            }
        }
    }
    let schema = contract_schema(k);
    let topk_lens = |f: fn(&OutputRow) -> usize| -> Vec<usize> { rows.iter().map(f).collect() };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(UInt16Array::from_iter_values(
            rows.iter().map(|r| r.schema_version),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| &r.sample_id),
        )),
        dict(rows.iter().map(|r| r.source_kind.as_str())),
        dict(rows.iter().map(|r| r.source_format.as_str())),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| &r.source_uri),
        )),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.source_record),
        )),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|r| r.conversation_id.as_deref()),
        )),
        Arc::new(Int32Array::from_iter_values(
            rows.iter().map(|r| r.turn_index),
        )),
        Arc::new(
            TimestampMicrosecondArray::from_iter(rows.iter().map(|r| r.event_time))
                .with_timezone("UTC"),
        ),
        dict(rows.iter().map(|r| r.method.as_str())),
        messages(
            "prompt",
            &rows.iter().map(|r| &r.prompt).collect::<Vec<_>>(),
        )?,
        Arc::new(LargeStringArray::from_iter_values(
            rows.iter().map(|r| &r.privileged_context),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| &r.teacher_template),
        )),
        messages(
            "teacher_prompt",
            &rows.iter().map(|r| &r.teacher_prompt).collect::<Vec<_>>(),
        )?,
        Arc::new(LargeStringArray::from_iter_values(
            rows.iter().map(|r| &r.completion),
        )),
        i32_lists("prompt_ids", rows.iter().map(|r| &r.prompt_ids))?,
        i32_lists(
            "teacher_prompt_ids",
            rows.iter().map(|r| &r.teacher_prompt_ids),
        )?,
        i32_lists("completion_ids", rows.iter().map(|r| &r.completion_ids))?,
        {
            let flat: Vec<u8> = rows
                .iter()
                .flat_map(|r| r.loss_mask.iter().copied())
                .collect();
            large_list_of(
                "loss_mask",
                DataType::UInt8,
                rows.iter().map(|r| r.loss_mask.len()),
                Arc::new(UInt8Array::from(flat)),
            )?
        },
        dict(rows.iter().map(|r| r.finish_reason.as_str())),
        Arc::new(BooleanArray::from(
            rows.iter().map(|r| r.is_on_policy).collect::<Vec<_>>(),
        )),
        f32_lists("student_logprobs", rows.iter().map(|r| &r.student_logprobs))?,
        f32_lists("teacher_logprobs", rows.iter().map(|r| &r.teacher_logprobs))?,
        f32_lists("advantages", rows.iter().map(|r| &r.advantages))?,
        topk_lists(
            "teacher_topk_ids",
            k,
            &topk_lens(|r| r.teacher_topk_ids.len()),
            Arc::new(Int32Array::from_iter_values(
                rows.iter().flat_map(|r| r.teacher_topk_ids.iter().copied()),
            )),
        )?,
        topk_lists(
            "teacher_topk_logprobs",
            k,
            &topk_lens(|r| r.teacher_topk_logprobs.len()),
            Arc::new(Float32Array::from_iter_values(
                rows.iter()
                    .flat_map(|r| r.teacher_topk_logprobs.iter().copied()),
            )),
        )?,
        f32_lists(
            "teacher_tail_logmass",
            rows.iter().map(|r| &r.teacher_tail_logmass),
        )?,
        topk_lists(
            "student_topk_logprobs",
            k,
            &topk_lens(|r| r.student_topk_logprobs.len()),
            Arc::new(Float32Array::from_iter_values(
                rows.iter()
                    .flat_map(|r| r.student_topk_logprobs.iter().copied()),
            )),
        )?,
        Arc::new(Int32Array::from_iter_values(
            rows.iter().map(|r| r.num_completion_tokens),
        )),
        Arc::new(Float32Array::from_iter_values(
            rows.iter().map(|r| r.relevance_kl),
        )),
        Arc::new(Float32Array::from_iter(rows.iter().map(|r| r.relevance))),
        Arc::new(Float32Array::from_iter(
            rows.iter().map(|r| r.relevance_control_kl),
        )),
        Arc::new(Float32Array::from_iter(
            rows.iter().map(|r| r.relevance_pmi),
        )),
        Arc::new(Float32Array::from_iter(
            rows.iter().map(|r| r.relevance_pmi_mean),
        )),
        Arc::new(Float32Array::from_iter(
            rows.iter().map(|r| r.relevance_pmi_answer),
        )),
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}

// ---------------------------------------------------------------------------------------------
// Reading back.

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> SinkResult<&'a T> {
    let col = batch
        .column_by_name(name)
        .ok_or_else(|| SinkError::column(name, "missing"))?;
    col.as_any().downcast_ref::<T>().ok_or_else(|| {
        SinkError::column(name, format!("unexpected Arrow type {}", col.data_type()))
    })
}

fn strings(batch: &RecordBatch, name: &str) -> SinkResult<Vec<String>> {
    let a = column::<StringArray>(batch, name)?;
    Ok((0..a.len()).map(|i| a.value(i).to_string()).collect())
}

fn large_strings(batch: &RecordBatch, name: &str) -> SinkResult<Vec<String>> {
    let a = column::<LargeStringArray>(batch, name)?;
    Ok((0..a.len()).map(|i| a.value(i).to_string()).collect())
}

fn dict_strings(batch: &RecordBatch, name: &str) -> SinkResult<Vec<String>> {
    let a = column::<DictionaryArray<Int32Type>>(batch, name)?;
    let values = a
        .values()
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| SinkError::column(name, "dictionary values are not utf8"))?;
    a.keys()
        .iter()
        .map(|k| {
            let k = k.ok_or_else(|| SinkError::column(name, "null value"))?;
            usize::try_from(k)
                .ok()
                .filter(|&k| k < values.len())
                .map(|k| values.value(k).to_string())
                .ok_or_else(|| SinkError::column(name, "dictionary key out of range"))
        })
        .collect()
}

/// Per-row slices of a `large_list<P>` column, copied out.
fn list_values<P: Array + 'static, T>(
    batch: &RecordBatch,
    name: &str,
    get: impl Fn(&P, usize) -> T,
) -> SinkResult<Vec<Vec<T>>> {
    let a = column::<LargeListArray>(batch, name)?;
    let values = a
        .values()
        .as_any()
        .downcast_ref::<P>()
        .ok_or_else(|| SinkError::column(name, "unexpected list element type"))?;
    Ok(a.offsets()
        .windows(2)
        .map(|w| {
            (w[0] as usize..w[1] as usize)
                .map(|j| get(values, j))
                .collect()
        })
        .collect())
}

/// Per-row flattened `T * K` values of a `large_list<fixed_size_list<P, K>>` column.
fn topk_values<P: Array + 'static, T>(
    batch: &RecordBatch,
    name: &str,
    get: impl Fn(&P, usize) -> T,
) -> SinkResult<Vec<Vec<T>>> {
    let a = column::<LargeListArray>(batch, name)?;
    let fsl = a
        .values()
        .as_any()
        .downcast_ref::<FixedSizeListArray>()
        .ok_or_else(|| SinkError::column(name, "elements are not fixed-size lists"))?;
    let k = fsl.value_length() as usize;
    let values = fsl
        .values()
        .as_any()
        .downcast_ref::<P>()
        .ok_or_else(|| SinkError::column(name, "unexpected top-k element type"))?;
    // A fixed-size list's offset is always 0 (slicing slices its values), so list offsets index
    // whole elements of `values`.
    Ok(a.offsets()
        .windows(2)
        .map(|w| {
            let (s, e) = (w[0] as usize * k, w[1] as usize * k);
            (s..e).map(|j| get(values, j)).collect()
        })
        .collect())
}

fn message_lists(batch: &RecordBatch, name: &str) -> SinkResult<Vec<Vec<Message>>> {
    let a = column::<ListArray>(batch, name)?;
    let s = a
        .values()
        .as_any()
        .downcast_ref::<StructArray>()
        .ok_or_else(|| SinkError::column(name, "elements are not structs"))?;
    let role = s
        .column_by_name("role")
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .ok_or_else(|| SinkError::column(name, "no utf8 'role' field"))?;
    let content = s
        .column_by_name("content")
        .and_then(|c| c.as_any().downcast_ref::<LargeStringArray>())
        .ok_or_else(|| SinkError::column(name, "no large_utf8 'content' field"))?;
    Ok(a.offsets()
        .windows(2)
        .map(|w| {
            (w[0] as usize..w[1] as usize)
                .map(|j| Message {
                    role: role.value(j).to_string(),
                    content: content.value(j).into(),
                })
                .collect()
        })
        .collect())
}

/// Decodes a batch with the contract columns back into rows (`k` is taken from the top-k
/// columns' type). Fails only when a column is missing or has another type; value-level
/// problems (lengths, ranges) are left for `validate` to report.
pub fn batch_to_rows(batch: &RecordBatch) -> SinkResult<Vec<OutputRow>> {
    let n = batch.num_rows();
    let k = match batch
        .schema()
        .field_with_name("teacher_topk_ids")
        .map(|f| f.data_type().clone())
    {
        Ok(DataType::LargeList(f)) => match f.data_type() {
            DataType::FixedSizeList(_, k) => *k as usize,
            _ => 0,
        },
        _ => 0,
    };
    let sv = column::<UInt16Array>(batch, "schema_version")?;
    let mut sample_id = strings(batch, "sample_id")?.into_iter();
    let mut source_kind = dict_strings(batch, "source_kind")?.into_iter();
    let mut source_format = dict_strings(batch, "source_format")?.into_iter();
    let mut source_uri = strings(batch, "source_uri")?.into_iter();
    let source_record = column::<Int64Array>(batch, "source_record")?;
    let conv = column::<StringArray>(batch, "conversation_id")?;
    let turn = column::<Int32Array>(batch, "turn_index")?;
    let time = column::<TimestampMicrosecondArray>(batch, "event_time")?;
    let mut method = dict_strings(batch, "method")?.into_iter();
    let mut prompt = message_lists(batch, "prompt")?.into_iter();
    let mut privileged = large_strings(batch, "privileged_context")?.into_iter();
    let mut template = strings(batch, "teacher_template")?.into_iter();
    let mut teacher_prompt = message_lists(batch, "teacher_prompt")?.into_iter();
    let mut completion = large_strings(batch, "completion")?.into_iter();
    let i32v = |a: &Int32Array, j: usize| a.value(j);
    let f32v = |a: &Float32Array, j: usize| a.value(j);
    let mut prompt_ids = list_values(batch, "prompt_ids", i32v)?.into_iter();
    let mut teacher_prompt_ids = list_values(batch, "teacher_prompt_ids", i32v)?.into_iter();
    let mut completion_ids = list_values(batch, "completion_ids", i32v)?.into_iter();
    let mut loss_mask =
        list_values(batch, "loss_mask", |a: &UInt8Array, j| a.value(j))?.into_iter();
    let mut finish = dict_strings(batch, "finish_reason")?.into_iter();
    let on_policy = column::<BooleanArray>(batch, "is_on_policy")?;
    let mut student = list_values(batch, "student_logprobs", f32v)?.into_iter();
    let mut teacher = list_values(batch, "teacher_logprobs", f32v)?.into_iter();
    let mut adv = list_values(batch, "advantages", f32v)?.into_iter();
    let mut topk_ids = topk_values(batch, "teacher_topk_ids", i32v)?.into_iter();
    let mut topk_lp = topk_values(batch, "teacher_topk_logprobs", f32v)?.into_iter();
    let mut tail = list_values(batch, "teacher_tail_logmass", f32v)?.into_iter();
    let mut student_topk = topk_values(batch, "student_topk_logprobs", f32v)?.into_iter();
    let ntok = column::<Int32Array>(batch, "num_completion_tokens")?;
    let rel_kl = column::<Float32Array>(batch, "relevance_kl")?;
    let rel = column::<Float32Array>(batch, "relevance")?;
    let rel_control = column::<Float32Array>(batch, "relevance_control_kl")?;
    let rel_pmi = column::<Float32Array>(batch, "relevance_pmi")?;
    let rel_pmi_mean = column::<Float32Array>(batch, "relevance_pmi_mean")?;
    let rel_pmi_answer = column::<Float32Array>(batch, "relevance_pmi_answer")?;
    let opt = |a: &Float32Array, i: usize| a.is_valid(i).then(|| a.value(i));
    let mut rows = Vec::with_capacity(n);
    for i in 0..n {
        rows.push(OutputRow {
            schema_version: sv.value(i),
            sample_id: sample_id.next().unwrap_or_default(),
            source_kind: source_kind.next().unwrap_or_default(),
            source_format: source_format.next().unwrap_or_default(),
            source_uri: source_uri.next().unwrap_or_default(),
            source_record: source_record.value(i),
            conversation_id: conv.is_valid(i).then(|| conv.value(i).to_string()),
            turn_index: turn.value(i),
            event_time: time.is_valid(i).then(|| time.value(i)),
            method: method.next().unwrap_or_default(),
            prompt: prompt.next().unwrap_or_default(),
            privileged_context: privileged.next().unwrap_or_default(),
            teacher_template: template.next().unwrap_or_default(),
            teacher_prompt: teacher_prompt.next().unwrap_or_default(),
            completion: completion.next().unwrap_or_default(),
            prompt_ids: prompt_ids.next().unwrap_or_default(),
            teacher_prompt_ids: teacher_prompt_ids.next().unwrap_or_default(),
            completion_ids: completion_ids.next().unwrap_or_default(),
            loss_mask: loss_mask.next().unwrap_or_default(),
            finish_reason: finish.next().unwrap_or_default(),
            is_on_policy: on_policy.value(i),
            student_logprobs: student.next().unwrap_or_default(),
            teacher_logprobs: teacher.next().unwrap_or_default(),
            advantages: adv.next().unwrap_or_default(),
            teacher_topk_ids: topk_ids.next().unwrap_or_default(),
            teacher_topk_logprobs: topk_lp.next().unwrap_or_default(),
            teacher_tail_logmass: tail.next().unwrap_or_default(),
            student_topk_logprobs: student_topk.next().unwrap_or_default(),
            num_completion_tokens: ntok.value(i),
            relevance_kl: rel_kl.value(i),
            relevance: opt(rel, i),
            relevance_control_kl: opt(rel_control, i),
            relevance_pmi: opt(rel_pmi, i),
            relevance_pmi_mean: opt(rel_pmi_mean, i),
            relevance_pmi_answer: opt(rel_pmi_answer, i),
            k,
        });
    }
    Ok(rows)
}
