//! The dataset writer: the one place that puts files into a dataset directory (and, for a dataset
//! at a URL, into its object store), in the order that keeps the dataset consistent for a reader
//! and for a resumed run, whatever moment the process is killed at:
//!
//! - a new chunk: its shards → its sample-id list → its state record (the commit point: until it
//!   exists, a resumed run cleans the shards up and scores the chunk again);
//! - a chunk whose shards are rewritten (finalize's cross-task dedup): the new shards → the state
//!   record that lists them (the commit point) → the new id list → the old shards deleted;
//! - once per run: the quarantine, the run report and the dataset card (`README.md`, which
//!   `datasets.load_dataset(DIR)` reads) → the manifest, last (readers open it first).
//!
//! The state records themselves belong to the pipeline (`pipeline::state`); the writer calls back
//! to write one at the right moment and then uploads it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::card::{dataset_card, CARD_FILE};
use super::error::{SinkError, SinkResult};
use super::manifest::{Manifest, MANIFEST_FILE};
use super::meta::DatasetMeta;
use super::row::OutputRow;
use super::shard::{ShardConfig, ShardInfo, ShardWriter};
use crate::store::Mirror;

/// The dataset's quarantine file (records that could not be used, with their reasons).
pub const QUARANTINE_FILE: &str = "quarantine.jsonl";
/// The report of the last run (or finalize) that completed.
pub const RUN_REPORT_FILE: &str = "run_report.json";

/// Where a chunk's sample ids are kept, one per line in row order (later chunks and runs dedup
/// against them without opening shards).
pub fn chunk_ids_rel(chunk_id: &str) -> String {
    format!("_state/chunks/{chunk_id}.ids")
}

/// Where a chunk's state record is kept; its presence is the chunk's commit.
pub fn chunk_state_rel(chunk_id: &str) -> String {
    format!("_state/chunks/{chunk_id}.json")
}

/// A chunk's shards and id list, written (and uploaded) but not committed yet.
#[must_use = "a staged chunk is not in the dataset until DatasetWriter::commit"]
pub struct StagedChunk {
    chunk_id: String,
    shards: Vec<ShardInfo>,
}

impl StagedChunk {
    /// The shards written for the chunk.
    pub fn shards(&self) -> &[ShardInfo] {
        &self.shards
    }
}

/// Writes one dataset; see the module documentation for the order it enforces.
#[derive(Debug, Clone)]
pub struct DatasetWriter {
    mirror: Arc<Mirror>,
    meta: DatasetMeta,
    shard_cfg: ShardConfig,
}

impl DatasetWriter {
    /// A writer for the dataset behind `mirror`, whose shards carry `meta`.
    pub fn new(mirror: Arc<Mirror>, meta: DatasetMeta, shard_cfg: ShardConfig) -> Self {
        DatasetWriter {
            mirror,
            meta,
            shard_cfg,
        }
    }

    /// The local directory (the dataset, or the staging area of a remote one).
    pub fn dir(&self) -> &Path {
        self.mirror.local()
    }

    /// The dataset's name for messages (its URL or its path).
    pub fn label(&self) -> String {
        self.mirror.label()
    }

    /// The metadata every shard carries.
    pub fn meta(&self) -> &DatasetMeta {
        &self.meta
    }

    /// Steps 1 and 2 of a new chunk: its shards, then its id list, written locally and uploaded.
    pub fn stage(&self, chunk_id: &str, rows: Vec<OutputRow>) -> SinkResult<StagedChunk> {
        let ids = id_list(rows.iter().map(|r| r.sample_id.as_str()));
        let shards = self.write_shards(chunk_id, rows)?;
        for s in &shards {
            self.mirror.push_shard(&s.file)?;
        }
        let ids_rel = chunk_ids_rel(chunk_id);
        self.write_local(&ids_rel, ids.as_bytes())?;
        self.mirror.push(&ids_rel)?;
        Ok(StagedChunk {
            chunk_id: chunk_id.to_string(),
            shards,
        })
    }

