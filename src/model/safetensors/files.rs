//! The checkpoint's files: one safetensors file or the shards an index names, memory-mapped.

use super::*;

/// The index of a sharded checkpoint.
pub(super) const INDEX_FILE: &str = "model.safetensors.index.json";

/// An index's tensor name → file name map.
pub(super) type WeightMap = HashMap<String, String>;

/// The safetensors files to read, sorted, and the index's tensor → file map when there is one.
/// With an index only the files it names are read (a stray file is ignored); each must exist.
/// Without one, every `*.safetensors` file of the directory is read.
pub(super) fn checkpoint_files(dir: &Path) -> Result<(Vec<PathBuf>, Option<WeightMap>)> {
    let index_path = dir.join(INDEX_FILE);
    if !index_path.exists() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|source| Error::Io {
                action: "listing",
                path: dir.to_path_buf(),
                source,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(Error::model(dir, "no *.safetensors file in the directory"));
        }
        return Ok((files, None));
    }
    let bad = |msg: String| Error::model(&index_path, msg);
    let json: serde_json::Value = serde_json::from_str(&read_text(&index_path)?)
        .map_err(|e| bad(format!("invalid JSON: {e}")))?;
    let map = json
        .get("weight_map")
        .and_then(serde_json::Value::as_object)
        .ok_or_else(|| bad("no 'weight_map' object".into()))?;
    let mut weight_map = HashMap::with_capacity(map.len());
    let mut names = std::collections::BTreeSet::new();
    for (tensor, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| bad(format!("weight_map['{tensor}'] is not a file name")))?;
        // A plain file name in this directory: never a path out of it.
        if Path::new(file).file_name().and_then(|n| n.to_str()) != Some(file) {
            return Err(bad(format!(
                "weight_map['{tensor}'] = '{file}' is not a file name in the directory"
            )));
        }
        names.insert(file.to_string());
        weight_map.insert(tensor.clone(), file.to_string());
    }
    if names.is_empty() {
        return Err(bad("the weight_map names no file".into()));
    }
    // transformers reads model.safetensors in preference to an index: both is ambiguous.
    if dir.join("model.safetensors").exists() && !names.contains("model.safetensors") {
        return Err(bad(
            "the directory has both model.safetensors and an index naming other files; \
             transformers would read model.safetensors: remove one of them"
                .into(),
        ));
    }
    let mut files = Vec::with_capacity(names.len());
    for name in &names {
        let path = dir.join(name);
        if !path.is_file() {
            return Err(bad(format!(
                "the index names '{name}', which is not in {}",
                dir.display()
            )));
        }
        files.push(path);
    }
    Ok((files, Some(weight_map)))
}

/// One memory-mapped `*.safetensors` file.
pub(super) struct Shard {
    pub(super) path: PathBuf,
    pub(super) map: memmap2::Mmap,
}

impl Shard {
    pub(super) fn map(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|source| Error::Io {
            action: "opening",
            path: path.to_path_buf(),
            source,
        })?;
        // SAFETY: a read-only mapping of a checkpoint that nothing in this process writes.
        // Another process truncating or rewriting the file while it loads is outside what any
        // loader can guard against (reading it would race the same way).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|source| Error::Io {
            action: "mapping",
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            map,
        })
    }

    pub(super) fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Drops the pages of `data` (a slice of this map) from the process: the tensor has been
    /// copied out, and without this the mapped file would count a second time in the resident
    /// size. Best effort: a failure only costs memory.
    pub(super) fn release(&self, data: &[u8]) {
        #[cfg(unix)]
        {
            // Aligned to 64 KiB, a multiple of every page size in use.
            const ALIGN: usize = 1 << 16;
            let base = self.map.as_ptr() as usize;
            let Some(start) = (data.as_ptr() as usize).checked_sub(base) else {
                return;
            };
            let from = start & !(ALIGN - 1);
            let to = (start + data.len()).min(self.map.len());
            if to <= from {
                return;
            }
            // SAFETY: MADV_DONTNEED on a read-only shared mapping of a file only drops this
            // process's page-table entries; a later access faults the same bytes back in from
            // the file, so every live reference still reads the same contents.
            let _ = unsafe {
                self.map
                    .unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, from, to - from)
            };
        }
        #[cfg(not(unix))]
        let _ = data;
    }
}
