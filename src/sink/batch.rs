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
use arrow_buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::DataType;

use super::columns::{Column, Compact, TextKind, Values, Width, CONTRACT};
use super::encoding::{self, Encoding};
use super::error::{SinkError, SinkResult};
use super::row::OutputRow;
use super::schema::{contract_schema, item, message_fields, Layout};
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
    rows: impl Iterator<Item = &'a [i32]> + Clone,
) -> SinkResult<ArrayRef> {
    let flat: Vec<i32> = rows.clone().flat_map(|v| v.iter().copied()).collect();
    large_list_of(
        column,
        DataType::Int32,
        rows.map(<[_]>::len),
        Arc::new(Int32Array::from(flat)),
    )
}

fn f32_lists<'a>(
    column: &str,
    rows: impl Iterator<Item = &'a [f32]> + Clone,
) -> SinkResult<ArrayRef> {
    let flat: Vec<f32> = rows.clone().flat_map(|v| v.iter().copied()).collect();
    large_list_of(
        column,
        DataType::Float32,
        rows.map(<[_]>::len),
        Arc::new(Float32Array::from(flat)),
    )
}

/// `large_list<fixed_size_list<T, k>>` from per-row flat `T * k` vectors; a `None` length is a
/// null row.
fn topk_lists(
    column: &str,
    k: usize,
    lens: &[Option<usize>],
    values: ArrayRef,
) -> SinkResult<ArrayRef> {
    let dt = values.data_type().clone();
    let width = i32::try_from(k).map_err(|_| SinkError::Config(format!("top-k {k} too large")))?;
    let fsl = FixedSizeListArray::try_new(item(dt.clone()), width, values, None)?;
    let offs = offsets::<i64>(column, lens.iter().map(|l| l.unwrap_or(0) / k.max(1)))?;
    let nulls = lens
        .iter()
        .any(Option::is_none)
        .then(|| NullBuffer::from_iter(lens.iter().map(Option::is_some)));
    Ok(Arc::new(LargeListArray::try_new(
        item(DataType::FixedSizeList(item(dt), width)),
        offs,
        Arc::new(fsl),
        nulls,
    )?))
}

/// A top-k id column from per-row values (`None`: null row).
fn topk_ids(column: &str, k: usize, rows: &[Option<&[i32]>]) -> SinkResult<ArrayRef> {
    let lens: Vec<Option<usize>> = rows.iter().map(|r| r.map(<[_]>::len)).collect();
    let flat = Int32Array::from_iter_values(rows.iter().flatten().flat_map(|v| v.iter().copied()));
    topk_lists(column, k, &lens, Arc::new(flat))
}

/// A top-k log-prob column from per-row values: float32, or one-byte codes where `layout`
/// stores the column compactly.
fn topk_logprobs(
    c: &Column,
    layout: &Layout,
    k: usize,
    rows: &[Option<&[f32]>],
) -> SinkResult<ArrayRef> {
    let lens: Vec<Option<usize>> = rows.iter().map(|r| r.map(<[_]>::len)).collect();
    let flat: Vec<f32> = rows
        .iter()
        .flatten()
        .flat_map(|v| v.iter().copied())
        .collect();
    let values: ArrayRef = if layout.codes(c) {
        let codes = if c.compact == Compact::SortedCodes {
            encoding::encode_sorted(&flat, k)
        } else {
            encoding::encode_codes(&flat)
        };
        Arc::new(UInt8Array::from(codes))
    } else {
        Arc::new(Float32Array::from(flat))
    };
    topk_lists(c.name, k, &lens, values)
}

