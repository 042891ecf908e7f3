//! Input predicates (`input.where`): a SQL boolean expression over the input records' top-level
//! columns, evaluated by DataFusion before episodes are built.
//!
//! The predicate is parsed once against the union of the inputs' columns (Parquet schemas from
//! the footers; for JSON/JSONL files the top-level keys of their first records), so a syntax
//! error, a column no input has, or a non-boolean predicate is an error before any work. It is
//! then compiled to a DataFusion physical expression per concrete input schema: a Parquet file's
//! schema, or for JSON the types of one group of records' values. A column a file or record
//! lacks is `NULL` there, so the predicate is NULL or false and the record is not selected (SQL
//! semantics: only `true` keeps a record).
//!
//! JSON values are typed per record: booleans → `BOOLEAN`, integers → `BIGINT`, other numbers →
//! `DOUBLE`, strings that are RFC 3339 times (`2024-01-05T10:00:00Z`, `2024-01-05`) →
//! `TIMESTAMP(µs, UTC)` like Parquet timestamps, other strings → `VARCHAR`; `null`, arrays and
//! objects → `NULL`. Records are grouped by the types of the referenced columns, so a record's
//! outcome never depends on its neighbours. A record on which the predicate cannot be evaluated
//! (e.g. `NOT toxic` where `toxic` is a string) is quarantined `where_error`, never dropped.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use arrow_array::builder::{BooleanBuilder, Float64Builder, Int64Builder, StringBuilder};
use arrow_array::{
    Array, ArrayRef, BooleanArray, RecordBatch, RecordBatchOptions, TimestampMicrosecondArray,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::{lit, SessionContext};
use serde_json::Value;

use super::{SqlError, SqlResult};
use crate::ingest::formats::parse_time_us;
use crate::ingest::input::{open_decompressed, sniff_kind, spool_to_tempfile};
use crate::ingest::{open_file, FileKind, InputFile, RawRecord, ReaderOptions};

/// Records sampled per JSON/JSONL file to learn which columns it has (for the up-front check).
const JSON_SAMPLE_RECORDS: usize = 64;

/// The predicate's verdict on one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The predicate is true: the record goes on to episode building.
    Keep,
    /// The predicate is false or NULL: counted as filtered `where`.
    Reject,
    /// The predicate cannot be evaluated on this record's values (quarantined `where_error`).
    Error(String),
}

/// The type of one JSON value as the predicate sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JsonType {
    /// Missing, `null`, an array or an object.
    Null,
    /// `true` / `false`.
    Bool,
    /// An integer that fits i64.
    Int,
    /// Any other number.
    Float,
    /// A string that is not a time.
    Str,
    /// A string that parses as an RFC 3339 time (or a date).
    Time,
}

impl JsonType {
    /// Classifies a value (see the module docs for the rules).
    pub fn of(v: Option<&Value>) -> Self {
        match v {
            None | Some(Value::Null) | Some(Value::Array(_)) | Some(Value::Object(_)) => {
                JsonType::Null
            }
            Some(Value::Bool(_)) => JsonType::Bool,
            Some(Value::Number(n)) => {
                if n.is_i64() {
                    JsonType::Int
                } else {
                    JsonType::Float
                }
            }
            Some(Value::String(s)) => {
                if s.len() >= 10 && parse_time_us(s).is_some() {
                    JsonType::Time
                } else {
                    JsonType::Str
                }
            }
        }
    }

    /// The Arrow type of a column of this JSON type (`None` for NULL).
    pub fn data_type(&self) -> Option<DataType> {
        Some(match self {
            JsonType::Null => return None,
            JsonType::Bool => DataType::Boolean,
            JsonType::Int => DataType::Int64,
            JsonType::Float => DataType::Float64,
            JsonType::Str => DataType::Utf8,
            JsonType::Time => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        })
    }
}

type Compiled = Result<Arc<dyn PhysicalExpr>, String>;

/// A compiled input predicate. Cheap to share (`Arc`) between file readers.
pub struct WherePredicate {
    sql: String,
    expr: Expr,
    columns: Vec<String>,
    ctx: SessionContext,
    json_plans: Mutex<HashMap<Vec<JsonType>, Compiled>>,
}

