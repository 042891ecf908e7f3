//! The Arrow schema of the output contract (`docs/CONTRACT.md`, schema version 1), built for a
//! given top-k width K from the one column table ([`super::columns::CONTRACT`]). The writer builds
//! batches against it and `validate` compares every shard's schema with it; the machine-readable
//! copy for other languages is `schemas/dataset_v1.schema.json`, and a test keeps the two in
//! agreement.

use std::sync::Arc;

use arrow_schema::{DataType, Field, FieldRef, Fields, Schema, SchemaRef, TimeUnit};

use super::columns::{self, TextKind, Values, CONTRACT};

/// The contract version these columns implement; bumped on any change that breaks readers.
pub const SCHEMA_VERSION: u16 = 1;

/// Default top-k width (K) of the teacher columns.
pub const DEFAULT_TOP_K: usize = 20;

/// The per-method relevance columns, as (column, method): every method's value is recorded
/// where it was computed, whichever one the filter used. The `pmi_control` combination has no
/// column: it is a function of `relevance_pmi` and `relevance_control_kl`.
pub const RELEVANCE_COLUMNS: [(&str, crate::score::RelevanceMethod); 5] = [
    ("relevance_kl", crate::score::RelevanceMethod::Kl),
    (
        "relevance_control_kl",
        crate::score::RelevanceMethod::ControlKl,
    ),
    ("relevance_pmi", crate::score::RelevanceMethod::Pmi),
    ("relevance_pmi_mean", crate::score::RelevanceMethod::PmiMean),
    (
        "relevance_pmi_answer",
        crate::score::RelevanceMethod::PmiAnswer,
    ),
];

/// Dictionary-encoded utf8: the low-cardinality label columns.
pub fn dict_utf8() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

/// The element field of every list column (`item`, never null).
pub fn item(dt: DataType) -> FieldRef {
    Arc::new(Field::new("item", dt, false))
}

/// The fields of one chat message (`role`, `content`), as TRL reads them.
pub fn message_fields() -> Fields {
    Fields::from(vec![
        Field::new("role", DataType::Utf8, false),
        Field::new("content", DataType::LargeUtf8, false),
    ])
}

/// `list<struct<role utf8, content large_utf8>>`.
pub fn messages_type() -> DataType {
    DataType::List(item(DataType::Struct(message_fields())))
}

/// `large_list<T>` with non-null items.
pub fn large_list(dt: DataType) -> DataType {
    DataType::LargeList(item(dt))
}

/// `large_list<fixed_size_list<T, K>>`.
pub fn large_list_topk(dt: DataType, k: usize) -> DataType {
    large_list(DataType::FixedSizeList(item(dt), k as i32))
}

/// The Arrow type of a column holding `values`, for top-k width `k`.
pub fn arrow_type(values: &Values, k: usize) -> DataType {
    match values {
        Values::U16(..) => DataType::UInt16,
        Values::I32(..) => DataType::Int32,
        Values::I64(..) => DataType::Int64,
        Values::Bool(..) => DataType::Boolean,
        Values::F32(..) | Values::OptF32(..) => DataType::Float32,
        Values::OptTimestamp(..) => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        Values::Text(TextKind::Utf8, ..) | Values::OptText(..) => DataType::Utf8,
        Values::Text(TextKind::Large, ..) => DataType::LargeUtf8,
        Values::Text(TextKind::Dictionary, ..) => dict_utf8(),
        Values::Messages(..) => messages_type(),
        Values::I32List(..) => large_list(DataType::Int32),
        Values::U8List(..) => large_list(DataType::UInt8),
        Values::F32List(..) => large_list(DataType::Float32),
        Values::TopKI32(..) => large_list_topk(DataType::Int32, k),
        Values::TopKF32(..) => large_list_topk(DataType::Float32, k),
    }
}

/// The Arrow type of `column` for top-k width `k` (`None` for an unknown column).
pub fn column_type(column: &str, k: usize) -> Option<DataType> {
    columns::column(column).map(|c| arrow_type(&c.values, k))
}

/// Whether `column` may hold nulls (only where the input may not know the value).
pub fn column_nullable(column: &str) -> bool {
    columns::column(column).is_some_and(|c| c.nullable)
}

/// sha256 (hex) of the contract's column names, types and nullability (K written as `K`):
/// a dataset directory is bound to it, so shards of one dataset always share one layout.
pub fn contract_sha256() -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(format!("v{SCHEMA_VERSION}\n"));
    for f in contract_schema(0).fields() {
        h.update(format!(
            "{} {} {}\n",
            f.name(),
            type_name(f.data_type()),
            f.is_nullable()
        ));
    }
    hex::encode(h.finalize())
}

/// The contract schema for top-k width `k`, without metadata (metadata lives in the Parquet
/// key-value store, see [`super::DatasetMeta::key_values`]).
pub fn contract_schema(k: usize) -> SchemaRef {
    let fields: Vec<Field> = CONTRACT
        .iter()
        .map(|c| Field::new(c.name, arrow_type(&c.values, k), c.nullable))
        .collect();
    Arc::new(Schema::new(fields))
}

/// The contract's spelling of an Arrow type (as used in `schemas/dataset_v1.schema.json`):
/// `uint16`, `dictionary<int32, utf8>`, `large_list<fixed_size_list<float32, K>>`,
/// `timestamp[us, UTC]`, `list<struct<role: utf8, content: large_utf8>>`. Fixed-size lists are
/// written with a literal `K` since K is a pipeline setting.
pub fn type_name(dt: &DataType) -> String {
    match dt {
        DataType::Boolean => "bool".into(),
        DataType::UInt8 => "uint8".into(),
        DataType::UInt16 => "uint16".into(),
        DataType::Int32 => "int32".into(),
        DataType::Int64 => "int64".into(),
        DataType::Float32 => "float32".into(),
        DataType::Utf8 => "utf8".into(),
        DataType::LargeUtf8 => "large_utf8".into(),
        DataType::Timestamp(TimeUnit::Microsecond, Some(tz)) => format!("timestamp[us, {tz}]"),
        DataType::Dictionary(k, v) => format!("dictionary<{}, {}>", type_name(k), type_name(v)),
        DataType::List(f) => format!("list<{}>", type_name(f.data_type())),
        DataType::LargeList(f) => format!("large_list<{}>", type_name(f.data_type())),
        DataType::FixedSizeList(f, _) => {
            format!("fixed_size_list<{}, K>", type_name(f.data_type()))
        }
        DataType::Struct(fields) => {
            let inner: Vec<String> = fields
                .iter()
                .map(|f| format!("{}: {}", f.name(), type_name(f.data_type())))
                .collect();
            format!("struct<{}>", inner.join(", "))
        }
        other => format!("{other:?}"),
    }
}
