//! The second model source: a Hugging Face directory with `config.json`, `*.safetensors` (one
//! file, or shards named by `model.safetensors.index.json`), `tokenizer.json` and (for the chat
//! template) `tokenizer_config.json`; plus an exporter that writes the embedded GGUF model in that
//! layout (for trainers, and to test this loader). The files are memory-mapped and each tensor is
//! converted once to the compute dtype, so loading needs about the model's size in that dtype.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::architecture::{Architecture, QkNorm, TransformerConfig};
use super::decoder::{Block, Linear, RopeStyle, Transformer};
use super::gguf_checkpoint::{unpermute_rows, GgufFile};
use super::hf_config;
use super::{sha256_file, ComputeMode, LoadedModel};
use crate::error::{Error, Result};
use crate::tokenize::Tokenizer;
use candle_core::safetensors::SliceSafetensors;
use candle_core::{DType, Device, Tensor};

mod assemble;
mod export;
mod files;
pub(crate) use assemble::check_shapes;
use assemble::*;
pub use export::*;
use files::*;

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        action: "reading",
        path: path.to_path_buf(),
        source,
    })
}

/// Loads a Hugging Face model directory. Quantized mode is not offered for this source.
pub fn load_dir(dir: &Path, mode: ComputeMode, device: &Device) -> Result<LoadedModel> {
    if mode == ComputeMode::Quantized {
        return Err(Error::model(
            dir,
            "quantized compute is only available for GGUF models; use f32, bf16 or f16",
        ));
    }
    let (transformer, weights_sha256) = load_transformer_dir_as(dir, mode, device)?;
    let tokenizer = Tokenizer::from_hf_dir(dir)?;
    let model_id = dir
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let source = dir.display().to_string();
    Ok(LoadedModel::new(
        transformer,
        tokenizer,
        model_id,
        source,
        weights_sha256,
        mode,
    ))
}

/// Reads `config.json` of a model directory (refusing anything the decoder does not implement).
pub fn read_config(dir: &Path) -> Result<TransformerConfig> {
    let path = dir.join("config.json");
    hf_config::parse(&read_text(&path)?).map_err(|e| Error::model(&path, e.0))
}

/// Loads the network of a Hugging Face directory in f32 (config + safetensors, no tokenizer)
/// and the sha256 identifying its weights.
pub fn load_transformer_dir(dir: &Path, device: &Device) -> Result<(Transformer, String)> {
    load_transformer_dir_as(dir, ComputeMode::F32, device)
}

/// Loads the network of a Hugging Face directory with its dense weights in the dtype of `mode`
/// (norms and biases stay f32), and the sha256 identifying its weights.
///
/// The safetensors files are memory-mapped and each tensor is converted once, straight from
/// its stored dtype to the compute dtype (bf16 stays bf16), its pages released as soon as it
/// is copied: peak memory is the model in the compute dtype plus about one tensor. A sharded
/// checkpoint is read through `model.safetensors.index.json`, and only the files it names.
pub fn load_transformer_dir_as(
    dir: &Path,
    mode: ComputeMode,
    device: &Device,
) -> Result<(Transformer, String)> {
    let dtype = mode.weight_dtype().ok_or_else(|| {
        Error::model(
            dir,
            "quantized compute is only available for GGUF models; use f32, bf16 or f16",
        )
    })?;
    let cfg = read_config(dir)?;
    let (files, index) = checkpoint_files(dir)?;
    let shards = files
        .iter()
        .map(|f| Shard::map(f))
        .collect::<Result<Vec<_>>>()?;
    let mut w = Weights::new(dir, &shards, index.as_ref(), dtype, device)?;
    // Already in the compute dtype; `with_compute` only packs bf16 weights for the CPU kernel
    // where it runs (one tensor at a time), as it does for a GGUF model.
    let transformer = assemble(&mut w, cfg, device)?.with_compute(mode)?;
    drop(w);
    drop(shards);
    // The identity recorded in datasets: the file's sha256, or for several files the sha256 of
    // their sha256s in path order (streamed; the hash does not depend on how weights load).
    let mut hashes = String::new();
    for f in &files {
        hashes.push_str(&sha256_file(f)?);
    }
    let weights_sha256 = if files.len() == 1 {
        hashes
    } else {
        crate::util::sha256_hex(hashes.as_bytes())
    };
    Ok((transformer, weights_sha256))
}

