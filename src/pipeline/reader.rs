//! The reader stage: input files → episodes → chunks named by their content.

use std::collections::HashMap;
use std::sync::mpsc::SyncSender;

use sha2::{Digest, Sha256};

use super::{InputShare, PipelineError, TaskSlice};
use crate::episode::{self, Episode, IngestOptions, IngestStats};
use crate::util::sha256_hex;

/// A batch of episodes from one input chunk, as the reader hands it to the scorer.
pub(super) struct Chunk {
    pub(super) id: String,
    pub(super) source_uri: String,
    /// The input's identity when it was read (size + mtime, or ETag): `plan` tells current
    /// chunks from those of an earlier content with it.
    pub(super) source_identity: String,
    pub(super) index: u64,
    /// Position among all chunks of the input, in reading order (sharded tasks split on it).
    pub(super) ordinal: u64,
    pub(super) episodes: Vec<Episode>,
}

pub(super) enum ReaderMsg {
    Chunk(Chunk),
    /// The input is exhausted (statistics come back through the thread's result).
    Done,
}

/// Token counter for the length prefilter, backed by the model's real tokenizer.
pub(super) struct ModelTokenCounter(pub(super) crate::tokenize::TextEncoder);

impl episode::TokenCounter for ModelTokenCounter {
    fn count(&self, text: &str) -> usize {
        self.0.count(text)
    }
}

/// The id of a chunk before content ids: its input's URI, the input's identity (size + mtime,
/// or ETag) and its position. `plan` still recognises chunks committed under it.
pub(super) fn chunk_id(uri: &str, identity: &str, seq: u64) -> String {
    let h = sha256_hex(format!("{uri}\0{identity}\0{seq}").as_bytes());
    h[..16].to_string()
}

/// A chunk is named by its input's URI, its position and the sha256 of its episodes: a log
/// that only grows keeps the ids of its unchanged chunks (they are skipped without scoring),
/// and a record rewritten in place changes its chunk's id (the chunk is processed again).
fn content_chunk_id(uri: &str, seq: u64, content: Sha256) -> String {
    let digest = hex::encode(content.finalize());
    chunk_id(uri, &format!("content:{digest}"), seq)
}

/// Feeds what `serde_json` writes into a hash, so a chunk's content id costs no buffer.
struct HashWrite<'a>(&'a mut Sha256);

impl std::io::Write for HashWrite<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The scorer hung up (a run stopped early on purpose).
fn stopped() -> crate::ingest::IngestError {
    crate::ingest::IngestError::Stopped
}

/// The run's input files: the same expanded list in every task, with what a task needs to
/// name chunks and cut shares without reading any file.
pub(super) struct InputFiles {
    pub(super) files: Vec<crate::ingest::InputFile>,
    /// File or object size of each file (compressed).
    pub(super) sizes: Vec<u64>,
    /// Each file's position in the list, by URI.
    pub(super) position: HashMap<String, u64>,
    /// Each file's content identity (size + mtime, or ETag), by URI.
    pub(super) identity: HashMap<String, String>,
    /// sha256 over the list and the identities (tasks of one run agree on it).
    pub(super) sha256: String,
}

impl InputFiles {
    pub(super) fn expand(paths: &[String]) -> Result<Self, PipelineError> {
        let files = crate::ingest::expand_inputs(paths)?;
        let mut sizes = Vec::with_capacity(files.len());
        let mut position = HashMap::new();
        let mut identity = HashMap::new();
        let mut list = String::new();
        for (i, f) in files.iter().enumerate() {
            let uri = f.path.display().to_string();
            sizes.push(crate::store::input_size(&uri));
            let id = crate::store::input_identity(&uri);
            list.push_str(&format!("{uri}\0{id}\n"));
            position.insert(uri.clone(), i as u64);
            identity.insert(uri, id);
        }
        Ok(InputFiles {
            files,
            sizes,
            position,
            identity,
            sha256: sha256_hex(list.as_bytes()),
        })
    }

    /// The part of the input `task` reads.
    pub(super) fn share(&self, task: TaskSlice) -> InputShare {
        let r = task.share(&self.sizes);
        InputShare {
            first_file: r.start,
            end_file: r.end,
            files_total: self.files.len(),
            bytes: self.sizes[r.clone()].iter().sum(),
            bytes_total: self.sizes.iter().sum(),
            files: self.files[r]
                .iter()
                .map(|f| f.path.display().to_string())
                .collect(),
        }
    }
}

/// How the reader cuts episodes into chunks and names them.
pub(super) struct Chunking {
    /// Records per chunk (`input.chunk_records`).
    pub(super) records: u64,
    /// Each input file's position in the whole input, by URI (the ordinal's high part).
    pub(super) position: HashMap<String, u64>,
    /// Each input file's content identity, by URI (part of the chunk id).
    pub(super) identity: HashMap<String, String>,
}

/// A chunk's ordinal: its file's position in the input, then its position in the file, so
/// ordinals sort in reading order and do not depend on which files a task reads.
fn chunk_ordinal(file_position: u64, seq: u64) -> u64 {
    (file_position << 32) | (seq & 0xffff_ffff)
}

pub(super) fn read_chunks(
    opts: IngestOptions,
    files: Vec<crate::ingest::InputFile>,
    counter: ModelTokenCounter,
    chunking: Chunking,
    tx: SyncSender<ReaderMsg>,
) -> Result<IngestStats, crate::ingest::IngestError> {
    let mut stream = episode::ingest_files(opts, files)?;
    stream.set_token_counter(Box::new(counter));
    let Chunking {
        records: chunk_records,
        position,
        mut identity,
    } = chunking;
    let mut seq: HashMap<String, u64> = HashMap::new();
    let mut current: Option<(String, u64, Chunk, Sha256)> = None;
    // The id is the chunk's content: known once its last episode is read.
    let send = |(_, _, mut c, content): (String, u64, Chunk, Sha256)| {
        c.id = content_chunk_id(&c.source_uri, c.index, content);
        tx.send(ReaderMsg::Chunk(c)).is_ok()
    };
    for ep in stream.by_ref() {
        let uri = ep.provenance.source_uri.clone();
        let bucket = (ep.provenance.source_record.max(0) as u64) / chunk_records;
        let same = matches!(&current, Some((u, b, _, _)) if *u == uri && *b == bucket);
        if !same {
            if let Some(done) = current.take() {
                if !send(done) {
                    return Err(stopped());
                }
            }
            let id = identity
                .entry(uri.clone())
                .or_insert_with(|| crate::store::input_identity(&uri));
            // Every episode comes from a listed file; an unknown URI sorts last.
            let file_position = position.get(&uri).copied().unwrap_or(u64::from(u32::MAX));
            let n = seq.entry(uri.clone()).or_insert(0);
            let chunk = Chunk {
                id: String::new(),
                source_uri: uri.clone(),
                source_identity: id.clone(),
                index: *n,
                ordinal: chunk_ordinal(file_position, *n),
                episodes: Vec::new(),
            };
            *n += 1;
            current = Some((uri, bucket, chunk, Sha256::new()));
        }
        if let Some((_, _, c, content)) = current.as_mut() {
            // Every field of the episode, provenance included: the same records at the same
            // places give the same bytes.
            let _ = serde_json::to_writer(HashWrite(content), &ep);
            content.update(b"\n");
            c.episodes.push(ep);
        }
    }
    if let Some(done) = current.take() {
        if !send(done) {
            return Err(stopped());
        }
    }
    let stats = stream.finish();
    let _ = tx.send(ReaderMsg::Done);
    stats
}
