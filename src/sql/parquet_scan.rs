//! The filtered Parquet reader: the input predicate pushed into the scan.
//!
//! 1. Row groups whose statistics (min/max/null counts) prove that no row can match are pruned
//!    with DataFusion's `PruningPredicate` and never decoded.
//! 2. In the kept row groups the predicate is a Parquet `RowFilter`: its own columns are decoded
//!    and evaluated first, and the other columns (the large `conversation`) are decoded only for
//!    the rows that match (pages without a match are skipped when the file has a page index).
//! 3. Every surviving row carries its original row number (a Parquet virtual column), so
//!    `source_record` is the same as in an unfiltered run. The rows in between are reported as
//!    [`SourceItem::Filtered`]: pruned rows are counted as read and filtered `where`, exactly
//!    like rows rejected one by one, so `records_read` does not depend on the predicate.
//!
//! Memory is one decoded batch, as in the unfiltered reader. A batch that fails to decode (or a
//! predicate that fails at run time) yields one `parquet_error` entry and the rest of the file is
//! skipped, as in the unfiltered reader.

use std::sync::{Arc, Mutex};

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{ArrayRef, RecordBatch, UInt64Array};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};
use datafusion::common::pruning::PruningStatistics;
use datafusion::common::{Column, ScalarValue};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::pruning::PruningPredicateBuilder;
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use parquet::arrow::arrow_reader::{
    ArrowPredicateFn, ArrowReaderOptions, ParquetRecordBatchReader,
    ParquetRecordBatchReaderBuilder, RowFilter,
};
use parquet::arrow::{ProjectionMask, RowNumber};
use parquet::file::metadata::{PageIndexPolicy, RowGroupMetaData};
use parquet::schema::types::SchemaDescriptor;

use super::filter::{evaluate, WherePredicate};
use crate::ingest::input::{spool_to_tempfile, Opened};
use crate::ingest::parquet_rows::{batch_rows, row_bytes, row_to_value, too_large};
use crate::ingest::{QuarantineEntry, QuarantineReason, RawRecord, ReaderOptions};
use crate::ingest::{SourceItem, WhereStats};
use crate::sink::manifest::saturating_sum;

/// Name of the virtual row-number column (unlikely to clash with a real column).
const ROW_COLUMN: &str = "__hindsight_row_number";

