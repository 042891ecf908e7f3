//! Parquet reader: rows become `serde_json::Value` objects, one Arrow batch at a time.
//!
//! Memory is one decoded batch (`parquet_batch_size` rows) plus the current row. Timestamps
//! become RFC 3339 strings (UTC, microseconds), exactly like WildChat's JSONL exports, so the
//! format parsers see one shape. A file whose footer cannot be read yields one
//! `unreadable_file` entry; a batch that fails to decode yields one `parquet_error` entry and the
//! rest of the file is skipped. Compressed Parquet (`.parquet.gz`) is spooled to a temporary file
//! first (Parquet needs random access), up to `max_spool_bytes`. Batches are made smaller for
//! files with big rows ([`batch_rows`]), and a row over `max_record_bytes` is quarantined
//! (`record_too_large`) before it is turned into JSON.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use serde_json::{Map, Value};

use super::input::{spool_to_tempfile, Opened};
use super::quarantine::{QuarantineEntry, QuarantineReason};
use super::{FileRecords, RawRecord, ReaderOptions, RecordResult};

/// Opens a Parquet file for row-by-row reading.
pub fn open(uri: String, mut opened: Opened, opts: &ReaderOptions) -> FileRecords {
    let fail = |uri: &str, detail: String| -> FileRecords {
        Box::new(std::iter::once(Err(QuarantineEntry::new(
            uri,
            -1,
            None,
            QuarantineReason::UnreadableFile,
            detail,
            b"",
        ))))
    };
    let file = match opened.seekable.take() {
        Some(f) => {
            // Read in place, not through the counted stream (which saw its first buffer).
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            super::input::count_input_bytes(len.saturating_sub(len.min(256 << 10)));
            Ok(f)
        }
        None => spool_to_tempfile(&mut opened.reader, opts.max_spool_bytes),
    };
    let file = match file {
        Ok(f) => f,
        Err(e) => return fail(&uri, e.to_string()),
    };
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).and_then(|b| {
        let rows = batch_rows(b.metadata(), opts.parquet_batch_size);
        b.with_batch_size(rows).build()
    });
    match reader {
        Ok(reader) => Box::new(ParquetRows {
            uri,
            max_record_bytes: opts.max_record_bytes,
            reader,
            batch: None,
            row_in_batch: 0,
            row_index: 0,
            done: false,
        }),
        Err(e) => fail(&uri, format!("not a readable Parquet file: {e}")),
    }
}

/// Iterates the rows of a Parquet file as JSON objects.
pub struct ParquetRows {
    uri: String,
    max_record_bytes: usize,
    reader: ParquetRecordBatchReader,
    batch: Option<RecordBatch>,
    row_in_batch: usize,
    row_index: i64,
    done: bool,
}

impl Iterator for ParquetRows {
    type Item = RecordResult;

    fn next(&mut self) -> Option<RecordResult> {
        loop {
            if self.done {
                return None;
            }
            if let Some(batch) = &self.batch {
                if self.row_in_batch < batch.num_rows() {
                    let bytes = row_bytes(batch, self.row_in_batch);
                    if bytes > self.max_record_bytes {
                        let q = too_large(&self.uri, self.row_index, bytes, self.max_record_bytes);
                        self.row_in_batch += 1;
                        self.row_index += 1;
                        return Some(Err(q));
                    }
                    let value = row_to_value(batch, self.row_in_batch);
                    let rec = RawRecord {
                        source_uri: self.uri.clone(),
                        record_index: self.row_index,
                        byte_offset: None,
                        value,
                    };
                    self.row_in_batch += 1;
                    self.row_index += 1;
                    return Some(Ok(rec));
                }
                self.batch = None;
            }
            match self.reader.next() {
                None => {
                    self.done = true;
                    return None;
                }
                Some(Ok(b)) => {
                    self.batch = Some(b);
                    self.row_in_batch = 0;
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(QuarantineEntry::new(
                        &self.uri,
                        self.row_index,
                        None,
                        QuarantineReason::ParquetError,
                        format!(
                            "batch starting at row {} unreadable, rest of file skipped: {e}",
                            self.row_index
                        ),
                        b"",
                    )));
                }
            }
        }
    }
}

/// What one decoded Parquet batch may hold, roughly: batches of the configured row count are
/// made smaller for files whose rows are big (agent transcripts of many MB each).
pub const BATCH_BYTES_BUDGET: u64 = 64 << 20;

