//! Query output: a readable table on stdout, or CSV / JSONL / Parquet.
//!
//! Files are written to a temporary name next to the target and renamed into place only when
//! the whole result is written, so a failed query never leaves a partial or empty file.
//! Dictionary columns (`source_kind`, ...) are written as plain strings in CSV and JSONL; CSV
//! holds scalars only, so a list or struct column is an error that says to use JSONL/Parquet.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::compute::cast;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::query::QueryStream;
use super::{SqlError, SqlResult};

/// How a result is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// An aligned text table (cells cut to a width, rows capped).
    Table,
    /// Comma-separated values with a header (scalar columns only).
    Csv,
    /// One JSON object per row.
    Jsonl,
    /// Apache Parquet (zstd), any column type.
    Parquet,
}

impl OutputFormat {
    /// The format an output file's extension implies (`.csv`, `.jsonl`/`.ndjson`/`.json`,
    /// `.parquet`/`.pq`).
    pub fn from_path(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_string_lossy().to_ascii_lowercase();
        Some(match ext.as_str() {
            "csv" => OutputFormat::Csv,
            "jsonl" | "ndjson" | "json" => OutputFormat::Jsonl,
            "parquet" | "pq" => OutputFormat::Parquet,
            "txt" => OutputFormat::Table,
            _ => return None,
        })
    }
}

/// Limits of the table output.
#[derive(Debug, Clone, Copy)]
pub struct TableLimits {
    /// Rows printed (the total is always reported).
    pub max_rows: usize,
    /// Characters per cell; longer cells end with `…`.
    pub max_width: usize,
}

/// Renders a whole result as a text table: at most `max_rows` rows, cells cut to
/// `max_width` characters with line breaks shown as `⏎`, followed by the row count.
pub fn render_table(q: &mut QueryStream<'_>, limits: TableLimits) -> SqlResult<String> {
    let schema = q.schema();
    let mut columns: Vec<Vec<String>> = vec![Vec::new(); schema.fields().len()];
    let mut total = 0usize;
    let options = FormatOptions::default().with_null("NULL");
    while let Some(batch) = q.next_batch()? {
        let take = limits.max_rows.saturating_sub(total).min(batch.num_rows());
        if take > 0 {
            for (i, col) in batch.columns().iter().enumerate() {
                let f = ArrayFormatter::try_new(col.as_ref(), &options)
                    .map_err(|e| SqlError::Query(e.to_string()))?;
                for r in 0..take {
                    columns[i].push(cut(&f.value(r).to_string(), limits.max_width));
                }
            }
        }
        total += batch.num_rows();
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| Field::new(f.name(), DataType::Utf8, true))
        .collect();
    let arrays: Vec<ArrayRef> = columns
        .into_iter()
        .map(|c| Arc::new(StringArray::from(c)) as ArrayRef)
        .collect();
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
        .map_err(|e| SqlError::Query(e.to_string()))?;
    let mut text = datafusion::arrow::util::pretty::pretty_format_batches(&[batch])
        .map_err(|e| SqlError::Query(e.to_string()))?
        .to_string();
    text.push('\n');
    let shown = total.min(limits.max_rows);
    if shown < total {
        text.push_str(&format!(
            "{total} rows ({shown} shown; --max-rows or --out for all)\n"
        ));
    } else {
        text.push_str(&format!(
            "{total} row{}\n",
            if total == 1 { "" } else { "s" }
        ));
    }
    Ok(text)
}

fn cut(s: &str, width: usize) -> String {
    let s = crate::util::terminal_safe(&s.replace(['\n', '\r'], "⏎"));
    if s.chars().count() <= width {
        return s;
    }
    let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Fails early (before any output exists) when `format` cannot hold the result's columns.
pub fn check_format(schema: &Schema, format: OutputFormat) -> SqlResult<()> {
    if format != OutputFormat::Csv {
        return Ok(());
    }
    for f in schema.fields() {
        let value_type = match f.data_type() {
            DataType::Dictionary(_, v) => v.as_ref(),
            other => other,
        };
        if value_type.is_nested() {
            return Err(SqlError::Query(format!(
                "column `{}` is {}; CSV holds scalar columns only (select scalars, or use --format jsonl / parquet)",
                f.name(),
                f.data_type()
            )));
        }
    }
    Ok(())
}

/// Dictionary columns become their value type (CSV and JSON writers want plain strings).
fn plain_schema(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Dictionary(_, v) => f.as_ref().clone().with_data_type(v.as_ref().clone()),
                _ => f.as_ref().clone(),
            })
            .collect::<Vec<_>>(),
    ))
}

