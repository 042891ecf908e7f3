//! The Arrow schema of the output contract (`docs/CONTRACT.md`, schema version 1), built for a
//! given top-k width K. The writer builds batches against it and `validate` compares every
//! shard's schema with it, so there is exactly one definition of the columns in the code; the
//! machine-readable copy for other languages is `schemas/dataset_v1.schema.json`, and a test
//! keeps the two in agreement.

use std::sync::Arc;

use arrow_schema::{DataType, Field, FieldRef, Fields, Schema, SchemaRef, TimeUnit};

/// The contract version these columns implement; bumped on any change that breaks readers.
pub const SCHEMA_VERSION: u16 = 1;

/// Default top-k width (K) of the teacher columns.
pub const DEFAULT_TOP_K: usize = 20;

/// Column names in schema order (the order shards store them in).
pub const COLUMNS: [&str; 35] = [
    "schema_version",
    "sample_id",
    "source_kind",
    "source_format",
    "source_uri",
    "source_record",
    "conversation_id",
    "turn_index",
    "event_time",
    "method",
    "prompt",
    "privileged_context",
    "teacher_template",
    "teacher_prompt",
    "completion",
    "prompt_ids",
    "teacher_prompt_ids",
    "completion_ids",
    "loss_mask",
    "finish_reason",
    "is_on_policy",
    "student_logprobs",
    "teacher_logprobs",
    "advantages",
    "teacher_topk_ids",
    "teacher_topk_logprobs",
    "teacher_tail_logmass",
    "student_topk_logprobs",
    "num_completion_tokens",
    "relevance_kl",
    "relevance",
    "relevance_control_kl",
    "relevance_pmi",
    "relevance_pmi_mean",
    "relevance_pmi_answer",
];

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

/// Allowed values of the dictionary columns (anything else is a contract violation).
pub const ALLOWED_VALUES: [(&str, &[&str]); 4] = [
    (
        "source_kind",
        &["chat_log", "demonstration", "unit_test", "hint"],
    ),
    (
        "source_format",
        &[
            "wildchat",
            "sharegpt",
            "openai",
            "demonstration",
            "unit_test",
            "hint",
        ],
    ),
    ("method", &["sdft", "sdpo", "opsd", "opd", "hindsight"]),
    ("finish_reason", &["stop", "length", "unknown"]),
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

/// The Arrow type of `column` for top-k width `k` (`None` for an unknown column).
pub fn column_type(column: &str, k: usize) -> Option<DataType> {
    Some(match column {
        "schema_version" => DataType::UInt16,
        "sample_id" | "source_uri" | "conversation_id" | "teacher_template" => DataType::Utf8,
        "source_kind" | "source_format" | "method" | "finish_reason" => dict_utf8(),
        "source_record" => DataType::Int64,
        "turn_index" | "num_completion_tokens" => DataType::Int32,
        "event_time" => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        "prompt" | "teacher_prompt" => messages_type(),
        "privileged_context" | "completion" => DataType::LargeUtf8,
        "prompt_ids" | "teacher_prompt_ids" | "completion_ids" => large_list(DataType::Int32),
        "loss_mask" => large_list(DataType::UInt8),
        "is_on_policy" => DataType::Boolean,
        "student_logprobs" | "teacher_logprobs" | "advantages" | "teacher_tail_logmass" => {
            large_list(DataType::Float32)
        }
        "teacher_topk_ids" => large_list_topk(DataType::Int32, k),
        "teacher_topk_logprobs" | "student_topk_logprobs" => large_list_topk(DataType::Float32, k),
        "relevance_kl"
        | "relevance"
        | "relevance_control_kl"
        | "relevance_pmi"
        | "relevance_pmi_mean"
        | "relevance_pmi_answer" => DataType::Float32,
        _ => return None,
    })
}

/// Whether `column` may hold nulls (only where the input may not know the value).
pub fn column_nullable(column: &str) -> bool {
    matches!(
        column,
        "conversation_id"
            | "event_time"
            | "relevance"
            | "relevance_control_kl"
            | "relevance_pmi"
            | "relevance_pmi_mean"
            | "relevance_pmi_answer"
    )
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
    let fields: Vec<Field> = COLUMNS
        .iter()
        .filter_map(|c| column_type(c, k).map(|dt| Field::new(*c, dt, column_nullable(c))))
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
