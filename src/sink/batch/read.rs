//! Arrow record batches back into rows (validate, stats, report, tests), by the contract's column table.

use super::*;

pub(super) fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> SinkResult<&'a T> {
    let col = batch
        .column_by_name(name)
        .ok_or_else(|| SinkError::column(name, "missing"))?;
    col.as_any().downcast_ref::<T>().ok_or_else(|| {
        SinkError::column(name, format!("unexpected Arrow type {}", col.data_type()))
    })
}

pub(super) fn strings(batch: &RecordBatch, name: &str) -> SinkResult<Vec<String>> {
    let a = column::<StringArray>(batch, name)?;
    Ok((0..a.len()).map(|i| a.value(i).to_string()).collect())
}

pub(super) fn large_strings(batch: &RecordBatch, name: &str) -> SinkResult<Vec<String>> {
    let a = column::<LargeStringArray>(batch, name)?;
    Ok((0..a.len()).map(|i| a.value(i).to_string()).collect())
}

pub(super) fn dict_strings(batch: &RecordBatch, name: &str) -> SinkResult<Vec<String>> {
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
pub(super) fn list_values<P: Array + 'static, T>(
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
pub(super) fn topk_values<P: Array + 'static, T>(
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
pub(super) fn holds_codes(batch: &RecordBatch, name: &str) -> bool {
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
pub(super) fn topk_logprob_values(
    batch: &RecordBatch,
    c: &Column,
) -> SinkResult<Vec<Option<Vec<f32>>>> {
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

pub(super) fn message_lists(batch: &RecordBatch, name: &str) -> SinkResult<Vec<Vec<Message>>> {
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
pub(super) fn read_column(
    batch: &RecordBatch,
    c: &Column,
    rows: &mut [OutputRow],
) -> SinkResult<()> {
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
pub(super) fn width_of(batch: &RecordBatch, name: &str) -> usize {
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