/// Rows per batch for a file: `configured`, or fewer so that a batch of the file's widest row
/// group (uncompressed bytes per row, from the footer) stays within [`BATCH_BYTES_BUDGET`].
pub fn batch_rows(meta: &parquet::file::metadata::ParquetMetaData, configured: usize) -> usize {
    let widest = meta
        .row_groups()
        .iter()
        .filter(|g| g.num_rows() > 0)
        .map(|g| g.total_byte_size().max(0) as u64 / g.num_rows() as u64)
        .max()
        .unwrap_or(0);
    let by_bytes = match widest {
        0 => configured,
        w => usize::try_from(BATCH_BYTES_BUDGET / w).unwrap_or(usize::MAX),
    };
    configured.min(by_bytes).max(1)
}

/// The payload bytes of one row (strings, binaries and fixed-width values, through lists and
/// structs): what `max_record_bytes` is compared with, measured before the row is turned into
/// JSON.
pub fn row_bytes(batch: &RecordBatch, row: usize) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| range_bytes(c.as_ref(), row, row + 1))
        .fold(0usize, usize::saturating_add)
}

fn range_bytes(a: &dyn Array, start: usize, end: usize) -> usize {
    if end <= start || end > a.len() {
        return 0;
    }
    let span = |o: &[i32]| (o[end] - o[start]).max(0) as usize;
    let span64 = |o: &[i64]| usize::try_from((o[end] - o[start]).max(0)).unwrap_or(usize::MAX);
    match a.data_type() {
        DataType::Utf8 => span(a.as_string::<i32>().value_offsets()),
        DataType::LargeUtf8 => span64(a.as_string::<i64>().value_offsets()),
        DataType::Binary => span(a.as_binary::<i32>().value_offsets()),
        DataType::LargeBinary => span64(a.as_binary::<i64>().value_offsets()),
        DataType::Utf8View => {
            let v = a.as_string_view();
            (start..end).map(|i| v.value(i).len()).sum()
        }
        DataType::BinaryView => {
            let v = a.as_binary_view();
            (start..end).map(|i| v.value(i).len()).sum()
        }
        DataType::List(_) => {
            let l = a.as_list::<i32>();
            let o = l.value_offsets();
            range_bytes(
                l.values().as_ref(),
                o[start].max(0) as usize,
                o[end].max(0) as usize,
            )
        }
        DataType::LargeList(_) => {
            let l = a.as_list::<i64>();
            let o = l.value_offsets();
            let at = |x: i64| usize::try_from(x.max(0)).unwrap_or(usize::MAX);
            range_bytes(l.values().as_ref(), at(o[start]), at(o[end]))
        }
        DataType::FixedSizeList(_, n) => {
            let l = a.as_fixed_size_list();
            let n = (*n).max(0) as usize;
            range_bytes(
                l.values().as_ref(),
                start.saturating_mul(n),
                end.saturating_mul(n),
            )
        }
        DataType::Map(_, _) => {
            let m = a.as_map();
            let o = m.value_offsets();
            range_bytes(
                m.entries(),
                o[start].max(0) as usize,
                o[end].max(0) as usize,
            )
        }
        DataType::Struct(_) => a
            .as_struct()
            .columns()
            .iter()
            .map(|c| range_bytes(c.as_ref(), start, end))
            .fold(0usize, usize::saturating_add),
        other => other
            .primitive_width()
            .unwrap_or(8)
            .saturating_mul(end - start),
    }
}

/// The quarantine entry for a row over `max_record_bytes`.
pub fn too_large(uri: &str, row: i64, bytes: usize, max: usize) -> QuarantineEntry {
    QuarantineEntry::new(
        uri,
        row,
        None,
        QuarantineReason::RecordTooLarge,
        format!("row of {bytes} bytes is larger than max_record_bytes = {max}"),
        b"",
    )
}

/// Converts one row of a batch to a JSON object keyed by column name.
pub fn row_to_value(batch: &RecordBatch, row: usize) -> Value {
    let schema = batch.schema();
    let mut obj = Map::with_capacity(batch.num_columns());
    for (i, field) in schema.fields().iter().enumerate() {
        obj.insert(field.name().clone(), cell(batch.column(i), row));
    }
    Value::Object(obj)
}

fn num<T: Into<serde_json::Number>>(v: T) -> Value {
    Value::Number(v.into())
}