/// Opens a Parquet file for filtered reading. A file that cannot be opened yields one
/// `unreadable_file` entry, like the unfiltered reader.
pub fn open(
    uri: String,
    mut opened: Opened,
    opts: &ReaderOptions,
    predicate: Arc<WherePredicate>,
    stats: Arc<Mutex<WhereStats>>,
) -> Box<dyn Iterator<Item = SourceItem> + Send> {
    let fail = |uri: &str, reason: QuarantineReason, detail: String| {
        Box::new(std::iter::once(SourceItem::Quarantined(
            QuarantineEntry::new(uri, -1, None, reason, detail, b""),
        ))) as Box<dyn Iterator<Item = SourceItem> + Send>
    };
    // Uncompressed files (and objects already downloaded to a temporary file) are read in
    // place; compressed ones are spooled once, with the size cap.
    let file = match opened.seekable.take() {
        Some(f) => Ok(f),
        None => spool_to_tempfile(&mut opened.reader, opts.max_spool_bytes),
    };
    let file = match file {
        Ok(f) => f,
        Err(e) => return fail(&uri, QuarantineReason::UnreadableFile, e.to_string()),
    };
    let row_field =
        Arc::new(Field::new(ROW_COLUMN, DataType::Int64, false).with_extension_type(RowNumber));
    let builder = ArrowReaderOptions::new()
        .with_page_index_policy(PageIndexPolicy::Optional)
        .with_virtual_columns(vec![row_field])
        .and_then(|o| ParquetRecordBatchReaderBuilder::try_new_with_options(file, o));
    let builder = match builder {
        Ok(b) => b,
        Err(e) => {
            return fail(
                &uri,
                QuarantineReason::UnreadableFile,
                format!("not a readable Parquet file: {e}"),
            )
        }
    };
    // The file's own columns (without the virtual one), for planning and pruning.
    let file_schema: SchemaRef = Arc::new(Schema::new(
        builder
            .schema()
            .fields()
            .iter()
            .filter(|f| f.name() != ROW_COLUMN)
            .cloned()
            .collect::<Vec<_>>(),
    ));
    let full = match predicate.plan(&file_schema) {
        Ok(p) => p,
        Err(m) => {
            return fail(
                &uri,
                QuarantineReason::WhereError,
                format!("--where cannot be evaluated on this file's columns: {m}"),
            )
        }
    };
    let metadata = builder.metadata().clone();
    let total_rows = metadata.file_metadata().num_rows();
    let groups = metadata.row_groups();
    let keep = prune(&full, &file_schema, builder.parquet_schema(), groups);
    let kept: Vec<usize> = (0..groups.len()).filter(|&i| keep[i]).collect();
    if let Ok(mut s) = stats.lock() {
        s.parquet_row_groups += groups.len() as u64;
        s.parquet_row_groups_pruned += (groups.len() - kept.len()) as u64;
        // Footer row counts are input: summed without overflowing.
        let rows = |i: usize| groups[i].num_rows().max(0) as u64;
        let pruned = saturating_sum((0..groups.len()).filter(|&i| !keep[i]).map(rows));
        s.parquet_rows_pruned = s.parquet_rows_pruned.saturating_add(pruned);
        let evaluated = saturating_sum(kept.iter().map(|&i| rows(i)));
        s.records_evaluated = s.records_evaluated.saturating_add(evaluated);
    }
    // The predicate's own columns, decoded first.
    let roots: Vec<usize> = file_schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| predicate.columns().iter().any(|c| c == f.name()))
        .map(|(i, _)| i)
        .collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let mut cache: Option<(SchemaRef, Arc<dyn PhysicalExpr>)> = None;
    let pred = predicate.clone();
    let filter = ArrowPredicateFn::new(mask, move |batch: RecordBatch| {
        let schema = batch.schema();
        let hit = matches!(&cache, Some((s, _)) if *s == schema);
        if !hit {
            let p = pred.plan(&schema).map_err(ArrowError::ComputeError)?;
            cache = Some((schema, p));
        }
        match &cache {
            Some((_, phys)) => evaluate(phys.as_ref(), &batch).map_err(ArrowError::ComputeError),
            None => Err(ArrowError::ComputeError("predicate not compiled".into())),
        }
    });
    let reader = builder
        .with_row_groups(kept)
        .with_row_filter(RowFilter::new(vec![Box::new(filter)]))
        .with_batch_size(batch_rows(&metadata, opts.parquet_batch_size))
        .build();
    match reader {
        Ok(reader) => Box::new(FilteredRows {
            uri,
            max_record_bytes: opts.max_record_bytes,
            reader,
            batch: None,
            rows: None,
            row_in_batch: 0,
            next_row: 0,
            total_rows,
            done: false,
        }),
        Err(e) => fail(
            &uri,
            QuarantineReason::UnreadableFile,
            format!("not a readable Parquet file: {e}"),
        ),
    }
}

/// Which row groups may hold a match (`true` = read it). Anything that cannot be decided from
/// the statistics is kept.
fn prune(
    phys: &Arc<dyn PhysicalExpr>,
    schema: &SchemaRef,
    descr: &SchemaDescriptor,
    groups: &[RowGroupMetaData],
) -> Vec<bool> {
    let all = vec![true; groups.len()];
    let Ok(pp) = PruningPredicateBuilder::new()
        .with_file_schema(schema.clone())
        .try_build(phys.clone())
    else {
        return all;
    };
    if pp.always_true() {
        return all;
    }
    let stats = GroupStats {
        schema,
        descr,
        groups,
    };
    match pp.prune(&stats) {
        Ok(keep) if keep.len() == groups.len() => keep,
        _ => all,
    }
}

/// Row-group statistics in the shape DataFusion's pruning wants.
struct GroupStats<'a> {
    schema: &'a Schema,
    descr: &'a SchemaDescriptor,
    groups: &'a [RowGroupMetaData],
}

impl GroupStats<'_> {
    fn converter(&self, column: &Column) -> Option<StatisticsConverter<'_>> {
        StatisticsConverter::try_new(&column.name, self.schema, self.descr).ok()
    }
}

