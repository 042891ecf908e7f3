//! The Arrow schema of the output contract (`docs/CONTRACT.md`, schema version 2), built for a
//! given [`Layout`] (top-k widths K and K_s, encoding) from the one column table ([`super::columns::CONTRACT`]). The writer builds
//! batches against it and `validate` compares every shard's schema with it; the machine-readable
//! copy for other languages is `schemas/dataset_v2.schema.json`, and a test keeps the two in
//! agreement.

use std::sync::Arc;

use arrow_schema::{DataType, Field, FieldRef, Fields, Schema, SchemaRef, TimeUnit};

use super::columns::{self, Column, Compact, Storage, TextKind, Values, Width, CONTRACT};
use super::encoding::Encoding;

/// The contract version these columns implement; bumped on any change that breaks readers.
pub const SCHEMA_VERSION: u16 = 2;

/// Default top-k width (K) of the teacher columns.
pub const DEFAULT_TOP_K: usize = 20;

/// The per-method relevance columns, as (column, method): every method's value is recorded
/// where it was computed, whichever one the filter used. The `pmi_control` combination has no
/// column: it is a function of `relevance_pmi` and `relevance_control_kl`.
pub const RELEVANCE_COLUMNS: [(&str, crate::record::RelevanceMethod); 5] = [
    ("relevance_kl", crate::record::RelevanceMethod::Kl),
    (
        "relevance_control_kl",
        crate::record::RelevanceMethod::ControlKl,
    ),
    ("relevance_pmi", crate::record::RelevanceMethod::Pmi),
    (
        "relevance_pmi_mean",
        crate::record::RelevanceMethod::PmiMean,
    ),
    (
        "relevance_pmi_answer",
        crate::record::RelevanceMethod::PmiAnswer,
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

/// What fixes the Arrow types of a dataset's columns: the top-k widths and the encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// The teacher's K.
    pub top_k: usize,
    /// The student's K_s (0: the student-side columns are null).
    pub student_top_k: usize,
    /// How top-k log-probs are stored.
    pub encoding: Encoding,
}

impl Layout {
    /// Lossless, teacher top-k `k`, no student-side columns: the default layout.
    pub fn lossless(k: usize) -> Self {
        Layout {
            top_k: k,
            student_top_k: 0,
            encoding: Encoding::Lossless,
        }
    }

    /// The Arrow width of a top-k column of `width`. The student-side columns are 1 wide when
    /// K_s is 0 (they are then all null): a zero width is legal Arrow, but Hugging Face
    /// `datasets` refuses to load it.
    pub fn width(&self, width: Width) -> usize {
        match width {
            Width::Teacher => self.top_k,
            Width::Student => self.student_top_k.max(1),
        }
    }

    /// Whether `column` is stored as one-byte codes (compact top-k log-probs).
    pub fn codes(&self, column: &Column) -> bool {
        self.encoding == Encoding::Compact
            && matches!(column.compact, Compact::SortedCodes | Compact::Codes)
    }

    /// How Parquet stores `column` in this layout: the column table's choice, except in the
    /// compact encoding, where one-byte codes take the writer's defaults (dictionary: measured
    /// smallest for them) and token ids BYTE_STREAM_SPLIT (measured 8% below PLAIN).
    pub fn storage(&self, column: &Column) -> Storage {
        if self.codes(column) {
            Storage::Default
        } else if self.encoding == Encoding::Compact && column.compact == Compact::Ids {
            Storage::ByteStreamSplit
        } else {
            column.storage
        }
    }

    /// Whether `column` is always null in this layout: a student-side column when K_s is 0,
    /// a student snapshot in the compact encoding.
    pub fn omitted(&self, column: &Column) -> bool {
        (column.width == Width::Student && self.student_top_k == 0)
            || (self.encoding == Encoding::Compact && column.compact == Compact::Omitted)
    }
}

/// The Arrow type of `column` in `layout`.
pub fn arrow_type(column: &Column, layout: &Layout) -> DataType {
    let k = layout.width(column.width);
    if layout.codes(column) {
        return large_list_topk(DataType::UInt8, k);
    }
    value_type(&column.values, k)
}

/// The Arrow type of a column holding `values` losslessly, for top-k width `k`.
pub fn value_type(values: &Values, k: usize) -> DataType {
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
        Values::TopKI32(..) | Values::OptTopKI32(..) => large_list_topk(DataType::Int32, k),
        Values::TopKF32(..) | Values::OptTopKF32(..) => large_list_topk(DataType::Float32, k),
    }
}

/// The Arrow type of `column` in `layout` (`None` for an unknown column).
pub fn column_type(column: &str, layout: &Layout) -> Option<DataType> {
    columns::column(column).map(|c| arrow_type(c, layout))
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
    for f in contract_schema(&Layout::lossless(0)).fields() {
        h.update(format!(
            "{} {} {}\n",
            f.name(),
            type_name(f.data_type()),
            f.is_nullable()
        ));
    }
    hex::encode(h.finalize())
}

/// The contract schema of `layout`, without metadata (metadata lives in the Parquet
/// key-value store, see [`super::DatasetMeta::key_values`]).
pub fn contract_schema(layout: &Layout) -> SchemaRef {
    let fields: Vec<Field> = CONTRACT
        .iter()
        .map(|c| Field::new(c.name, arrow_type(c, layout), c.nullable))
        .collect();
    Arc::new(Schema::new(fields))
}

/// The contract's spelling of an Arrow type (as used in `schemas/dataset_v2.schema.json`):
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
