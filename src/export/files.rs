//! The export's own files: the output directory check, per-shard records of what was exported, atomic writes and checksums.

use super::*;

pub(super) fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// Refuses an output directory that holds another export's options, or anything that is not
/// an export of ours.
pub(super) fn check_output_dir(
    dir: &Path,
    records: &BTreeMap<String, ShardRecord>,
    options_sha256: &str,
    label: &str,
) -> Result<(), ExportError> {
    if let Some(r) = records
        .values()
        .find(|r| r.options_sha256 != options_sha256)
    {
        return Err(ExportError::Conflict(format!(
            "{label} holds an export made with other options (options sha256 {} there, {} now); \
             use another --out, or delete it to start over",
            &r.options_sha256[..12.min(r.options_sha256.len())],
            &options_sha256[..12]
        )));
    }
    let manifest = dir.join(MANIFEST_FILE);
    if records.is_empty() && manifest.is_file() {
        return Err(ExportError::Conflict(format!(
            "{label} already holds a {MANIFEST_FILE} that no export of this kind wrote (a hindsight \
             dataset?); export into an empty or new --out directory"
        )));
    }
    if records.is_empty() {
        // What a killed first export leaves: shards renamed before their record, temp files.
        let ours = |n: &str| {
            n == ".lock"
                || n == STATE_DIR
                || n.ends_with(".tmp")
                || (n.starts_with("part-") && n.ends_with(".parquet"))
        };
        let foreign = std::fs::read_dir(dir)
            .map_err(io_err("listing", dir))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| !ours(n));
        if let Some(name) = foreign {
            return Err(ExportError::Conflict(format!(
                "{label} is not empty and holds no export (it has '{}'); export into an empty \
                 or new --out directory",
                crate::util::terminal_safe(&name)
            )));
        }
    }
    Ok(())
}

/// Deletes the temporary files a killed export left at the top of `dir` (under the lock, no
/// other export is writing them).
pub(super) fn remove_temp_files(dir: &Path) -> Result<(), ExportError> {
    for e in std::fs::read_dir(dir)
        .map_err(io_err("listing", dir))?
        .flatten()
    {
        if e.file_name().to_string_lossy().ends_with(".tmp") {
            let p = e.path();
            std::fs::remove_file(&p).map_err(io_err("removing", &p))?;
        }
    }
    Ok(())
}

pub(super) fn read_record(path: &Path) -> Result<ShardRecord, ExportError> {
    let bytes = std::fs::read(path).map_err(io_err("reading", path))?;
    serde_json::from_slice(&bytes).map_err(|source| ExportError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// The commit records in `_export/`, by source shard name.
pub(super) fn read_records(dir: &Path) -> Result<BTreeMap<String, ShardRecord>, ExportError> {
    let state = dir.join(STATE_DIR);
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(&state) else {
        return Ok(out);
    };
    for e in entries {
        let e = e.map_err(io_err("listing", &state))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(source_file) = name.strip_suffix(".json") else {
            continue;
        };
        out.insert(source_file.to_string(), read_record(&e.path())?);
    }
    Ok(out)
}

pub(super) fn remove(dst: &Mirror, dir: &Path, rel: &str) -> Result<(), ExportError> {
    let p = dir.join(rel);
    match std::fs::remove_file(&p) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("removing", &p)(e)),
    }
    Ok(dst.delete_remote(rel)?)
}

pub(super) fn write_bytes(path: &Path, bytes: &[u8]) -> Result<(), ExportError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
    }
    crate::util::write_atomic(path, bytes).map_err(io_err("writing", path))
}

pub(super) fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<(), ExportError> {
    let json = serde_json::to_string_pretty(v).map_err(|source| ExportError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    write_bytes(path, format!("{json}\n").as_bytes())
}

pub(super) fn totals_of(shards: &[ExportedShard]) -> ExportTotals {
    let mut t = ExportTotals {
        shards: shards.len() as u64,
        ..ExportTotals::default()
    };
    for s in shards {
        t.rows += s.rows;
        t.input_tokens += s.input_tokens;
        t.trainable_tokens += s.trainable_tokens;
        t.truncated += s.truncated;
        t.bytes += s.bytes;
        let skipped: u64 = s.skipped.values().sum();
        t.rows_in += s.rows + skipped;
        for (k, v) in &s.skipped {
            *t.skipped.entry(k.clone()).or_default() += v;
        }
    }
    t
}

pub(super) fn sha256_file(path: &Path) -> Result<String, ExportError> {
    let mut f = std::fs::File::open(path).map_err(io_err("opening", path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io_err("reading", path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}