/// A checkpoint's tensors, taken one at a time by name, each checked against the shape the
/// config implies and converted once; whatever is left untaken at the end is reported: a
/// weight the decoder would ignore means the architecture is not what we think.
struct Weights<'a> {
    dir: &'a Path,
    shards: &'a [Shard],
    parsed: Vec<SliceSafetensors<'a>>,
    /// Tensor name → index into `shards`, for every tensor not taken yet.
    left: HashMap<String, usize>,
    /// Dtype of the dense weights (projections, embedding, head).
    dtype: DType,
    device: Device,
}

impl<'a> Weights<'a> {
    fn new(
        dir: &'a Path,
        shards: &'a [Shard],
        index: Option<&WeightMap>,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let mut parsed = Vec::with_capacity(shards.len());
        let mut left: HashMap<String, usize> = HashMap::new();
        for (i, shard) in shards.iter().enumerate() {
            let st = SliceSafetensors::new(&shard.map).map_err(|e| {
                Error::model(&shard.path, format!("not a readable safetensors file: {e}"))
            })?;
            for (name, _) in st.tensors() {
                if let Some(j) = left.get(&name) {
                    return Err(Error::model(
                        dir,
                        format!(
                            "tensor '{name}' is stored in both {} and {}",
                            shards[*j].name(),
                            shard.name()
                        ),
                    ));
                }
                if let Some(index) = index {
                    match index.get(&name) {
                        Some(f) if *f == shard.name() => {}
                        other => {
                            return Err(Error::model(
                                dir,
                                format!(
                                    "tensor '{name}' is stored in {} but {INDEX_FILE} places it \
                                     {}",
                                    shard.name(),
                                    other.map_or("nowhere".to_string(), |f| format!("in {f}"))
                                ),
                            ))
                        }
                    }
                }
                left.insert(name, i);
            }
            parsed.push(st);
        }
        if let Some(index) = index {
            let mut missing: Vec<(&String, &String)> = index
                .iter()
                .filter(|(t, _)| !left.contains_key(*t))
                .collect();
            missing.sort();
            if let Some((t, f)) = missing.first() {
                return Err(Error::model(
                    dir,
                    format!("{INDEX_FILE} places tensor '{t}' in {f}, which does not hold it"),
                ));
            }
        }
        Ok(Self {
            dir,
            shards,
            parsed,
            left,
            dtype,
            device: device.clone(),
        })
    }

    fn shape_error(&self, name: &str, got: &[usize], want: &[usize]) -> Error {
        Error::model(
            self.dir,
            format!("tensor '{name}' has shape {got:?}, the config implies {want:?}"),
        )
    }

