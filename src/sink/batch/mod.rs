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

mod read;
pub use read::*;

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