fn messages(column: &str, rows: &[&[Message]]) -> SinkResult<ArrayRef> {
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

/// One column of `rows` as an Arrow array of the contract type in `layout`.
fn column_array(c: &Column, rows: &[OutputRow], layout: &Layout) -> SinkResult<ArrayRef> {
    let name = c.name;
    let k = layout.width(c.width);
    let omitted = layout.omitted(c);
    Ok(match c.values {
        Values::U16(get, _) => Arc::new(UInt16Array::from_iter_values(rows.iter().map(get))),
        Values::I32(get, _) => Arc::new(Int32Array::from_iter_values(rows.iter().map(get))),
        Values::I64(get, _) => Arc::new(Int64Array::from_iter_values(rows.iter().map(get))),
        Values::Bool(get, _) => {
            Arc::new(BooleanArray::from(rows.iter().map(get).collect::<Vec<_>>()))
        }
        Values::F32(get, _) => Arc::new(Float32Array::from_iter_values(rows.iter().map(get))),
        Values::OptF32(get, _) => Arc::new(Float32Array::from_iter(rows.iter().map(get))),
        Values::OptTimestamp(get, _) => Arc::new(
            TimestampMicrosecondArray::from_iter(rows.iter().map(get)).with_timezone("UTC"),
        ),
        Values::Text(TextKind::Utf8, get, _) => {
            Arc::new(StringArray::from_iter_values(rows.iter().map(get)))
        }
        Values::Text(TextKind::Large, get, _) => {
            Arc::new(LargeStringArray::from_iter_values(rows.iter().map(get)))
        }
        Values::Text(TextKind::Dictionary, get, _) => dict(rows.iter().map(get)),
        Values::OptText(get, _) => Arc::new(StringArray::from_iter(rows.iter().map(get))),
        Values::Messages(get, _) => messages(name, &rows.iter().map(get).collect::<Vec<_>>())?,
        Values::I32List(get, _) => i32_lists(name, rows.iter().map(get))?,
        Values::U8List(get, _) => {
            let flat: Vec<u8> = rows.iter().flat_map(|r| get(r).iter().copied()).collect();
            large_list_of(
                name,
                DataType::UInt8,
                rows.iter().map(|r| get(r).len()),
                Arc::new(UInt8Array::from(flat)),
            )?
        }
        Values::F32List(get, _) => f32_lists(name, rows.iter().map(get))?,
        Values::TopKI32(get, _) => topk_ids(
            name,
            k,
            &rows.iter().map(|r| Some(get(r))).collect::<Vec<_>>(),
        )?,
        Values::OptTopKI32(get, _) => topk_ids(
            name,
            k,
            &rows
                .iter()
                .map(|r| get(r).filter(|_| !omitted))
                .collect::<Vec<_>>(),
        )?,
        Values::TopKF32(get, _) => topk_logprobs(
            c,
            layout,
            k,
            &rows.iter().map(|r| Some(get(r))).collect::<Vec<_>>(),
        )?,
        Values::OptTopKF32(get, _) => topk_logprobs(
            c,
            layout,
            k,
            &rows
                .iter()
                .map(|r| get(r).filter(|_| !omitted))
                .collect::<Vec<_>>(),
        )?,
    })
}

/// Builds one record batch of `rows` with the contract schema of `layout`. Fails (instead of
/// writing a malformed shard) when a row's top-k vectors are not a multiple of their width long,
/// or a student-side column is missing while K_s > 0.
pub fn rows_to_batch(rows: &[OutputRow], layout: &Layout) -> SinkResult<RecordBatch> {
    if layout.top_k == 0 {
        return Err(SinkError::Config("top-k width must be at least 1".into()));
    }
    for r in rows {
        // The pipeline drops such rows (`non_finite`); nothing else may write one either.
        if let Some(column) = super::columns::first_non_finite(r) {
            return Err(SinkError::Config(format!(
                "row '{}' holds a non-finite value in '{column}'; rows with NaN or infinities are \
                 never written",
                r.sample_id
            )));
        }
        for c in &CONTRACT {
            let len = match c.values {
                Values::TopKI32(get, _) => Some(get(r).len()),
                Values::TopKF32(get, _) => Some(get(r).len()),
                Values::OptTopKI32(get, _) => get(r).map(<[_]>::len),
                Values::OptTopKF32(get, _) => get(r).map(<[_]>::len),
                _ => continue,
            };
            let width = layout.width(c.width);
            match len {
                None if !layout.omitted(c) && c.width == Width::Student => {
                    return Err(SinkError::InvalidRow(format!(
                        "sample {}: {} is missing but student_top_k is {width}",
                        r.sample_id, c.name
                    )));
                }
                Some(len) if width > 0 && len % width != 0 => {
                    return Err(SinkError::InvalidRow(format!(
                        "sample {}: {} has {len} values, not a multiple of K={width}",
                        r.sample_id, c.name
                    )));
                }
                _ => {}
            }
        }
    }
    let schema = contract_schema(layout);
    let columns = CONTRACT
        .iter()
        .map(|c| column_array(c, rows, layout))
        .collect::<SinkResult<Vec<ArrayRef>>>()?;
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

/// Per-row flattened `T * K` values of a `large_list<fixed_size_list<P, K>>` column (`None`
/// for a null row), and K.
fn topk_values<P: Array + 'static, T>(
    batch: &RecordBatch,
    name: &str,
    get: impl Fn(&P, usize) -> T,
) -> SinkResult<(Vec<Option<Vec<T>>>, usize)> {
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
    let rows = a
        .offsets()
        .windows(2)
        .enumerate()
        .map(|(i, w)| {
            let (s, e) = (w[0] as usize * k, w[1] as usize * k);
            a.is_valid(i)
                .then(|| (s..e).map(|j| get(values, j)).collect())
        })
        .collect();
    Ok((rows, k))
}

/// Whether a top-k column holds one-byte codes (the compact encoding).
fn holds_codes(batch: &RecordBatch, name: &str) -> bool {
    match batch
        .schema()
        .field_with_name(name)
        .map(|f| f.data_type().clone())
    {
        Ok(DataType::LargeList(f)) => {
            matches!(f.data_type(), DataType::FixedSizeList(e, _) if e.data_type() == &DataType::UInt8)
        }
        _ => false,
    }
}

/// Per-row log-probs of a top-k log-prob column, decoded when it holds compact codes.
fn topk_logprob_values(batch: &RecordBatch, c: &Column) -> SinkResult<Vec<Option<Vec<f32>>>> {
    if holds_codes(batch, c.name) {
        let (rows, k) = topk_values(batch, c.name, |a: &UInt8Array, j| a.value(j))?;
        let sorted = c.compact == Compact::SortedCodes;
        return Ok(rows
            .into_iter()
            .map(|r| {
                r.map(|codes| {
                    if sorted {
                        encoding::decode_sorted(&codes, k)
                    } else {
                        encoding::decode_codes(&codes)
                    }
                })
            })
            .collect());
    }
    Ok(topk_values(batch, c.name, |a: &Float32Array, j| a.value(j))?.0)
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
                    reasoning: None,
                })
                .collect()
        })
        .collect())
}