    /// Step 3: `record` writes the chunk's state record listing the staged shards (the local
    /// commit point), which is then uploaded (the remote commit point).
    pub fn commit<E: From<SinkError>>(
        &self,
        staged: StagedChunk,
        record: impl FnOnce(Vec<ShardInfo>) -> Result<(), E>,
    ) -> Result<(), E> {
        let StagedChunk { chunk_id, shards } = staged;
        self.recommit(&chunk_id, || record(shards))
    }

    /// Rewrites a committed chunk's state record with its shards unchanged (finalize merging a
    /// task's chunk that needed no dedup), then uploads it.
    pub fn recommit<E: From<SinkError>>(
        &self,
        chunk_id: &str,
        record: impl FnOnce() -> Result<(), E>,
    ) -> Result<(), E> {
        record()?;
        self.mirror
            .push(&chunk_state_rel(chunk_id))
            .map_err(sink_err)
    }

    /// Every row of one committed shard (downloaded first when the dataset is remote).
    pub fn read_shard(&self, file: &str) -> SinkResult<Vec<OutputRow>> {
        self.mirror.pull(file)?;
        let path = self.dir().join(file);
        let f = std::fs::File::open(&path).map_err(|source| SinkError::Io {
            action: "opening",
            path: path.clone(),
            source,
        })?;
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
            .and_then(|b| b.build())
            .map_err(|source| SinkError::Parquet {
                path: path.clone(),
                source,
            })?;
        let mut rows = Vec::new();
        for batch in reader {
            rows.extend(super::batch_to_rows(&batch?)?);
        }
        Ok(rows)
    }

    /// Replaces a committed chunk's shards with shards of `kept` (finalize's dedup): the new
    /// shards (named `<chunk>-merged`), then `record` writes the state record listing them (the
    /// commit point; before it a rerun redoes the rewrite from the old shards), then the new id
    /// list, and the old shards, no longer listed, are deleted last.
    pub fn rewrite<E: From<SinkError>>(
        &self,
        chunk_id: &str,
        old: &[ShardInfo],
        kept: Vec<OutputRow>,
        record: impl FnOnce(Vec<ShardInfo>) -> Result<(), E>,
    ) -> Result<(), E> {
        let ids = id_list(kept.iter().map(|r| r.sample_id.as_str()));
        let shards = self.write_shards(&format!("{chunk_id}-merged"), kept)?;
        for s in &shards {
            self.mirror.push_shard(&s.file).map_err(sink_err)?;
        }
        self.commit(
            StagedChunk {
                chunk_id: chunk_id.to_string(),
                shards,
            },
            record,
        )?;
        let ids_rel = chunk_ids_rel(chunk_id);
        self.write_local(&ids_rel, ids.as_bytes())?;
        self.mirror.push(&ids_rel).map_err(sink_err)?;
        for s in old {
            let p = self.dir().join(&s.file);
            if p.exists() {
                std::fs::remove_file(&p).map_err(|source| {
                    E::from(SinkError::Io {
                        action: "removing",
                        path: p.clone(),
                        source,
                    })
                })?;
            }
            self.mirror.delete_remote(&s.file).map_err(sink_err)?;
        }
        Ok(())
    }

    /// Uploads a state file the pipeline wrote locally that is not a chunk record (the
    /// dataset's binding, a sharded task's quarantine or completion marker).
    pub fn upload_state(&self, rel: &str) -> SinkResult<()> {
        debug_assert!(rel.starts_with("_state/"), "{rel} is not a state file");
        Ok(self.mirror.push(rel)?)
    }