    /// Takes tensor `name`, which must have shape `want`, converted to `dtype`.
    fn take_as(&mut self, name: &str, want: &[usize], dtype: DType) -> Result<Tensor> {
        let i = *self
            .left
            .get(name)
            .ok_or_else(|| Error::model(self.dir, format!("missing tensor '{name}'")))?;
        let view = self.parsed[i]
            .get(name)
            .map_err(|e| Error::model(self.dir, format!("tensor '{name}': {e}")))?;
        if view.shape() != want {
            return Err(self.shape_error(name, view.shape(), want));
        }
        let stored = DType::try_from(view.dtype())
            .ok()
            .filter(|d| matches!(d, DType::F32 | DType::F16 | DType::BF16 | DType::F64))
            .ok_or_else(|| {
                Error::model(
                    self.dir,
                    format!(
                        "tensor '{name}' is stored as {:?}; weights must be F32, F16 or BF16",
                        view.dtype()
                    ),
                )
            })?;
        let data = view.data();
        let t = match (stored, dtype) {
            // The usual CPU case (a bf16 checkpoint computed in f32): widen straight from the
            // mapped bytes, exactly (a bf16 is the top half of an f32), with no bf16 copy between.
            (DType::BF16, DType::F32) if self.device.is_cpu() => {
                let wide: Vec<f32> = data
                    .chunks_exact(2)
                    .map(|b| f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16))
                    .collect();
                Tensor::from_vec(wide, want, &self.device)?
            }
            _ => Tensor::from_raw_buffer(data, stored, want, &self.device)?.to_dtype(dtype)?,
        };
        self.shards[i].release(data);
        self.left.remove(name);
        Ok(t)
    }

    /// A dense weight (projection, embedding, head), in the compute dtype.
    fn take(&mut self, name: &str, want: &[usize]) -> Result<Tensor> {
        self.take_as(name, want, self.dtype)
    }

    /// A bias, in f32.
    fn bias(&mut self, present: bool, name: &str, len: usize) -> Result<Option<Tensor>> {
        if present {
            self.take_as(name, &[len], DType::F32).map(Some)
        } else {
            Ok(None)
        }
    }

    /// A norm weight in f32, with the family's offset (Gemma's `1 + w`) folded in.
    fn norm(&mut self, name: &str, len: usize, offset: f32) -> Result<Tensor> {
        let w = self.take_as(name, &[len], DType::F32)?;
        Ok(if offset != 0.0 {
            (w + offset as f64)?
        } else {
            w
        })
    }

    fn norm_vec(&mut self, name: &str, len: usize, offset: f32) -> Result<Vec<f32>> {
        Ok(self.norm(name, len, offset)?.to_vec1::<f32>()?)
    }

    /// Some tied checkpoints still carry a copy of the head: it must equal the embedding
    /// (compared as stored, without materialising either when the dtypes agree).
    fn tied_copy_matches(&mut self, head: &str, embed: &str) -> Result<()> {
        let (Some(&i), Some(&j)) = (self.left.get(head), self.left.get(embed)) else {
            return Ok(());
        };
        let (Ok(h), Ok(e)) = (self.parsed[i].get(head), self.parsed[j].get(embed)) else {
            return Ok(());
        };
        let same = if h.shape() != e.shape() {
            false
        } else if h.dtype() == e.dtype() {
            h.data() == e.data()
        } else {
            let a = stored_as_f32(h.dtype(), h.data(), h.shape())?;
            let b = stored_as_f32(e.dtype(), e.data(), e.shape())?;
            (a - b)?.abs()?.max_all()?.to_scalar::<f32>()? == 0.0
        };
        if !same {
            return Err(Error::model(
                self.dir,
                "tie_word_embeddings=true but lm_head.weight differs from the embedding",
            ));
        }
        self.left.remove(head);
        Ok(())
    }
}

/// Stored bytes as an f32 tensor on the CPU (generic over the safetensors dtype type, which
/// this crate does not name).
fn stored_as_f32<D>(dtype: D, data: &[u8], shape: &[usize]) -> Result<Tensor>
where
    DType: TryFrom<D, Error = candle_core::Error>,
{
    let dtype = DType::try_from(dtype)?;
    Ok(Tensor::from_raw_buffer(data, dtype, shape, &Device::Cpu)?.to_dtype(DType::F32)?)
}

fn cat_bias(parts: Vec<Option<Tensor>>) -> Result<Option<Tensor>> {
    let parts: Vec<Tensor> = parts.into_iter().flatten().collect();
    if parts.is_empty() {
        Ok(None)
    } else {
        Ok(Some(Tensor::cat(&parts, 0)?))
    }
}
