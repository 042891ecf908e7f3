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

/// The index of a sharded checkpoint.
const INDEX_FILE: &str = "model.safetensors.index.json";

/// An index's tensor name → file name map.
type WeightMap = HashMap<String, String>;

/// The safetensors files to read, sorted, and the index's tensor → file map when there is one.
/// With an index only the files it names are read (a stray file is ignored); each must exist.
/// Without one, every `*.safetensors` file of the directory is read.
fn checkpoint_files(dir: &Path) -> Result<(Vec<PathBuf>, Option<WeightMap>)> {
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
struct Shard {
    path: PathBuf,
    map: memmap2::Mmap,
}

impl Shard {
    fn map(path: &Path) -> Result<Self> {
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

    fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Drops the pages of `data` (a slice of this map) from the process: the tensor has been
    /// copied out, and without this the mapped file would count a second time in the resident
    /// size. Best effort: a failure only costs memory.
    fn release(&self, data: &[u8]) {
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

/// Builds the decoder from Hugging Face tensor names (the layout every supported family shares,
/// with Phi-3's fused projections and the families' extra norms), checking each tensor's shape
/// against the config as it is taken.
fn assemble(w: &mut Weights<'_>, cfg: TransformerConfig, device: &Device) -> Result<Transformer> {
    use super::architecture::BlockNorms;
    let arch = cfg.architecture;
    let off = cfg.norm_weight_offset;
    let norms = arch.block_norms();
    let (h, d, v, inter) = (
        cfg.hidden_size,
        cfg.head_dim,
        cfg.vocab_size,
        cfg.intermediate_size,
    );
    let (q, kv) = (cfg.num_heads * d, cfg.num_kv_heads * d);
    let (q_norm_len, k_norm_len) = match cfg.qk_norm {
        Some(QkNorm::Whole) => (q, kv),
        _ => (d, d),
    };
    if cfg.tie_word_embeddings {
        w.tied_copy_matches("lm_head.weight", "model.embed_tokens.weight")?;
    }
    let embed = w.take("model.embed_tokens.weight", &[v, h])?;
    let lm_head_w = if cfg.tie_word_embeddings {
        embed.clone()
    } else {
        w.take("lm_head.weight", &[v, h])?
    };
    let mut blocks = Vec::with_capacity(cfg.num_layers);
    for i in 0..cfg.num_layers {
        let p = |n: &str| format!("model.layers.{i}.{n}");
        let (qkv_w, qkv_bias) = if arch.facts().fused_projections {
            (
                w.take(&p("self_attn.qkv_proj.weight"), &[q + 2 * kv, h])?,
                None,
            )
        } else {
            let qw = w.take(&p("self_attn.q_proj.weight"), &[q, h])?;
            let kw = w.take(&p("self_attn.k_proj.weight"), &[kv, h])?;
            let vw = w.take(&p("self_attn.v_proj.weight"), &[kv, h])?;
            let b = cfg.attention_bias;
            let bias = cat_bias(vec![
                w.bias(b, &p("self_attn.q_proj.bias"), q)?,
                w.bias(b, &p("self_attn.k_proj.bias"), kv)?,
                w.bias(b, &p("self_attn.v_proj.bias"), kv)?,
            ])?;
            (Tensor::cat(&[qw, kw, vw], 0)?, bias)
        };
        let (gate_up_w, gate_up_bias) = if arch.facts().fused_projections {
            (
                w.take(&p("mlp.gate_up_proj.weight"), &[2 * inter, h])?,
                None,
            )
        } else {
            let gate = w.take(&p("mlp.gate_proj.weight"), &[inter, h])?;
            let up = w.take(&p("mlp.up_proj.weight"), &[inter, h])?;
            let b = cfg.mlp_bias;
            let bias = cat_bias(vec![
                w.bias(b, &p("mlp.gate_proj.bias"), inter)?,
                w.bias(b, &p("mlp.up_proj.bias"), inter)?,
            ])?;
            (Tensor::cat(&[gate, up], 0)?, bias)
        };
        let o_bias = w.bias(cfg.attention_out_bias, &p("self_attn.o_proj.bias"), h)?;
        let down_bias = w.bias(cfg.mlp_bias, &p("mlp.down_proj.bias"), h)?;
        let (q_norm, k_norm) = if cfg.qk_norm.is_some() {
            (
                Some(w.norm_vec(&p("self_attn.q_norm.weight"), q_norm_len, off)?),
                Some(w.norm_vec(&p("self_attn.k_norm.weight"), k_norm_len, off)?),
            )
        } else {
            (None, None)
        };
        let mut norm = |name: &str| w.norm(&p(name), h, off);
        let (attn_norm, post_attn_norm, mlp_norm, post_mlp_norm) = match norms {
            BlockNorms::Pre => (
                Some(norm("input_layernorm.weight")?),
                None,
                Some(norm("post_attention_layernorm.weight")?),
                None,
            ),
            BlockNorms::PreAndPost => (
                Some(norm("input_layernorm.weight")?),
                Some(norm("post_attention_layernorm.weight")?),
                Some(norm("pre_feedforward_layernorm.weight")?),
                Some(norm("post_feedforward_layernorm.weight")?),
            ),
            BlockNorms::Post => (
                None,
                Some(norm("post_attention_layernorm.weight")?),
                None,
                Some(norm("post_feedforward_layernorm.weight")?),
            ),
        };
        blocks.push(Block {
            attn_norm,
            qkv: dense(qkv_w, qkv_bias)?,
            q_norm,
            k_norm,
            o: dense(w.take(&p("self_attn.o_proj.weight"), &[h, q])?, o_bias)?,
            post_attn_norm,
            mlp_norm,
            gate_up: dense(gate_up_w, gate_up_bias)?,
            down: dense(w.take(&p("mlp.down_proj.weight"), &[h, inter])?, down_bias)?,
            post_mlp_norm,
        });
    }
    let final_norm = w.norm("model.norm.weight", h, off)?;
    // Buffers some exporters write; they are recomputed from the config.
    w.left
        .retain(|name, _| !name.ends_with("rotary_emb.inv_freq"));
    if !w.left.is_empty() {
        let mut left: Vec<&str> = w.left.keys().map(String::as_str).collect();
        left.sort_unstable();
        let shown: Vec<&str> = left.iter().take(5).copied().collect();
        return Err(Error::model(
            w.dir,
            format!(
                "{} tensor(s) the {} decoder would not use (e.g. {}): the checkpoint does not \
                 match its config; refusing rather than ignoring weights",
                left.len(),
                arch.as_str(),
                shown.join(", ")
            ),
        ));
    }
    let lm_head = dense(lm_head_w, None)?;
    check_shapes(w.dir, &cfg, &embed, &lm_head, &final_norm, &blocks)?;
    Ok(Transformer::new(
        cfg,
        embed,
        lm_head,
        final_norm,
        blocks,
        RopeStyle::HalfSplit,
        device.clone(),
    ))
}

/// Checks the assembled weights' shapes against the config (every loader: the per-tensor
/// checks name the stored tensor; this is the backstop on what the forward will see), so a
/// mismatch is a load error rather than a shape error, a panic or a silently shifted logit
/// deep in the forward pass.
pub(crate) fn check_shapes(
    path: &Path,
    cfg: &TransformerConfig,
    embed: &Tensor,
    lm_head: &Linear,
    final_norm: &Tensor,
    blocks: &[Block],
) -> Result<()> {
    let h = cfg.hidden_size;
    let q = cfg.num_heads * cfg.head_dim;
    let kv = cfg.num_kv_heads * cfg.head_dim;
    let bad = |what: &str, got: Vec<usize>, want: Vec<usize>| {
        Error::model(
            path,
            format!("{what} has shape {got:?}, the config implies {want:?}"),
        )
    };
    let dims = |what: &str, t: &Tensor, want: &[usize]| {
        if t.dims() == want {
            Ok(())
        } else {
            Err(bad(what, t.dims().to_vec(), want.to_vec()))
        }
    };
    dims("the embedding", embed, &[cfg.vocab_size, h])?;
    if let Linear::Dense { w, .. } = lm_head {
        dims("the LM head", w, &[cfg.vocab_size, h])?;
    }
    dims("the final norm", final_norm, &[h])?;
    let (q_norm, k_norm) = match cfg.qk_norm {
        Some(QkNorm::Whole) => (q, kv),
        _ => (cfg.head_dim, cfg.head_dim),
    };
    for (i, b) in blocks.iter().enumerate() {
        let checks: [(&str, &Linear, [usize; 2]); 4] = [
            ("q/k/v projection", &b.qkv, [q + 2 * kv, h]),
            ("attention output", &b.o, [h, q]),
            (
                "gate/up projection",
                &b.gate_up,
                [2 * cfg.intermediate_size, h],
            ),
            ("down projection", &b.down, [h, cfg.intermediate_size]),
        ];
        for (what, lin, want) in checks {
            let (w, bias) = match lin {
                Linear::Dense { w, bias } => (Some(w), bias),
                Linear::Quantized { bias, .. } | Linear::PackedBf16 { bias, .. } => (None, bias),
            };
            if let Some(w) = w {
                dims(&format!("layer {i} {what}"), w, &want)?;
            }
            if let Some(bias) = bias {
                dims(&format!("layer {i} {what} bias"), bias, &want[..1])?;
            }
        }
        for (what, n) in [
            ("attention norm", &b.attn_norm),
            ("post-attention norm", &b.post_attn_norm),
            ("MLP norm", &b.mlp_norm),
            ("post-MLP norm", &b.post_mlp_norm),
        ] {
            if let Some(n) = n {
                dims(&format!("layer {i} {what}"), n, &[h])?;
            }
        }
        for (what, n, want) in [("q_norm", &b.q_norm, q_norm), ("k_norm", &b.k_norm, k_norm)] {
            if let Some(n) = n {
                if n.len() != want {
                    return Err(bad(&format!("layer {i} {what}"), vec![n.len()], vec![want]));
                }
            }
        }
    }
    Ok(())
}

fn dense(w: Tensor, bias: Option<Tensor>) -> Result<Linear> {
    Ok(Linear::Dense { w, bias })
}

/// Writes a GGUF llama/qwen2 model as a Hugging Face directory (f32 safetensors with the q/k
/// permutation undone, `config.json`, `tokenizer.json`, `tokenizer_config.json`).
pub fn export_gguf_as_hf(gguf_path: &Path, out: &Path) -> Result<()> {
    let device = Device::Cpu;
    let mut gguf = GgufFile::open(gguf_path)?;
    let cfg = gguf.config()?;
    let plain_rope = cfg
        .ropes
        .iter()
        .all(|r| r.scaling == super::architecture::RopeScaling::None);
    if !matches!(cfg.architecture, Architecture::Llama | Architecture::Qwen2) || !plain_rope {
        return Err(Error::model(
            gguf_path,
            format!(
                "export-hf writes llama and qwen2 models without RoPE scaling; this is {}",
                cfg.architecture.as_str()
            ),
        ));
    }
    let tokenizer = Tokenizer::from_gguf(&gguf)?;
    let permuted = cfg.architecture.facts().gguf_permuted_qk;
    std::fs::create_dir_all(out).map_err(|source| Error::Io {
        action: "creating",
        path: out.to_path_buf(),
        source,
    })?;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let mut put =
        |g: &mut GgufFile, gname: &str, hname: String, heads: Option<usize>| -> Result<()> {
            let t = g.dense_tensor(gname, &device)?;
            let t = match (heads, permuted) {
                (Some(h), true) => unpermute_rows(&t, h)?,
                _ => t,
            };
            tensors.insert(hname, t);
            Ok(())
        };
    put(
        &mut gguf,
        "token_embd.weight",
        "model.embed_tokens.weight".into(),
        None,
    )?;
    put(
        &mut gguf,
        "output_norm.weight",
        "model.norm.weight".into(),
        None,
    )?;
    if !cfg.tie_word_embeddings {
        put(&mut gguf, "output.weight", "lm_head.weight".into(), None)?;
    }
    for i in 0..cfg.num_layers {
        let g = |n: &str| format!("blk.{i}.{n}");
        let h = |n: &str| format!("model.layers.{i}.{n}");
        put(
            &mut gguf,
            &g("attn_norm.weight"),
            h("input_layernorm.weight"),
            None,
        )?;
        put(
            &mut gguf,
            &g("attn_q.weight"),
            h("self_attn.q_proj.weight"),
            Some(cfg.num_heads),
        )?;
        put(
            &mut gguf,
            &g("attn_k.weight"),
            h("self_attn.k_proj.weight"),
            Some(cfg.num_kv_heads),
        )?;
        put(
            &mut gguf,
            &g("attn_v.weight"),
            h("self_attn.v_proj.weight"),
            None,
        )?;
        if cfg.attention_bias {
            put(
                &mut gguf,
                &g("attn_q.bias"),
                h("self_attn.q_proj.bias"),
                None,
            )?;
            put(
                &mut gguf,
                &g("attn_k.bias"),
                h("self_attn.k_proj.bias"),
                None,
            )?;
            put(
                &mut gguf,
                &g("attn_v.bias"),
                h("self_attn.v_proj.bias"),
                None,
            )?;
        }
        put(
            &mut gguf,
            &g("attn_output.weight"),
            h("self_attn.o_proj.weight"),
            None,
        )?;
        put(
            &mut gguf,
            &g("ffn_norm.weight"),
            h("post_attention_layernorm.weight"),
            None,
        )?;
        put(
            &mut gguf,
            &g("ffn_gate.weight"),
            h("mlp.gate_proj.weight"),
            None,
        )?;
        put(
            &mut gguf,
            &g("ffn_up.weight"),
            h("mlp.up_proj.weight"),
            None,
        )?;
        put(
            &mut gguf,
            &g("ffn_down.weight"),
            h("mlp.down_proj.weight"),
            None,
        )?;
    }
    candle_core::safetensors::save(&tensors, out.join("model.safetensors"))?;
    let config = serde_json::json!({
        "model_type": cfg.architecture.as_str(),
        "architectures": [if cfg.architecture == Architecture::Qwen2 { "Qwen2ForCausalLM" } else { "LlamaForCausalLM" }],
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "vocab_size": cfg.vocab_size,
        "rope_theta": cfg.ropes.first().map(|r| r.theta).unwrap_or(10_000.0),
        "rms_norm_eps": cfg.rms_norm_eps,
        "max_position_embeddings": cfg.max_position_embeddings,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "attention_bias": cfg.attention_bias,
        "torch_dtype": "float32",
    });
    write_json(&out.join("config.json"), &config)?;
    tokenizer.save_hf(out)?;
    Ok(())
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::model(path, format!("serialising: {e}")))?;
    std::fs::write(path, text).map_err(|source| Error::Io {
        action: "writing",
        path: path.to_path_buf(),
        source,
    })
}