/// Sets one column of `rows` from `batch`.
fn read_column(batch: &RecordBatch, c: &Column, rows: &mut [OutputRow]) -> SinkResult<()> {
    let name = c.name;
    let i32v = |a: &Int32Array, j: usize| a.value(j);
    let f32v = |a: &Float32Array, j: usize| a.value(j);
    fn each<T>(rows: &mut [OutputRow], values: Vec<T>, set: fn(&mut OutputRow, T)) {
        for (r, v) in rows.iter_mut().zip(values) {
            set(r, v);
        }
    }
    match c.values {
        Values::U16(_, set) => {
            let a = column::<UInt16Array>(batch, name)?;
            each(rows, (0..a.len()).map(|i| a.value(i)).collect(), set);
        }
        Values::I32(_, set) => {
            let a = column::<Int32Array>(batch, name)?;
            each(rows, (0..a.len()).map(|i| a.value(i)).collect(), set);
        }
        Values::I64(_, set) => {
            let a = column::<Int64Array>(batch, name)?;
            each(rows, (0..a.len()).map(|i| a.value(i)).collect(), set);
        }
        Values::Bool(_, set) => {
            let a = column::<BooleanArray>(batch, name)?;
            each(rows, (0..a.len()).map(|i| a.value(i)).collect(), set);
        }
        Values::F32(_, set) => {
            let a = column::<Float32Array>(batch, name)?;
            each(rows, (0..a.len()).map(|i| a.value(i)).collect(), set);
        }
        Values::OptF32(_, set) => {
            let a = column::<Float32Array>(batch, name)?;
            let v = (0..a.len()).map(|i| a.is_valid(i).then(|| a.value(i)));
            each(rows, v.collect(), set);
        }
        Values::OptTimestamp(_, set) => {
            let a = column::<TimestampMicrosecondArray>(batch, name)?;
            let v = (0..a.len()).map(|i| a.is_valid(i).then(|| a.value(i)));
            each(rows, v.collect(), set);
        }
        Values::Text(TextKind::Utf8, _, set) => each(rows, strings(batch, name)?, set),
        Values::Text(TextKind::Large, _, set) => each(rows, large_strings(batch, name)?, set),
        Values::Text(TextKind::Dictionary, _, set) => each(rows, dict_strings(batch, name)?, set),
        Values::OptText(_, set) => {
            let a = column::<StringArray>(batch, name)?;
            let v = (0..a.len()).map(|i| a.is_valid(i).then(|| a.value(i).to_string()));
            each(rows, v.collect(), set);
        }
        Values::Messages(_, set) => each(rows, message_lists(batch, name)?, set),
        Values::I32List(_, set) => each(rows, list_values(batch, name, i32v)?, set),
        Values::U8List(_, set) => {
            let v = list_values(batch, name, |a: &UInt8Array, j| a.value(j))?;
            each(rows, v, set);
        }
        Values::F32List(_, set) => each(rows, list_values(batch, name, f32v)?, set),
        Values::TopKI32(_, set) => {
            let v = topk_values(batch, name, i32v)?.0;
            each(
                rows,
                v.into_iter().map(Option::unwrap_or_default).collect(),
                set,
            );
        }
        Values::TopKF32(_, set) => {
            let v = topk_logprob_values(batch, c)?;
            each(
                rows,
                v.into_iter().map(Option::unwrap_or_default).collect(),
                set,
            );
        }
        Values::OptTopKI32(_, set) => each(rows, topk_values(batch, name, i32v)?.0, set),
        Values::OptTopKF32(_, set) => each(rows, topk_logprob_values(batch, c)?, set),
    }
    Ok(())
}