impl std::fmt::Debug for WherePredicate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WherePredicate")
            .field("sql", &self.sql)
            .field("columns", &self.columns)
            .finish()
    }
}

/// The columns one input file offers to the predicate.
enum FileColumns {
    Parquet {
        uri: String,
        schema: SchemaRef,
    },
    Json {
        uri: String,
        first: Option<Value>,
        keys: Vec<(String, JsonType)>,
    },
}

impl WherePredicate {
    /// Parses `sql`, resolves its columns against the inputs and type-checks it on every input
    /// schema. Fails with a message naming the problem (syntax, unknown column with the valid
    /// ones, a non-boolean result, a type error in a given file) before any record is read.
    pub fn compile(sql: &str, files: &[InputFile], reader: &ReaderOptions) -> SqlResult<Self> {
        let err = |message: String| SqlError::Predicate {
            predicate: sql.to_string(),
            message,
        };
        if sql.trim().is_empty() {
            return Err(err("the predicate is empty".into()));
        }
        let described: Vec<FileColumns> =
            files.iter().filter_map(|f| describe(f, reader)).collect();
        // Union of the inputs' columns, first type seen wins (only used to resolve names).
        let mut fields: Vec<Field> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        for d in &described {
            let candidates: Vec<Field> = match d {
                FileColumns::Parquet { schema, .. } => {
                    schema.fields().iter().map(|f| f.as_ref().clone()).collect()
                }
                FileColumns::Json { keys, .. } => keys
                    .iter()
                    .map(|(k, t)| Field::new(k, t.data_type().unwrap_or(DataType::Utf8), true))
                    .collect(),
            };
            for f in candidates {
                if seen.insert(f.name().clone()) {
                    fields.push(f.with_nullable(true));
                }
            }
        }
        let union = DFSchema::try_from(Schema::new(fields)).map_err(|e| err(e.to_string()))?;
        let ctx = SessionContext::new();
        let expr = ctx
            .parse_sql_expr(sql, &union)
            .map_err(|e| err(clean(&e.to_string())))?;
        let columns: Vec<String> = expr
            .column_refs()
            .iter()
            .map(|c| c.name.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if columns.is_empty() {
            return Err(err(
                "the predicate names no input column, so it would keep or drop every record alike"
                    .into(),
            ));
        }
        let pred = WherePredicate {
            sql: sql.to_string(),
            expr,
            columns,
            ctx,
            json_plans: Mutex::new(HashMap::new()),
        };
        for d in &described {
            let (uri, result) = match d {
                FileColumns::Parquet { uri, schema } => (uri, pred.plan(schema).map(|_| ())),
                FileColumns::Json { uri, first, .. } => match first {
                    Some(v) => (uri, pred.json_plan(&pred.signature(v)).map(|_| ())),
                    None => continue,
                },
            };
            result.map_err(|m| err(format!("on {uri}: {m}")))?;
        }
        Ok(pred)
    }

    /// The predicate as given.
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// The top-level columns it references (sorted).
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// Compiles the predicate for a concrete schema: columns the schema lacks become NULL, types
    /// are coerced (e.g. `timestamp >= '2024-01-01'` casts the literal), and the result must be
    /// boolean.
    pub fn plan(&self, schema: &Schema) -> Compiled {
        let present: HashSet<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let expr = self
            .expr
            .clone()
            .transform_up(|e| {
                if let Expr::Column(c) = &e {
                    if !present.contains(c.name.as_str()) {
                        return Ok(Transformed::yes(lit(ScalarValue::Null)));
                    }
                }
                Ok(Transformed::no(e))
            })
            .map_err(|e| clean(&e.to_string()))?
            .data;
        let df = DFSchema::try_from(schema.clone()).map_err(|e| clean(&e.to_string()))?;
        let phys = self
            .ctx
            .create_physical_expr(expr, &df)
            .map_err(|e| clean(&e.to_string()))?;
        let dt = phys.data_type(schema).map_err(|e| clean(&e.to_string()))?;
        if !matches!(dt, DataType::Boolean | DataType::Null) {
            return Err(format!("the predicate is of type {dt}, not boolean"));
        }
        Ok(phys)
    }

    /// The JSON types of the referenced columns in one record.
    pub fn signature(&self, value: &Value) -> Vec<JsonType> {
        self.columns
            .iter()
            .map(|c| JsonType::of(value.get(c)))
            .collect()
    }

    fn json_schema(&self, sig: &[JsonType]) -> Schema {
        Schema::new(
            self.columns
                .iter()
                .zip(sig)
                .filter_map(|(c, t)| t.data_type().map(|dt| Field::new(c, dt, true)))
                .collect::<Vec<_>>(),
        )
    }

    fn json_plan(&self, sig: &[JsonType]) -> Compiled {
        if let Ok(cache) = self.json_plans.lock() {
            if let Some(c) = cache.get(sig) {
                return c.clone();
            }
        }
        let compiled = self.plan(&self.json_schema(sig));
        if let Ok(mut cache) = self.json_plans.lock() {
            cache.insert(sig.to_vec(), compiled.clone());
        }
        compiled
    }

    /// Evaluates the predicate on JSON records: one verdict per record, in order.
    pub fn eval_records(&self, records: &[&RawRecord]) -> Vec<Verdict> {
        let mut out = vec![Verdict::Reject; records.len()];
        let mut groups: HashMap<Vec<JsonType>, Vec<usize>> = HashMap::new();
        for (i, r) in records.iter().enumerate() {
            groups.entry(self.signature(&r.value)).or_default().push(i);
        }
        for (sig, idx) in groups {
            self.eval_group(records, &sig, &idx, &mut out);
        }
        out
    }

    fn eval_group(
        &self,
        records: &[&RawRecord],
        sig: &[JsonType],
        idx: &[usize],
        out: &mut [Verdict],
    ) {
        let phys = match self.json_plan(sig) {
            Ok(p) => p,
            Err(m) => {
                let detail = format!("--where cannot be evaluated on this record's values: {m}");
                for &i in idx {
                    out[i] = Verdict::Error(detail.clone());
                }
                return;
            }
        };
        let result = json_batch(&self.columns, sig, records, idx)
            .and_then(|batch| evaluate(phys.as_ref(), &batch));
        match result {
            Ok(mask) => {
                for (k, &i) in idx.iter().enumerate() {
                    out[i] = if mask.value(k) {
                        Verdict::Keep
                    } else {
                        Verdict::Reject
                    };
                }
            }
            // A runtime error (e.g. a failing cast) in a group: find the records that cause it.
            Err(_) if idx.len() > 1 => {
                for &i in idx {
                    self.eval_group(records, sig, &[i], out);
                }
            }
            Err(m) => {
                out[idx[0]] = Verdict::Error(format!("--where failed on this record: {m}"));
            }
        }
    }
}

/// Evaluates a compiled predicate on a batch: `true` keeps a row, `false` and NULL drop it.
pub fn evaluate(phys: &dyn PhysicalExpr, batch: &RecordBatch) -> Result<BooleanArray, String> {
    let value = phys.evaluate(batch).map_err(|e| clean(&e.to_string()))?;
    let array = value
        .into_array(batch.num_rows())
        .map_err(|e| clean(&e.to_string()))?;
    match array.data_type() {
        DataType::Null => Ok(BooleanArray::from(vec![false; batch.num_rows()])),
        _ => match array.as_any().downcast_ref::<BooleanArray>() {
            Some(b) if b.null_count() > 0 => {
                Ok(datafusion::arrow::compute::prep_null_mask_filter(b))
            }
            Some(b) => Ok(b.clone()),
            None => Err(format!(
                "the predicate gave {}, not boolean",
                array.data_type()
            )),
        },
    }
}

/// Builds the batch of the referenced non-NULL columns of the records `idx` (all of one
/// signature).
fn json_batch(
    columns: &[String],
    sig: &[JsonType],
    records: &[&RawRecord],
    idx: &[usize],
) -> Result<RecordBatch, String> {
    let mut fields = Vec::new();
    let mut arrays: Vec<ArrayRef> = Vec::new();
    for (c, t) in columns.iter().zip(sig) {
        let Some(dt) = t.data_type() else { continue };
        let values = idx.iter().map(|&i| records[i].value.get(c));
        let array: ArrayRef = match t {
            JsonType::Bool => {
                let mut b = BooleanBuilder::with_capacity(idx.len());
                values.for_each(|v| b.append_option(v.and_then(Value::as_bool)));
                Arc::new(b.finish())
            }
            JsonType::Int => {
                let mut b = Int64Builder::with_capacity(idx.len());
                values.for_each(|v| b.append_option(v.and_then(Value::as_i64)));
                Arc::new(b.finish())
            }
            JsonType::Float => {
                let mut b = Float64Builder::with_capacity(idx.len());
                values.for_each(|v| b.append_option(v.and_then(Value::as_f64)));
                Arc::new(b.finish())
            }
            JsonType::Str => {
                let mut b = StringBuilder::new();
                values.for_each(|v| b.append_option(v.and_then(Value::as_str)));
                Arc::new(b.finish())
            }
            JsonType::Time => Arc::new(
                TimestampMicrosecondArray::from(
                    values
                        .map(|v| v.and_then(Value::as_str).and_then(parse_time_us))
                        .collect::<Vec<_>>(),
                )
                .with_timezone("UTC"),
            ),
            JsonType::Null => continue,
        };
        fields.push(Field::new(c, dt, true));
        arrays.push(array);
    }
    RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields)),
        arrays,
        &RecordBatchOptions::new().with_row_count(Some(idx.len())),
    )
    .map_err(|e| e.to_string())
}

