//! Benchmark of input filters: rows/s of a filtered scan of a ~1 GB WildChat-shaped Parquet file.
//!
//! ```sh
//! cargo run --example bench_where -- [--dir /tmp/hindsight-bench-where] [--mb 1024] [--quick]
//! ```
//!
//! The file is generated once (cached in `--dir`): WildChat's columns, rows in time order
//! (2023-04-09 .. 2024-04-30, as logs arrive), row groups of 8192 rows, snappy. The predicate is
//! the issue's example, `language = 'English' AND NOT toxic AND model LIKE 'gpt-4%' AND
//! timestamp >= '2024-01-01'` (~5% of rows). Measured, each on the whole file:
//!
//! * (a) DataFusion SQL `SELECT * … WHERE …` with filter pushdown (row-group pruning + row
//!   filter), 1 and 2 partitions, all matching rows materialised;
//! * (b) reading every row with the Parquet reader and filtering the Arrow arrays in Rust;
//! * (c) hindsight's filtered record reader (`input.where`: pruning + row filter, matching rows
//!   turned into records for the episode builder);
//! * (d) hindsight's plain record reader, every row turned into a record and filtered in Rust
//!   afterwards (what filtering after ingest would cost).
//!
//! rows/s is rows in the file divided by wall time. Not part of the test suite.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow_array::builder::{
    BooleanBuilder, Int64Builder, ListBuilder, StringBuilder, StructBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMicrosecondType;
use arrow_array::{Array, ArrayRef, BooleanArray, RecordBatch};
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use futures::StreamExt;
use hindsight::ingest::formats::parse_time_us;
use hindsight::ingest::{BoundPredicate, InputSource, SourceItem};
use hindsight::ingest::{InputFile, ReaderOptions};
use hindsight::sql::WherePredicate;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

const PREDICATE: &str =
    "language = 'English' AND NOT toxic AND model LIKE 'gpt-4%' AND timestamp >= '2024-01-01'";
const ROW_GROUP: usize = 8192;
const BATCH: usize = 2048;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn schema() -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let turn = Fields::from(vec![
        Field::new("content", DataType::Utf8, true),
        Field::new("role", DataType::Utf8, true),
        Field::new("timestamp", ts.clone(), true),
    ]);
    Arc::new(Schema::new(vec![
        Field::new("conversation_hash", DataType::Utf8, true),
        Field::new("model", DataType::Utf8, true),
        Field::new("timestamp", ts, true),
        Field::new(
            "conversation",
            DataType::List(Arc::new(Field::new("item", DataType::Struct(turn), true))),
            true,
        ),
        Field::new("turn", DataType::Int64, true),
        Field::new("language", DataType::Utf8, true),
        Field::new("toxic", DataType::Boolean, true),
        Field::new("redacted", DataType::Boolean, true),
        Field::new("country", DataType::Utf8, true),
        Field::new("hashed_ip", DataType::Utf8, true),
    ]))
}

fn vocabulary(rng: &mut Rng) -> Vec<String> {
    let syl = [
        "ka", "lo", "mi", "ne", "ru", "ta", "po", "se", "di", "ga", "ve", "zu", "an", "or", "el",
        "th", "is", "qu", "ex", "pr",
    ];
    (0..4000)
        .map(|_| {
            let n = 1 + rng.below(4);
            (0..n)
                .map(|_| syl[rng.below(syl.len() as u64) as usize])
                .collect()
        })
        .collect()
}

fn text(rng: &mut Rng, vocab: &[String], words: usize) -> String {
    let mut s = String::with_capacity(words * 6);
    for i in 0..words {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(&vocab[rng.below(vocab.len() as u64) as usize]);
    }
    s
}

