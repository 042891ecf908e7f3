//! GGUF files: the header (metadata, tensor index) and tensor reads, with the errors naming the
//! file. Its own module because both the model loader (weights, hyper-parameters) and the
//! tokenizer (the vocabulary lives in the same file) read it, and neither should depend on the
//! other for that.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};

/// An opened GGUF file: its metadata, and a reader for its tensors.
pub struct GgufFile {
    /// The file, for error messages.
    pub path: PathBuf,
    /// The parsed header.
    pub content: Content,
    pub(crate) reader: BufReader<File>,
    /// Tensors read so far: after a load, every tensor in the file must have been used.
    pub(crate) used: std::collections::HashSet<String>,
}

impl GgufFile {
    /// Opens and parses the header of a GGUF file.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|source| Error::Io {
            action: "opening model",
            path: path.to_path_buf(),
            source,
        })?;
        let mut reader = BufReader::new(file);
        let unreadable = |e: String| Error::model(path, format!("not a readable GGUF file: {e}"));
        // candle's reader bounds lengths by the file size but divides by the alignment.
        if declared_alignment(&mut reader) == Some(0) {
            return Err(unreadable("general.alignment must be positive".into()));
        }
        reader
            .seek(SeekFrom::Start(0))
            .map_err(|e| unreadable(e.to_string()))?;
        // Any other panic on a crafted header must be an error too, not a crash.
        let content =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Content::read(&mut reader)))
                .map_err(|_| unreadable("its header made the GGUF reader fail".into()))?
                .map_err(|e| unreadable(e.to_string()))?;
        check_tensor_extents(path, &content)?;
        Ok(Self {
            path: path.to_path_buf(),
            content,
            reader,
            used: Default::default(),
        })
    }

    /// All metadata key/values.
    pub fn metadata(&self) -> &HashMap<String, Value> {
        &self.content.metadata
    }

    /// A required metadata entry.
    pub fn get(&self, key: &str) -> Result<&Value> {
        self.content
            .metadata
            .get(key)
            .ok_or_else(|| Error::model(&self.path, format!("missing metadata key '{key}'")))
    }

    /// A string metadata entry, if present.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.content
            .metadata
            .get(key)
            .and_then(|v| v.to_string().ok())
            .map(String::as_str)
    }

    /// An integer metadata entry as a `usize`; a negative or non-integer value is refused
    /// (a negative `i32` used to wrap to an enormous count).
    pub(crate) fn get_usize(&self, key: &str) -> Result<usize> {
        let bad = |v: &Value| {
            Error::model(
                &self.path,
                format!("metadata '{key}' must be a non-negative integer, got {v:?}"),
            )
        };
        let v = self.get(key)?;
        let n: u64 = match v {
            Value::U8(x) => u64::from(*x),
            Value::U16(x) => u64::from(*x),
            Value::U32(x) => u64::from(*x),
            Value::U64(x) => *x,
            Value::I8(x) => u64::try_from(*x).map_err(|_| bad(v))?,
            Value::I16(x) => u64::try_from(*x).map_err(|_| bad(v))?,
            Value::I32(x) => u64::try_from(*x).map_err(|_| bad(v))?,
            Value::I64(x) => u64::try_from(*x).map_err(|_| bad(v))?,
            _ => return Err(bad(v)),
        };
        usize::try_from(n).map_err(|_| bad(v))
    }

    /// A required count or size: positive and within `max`, checked before anything is
    /// allocated from it.
    pub(crate) fn count(&self, key: &str, max: usize) -> Result<usize> {
        let n = self.get_usize(key)?;
        if n == 0 || n > max {
            return Err(Error::model(
                &self.path,
                format!("metadata '{key}' = {n} is outside 1..={max}"),
            ));
        }
        Ok(n)
    }

    /// An optional count or size (absent: `None`; present: as [`GgufFile::count`]).
    pub(crate) fn opt_count(&self, key: &str, max: usize) -> Result<Option<usize>> {
        if self.content.metadata.contains_key(key) {
            self.count(key, max).map(Some)
        } else {
            Ok(None)
        }
    }

    /// An optional float metadata entry: NaN, infinite and non-numeric values are refused.
    pub(crate) fn float(&self, key: &str) -> Result<Option<f64>> {
        let Some(v) = self.content.metadata.get(key) else {
            return Ok(None);
        };
        let x = match v {
            Value::F32(x) => f64::from(*x),
            Value::F64(x) => *x,
            Value::U8(_)
            | Value::U16(_)
            | Value::U32(_)
            | Value::U64(_)
            | Value::I8(_)
            | Value::I16(_)
            | Value::I32(_)
            | Value::I64(_) => self.get_usize(key)? as f64,
            _ => f64::NAN,
        };
        if x.is_finite() {
            Ok(Some(x))
        } else {
            Err(Error::model(
                &self.path,
                format!("metadata '{key}' must be a finite number, got {v:?}"),
            ))
        }
    }

    pub(crate) fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    pub(crate) fn qtensor(
        &mut self,
        name: &str,
        device: &Device,
    ) -> Result<candle_core::quantized::QTensor> {
        self.used.insert(name.to_string());
        self.content
            .tensor(&mut self.reader, name, device)
            .map_err(|e| Error::model(&self.path, format!("tensor '{name}': {e}")))
    }

    /// A tensor's shape as stored (`[out, in]` for a weight), checked against what the config
    /// implies before it is read, so a wrong shape is refused naming the tensor.
    pub(crate) fn expect_shape(&self, name: &str, want: &[usize]) -> Result<()> {
        match self.content.tensor_infos.get(name) {
            Some(info) if info.shape.dims() != want => Err(Error::model(
                &self.path,
                format!(
                    "tensor '{name}' has shape {:?}, the config implies {want:?}",
                    info.shape.dims()
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Reads one tensor dequantized to f32.
    pub fn dense_tensor(&mut self, name: &str, device: &Device) -> Result<Tensor> {
        Ok(self
            .qtensor(name, device)?
            .dequantize(device)?
            .to_dtype(DType::F32)?)
    }
}

/// Every tensor's extent (its dims multiplied out, in bytes of its block type) must lie inside
/// the file: dims whose product overflows would otherwise wrap to a small size and then be
/// trusted by the dequantizer.
fn check_tensor_extents(path: &Path, content: &Content) -> Result<()> {
    let file_size = std::fs::metadata(path)
        .map_err(|source| Error::Io {
            action: "reading",
            path: path.to_path_buf(),
            source,
        })?
        .len();
    let data = file_size.saturating_sub(content.tensor_data_offset);
    for (name, info) in &content.tensor_infos {
        let bad = |why: String| Error::model(path, format!("tensor '{name}': {why}"));
        let elems = info
            .shape
            .dims()
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
            .ok_or_else(|| bad(format!("dims {:?} overflow", info.shape.dims())))?;
        let block = info.ggml_dtype.block_size() as u64;
        if elems % block != 0 {
            return Err(bad(format!(
                "{elems} elements are not a whole number of {block}-element blocks"
            )));
        }
        let bytes = (elems / block)
            .checked_mul(info.ggml_dtype.type_size() as u64)
            .ok_or_else(|| bad(format!("dims {:?} overflow", info.shape.dims())))?;
        if info.offset.checked_add(bytes).is_none_or(|end| end > data) {
            return Err(bad(format!(
                "dims {:?} need {bytes} bytes at offset {}, beyond the end of the file",
                info.shape.dims(),
                info.offset
            )));
        }
    }
    Ok(())
}

/// The integer value of `general.alignment` as the header states it, found by walking the
/// metadata before candle's reader runs (which divides by it). `None` when absent, not an
/// integer, or when the header is malformed (candle's reader then reports that).
fn declared_alignment(r: &mut (impl Read + Seek)) -> Option<i128> {
    let u32_of = |r: &mut dyn Read| -> Option<u32> {
        let mut b = [0u8; 4];
        r.read_exact(&mut b).ok()?;
        Some(u32::from_le_bytes(b))
    };
    let mut header = [0u8; 8];
    r.read_exact(&mut header).ok()?;
    if &header[..4] != b"GGUF" {
        return None;
    }
    let v1 = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) == 1;
    let len = |r: &mut dyn Read| -> Option<u64> {
        if v1 {
            u32_of(r).map(u64::from)
        } else {
            let mut b = [0u8; 8];
            r.read_exact(&mut b).ok()?;
            Some(u64::from_le_bytes(b))
        }
    };
    let _tensors = len(r)?;
    let kvs = len(r)?;
    for _ in 0..kvs {
        let key_len = len(r)?;
        if key_len > 1 << 16 {
            return None;
        }
        let mut key = vec![0u8; key_len as usize];
        r.read_exact(&mut key).ok()?;
        let ty = u32_of(r)?;
        if key == b"general.alignment" {
            let size = scalar_size(ty)?;
            let mut b = [0u8; 8];
            r.read_exact(&mut b[..size]).ok()?;
            return match ty {
                0 => Some(i128::from(b[0])),
                1 => Some(i128::from(b[0] as i8)),
                2 => Some(i128::from(u16::from_le_bytes([b[0], b[1]]))),
                3 => Some(i128::from(i16::from_le_bytes([b[0], b[1]]))),
                4 => Some(i128::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
                5 => Some(i128::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
                10 => Some(i128::from(u64::from_le_bytes(b))),
                11 => Some(i128::from(i64::from_le_bytes(b))),
                _ => None,
            };
        }
        skip_value(r, ty, &len, 0)?;
    }
    None
}

/// Bytes of a fixed-size GGUF metadata value type.
fn scalar_size(ty: u32) -> Option<usize> {
    match ty {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    }
}

/// Moves `n` bytes forward (within the reader's buffer when it can).
fn skip(r: &mut impl Seek, n: u64) -> Option<()> {
    r.seek_relative(i64::try_from(n).ok()?).ok()
}

/// Skips one metadata value (`None` on a malformed or truncated header).
fn skip_value(
    r: &mut (impl Read + Seek),
    ty: u32,
    len: &dyn Fn(&mut dyn Read) -> Option<u64>,
    depth: usize,
) -> Option<()> {
    match ty {
        8 => {
            let n = len(r)?;
            skip(r, n)
        }
        9 if depth < 64 => {
            let mut b = [0u8; 4];
            r.read_exact(&mut b).ok()?;
            let elem = u32::from_le_bytes(b);
            let n = len(r)?;
            match scalar_size(elem) {
                Some(size) => skip(r, n.checked_mul(size as u64)?),
                None => {
                    for _ in 0..n {
                        skip_value(r, elem, len, depth + 1)?;
                    }
                    Some(())
                }
            }
        }
        _ => skip(r, scalar_size(ty)? as u64),
    }
}
