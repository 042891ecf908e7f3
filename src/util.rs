//! Small helpers shared across stages.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Hex sha256 of a byte string.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Whether `name` names an entry directly inside a directory: not empty, no separator, not
/// `.`/`..`, no NUL. Names read from `manifest.json`, `_state/` or an object listing pass this
/// before anything is opened, written or deleted, so a crafted dataset cannot reach outside.
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
        && !(name.len() >= 2
            && name.as_bytes()[1] == b':'
            && name.as_bytes()[0].is_ascii_alphabetic())
}

/// Whether `rel` is a relative path of [`is_plain_name`] segments joined by `/`.
pub fn is_safe_relative(rel: &str) -> bool {
    !rel.is_empty() && rel.split('/').all(is_plain_name)
}

/// Characters that must never reach a terminal as they are: control characters (escape
/// sequences move the cursor, restyle or retitle the terminal) and the invisible / bidirectional
/// formatting marks that make displayed text differ from the data (Trojan Source).
pub fn is_terminal_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}'
        )
}

/// `s` with every [`is_terminal_unsafe`] character written as a visible `\u{..}` escape: data
/// shown in tables, heatmaps and headers is inert.
pub fn terminal_safe(s: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if is_terminal_unsafe(c) {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

/// Creates a fresh temporary file next to `dest` (`<name>.<random>.tmp`, by `tempfile`, which
/// opens it `create_new`): the name cannot be predicted by another user of the directory, and
/// an existing file (or a planted symlink) is never opened or truncated. The file is kept (not
/// deleted on drop): the caller renames it into place or removes it. Resume cleanup removes
/// leftovers by their `.tmp` suffix.
pub fn create_temp_beside(dest: &Path) -> std::io::Result<(PathBuf, File)> {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(&format!("{name}."))
        .suffix(".tmp")
        .rand_bytes(12)
        .tempfile_in(dir)?;
    let (file, path) = tmp.keep().map_err(|e| e.error)?;
    Ok((path, file))
}

/// Flushes a directory's entries, making a rename or creation in it durable. A no-op where
/// directories cannot be opened (non-Unix).
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Writes `bytes` to `path` atomically and durably: a [`create_temp_beside`] file, fsync,
/// rename, then fsync of the directory. On error the temporary file is removed and the error
/// names the file that failed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let (tmp, mut f) = create_temp_beside(path)?;
    let result = (|| {
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        sync_dir(dir)
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
    fn escape_sequences_and_bidi_overrides_become_visible() {
        let s = super::terminal_safe("a\x1b[2Jb\u{202E}c\u{2066}d\x07é");
        assert_eq!(s, "a\\u{1b}[2Jb\\u{202e}c\\u{2066}d\\u{7}é");
        assert!(!s.chars().any(super::is_terminal_unsafe));
    }

    #[test]
    fn plain_names_stay_inside_a_directory() {
        for ok in ["part-c0-00000.parquet", "a.json", "..x", "x..", "é"] {
            assert!(is_plain_name(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "/etc/passwd",
            "a/b",
            "a\\b",
            "C:x",
            "a\0b",
        ] {
            assert!(!is_plain_name(bad), "{bad:?}");
        }
        assert!(is_safe_relative("_state/chunks/x.json"));
        for bad in ["", "/x", "_state/../x", "a//b", "a/"] {
            assert!(!is_safe_relative(bad), "{bad:?}");
        }
    }

    #[test]
    fn temp_files_are_fresh_and_writes_are_atomic() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("manifest.json");
        let (a, _fa) = create_temp_beside(&dest).unwrap();
        let (b, _fb) = create_temp_beside(&dest).unwrap();
        assert_ne!(a, b);
        let name = a.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with("manifest.json.") && name.ends_with(".tmp"),
            "{name}"
        );
        write_atomic(&dest, b"one").unwrap();
        write_atomic(&dest, b"two").unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"two");
        // Only the two temp files still open above remain besides the target.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
    }
}