/// Writes the file in time order until it reaches `target` bytes; returns the row count.
fn generate(path: &Path, target: u64) -> u64 {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let vocab = vocabulary(&mut rng);
    let schema = schema();
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROW_GROUP))
        .build();
    let tmp = path.with_extension("parquet.tmp");
    let file = std::fs::File::create(&tmp).expect("create");
    let mut w = ArrowWriter::try_new(file, schema.clone(), Some(props)).expect("writer");
    let start = parse_time_us("2023-04-09T00:00:00Z").expect("time");
    let end = parse_time_us("2024-04-30T00:00:00Z").expect("time");
    // Estimated rows for the target size, so time spreads evenly over the file.
    let est_rows = (target / 2600).max(1);
    let langs = [
        ("English", 55),
        ("Chinese", 20),
        ("Russian", 10),
        ("French", 5),
        ("Spanish", 5),
        ("German", 5),
    ];
    let models = [
        ("gpt-3.5-turbo-0301", 40),
        ("gpt-3.5-turbo-0613", 30),
        ("gpt-4-0314", 15),
        ("gpt-4-1106-preview", 15),
    ];
    let pick = |rng: &mut Rng, table: &[(&'static str, u64)]| -> &'static str {
        let mut r = rng.below(100);
        for (v, p) in table {
            if r < *p {
                return v;
            }
            r -= p;
        }
        table[0].0
    };
    let mut rows = 0u64;
    loop {
        let turn_fields = match schema.field(3).data_type() {
            DataType::List(f) => match f.data_type() {
                DataType::Struct(fs) => fs.clone(),
                _ => unreachable!(),
            },
            _ => unreachable!(),
        };
        let mut hash = StringBuilder::new();
        let mut model = StringBuilder::new();
        let mut ts = TimestampMicrosecondBuilder::new().with_timezone("UTC");
        let mut conv = ListBuilder::new(StructBuilder::from_fields(turn_fields, BATCH * 4));
        let mut turns = Int64Builder::new();
        let mut lang = StringBuilder::new();
        let mut toxic = BooleanBuilder::new();
        let mut redacted = BooleanBuilder::new();
        let mut country = StringBuilder::new();
        let mut ip = StringBuilder::new();
        for _ in 0..BATCH {
            let t = start
                + ((end - start) as u128 * rows.min(est_rows) as u128 / est_rows as u128) as i64;
            hash.append_value(format!("{:032x}", rng.next() as u128 * rng.next() as u128));
            model.append_value(pick(&mut rng, &models));
            ts.append_value(t);
            let n_pairs = 1 + rng.below(3) as usize;
            let s = conv.values();
            for k in 0..n_pairs * 2 {
                let words = 40 + rng.below(160) as usize;
                s.field_builder::<StringBuilder>(0)
                    .expect("content")
                    .append_value(text(&mut rng, &vocab, words));
                s.field_builder::<StringBuilder>(1)
                    .expect("role")
                    .append_value(if k % 2 == 0 { "user" } else { "assistant" });
                let tb = s
                    .field_builder::<TimestampMicrosecondBuilder>(2)
                    .expect("timestamp");
                if k % 2 == 1 {
                    tb.append_value(t);
                } else {
                    tb.append_null();
                }
                s.append(true);
            }
            conv.append(true);
            turns.append_value(n_pairs as i64);
            lang.append_value(pick(&mut rng, &langs));
            toxic.append_value(rng.below(100) < 5);
            redacted.append_value(rng.below(100) < 2);
            country.append_value(
                ["United States", "China", "Russia", "France"][rng.below(4) as usize],
            );
            ip.append_value(format!("{:016x}", rng.next()));
            rows += 1;
        }
        let conv = conv.finish();
        // The builder's list field is nullable "item" with the same struct type.
        let columns: Vec<ArrayRef> = vec![
            Arc::new(hash.finish()),
            Arc::new(model.finish()),
            Arc::new(ts.finish()),
            Arc::new(conv),
            Arc::new(turns.finish()),
            Arc::new(lang.finish()),
            Arc::new(toxic.finish()),
            Arc::new(redacted.finish()),
            Arc::new(country.finish()),
            Arc::new(ip.finish()),
        ];
        let batch = RecordBatch::try_new(schema.clone(), columns).expect("batch");
        w.write(&batch).expect("write");
        if w.bytes_written() as u64 + w.in_progress_size() as u64 >= target {
            break;
        }
    }
    w.close().expect("close");
    std::fs::rename(&tmp, path).expect("rename");
    rows
}

fn file_rows(path: &Path) -> (u64, usize) {
    let b = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).expect("open"))
        .expect("parquet");
    (
        b.metadata().file_metadata().num_rows() as u64,
        b.metadata().num_row_groups(),
    )
}

fn report(name: &str, rows: u64, matched: u64, secs: f64, extra: &str) {
    println!(
        "{name:<58} {:>10.0} rows/s  {secs:>7.2} s  matched {matched:>8}  {extra}",
        rows as f64 / secs
    );
}

fn collect_metrics(plan: &Arc<dyn ExecutionPlan>, out: &mut Vec<String>) {
    if let Some(m) = plan.metrics() {
        for metric in m.aggregate_by_name().iter() {
            let name = metric.value().name().to_string();
            if name.contains("row_groups_pruned")
                || name.contains("pushdown_rows")
                || name == "output_rows"
            {
                out.push(format!("{}={}", name, metric.value()));
            }
        }
    }
    for c in plan.children() {
        collect_metrics(c, out);
    }
}

fn datafusion_scan(path: &Path, partitions: usize) -> (u64, f64, String) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(partitions)
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut config = SessionConfig::new().with_target_partitions(partitions);
        config.options_mut().execution.parquet.pushdown_filters = true;
        config.options_mut().execution.parquet.reorder_filters = true;
        let ctx = SessionContext::new_with_config(config);
        ctx.register_parquet(
            "wildchat",
            path.to_str().expect("utf8"),
            ParquetReadOptions::default(),
        )
        .await
        .expect("register");
        let t = Instant::now();
        let df = ctx
            .sql(&format!("SELECT * FROM wildchat WHERE {PREDICATE}"))
            .await
            .expect("sql");
        let plan = df.create_physical_plan().await.expect("plan");
        let mut stream =
            datafusion::physical_plan::execute_stream(plan.clone(), ctx.task_ctx()).expect("exec");
        let mut matched = 0u64;
        while let Some(b) = stream.next().await {
            matched += b.expect("batch").num_rows() as u64;
        }
        let secs = t.elapsed().as_secs_f64();
        let mut m = Vec::new();
        collect_metrics(&plan, &mut m);
        (matched, secs, m.join(" "))
    })
}