fn plain(batch: &RecordBatch, schema: &SchemaRef) -> SqlResult<RecordBatch> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c.clone())
            } else {
                cast(c, f.data_type()).map_err(|e| SqlError::Query(e.to_string()))
            }
        })
        .collect::<SqlResult<Vec<_>>>()?;
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| SqlError::Query(e.to_string()))
}

enum Sink<W: Write + Send> {
    Csv(Box<datafusion::arrow::csv::Writer<W>>),
    Jsonl(datafusion::arrow::json::LineDelimitedWriter<W>),
    Parquet(Box<ArrowWriter<W>>),
}

/// Streams a result in `format` (CSV, JSONL or Parquet) to `out`; returns the rows written.
pub fn write_stream<W: Write + Send>(
    q: &mut QueryStream<'_>,
    format: OutputFormat,
    out: W,
) -> SqlResult<u64> {
    let schema = q.schema();
    check_format(&schema, format)?;
    let wr = |e: String| SqlError::Query(format!("writing the result: {e}"));
    let plain_s = plain_schema(&schema);
    let mut sink = match format {
        OutputFormat::Csv => Sink::Csv(Box::new(datafusion::arrow::csv::Writer::new(out))),
        OutputFormat::Jsonl => Sink::Jsonl(datafusion::arrow::json::LineDelimitedWriter::new(out)),
        OutputFormat::Parquet => {
            let props = WriterProperties::builder()
                .set_compression(Compression::ZSTD(ZstdLevel::default()))
                .build();
            Sink::Parquet(Box::new(
                ArrowWriter::try_new(out, schema.clone(), Some(props))
                    .map_err(|e| wr(e.to_string()))?,
            ))
        }
        OutputFormat::Table => {
            return Err(SqlError::Query(
                "table output is printed, not written to a file".into(),
            ))
        }
    };
    let mut rows = 0u64;
    while let Some(batch) = q.next_batch()? {
        rows += batch.num_rows() as u64;
        match &mut sink {
            Sink::Csv(w) => w
                .write(&plain(&batch, &plain_s)?)
                .map_err(|e| wr(e.to_string()))?,
            Sink::Jsonl(w) => w
                .write(&plain(&batch, &plain_s)?)
                .map_err(|e| wr(e.to_string()))?,
            Sink::Parquet(w) => w.write(&batch).map_err(|e| wr(e.to_string()))?,
        }
    }
    match sink {
        Sink::Csv(w) => {
            let mut inner = (*w).into_inner();
            inner.flush().map_err(|e| wr(e.to_string()))?;
        }
        Sink::Jsonl(mut w) => {
            w.finish().map_err(|e| wr(e.to_string()))?;
            w.into_inner().flush().map_err(|e| wr(e.to_string()))?;
        }
        Sink::Parquet(w) => {
            let w = *w;
            w.close().map_err(|e| wr(e.to_string()))?;
        }
    }
    Ok(rows)
}

/// Writes a result to `path` atomically: a temporary file in the same directory, fsynced and
/// renamed into place on success, removed on any error (nothing is left behind).
pub fn write_file(q: &mut QueryStream<'_>, format: OutputFormat, path: &Path) -> SqlResult<u64> {
    check_format(&q.schema(), format)?;
    let out_err = |m: String| SqlError::Output {
        path: path.to_path_buf(),
        message: m,
    };
    let (tmp, file) = crate::util::create_temp_beside(path).map_err(|e| out_err(e.to_string()))?;
    let result: SqlResult<u64> = (|| {
        let mut w = BufWriter::new(file);
        let rows = write_stream(q, format, &mut w)?;
        let file = w.into_inner().map_err(|e| out_err(e.error().to_string()))?;
        file.sync_all().map_err(|e| out_err(e.to_string()))?;
        std::fs::rename(&tmp, path).map_err(|e| out_err(e.to_string()))?;
        Ok(rows)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_cut_on_chars_and_line_breaks_shown() {
        assert_eq!(cut("short", 10), "short");
        assert_eq!(cut("a\nb", 10), "a⏎b");
        assert_eq!(cut("ééééééé", 4), "ééé…");
        // Data cannot drive the terminal: escape sequences and bidi overrides are shown escaped.
        assert_eq!(
            cut("x\x1b]0;pwned\x07\u{202e}y", 40),
            "x\\u{1b}]0;pwned\\u{7}\\u{202e}y"
        );
    }

    #[test]
    fn formats_come_from_extensions() {
        let f = |p: &str| OutputFormat::from_path(Path::new(p));
        assert_eq!(f("x.csv"), Some(OutputFormat::Csv));
        assert_eq!(f("x.JSONL"), Some(OutputFormat::Jsonl));
        assert_eq!(f("x.parquet"), Some(OutputFormat::Parquet));
        assert_eq!(f("x.xlsx"), None);
        assert_eq!(f("x"), None);
    }
}