    /// The last step of a run or a finalize: the quarantine (copied from `quarantine_from` when
    /// it lives elsewhere), the run report, the dataset card, then the manifest, which readers
    /// open first.
    pub fn publish(
        &self,
        quarantine_from: Option<&Path>,
        report: &[u8],
        manifest: &Manifest,
    ) -> SinkResult<()> {
        let quarantine = self.dir().join(QUARANTINE_FILE);
        if let Some(from) = quarantine_from.filter(|p| *p != quarantine) {
            let bytes = match std::fs::read(from) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(source) => {
                    return Err(SinkError::Io {
                        action: "reading",
                        path: from.to_path_buf(),
                        source,
                    })
                }
            };
            self.write_local(QUARANTINE_FILE, &bytes)?;
        }
        if quarantine.exists() {
            self.mirror.push(QUARANTINE_FILE)?;
        }
        self.write_local(RUN_REPORT_FILE, report)?;
        self.mirror.push(RUN_REPORT_FILE)?;
        self.write_local(CARD_FILE, dataset_card(manifest).as_bytes())?;
        self.mirror.push(CARD_FILE)?;
        manifest.write(self.dir())?;
        self.mirror.push(MANIFEST_FILE)?;
        Ok(())
    }

    /// Audits what [`Self::publish`] would make visible: the contract checks on `next` and on
    /// every shard it lists that the manifest readers see now does not (downloaded first when
    /// the dataset is remote). Publish only when the report is clean: a failed audit leaves
    /// the previous manifest, so readers never see the bad shards.
    pub fn audit(&self, next: &Manifest) -> SinkResult<super::ValidationReport> {
        // The manifest readers see now; none on a first run (or a store without it yet).
        let _ = self.mirror.pull(MANIFEST_FILE);
        let previous: std::collections::HashSet<String> = Manifest::read(self.dir())
            .map(|m| m.shards.into_iter().map(|s| s.file).collect())
            .unwrap_or_default();
        let new: Vec<String> = next
            .shards
            .iter()
            .map(|s| s.file.clone())
            .filter(|f| !previous.contains(f))
            .collect();
        let remote = self.mirror.remote().is_some();
        for f in &new {
            self.mirror.pull(f)?;
        }
        let report = super::validate::audit_shards(self.dir(), next, &new);
        if remote {
            for f in &new {
                let _ = std::fs::remove_file(self.dir().join(f));
            }
        }
        Ok(report)
    }

    /// Republishes a dataset whose shards moved (`hindsight compact`): the dataset card, then
    /// the manifest; the run report and quarantine stay the last run's.
    pub fn republish(&self, manifest: &Manifest) -> SinkResult<()> {
        self.write_local(CARD_FILE, dataset_card(manifest).as_bytes())?;
        self.mirror.push(CARD_FILE)?;
        manifest.write(self.dir())?;
        self.mirror.push(MANIFEST_FILE)?;
        Ok(())
    }

    /// Writes the report of a run that stopped early: locally only, and no manifest (the
    /// published dataset stays the last complete one).
    pub fn write_partial_report(&self, report: &[u8]) -> SinkResult<()> {
        self.write_local(RUN_REPORT_FILE, report)
    }

    fn write_shards(&self, name: &str, rows: Vec<OutputRow>) -> SinkResult<Vec<ShardInfo>> {
        let mut writer =
            ShardWriter::new(self.dir(), name, self.meta.clone(), self.shard_cfg.clone())?;
        writer.write_rows(rows)?;
        writer.finish()
    }

    fn write_local(&self, rel: &str, bytes: &[u8]) -> SinkResult<()> {
        let path: PathBuf = self.dir().join(rel);
        crate::util::write_atomic(&path, bytes).map_err(|source| SinkError::Io {
            action: "writing",
            path,
            source,
        })
    }
}

fn sink_err<E: From<SinkError>>(e: crate::store::StoreError) -> E {
    E::from(SinkError::from(e))
}

/// One id per line, each line ended.
fn id_list<'a>(ids: impl Iterator<Item = &'a str>) -> String {
    let mut text = String::new();
    for id in ids {
        text.push_str(id);
        text.push('\n');
    }
    text
}
