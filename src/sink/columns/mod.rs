//! The output contract declared once: one table of columns, in shard order, each with its name,
//! nullability, how its values are held in an [`OutputRow`] (and so its Arrow type), how Parquet
//! stores it, and the values it may take. The Arrow schema ([`super::schema`]), rows → batches
//! and batches → rows ([`super::batch`]), the writer's per-column Parquet settings
//! ([`super::shard`]) and `validate`'s per-column checks are all derived from it;
//! `tests/it/sink.rs` compares it with `schemas/dataset_v2.schema.json`.

use super::row::OutputRow;
use crate::episode::Message;

mod contract;
pub use contract::*;

/// The kind of text column: plain, large (long texts) or dictionary-encoded (labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    /// `utf8`.
    Utf8,
    /// `large_utf8`: texts that may exceed 2 GiB per batch.
    Large,
    /// `dictionary<int32, utf8>`: low-cardinality labels.
    Dictionary,
}

/// How a column's values are read from and written to a row. The variant fixes the Arrow type
/// (with the top-k width K for the `TopK*` ones).
#[derive(Clone, Copy)]
pub enum Values {
    /// `uint16`.
    U16(fn(&OutputRow) -> u16, fn(&mut OutputRow, u16)),
    /// `int32`.
    I32(fn(&OutputRow) -> i32, fn(&mut OutputRow, i32)),
    /// `int64`.
    I64(fn(&OutputRow) -> i64, fn(&mut OutputRow, i64)),
    /// `bool`.
    Bool(fn(&OutputRow) -> bool, fn(&mut OutputRow, bool)),
    /// `float32`, never null.
    F32(fn(&OutputRow) -> f32, fn(&mut OutputRow, f32)),
    /// `float32`, nullable.
    OptF32(
        fn(&OutputRow) -> Option<f32>,
        fn(&mut OutputRow, Option<f32>),
    ),
    /// `timestamp[us, UTC]`, nullable.
    OptTimestamp(
        fn(&OutputRow) -> Option<i64>,
        fn(&mut OutputRow, Option<i64>),
    ),
    /// Text, never null.
    Text(TextKind, fn(&OutputRow) -> &str, fn(&mut OutputRow, String)),
    /// `utf8`, nullable.
    OptText(
        fn(&OutputRow) -> Option<&str>,
        fn(&mut OutputRow, Option<String>),
    ),
    /// `list<struct<role: utf8, content: large_utf8>>`.
    Messages(
        fn(&OutputRow) -> &[Message],
        fn(&mut OutputRow, Vec<Message>),
    ),
    /// `large_list<int32>`.
    I32List(fn(&OutputRow) -> &[i32], fn(&mut OutputRow, Vec<i32>)),
    /// `large_list<uint8>`.
    U8List(fn(&OutputRow) -> &[u8], fn(&mut OutputRow, Vec<u8>)),
    /// `large_list<float32>`.
    F32List(fn(&OutputRow) -> &[f32], fn(&mut OutputRow, Vec<f32>)),
    /// `large_list<fixed_size_list<int32, K>>`, flattened row-major in the row.
    TopKI32(fn(&OutputRow) -> &[i32], fn(&mut OutputRow, Vec<i32>)),
    /// `large_list<fixed_size_list<float32, K>>`, flattened row-major in the row.
    TopKF32(fn(&OutputRow) -> &[f32], fn(&mut OutputRow, Vec<f32>)),
    /// `large_list<fixed_size_list<int32, K>>`, nullable.
    OptTopKI32(
        fn(&OutputRow) -> Option<&[i32]>,
        fn(&mut OutputRow, Option<Vec<i32>>),
    ),
    /// `large_list<fixed_size_list<float32, K>>`, nullable.
    OptTopKF32(
        fn(&OutputRow) -> Option<&[f32]>,
        fn(&mut OutputRow, Option<Vec<f32>>),
    ),
}

/// What a column's values must satisfy beyond their type; `validate` checks every column by
/// its domain, so a new column declares its checks here instead of in a list in `validate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    /// Nothing beyond the type.
    Any,
    /// Token ids: in `[0, vocabulary size)`.
    TokenId,
    /// Log-probabilities: finite and ≤ 0.
    LogProb,
    /// Log-normalisers (log Z): finite.
    LogNormaliser,
    /// 0 or 1.
    Mask,
    /// Scores (relevance): finite where set.
    Finite,
}

/// How many values a list column holds per row, relative to the response's T tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A scalar, or a list of its own length (prompts, the response itself).
    Free,
    /// One value per response token: T.
    PerToken,
    /// K values per response token (K or K_s by [`Width`]): T × K.
    TopK,
}