impl PruningStatistics for GroupStats<'_> {
    fn min_values(&self, column: &Column) -> Option<ArrayRef> {
        self.converter(column)?
            .row_group_mins(self.groups.iter())
            .ok()
    }

    fn max_values(&self, column: &Column) -> Option<ArrayRef> {
        self.converter(column)?
            .row_group_maxes(self.groups.iter())
            .ok()
    }

    fn num_containers(&self) -> usize {
        self.groups.len()
    }

    fn null_counts(&self, column: &Column) -> Option<ArrayRef> {
        self.converter(column)?
            .row_group_null_counts(self.groups.iter())
            .ok()
            .map(|a| Arc::new(a) as ArrayRef)
    }

    fn row_counts(&self) -> Option<ArrayRef> {
        Some(Arc::new(UInt64Array::from_iter_values(
            self.groups.iter().map(|g| g.num_rows().max(0) as u64),
        )))
    }

    #[allow(clippy::mutable_key_type)]
    fn contained(
        &self,
        _column: &Column,
        _values: &std::collections::HashSet<ScalarValue>,
    ) -> Option<arrow_array::BooleanArray> {
        None
    }
}

/// Iterates the matching rows of a Parquet file, with the rows in between as filtered counts.
struct FilteredRows {
    uri: String,
    max_record_bytes: usize,
    reader: ParquetRecordBatchReader,
    /// The current batch without the row-number column.
    batch: Option<RecordBatch>,
    /// The row numbers of the current batch.
    rows: Option<Vec<i64>>,
    row_in_batch: usize,
    /// The first row not yet accounted for (emitted or counted as filtered).
    next_row: i64,
    total_rows: i64,
    done: bool,
}

impl FilteredRows {
    fn gap(&mut self, upto: i64) -> Option<SourceItem> {
        if upto > self.next_row {
            let n = (upto - self.next_row) as u64;
            self.next_row = upto;
            Some(SourceItem::Filtered {
                source_uri: self.uri.clone(),
                records: n,
            })
        } else {
            None
        }
    }

    fn load(&mut self, b: RecordBatch) -> Result<(), String> {
        let schema = b.schema();
        let idx = schema
            .index_of(ROW_COLUMN)
            .map_err(|e| format!("row numbers missing: {e}"))?;
        let rows = b.column(idx).as_primitive::<Int64Type>().values().to_vec();
        let keep: Vec<usize> = (0..b.num_columns()).filter(|&i| i != idx).collect();
        let batch = b.project(&keep).map_err(|e| e.to_string())?;
        self.batch = Some(batch);
        self.rows = Some(rows);
        self.row_in_batch = 0;
        Ok(())
    }
}

impl Iterator for FilteredRows {
    type Item = SourceItem;

    fn next(&mut self) -> Option<SourceItem> {
        loop {
            if self.done {
                return None;
            }
            let current = match &self.rows {
                Some(rows) => rows.get(self.row_in_batch).copied(),
                None => None,
            };
            if let Some(row) = current {
                if let Some(gap) = self.gap(row) {
                    return Some(gap);
                }
                let bytes = self
                    .batch
                    .as_ref()
                    .map_or(0, |b| row_bytes(b, self.row_in_batch));
                if bytes > self.max_record_bytes {
                    self.row_in_batch += 1;
                    self.next_row = row + 1;
                    return Some(SourceItem::Quarantined(too_large(
                        &self.uri,
                        row,
                        bytes,
                        self.max_record_bytes,
                    )));
                }
                let value = match &self.batch {
                    Some(batch) => row_to_value(batch, self.row_in_batch),
                    None => serde_json::Value::Null,
                };
                self.row_in_batch += 1;
                self.next_row = row + 1;
                return Some(SourceItem::Record(RawRecord {
                    source_uri: self.uri.clone(),
                    record_index: row,
                    byte_offset: None,
                    value,
                }));
            }
            self.batch = None;
            self.rows = None;
            match self.reader.next() {
                None => {
                    self.done = true;
                    return self.gap(self.total_rows);
                }
                Some(Ok(b)) => {
                    if let Err(m) = self.load(b) {
                        self.done = true;
                        return Some(self.error(m));
                    }
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Some(self.error(e.to_string()));
                }
            }
        }
    }
}

impl FilteredRows {
    fn error(&self, detail: String) -> SourceItem {
        SourceItem::Quarantined(QuarantineEntry::new(
            &self.uri,
            self.next_row,
            None,
            QuarantineReason::ParquetError,
            format!(
                "filtered read after row {} failed, rest of file skipped: {detail}",
                self.next_row
            ),
            b"",
        ))
    }
}