/// The width of a `large_list<fixed_size_list<_, K>>` column (0 when absent or another type).
fn width_of(batch: &RecordBatch, name: &str) -> usize {
    match batch
        .schema()
        .field_with_name(name)
        .map(|f| f.data_type().clone())
    {
        Ok(DataType::LargeList(f)) => match f.data_type() {
            DataType::FixedSizeList(_, k) => *k as usize,
            _ => 0,
        },
        _ => 0,
    }
}

/// The layout a batch was written with, read from its column types.
pub fn batch_layout(batch: &RecordBatch) -> Layout {
    Layout {
        top_k: width_of(batch, "teacher_topk_ids"),
        // A K_s = 0 dataset types its (all-null) student columns 1 wide.
        student_top_k: batch
            .column_by_name("student_topk_ids")
            .filter(|c| c.null_count() < c.len())
            .map_or(0, |_| width_of(batch, "student_topk_ids")),
        encoding: if holds_codes(batch, "teacher_topk_logprobs") {
            Encoding::Compact
        } else {
            Encoding::Lossless
        },
    }
}

/// Decodes a batch with the contract columns back into rows (the widths and the encoding are
/// taken from the columns' types; compact codes come back as the log-probs they stand for).
/// Fails only when a column is missing or has another type; value-level problems (lengths,
/// ranges) are left for `validate` to report.
pub fn batch_to_rows(batch: &RecordBatch) -> SinkResult<Vec<OutputRow>> {
    let n = batch.num_rows();
    let layout = batch_layout(batch);
    let mut empty = OutputRow::empty(layout.top_k);
    empty.ks = layout.student_top_k;
    let mut rows = vec![empty; n];
    for c in &CONTRACT {
        read_column(batch, c, &mut rows)?;
    }
    Ok(rows)
}
