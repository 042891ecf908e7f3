//! One shard: its footer schema against the contract, its metadata, its totals, then its rows.

use super::*;

use super::listing::hash_file;
use super::relevance::check_relevance;
use super::row::check_row;

pub(super) fn check_shard(
    dir: &Path,
    m: &Manifest,
    shard: &crate::sink::shard::ShardInfo,
    (ids, shard_index): (&mut DuplicateFinder, u32),
    rep: &mut ValidationReport,
) {
    let name = shard.file.as_str();
    let f = Some(name);
    let path = dir.join(name);
    if !path.exists() {
        rep.push(
            f,
            None,
            None,
            "missing shard: listed in the manifest but not on disk".into(),
        );
        return;
    }
    match hash_file(&path) {
        Ok((sha, bytes)) => {
            if sha != shard.sha256 {
                rep.push(
                    f,
                    None,
                    None,
                    format!(
                        "sha256 mismatch: file has {sha}, manifest says {}",
                        shard.sha256
                    ),
                );
            }
            if bytes != shard.bytes {
                rep.push(
                    f,
                    None,
                    None,
                    format!(
                        "byte size mismatch: file has {bytes}, manifest says {}",
                        shard.bytes
                    ),
                );
            }
        }
        Err(e) => {
            rep.push(f, None, None, format!("unreadable: {e}"));
            return;
        }
    }
    let reader = File::open(&path)
        .map_err(|e| e.to_string())
        .and_then(|file| ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| e.to_string()));
    let builder = match reader {
        Ok(b) => b,
        Err(e) => {
            rep.push(f, None, None, format!("not a readable Parquet file: {e}"));
            return;
        }
    };
    rep.shards_checked += 1;
    let layout = m.dataset.layout();
    let k = layout.top_k;
    // Schema.
    let expected = contract_schema(&layout);
    let actual = builder.schema().clone();
    let mut schema_ok = true;
    for field in expected.fields() {
        match actual.field_with_name(field.name()) {
            Err(_) => {
                schema_ok = false;
                rep.push(f, None, Some(field.name()), "column missing".into());
            }
            Ok(a)
                if a.data_type() != field.data_type() || a.is_nullable() != field.is_nullable() =>
            {
                schema_ok = false;
                rep.push(
                    f,
                    None,
                    Some(field.name()),
                    format!(
                        "type {}{} differs from the contract's {}{} (K={k}, K_s={}, {})",
                        type_name(a.data_type()),
                        if a.is_nullable() { " (nullable)" } else { "" },
                        type_name(field.data_type()),
                        if field.is_nullable() {
                            " (nullable)"
                        } else {
                            ""
                        },
                        layout.student_top_k,
                        layout.encoding.as_str(),
                    ),
                );
            }
            Ok(_) => {}
        }
    }
    for a in actual.fields() {
        if expected.field_with_name(a.name()).is_err() {
            schema_ok = false;
            rep.push(f, None, Some(a.name()), "column not in the contract".into());
        }
    }
    let names: Vec<&str> = actual.fields().iter().map(|x| x.name().as_str()).collect();
    let order: Vec<&str> = expected
        .fields()
        .iter()
        .map(|x| x.name().as_str())
        .collect();
    if schema_ok && names != order {
        rep.push(f, None, None, "columns are not in contract order".into());
    }
    // Key-value metadata.
    let kv: BTreeMap<String, Option<String>> = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .map(|kv| {
            kv.iter()
                .map(|x| (x.key.clone(), x.value.clone()))
                .collect()
        })
        .unwrap_or_default();
    for (key, want) in m.dataset.key_values() {
        match kv.get(&key) {
            None => rep.push(f, None, None, format!("metadata key '{key}' missing")),
            Some(got) if got.as_deref() != Some(want.as_str()) => rep.push(
                f,
                None,
                None,
                format!(
                    "metadata '{key}' is {:?}, manifest says {want:?}",
                    got.as_deref().unwrap_or("")
                ),
            ),
            Some(_) => {}
        }
    }
    let file_rows = builder.metadata().file_metadata().num_rows();
    if file_rows != shard.rows as i64 {
        rep.push(
            f,
            None,
            None,
            format!(
                "row count mismatch: file has {file_rows}, manifest says {}",
                shard.rows
            ),
        );
    }
    if !schema_ok {
        return;
    }
    // Rows.
    let reader = match builder.with_batch_size(READ_BATCH_ROWS).build() {
        Ok(r) => r,
        Err(e) => {
            rep.push(f, None, None, format!("not a readable Parquet file: {e}"));
            return;
        }
    };
    let mut row_idx = 0u64;
    let mut tokens = 0u64;
    for batch in reader {
        let batch = match batch {
            Ok(b) => b,
            Err(e) => {
                rep.push(
                    f,
                    Some(row_idx),
                    None,
                    format!("cannot decode row group: {e}"),
                );
                return;
            }
        };
        let rows = match batch_to_rows(&batch) {
            Ok(r) => r,
            Err(e) => {
                rep.push(f, Some(row_idx), None, format!("cannot decode rows: {e}"));
                return;
            }
        };
        for r in &rows {
            check_row(r, &layout, m.dataset.vocab_size, name, row_idx, rep);
            check_relevance(r, &m.dataset, name, row_idx, rep);
            if let Err(e) = ids.add(&r.sample_id, shard_index, row_idx) {
                rep.push(
                    f,
                    Some(row_idx),
                    Some("sample_id"),
                    format!("cannot record the id: {e}"),
                );
            }
            tokens += r.completion_ids.len() as u64;
            row_idx += 1;
        }
    }
    rep.rows_checked += row_idx;
    rep.response_tokens += tokens;
    if tokens != shard.response_tokens {
        rep.push(
            f,
            None,
            None,
            format!(
                "response token count mismatch: file has {tokens}, manifest says {}",
                shard.response_tokens
            ),
        );
    }
}
