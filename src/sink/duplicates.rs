//! Repeated `sample_id`s across a whole dataset in bounded memory, for `validate` and the
//! audit: each row's id (as its 128-bit number), shard and row go into batches of at most
//! [`BATCH`] entries, sorted and spilled to temporary files, then merged in one pass, so a
//! dataset of any age is checked with a fixed buffer (the id set of a 100M-row dataset held in
//! memory would take ~9 GB).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};

use sha2::{Digest, Sha256};

/// Entries sorted in memory at once (28 MiB).
pub const BATCH: usize = 1 << 20;

/// (id, shard index, row).
type Entry = (u128, u32, u64);

/// A sample id as a number: its 32 hex digits, else the first 128 bits of its sha256.
pub fn id_key(id: &str) -> u128 {
    if id.len() == 32 {
        if let Ok(v) = u128::from_str_radix(id, 16) {
            return v;
        }
    }
    let d = Sha256::digest(id.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    u128::from_be_bytes(b)
}

/// A repeated id: where it is again, and where it was first.
pub struct Repeat {
    pub id: String,
    pub shard: u32,
    pub row: u64,
    pub first_shard: u32,
    pub first_row: u64,
}

/// Collects ids, then reports the repeats.
#[derive(Default)]
pub struct DuplicateFinder {
    batch: Vec<Entry>,
    runs: Vec<File>,
}

impl DuplicateFinder {
    /// Records one row's id.
    pub fn add(&mut self, id: &str, shard: u32, row: u64) -> std::io::Result<()> {
        self.batch.push((id_key(id), shard, row));
        if self.batch.len() >= BATCH {
            self.spill()?;
        }
        Ok(())
    }

    fn spill(&mut self) -> std::io::Result<()> {
        self.batch.sort_unstable();
        let mut w = BufWriter::new(tempfile::tempfile()?);
        for (k, s, r) in self.batch.drain(..) {
            w.write_all(&k.to_be_bytes())?;
            w.write_all(&s.to_be_bytes())?;
            w.write_all(&r.to_be_bytes())?;
        }
        let mut f = w.into_inner().map_err(|e| e.into_error())?;
        use std::io::Seek;
        f.seek(std::io::SeekFrom::Start(0))?;
        self.runs.push(f);
        Ok(())
    }

    /// Every occurrence after the first of each id, in id order.
    pub fn repeats(mut self) -> std::io::Result<Vec<Repeat>> {
        if self.runs.is_empty() {
            self.batch.sort_unstable();
            return Ok(repeats_of(self.batch.into_iter().map(Ok)));
        }
        self.spill()?;
        let mut readers: Vec<BufReader<File>> = self.runs.into_iter().map(BufReader::new).collect();
        let mut heap = BinaryHeap::new();
        for (i, r) in readers.iter_mut().enumerate() {
            if let Some(e) = read_entry(r)? {
                heap.push(Reverse((e, i)));
            }
        }
        let merged = std::iter::from_fn(move || {
            let Reverse((e, i)) = heap.pop()?;
            match read_entry(&mut readers[i]) {
                Ok(Some(next)) => heap.push(Reverse((next, i))),
                Ok(None) => {}
                Err(err) => return Some(Err(err)),
            }
            Some(Ok(e))
        });
        let mut out = Vec::new();
        let mut first: Option<Entry> = None;
        for e in merged {
            let e = e?;
            match first {
                Some(f) if f.0 == e.0 => out.push(repeat(f, e)),
                _ => first = Some(e),
            }
        }
        Ok(out)
    }
}

fn repeat(first: Entry, e: Entry) -> Repeat {
    Repeat {
        id: format!("{:032x}", e.0),
        shard: e.1,
        row: e.2,
        first_shard: first.1,
        first_row: first.2,
    }
}

fn repeats_of(sorted: impl Iterator<Item = std::io::Result<Entry>>) -> Vec<Repeat> {
    let mut out = Vec::new();
    let mut first: Option<Entry> = None;
    for e in sorted.flatten() {
        match first {
            Some(f) if f.0 == e.0 => out.push(repeat(f, e)),
            _ => first = Some(e),
        }
    }
    out
}

fn read_entry(r: &mut BufReader<File>) -> std::io::Result<Option<Entry>> {
    let mut b = [0u8; 28];
    match r.read_exact(&mut b) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let k = u128::from_be_bytes(b[..16].try_into().unwrap_or_default());
    let s = u32::from_be_bytes(b[16..20].try_into().unwrap_or_default());
    let row = u64::from_be_bytes(b[20..].try_into().unwrap_or_default());
    Ok(Some((k, s, row)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_found_in_memory_and_across_spilled_runs() {
        let ids = [
            "0000000000000000000000000000000a",
            "0000000000000000000000000000000b",
        ];
        let mut f = DuplicateFinder::default();
        f.add(ids[0], 0, 0).unwrap();
        f.add(ids[1], 0, 1).unwrap();
        f.spill().unwrap();
        f.add(ids[0], 1, 5).unwrap();
        f.add(ids[0], 2, 7).unwrap();
        let r = f.repeats().unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].id.as_str(), r[0].shard, r[0].row), (ids[0], 1, 5));
        assert_eq!((r[0].first_shard, r[0].first_row), (0, 0));
        assert_eq!((r[1].shard, r[1].row), (2, 7));
        let mut g = DuplicateFinder::default();
        g.add(ids[1], 0, 0).unwrap();
        g.add(ids[1], 0, 3).unwrap();
        assert_eq!(g.repeats().unwrap().len(), 1);
    }
}