/// Reads what columns a file offers: the Parquet footer's schema, or the keys of the first
/// records of a JSON/JSONL file. Unreadable files offer nothing (the reader quarantines them).
fn describe(file: &InputFile, reader: &ReaderOptions) -> Option<FileColumns> {
    let uri = file.path.display().to_string();
    // Remote Parquet objects: only the footer is fetched (two range requests), so the object
    // is downloaded once, by the reader.
    let remote = crate::store::is_remote(&uri);
    if remote && file.kind == Some(FileKind::Parquet) {
        let meta = crate::store::parquet_footer(&uri).ok()?;
        let fm = meta.file_metadata();
        let schema =
            parquet::arrow::parquet_to_arrow_schema(fm.schema_descr(), fm.key_value_metadata())
                .ok()?;
        return Some(FileColumns::Parquet {
            uri,
            schema: Arc::new(schema),
        });
    }
    let mut opened = open_decompressed(&file.path).ok()?;
    let kind = file
        .kind
        .or_else(|| sniff_kind(&opened.magic))
        .unwrap_or(FileKind::Jsonl);
    if kind == FileKind::Parquet {
        let f = match opened.seekable.take() {
            Some(f) => f,
            None => spool_to_tempfile(&mut opened.reader, reader.max_spool_bytes).ok()?,
        };
        let builder =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f).ok()?;
        return Some(FileColumns::Parquet {
            uri,
            schema: builder.schema().clone(),
        });
    }
    drop(opened);
    let mut first = None;
    let mut keys: Vec<(String, JsonType)> = Vec::new();
    let mut seen = HashSet::new();
    for rec in open_file(file, reader)
        .filter_map(Result::ok)
        .take(JSON_SAMPLE_RECORDS)
    {
        if let Value::Object(m) = &rec.value {
            for (k, v) in m {
                if seen.insert(k.clone()) {
                    keys.push((k.clone(), JsonType::of(Some(v))));
                }
            }
        }
        if first.is_none() {
            first = Some(rec.value);
        }
    }
    Some(FileColumns::Json { uri, first, keys })
}

/// DataFusion error texts carry a category prefix and sometimes a backtrace hint; keep the
/// message a user can act on.
fn clean(s: &str) -> String {
    s.lines().next().unwrap_or(s).trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_values_are_typed_per_value() {
        let t = |v: Value| JsonType::of(Some(&v));
        assert_eq!(t(json!(true)), JsonType::Bool);
        assert_eq!(t(json!(3)), JsonType::Int);
        assert_eq!(t(json!(3.5)), JsonType::Float);
        assert_eq!(t(json!("English")), JsonType::Str);
        assert_eq!(t(json!("2024-01-05T10:00:00Z")), JsonType::Time);
        assert_eq!(t(json!("2024-01-05")), JsonType::Time);
        assert_eq!(t(json!("2024-13-05")), JsonType::Str);
        assert_eq!(t(json!(null)), JsonType::Null);
        assert_eq!(t(json!([1])), JsonType::Null);
        assert_eq!(JsonType::of(None), JsonType::Null);
    }
}