fn float(v: f64) -> Value {
    serde_json::Number::from_f64(v)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

/// Converts one cell of any supported Arrow type to JSON; unsupported types become a string
/// description rather than an error (the format parser decides whether the field matters).
fn cell(arr: &Arc<dyn Array>, i: usize) -> Value {
    if arr.is_null(i) {
        return Value::Null;
    }
    match arr.data_type() {
        DataType::Null => Value::Null,
        DataType::Boolean => Value::Bool(arr.as_boolean().value(i)),
        DataType::Int8 => num(arr.as_primitive::<Int8Type>().value(i)),
        DataType::Int16 => num(arr.as_primitive::<Int16Type>().value(i)),
        DataType::Int32 => num(arr.as_primitive::<Int32Type>().value(i)),
        DataType::Int64 => num(arr.as_primitive::<Int64Type>().value(i)),
        DataType::UInt8 => num(arr.as_primitive::<UInt8Type>().value(i)),
        DataType::UInt16 => num(arr.as_primitive::<UInt16Type>().value(i)),
        DataType::UInt32 => num(arr.as_primitive::<UInt32Type>().value(i)),
        DataType::UInt64 => num(arr.as_primitive::<UInt64Type>().value(i)),
        DataType::Float32 => float(arr.as_primitive::<Float32Type>().value(i) as f64),
        DataType::Float64 => float(arr.as_primitive::<Float64Type>().value(i)),
        DataType::Utf8 => Value::String(arr.as_string::<i32>().value(i).to_string()),
        DataType::LargeUtf8 => Value::String(arr.as_string::<i64>().value(i).to_string()),
        DataType::Utf8View => Value::String(arr.as_string_view().value(i).to_string()),
        DataType::Binary => {
            Value::String(String::from_utf8_lossy(arr.as_binary::<i32>().value(i)).into_owned())
        }
        DataType::LargeBinary => {
            Value::String(String::from_utf8_lossy(arr.as_binary::<i64>().value(i)).into_owned())
        }
        DataType::Timestamp(unit, _) => {
            let us = match unit {
                TimeUnit::Second => arr
                    .as_primitive::<TimestampSecondType>()
                    .value(i)
                    .saturating_mul(1_000_000),
                TimeUnit::Millisecond => arr
                    .as_primitive::<TimestampMillisecondType>()
                    .value(i)
                    .saturating_mul(1_000),
                TimeUnit::Microsecond => arr.as_primitive::<TimestampMicrosecondType>().value(i),
                TimeUnit::Nanosecond => {
                    arr.as_primitive::<TimestampNanosecondType>().value(i) / 1_000
                }
            };
            Value::String(format_rfc3339_us(us))
        }
        DataType::Date32 => {
            let days = arr.as_primitive::<Date32Type>().value(i) as i64;
            let (y, m, d) = civil_from_days(days);
            Value::String(format!("{y:04}-{m:02}-{d:02}"))
        }
        DataType::List(_) => list(arr.as_list::<i32>().value(i)),
        DataType::LargeList(_) => list(arr.as_list::<i64>().value(i)),
        DataType::FixedSizeList(_, _) => list(arr.as_fixed_size_list().value(i)),
        DataType::Struct(fields) => {
            let s = arr.as_struct();
            let mut obj = Map::with_capacity(fields.len());
            for (j, f) in fields.iter().enumerate() {
                obj.insert(f.name().clone(), cell(s.column(j), i));
            }
            Value::Object(obj)
        }
        DataType::Map(_, _) => {
            let m = arr.as_map();
            let entries = m.value(i);
            let keys = entries.column(0);
            let vals = entries.column(1);
            let mut obj = Map::new();
            for j in 0..entries.len() {
                let k = match cell(keys, j) {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                obj.insert(k, cell(vals, j));
            }
            Value::Object(obj)
        }
        DataType::Dictionary(_, _) => {
            let d = arr.as_any_dictionary();
            let keys = d.normalized_keys();
            match keys.get(i) {
                Some(&k) => cell(d.values(), k),
                None => Value::Null,
            }
        }
        other => Value::String(format!("<unsupported arrow type {other}>")),
    }
}

fn list(values: Arc<dyn Array>) -> Value {
    Value::Array((0..values.len()).map(|j| cell(&values, j)).collect())
}

/// Formats microseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
pub fn format_rfc3339_us(us: i64) -> String {
    let secs = us.div_euclid(1_000_000);
    let frac = us.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:06}Z",
        sod / 3600,
        (sod % 3600) / 60,
        sod % 60
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) → days since 1970-01-01 (inverse of [`civil_from_days`]).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}
