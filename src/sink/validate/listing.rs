//! The dataset directory's listing and the manifest: leftovers, unlisted shards, totals.

use super::*;

/// Leftover temporary files and shards the manifest does not list.
pub(super) fn check_listing(
    dir: &Path,
    listed: &HashSet<String>,
    rep: &mut ValidationReport,
) -> SinkResult<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| SinkError::io("listing", dir, e))?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        if name.ends_with(".tmp") {
            rep.push(
                Some(&name),
                None,
                None,
                "leftover temporary file (an interrupted write)".into(),
            );
        } else if name.starts_with("part-") && name.ends_with(".parquet") && !listed.contains(&name)
        {
            rep.push(
                Some(&name),
                None,
                None,
                "unlisted shard: present in the directory but not in the manifest".into(),
            );
        }
    }
    Ok(())
}

pub(super) fn check_manifest(m: &Manifest, rep: &mut ValidationReport) {
    let f = Some(MANIFEST_FILE);
    if m.schema_version != SCHEMA_VERSION {
        rep.push(
            f,
            None,
            None,
            format!(
                "schema_version is {}, expected {SCHEMA_VERSION}",
                m.schema_version
            ),
        );
    }
    if m.dataset.schema_version != SCHEMA_VERSION {
        rep.push(
            f,
            None,
            None,
            format!(
                "dataset.schema_version is {}, expected {SCHEMA_VERSION}",
                m.dataset.schema_version
            ),
        );
    }
    if m.dataset.top_k == 0 {
        rep.push(f, None, None, "dataset.top_k is 0".into());
    }
    let totals = Totals::of(&m.shards);
    if totals != m.totals {
        rep.push(
            f,
            None,
            None,
            format!(
                "totals {:?} do not match the sum over shards {:?}",
                m.totals, totals
            ),
        );
    }
    let mut seen = HashSet::new();
    for s in &m.shards {
        if !seen.insert(&s.file) {
            rep.push(f, None, None, format!("shard '{}' listed twice", s.file));
        }
    }
}

/// sha256 and size of a file, streamed.
pub(super) fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hex::encode(h.finalize()), total))
}