/// The values of a numeric list column in one row, for the checks that do not care which type.
#[derive(Debug, Clone, Copy)]
pub enum Numbers<'a> {
    I32(&'a [i32]),
    U8(&'a [u8]),
    F32(&'a [f32]),
}

impl Numbers<'_> {
    /// How many values.
    pub fn len(&self) -> usize {
        match self {
            Numbers::I32(x) => x.len(),
            Numbers::U8(x) => x.len(),
            Numbers::F32(x) => x.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The index of the first value (as f64, exact for every type here) for which `bad` holds.
    pub fn find(&self, bad: impl Fn(f64) -> bool) -> Option<usize> {
        match self {
            Numbers::I32(x) => x.iter().position(|&v| bad(f64::from(v))),
            Numbers::U8(x) => x.iter().position(|&v| bad(f64::from(v))),
            Numbers::F32(x) => x.iter().position(|&v| bad(f64::from(v))),
        }
    }

    /// Value `i` as its own type prints it.
    pub fn show(&self, i: usize) -> String {
        match self {
            Numbers::I32(x) => x.get(i).map(ToString::to_string),
            Numbers::U8(x) => x.get(i).map(ToString::to_string),
            Numbers::F32(x) => x.get(i).map(ToString::to_string),
        }
        .unwrap_or_default()
    }
}

impl Values {
    /// A list column's values in `row` (`None` for a scalar or text column, or a null list).
    pub fn numbers<'a>(&self, row: &'a OutputRow) -> Option<Numbers<'a>> {
        match *self {
            Values::I32List(get, _) | Values::TopKI32(get, _) => Some(Numbers::I32(get(row))),
            Values::U8List(get, _) => Some(Numbers::U8(get(row))),
            Values::F32List(get, _) | Values::TopKF32(get, _) => Some(Numbers::F32(get(row))),
            Values::OptTopKI32(get, _) => get(row).map(Numbers::I32),
            Values::OptTopKF32(get, _) => get(row).map(Numbers::F32),
            _ => None,
        }
    }

    /// A float scalar column's value in `row` (`None` for other columns; `Some(None)` for null).
    pub fn float(&self, row: &OutputRow) -> Option<Option<f32>> {
        match *self {
            Values::F32(get, _) => Some(Some(get(row))),
            Values::OptF32(get, _) => Some(get(row)),
            _ => None,
        }
    }

    /// The shape its variant fixes (top-k variants hold T × K values).
    fn is_top_k(&self) -> bool {
        matches!(
            self,
            Values::TopKI32(..)
                | Values::TopKF32(..)
                | Values::OptTopKI32(..)
                | Values::OptTopKF32(..)
        )
    }
}

/// Which top-k width a top-k column has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Width {
    /// The teacher's K (`top_k`); also what non-top-k columns carry.
    Teacher,
    /// The student's K_s (`student_top_k`).
    Student,
}

/// How a column is stored under `contract.encoding = "compact"` (see [`super::encoding`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compact {
    /// As in the lossless encoding.
    Same,
    /// Token ids: int32 with BYTE_STREAM_SPLIT (measured smaller than PLAIN under zstd).
    Ids,
    /// Descending log-probs: one-byte code differences along K (`uint8`).
    SortedCodes,
    /// Log-probs in no particular order: one-byte codes (`uint8`).
    Codes,
    /// Not stored (null): the student's own log-prob snapshots, which a trainer recomputes with
    /// the live student.
    Omitted,
}

/// How the Parquet writer stores a column (measured choices, see docs/STORAGE.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// zstd with the writer's defaults (dictionary where it pays), no statistics: min/max of
    /// long lists and texts only bloat the footer.
    Default,
    /// Scalars that keep chunk statistics (cheap, and useful for predicate pushdown).
    Statistics,
    /// Floats stored with BYTE_STREAM_SPLIT (exponent bytes compress well under zstd;
    /// dictionaries of unique floats only cost space).
    ByteStreamSplit,
    /// PLAIN, no dictionary: high-cardinality ids (a dictionary costs more than plain + zstd).
    Plain,
}

/// One contract column.
#[derive(Clone, Copy)]
pub struct Column {
    /// The column name.
    pub name: &'static str,
    /// Whether it may hold nulls (only where the input may not know the value).
    pub nullable: bool,
    /// How its values are held in a row (and so its Arrow type).
    pub values: Values,
    /// How Parquet stores it.
    pub storage: Storage,
    /// The only values a label column may take (`None`: any).
    pub allowed: Option<&'static [&'static str]>,
    /// Which top-k width the column has (top-k columns only).
    pub width: Width,
    /// How the compact encoding stores it.
    pub compact: Compact,
    /// What its values must satisfy (`validate`).
    pub domain: Domain,
    /// One value per response token (checked against T); top-k columns are T × K by type.
    pub per_token: bool,
}

impl Column {
    /// How many values it holds per row, relative to the response's T tokens.
    pub fn shape(&self) -> Shape {
        if self.values.is_top_k() {
            Shape::TopK
        } else if self.per_token {
            Shape::PerToken
        } else {
            Shape::Free
        }
    }
}

/// The contract column named `name`.
pub fn column(name: &str) -> Option<&'static Column> {
    CONTRACT.iter().find(|c| c.name == name)
}

/// The first float column of `row` holding a NaN or an infinity, if any. Such a value is never
/// written: the pipeline drops the row (`non_finite`) instead, since a NaN passes every
/// threshold comparison and a compact code cannot represent it.
pub fn first_non_finite(row: &OutputRow) -> Option<&'static str> {
    let bad = |xs: &[f32]| xs.iter().any(|x| !x.is_finite());
    CONTRACT.iter().find_map(|c| {
        let found = match c.values {
            Values::F32(get, _) => !get(row).is_finite(),
            Values::OptF32(get, _) => get(row).is_some_and(|x| !x.is_finite()),
            Values::F32List(get, _) | Values::TopKF32(get, _) => bad(get(row)),
            Values::OptTopKF32(get, _) => get(row).is_some_and(bad),
            _ => false,
        };
        found.then_some(c.name)
    })
}