fn rust_filter(batch: &RecordBatch, cutoff: i64) -> BooleanArray {
    let lang = batch
        .column_by_name("language")
        .expect("language")
        .as_string::<i32>();
    let toxic = batch.column_by_name("toxic").expect("toxic").as_boolean();
    let model = batch
        .column_by_name("model")
        .expect("model")
        .as_string::<i32>();
    let ts = batch
        .column_by_name("timestamp")
        .expect("timestamp")
        .as_primitive::<TimestampMicrosecondType>();
    (0..batch.num_rows())
        .map(|i| {
            Some(
                lang.is_valid(i)
                    && lang.value(i) == "English"
                    && toxic.is_valid(i)
                    && !toxic.value(i)
                    && model.is_valid(i)
                    && model.value(i).starts_with("gpt-4")
                    && ts.is_valid(i)
                    && ts.value(i) >= cutoff,
            )
        })
        .collect()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut dir = PathBuf::from("/tmp/hindsight-bench-where");
    let mut mb = 1024u64;
    let mut quick = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--dir" => dir = PathBuf::from(args.next().expect("--dir DIR")),
            "--mb" => mb = args.next().and_then(|v| v.parse().ok()).expect("--mb N"),
            "--quick" => quick = true,
            other => panic!("unknown argument {other}"),
        }
    }
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join(format!("wildchat_{mb}mb.parquet"));
    if !path.exists() {
        let t = Instant::now();
        let rows = generate(&path, mb << 20);
        println!(
            "generated {} ({rows} rows) in {:.1} s",
            path.display(),
            t.elapsed().as_secs_f64()
        );
    }
    let bytes = std::fs::metadata(&path).expect("meta").len();
    let (rows, groups) = file_rows(&path);
    println!(
        "file {}: {:.0} MB, {rows} rows, {groups} row groups; predicate: {PREDICATE}",
        path.display(),
        bytes as f64 / 1e6
    );
    let cutoff = parse_time_us("2024-01-01").expect("cutoff");

    for partitions in [1, 2] {
        let (matched, secs, metrics) = datafusion_scan(&path, partitions);
        report(
            &format!("(a) DataFusion SQL, pushdown, {partitions} partition(s)"),
            rows,
            matched,
            secs,
            &metrics,
        );
    }

    // (b) Read everything, filter the Arrow arrays in Rust.
    let t = Instant::now();
    let reader =
        ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&path).expect("open"))
            .expect("parquet")
            .with_batch_size(BATCH)
            .build()
            .expect("reader");
    let mut matched = 0u64;
    for b in reader {
        let b = b.expect("batch");
        let mask = rust_filter(&b, cutoff);
        matched += datafusion::arrow::compute::filter_record_batch(&b, &mask)
            .expect("filter")
            .num_rows() as u64;
    }
    report(
        "(b) Parquet reader, all rows, filter in Rust",
        rows,
        matched,
        t.elapsed().as_secs_f64(),
        "",
    );

    // (c) hindsight's filtered record reader (what `input.where` runs).
    let files = vec![InputFile::new(path.clone())];
    let opts = ReaderOptions::default();
    let t = Instant::now();
    let pred: Arc<dyn BoundPredicate> =
        Arc::new(WherePredicate::compile(PREDICATE, &files, &opts).expect("predicate"));
    let mut source = InputSource::new(
        files.clone(),
        opts.clone(),
        Some((PREDICATE.to_string(), pred)),
    );
    let (mut matched, mut filtered) = (0u64, 0u64);
    for item in source.by_ref() {
        match item {
            SourceItem::Record(_) => matched += 1,
            SourceItem::Filtered { records, .. } => filtered += records,
            SourceItem::Quarantined(q) => panic!("unexpected quarantine: {q:?}"),
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let w = source.where_stats().expect("stats");
    assert_eq!(matched + filtered, rows);
    report(
        "(c) hindsight records, input.where (pruning + row filter)",
        rows,
        matched,
        secs,
        &format!(
            "row groups pruned {}/{} ({} rows)",
            w.parquet_row_groups_pruned, w.parquet_row_groups, w.parquet_rows_pruned
        ),
    );

    if quick {
        return;
    }
    // (d) hindsight's plain record reader, filter the records in Rust afterwards.
    let t = Instant::now();
    let mut matched = 0u64;
    let plain = InputSource::new(files, opts, None).filter_map(|item| match item {
        SourceItem::Record(rec) => Some(rec),
        _ => None,
    });
    for rec in plain {
        let v = &rec.value;
        let keep = v["language"] == "English"
            && v["toxic"] == false
            && v["model"].as_str().is_some_and(|m| m.starts_with("gpt-4"))
            && v["timestamp"]
                .as_str()
                .and_then(parse_time_us)
                .is_some_and(|t| t >= cutoff);
        matched += keep as u64;
    }
    report(
        "(d) hindsight records, all rows, filter in Rust afterwards",
        rows,
        matched,
        t.elapsed().as_secs_f64(),
        "",
    );
}
