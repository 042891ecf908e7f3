//! GGUF files: the header (metadata, tensor index) and tensor reads, with the errors naming the
//! file. Its own module because both the model loader (weights, hyper-parameters) and the
//! tokenizer (the vocabulary lives in the same file) read it, and neither should depend on the
//! other for that.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
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
        let content = Content::read(&mut reader)
            .map_err(|e| Error::model(path, format!("not a readable GGUF file: {e}")))?;
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

    pub(crate) fn get_usize(&self, key: &str) -> Result<usize> {
        let v = self.get(key)?;
        v.to_u32()
            .map(|x| x as usize)
            .or_else(|_| v.to_u64().map(|x| x as usize))
            .or_else(|_| v.to_i32().map(|x| x as usize))
            .map_err(|e| Error::model(&self.path, format!("metadata '{key}': {e}")))
    }

    pub(crate) fn get_f64(&self, key: &str) -> Option<f64> {
        self.content
            .metadata
            .get(key)
            .and_then(|v| v.to_f32().map(f64::from).or_else(|_| v.to_f64()).ok())
    }

    pub(crate) fn get_f64_or(&self, key: &str, default: f64) -> f64 {
        self.get_f64(key).unwrap_or(default)
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

    /// Reads one tensor dequantized to f32.
    pub fn dense_tensor(&mut self, name: &str, device: &Device) -> Result<Tensor> {
        Ok(self
            .qtensor(name, device)?
            .dequantize(device)?
            .to_dtype(DType::F32)?)
    }
}
