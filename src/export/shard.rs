//! Exporting one dataset shard (rows to the trainer's layout) and the dataset card.

use super::*;

/// Converts one source shard into `dir/file` (temp file, then rename) and returns its record
/// (without the options hash, which the caller adds).
pub(super) fn export_shard(
    src_dir: &Path,
    source_file: &str,
    source_sha256: &str,
    dir: &Path,
    file: &str,
    opts: &ExportOptions,
) -> Result<ShardRecord, ExportError> {
    let src_path = src_dir.join(source_file);
    let actual = sha256_file(&src_path)?;
    if actual != source_sha256 {
        return Err(ExportError::Row(format!(
            "{}: sha256 {actual} differs from the source manifest's {source_sha256}; the dataset \
             changed under the export (run `hindsight validate` on it)",
            src_path.display()
        )));
    }
    let f = std::fs::File::open(&src_path).map_err(io_err("opening", &src_path))?;
    let parquet_err = |source| ExportError::Parquet {
        path: src_path.clone(),
        source,
    };
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
        .and_then(|b| b.with_batch_size(64).build())
        .map_err(parquet_err)?;

    let dest = dir.join(file);
    let (tmp, handle) =
        crate::util::create_temp_beside(&dest).map_err(io_err("creating", &dest))?;
    let props = parquet::file::properties::WriterProperties::builder()
        .set_created_by(crate::sink::shard::created_by())
        .set_compression(parquet::basic::Compression::ZSTD(
            parquet::basic::ZstdLevel::try_new(3).unwrap_or_default(),
        ))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_statistics_enabled(parquet::file::properties::EnabledStatistics::None)
        .set_key_value_metadata(Some(vec![
            parquet::file::metadata::KeyValue::new(
                "hindsight.export.format".to_string(),
                opts.format.as_str().to_string(),
            ),
            parquet::file::metadata::KeyValue::new(
                "hindsight.export.source_shard".to_string(),
                format!("{source_file} {source_sha256}"),
            ),
        ]))
        .build();
    let write_err = |source| ExportError::Parquet {
        path: dest.clone(),
        source,
    };
    let result = (|| {
        let mut w = parquet::arrow::ArrowWriter::try_new(
            std::io::BufWriter::new(handle),
            axolotl::schema(),
            Some(props),
        )
        .map_err(write_err)?;
        let mut shard = ExportedShard {
            file: file.to_string(),
            source_file: source_file.to_string(),
            source_sha256: source_sha256.to_string(),
            rows: 0,
            input_tokens: 0,
            trainable_tokens: 0,
            truncated: 0,
            skipped: BTreeMap::new(),
            bytes: 0,
            sha256: String::new(),
        };
        let mut skipped_rows = Vec::new();
        for batch in reader {
            let batch = batch.map_err(|e| parquet_err(e.into()))?;
            let rows: Vec<OutputRow> = crate::sink::batch_to_rows(&batch)?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                let reason = match opts.min_relevance {
                    Some(min) if row.relevance.is_some_and(|r| r < min) => {
                        Some("below_min_relevance")
                    }
                    _ => match axolotl::convert(row, &opts.axolotl)? {
                        Ok(a) => {
                            shard.rows += 1;
                            shard.input_tokens += a.input_ids.len() as u64;
                            shard.trainable_tokens += a.trainable_tokens() as u64;
                            shard.truncated += u64::from(a.truncated);
                            out.push(a);
                            None
                        }
                        Err(skip) => Some(skip.as_str()),
                    },
                };
                if let Some(reason) = reason {
                    *shard.skipped.entry(reason.to_string()).or_default() += 1;
                    skipped_rows.push(SkippedRow {
                        sample_id: row.sample_id.clone(),
                        source_file: source_file.to_string(),
                        reason: reason.to_string(),
                    });
                }
            }
            if !out.is_empty() {
                w.write(&axolotl::to_batch(&out)?).map_err(write_err)?;
            }
        }
        let mut inner = w.into_inner().map_err(write_err)?;
        inner.flush().map_err(io_err("writing", &tmp))?;
        inner
            .into_inner()
            .map_err(|e| io_err("writing", &tmp)(e.into_error()))?
            .sync_all()
            .map_err(io_err("syncing", &tmp))?;
        std::fs::rename(&tmp, &dest).map_err(io_err("renaming", &tmp))?;
        shard.bytes = std::fs::metadata(&dest)
            .map_err(io_err("reading", &dest))?
            .len();
        shard.sha256 = sha256_file(&dest)?;
        Ok(ShardRecord {
            options_sha256: String::new(),
            shard,
            skipped_rows,
        })
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The dataset card: `load_dataset(OUT)` reads exactly the shards; the body says how to train.
pub(super) fn card(m: &ExportManifest) -> String {
    let t = &m.totals;
    let meta = &m.source["meta"];
    let mut s = String::new();
    s.push_str("---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n");
    s.push_str("    path: \"part-*.parquet\"\n");
    s.push_str("tags:\n- self-distillation\n- knowledge-distillation\n- hindsight\n---\n\n");
    s.push_str("# Knowledge-distillation rows for Axolotl (exported by hindsight)\n\n");
    s.push_str(
        "Pre-tokenized rows for Axolotl's KD plugin (`axolotl.integrations.kd`): `input_ids`, \
         `attention_mask`, `labels` (-100 outside the response) and, per position `j`, the \
         teacher's top-k over `input_ids[j+1]` in `target_token_ids` / `target_logprobs` / \
         `target_mask` (rows before the response and the last row are padding with mask 0). \
         hindsight's docs/CONTRACT.md (\"Axolotl KD export\") has a worked example.\n\n",
    );
    let rows = [
        (
            "source dataset",
            format!("`{}`", m.source["dataset"].as_str().unwrap_or("")),
        ),
        (
            "source manifest sha256",
            format!("`{}`", m.source["manifest_sha256"].as_str().unwrap_or("")),
        ),
        (
            "model",
            format!("`{}`", meta["model_id"].as_str().unwrap_or("")),
        ),
        (
            "weights sha256",
            format!("`{}`", meta["weights_sha256"].as_str().unwrap_or("")),
        ),
        (
            "tokenizer sha256",
            format!("`{}`", meta["tokenizer_sha256"].as_str().unwrap_or("")),
        ),
        ("support", m.options.axolotl.support.as_str().to_string()),
        (
            "teacher log-probs renormalised over the top-k",
            m.options.axolotl.normalize_topk.to_string(),
        ),
        (
            "max length",
            m.options
                .axolotl
                .max_len
                .map_or("none".into(), |v| v.to_string()),
        ),
        (
            "min relevance",
            m.options
                .min_relevance
                .map_or("none".into(), |v| v.to_string()),
        ),
        ("rows", format!("{} of {}", t.rows, t.rows_in)),
        ("trainable tokens", t.trainable_tokens.to_string()),
    ];
    s.push_str("| | |\n|---|---|\n");
    for (k, v) in rows {
        s.push_str(&format!("| {k} | {v} |\n"));
    }
    s.push_str(
        "\n## Training with Axolotl\n\n```yaml\nplugins:\n  - axolotl.integrations.kd.KDPlugin\n\
         kd_trainer: true\nkd_ce_alpha: 0.0\nkd_alpha: 1.0\nkd_temperature: 1.0\nkd_beta: 0.0\n\
         kd_normalize_topk: true\ndatasets:\n  - path: path/to/this/directory\n    type:\n\
         skip_prepare_dataset: true\nremove_unused_columns: false\nsample_packing: false\n```\n",
    );
    s
}
