//! Model loading and the forward pass.
//!
//! Two sources are supported: a GGUF file (weights + tokenizer + chat template in one file; the
//! embedded default) and a Hugging Face directory (`*.safetensors` + `config.json` +
//! `tokenizer.json` + `tokenizer_config.json`). Weights are dequantized to f32 by default, which
//! is both exact (agrees with the f32 reference to ~3e-5 nats) and the fastest mode on CPUs where
//! candle has no SIMD kernel for the quantized block type.

pub mod architecture;
pub mod attention;
pub mod bf16_gemm;
pub mod decoder;
pub mod device;
pub mod device_attention;
pub mod family;
pub mod fastmath;
pub mod generate;
pub mod gguf_checkpoint;
pub mod hf_config;
pub mod safetensors;

use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::tokenize::Tokenizer;
pub use architecture::{Architecture, TransformerConfig};
pub use decoder::{PackedBatch, Segment, Transformer};

/// How weights are held and multiplied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ComputeMode {
    /// Dequantize everything to f32: exact, and fastest on CPUs.
    #[default]
    F32,
    /// candle's quantized matmul on the GGUF blocks (less memory; approximate: ~0.03 nats).
    Quantized,
    /// Weights and matmuls in bfloat16 (half the memory; the usual GPU dtype). Norms, RoPE,
    /// softmax and the log-probs stay in f32. Drift against f32: see docs/MODEL.md.
    Bf16,
    /// Weights and matmuls in float16, like `Bf16`.
    F16,
}

impl ComputeMode {
    /// The dtype string recorded in dataset metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            ComputeMode::F32 => "f32",
            ComputeMode::Quantized => "quantized",
            ComputeMode::Bf16 => "bf16",
            ComputeMode::F16 => "f16",
        }
    }

    /// The dtype weights are held in for the dense modes (`None` for quantized).
    pub fn weight_dtype(self) -> Option<candle_core::DType> {
        match self {
            ComputeMode::F32 => Some(candle_core::DType::F32),
            ComputeMode::Bf16 => Some(candle_core::DType::BF16),
            ComputeMode::F16 => Some(candle_core::DType::F16),
            ComputeMode::Quantized => None,
        }
    }

    /// Parses a CLI / config value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "f32" | "exact" => Some(Self::F32),
            "quantized" | "q" => Some(Self::Quantized),
            "bf16" | "bfloat16" => Some(Self::Bf16),
            "f16" | "fp16" | "float16" => Some(Self::F16),
            _ => None,
        }
    }
}

pub use crate::record::ModelInfo;

/// A model ready to score: the network, its tokenizer, and its identity.
pub struct LoadedModel {
    pub transformer: Transformer,
    pub tokenizer: Tokenizer,
    pub info: ModelInfo,
}

/// The default model file, relative to the repository root (provisioned by `scripts/fetch-model.sh`).
pub const DEFAULT_MODEL_FILE: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

/// Resolves the model path: an explicit path, else `$HINDSIGHT_MODEL`, else the default file
/// under the current directory or next to the crate.
pub fn resolve_model_path(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Ok(p) = std::env::var("HINDSIGHT_MODEL") {
        return Ok(PathBuf::from(p));
    }
    let candidates = [
        PathBuf::from(DEFAULT_MODEL_FILE),
        Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_MODEL_FILE),
    ];
    for c in &candidates {
        if c.exists() {
            return Ok(c.clone());
        }
    }
    Err(Error::model(
        DEFAULT_MODEL_FILE,
        "the default model is not provisioned: run `scripts/fetch-model.sh` (or pass --model PATH / set HINDSIGHT_MODEL)",
    ))
}

/// Loads a model from a GGUF file or a Hugging Face safetensors directory.
pub fn load(path: &Path, mode: ComputeMode, device: &Device) -> Result<LoadedModel> {
    if path.is_dir() {
        return safetensors::load_dir(path, mode, device);
    }
    let mut gguf = gguf_checkpoint::GgufFile::open(path)?;
    let tokenizer = Tokenizer::from_gguf(&gguf)?;
    let transformer = gguf.load_transformer(mode, device)?;
    let transformer = transformer.with_compute(mode)?;
    let model_id = gguf
        .get_str("general.name")
        .map(str::to_string)
        .or_else(|| path.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let source = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let weights_sha256 = sha256_file(path)?;
    Ok(LoadedModel::new(
        transformer,
        tokenizer,
        model_id,
        source,
        weights_sha256,
        mode,
    ))
}

impl LoadedModel {
    /// Bundles a network and its tokenizer with the identity recorded in datasets.
    pub fn new(
        transformer: Transformer,
        tokenizer: Tokenizer,
        model_id: String,
        source: String,
        weights_sha256: String,
        mode: ComputeMode,
    ) -> Self {
        let cfg = &transformer.config;
        let info = ModelInfo {
            model_id,
            architecture: cfg.architecture.as_str().to_string(),
            source,
            weights_sha256,
            tokenizer_sha256: tokenizer.fingerprint().to_string(),
            chat_template_sha256: tokenizer.chat_template_sha256(),
            compute_dtype: mode.as_str().to_string(),
            vocab_size: cfg.vocab_size,
        };
        LoadedModel {
            transformer,
            tokenizer,
            info,
        }
    }
}

/// Loads only the tokenizer of a model (GGUF header or HF directory): views of a dataset need
/// token texts, not weights.
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer> {
    if path.is_dir() {
        return Tokenizer::from_hf_dir(path);
    }
    Tokenizer::from_gguf(&gguf_checkpoint::GgufFile::open(path)?)
}

/// Streams a file through sha256.
pub fn sha256_file(path: &Path) -> Result<String> {
    let io = |source| Error::Io {
        action: "hashing",
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// What `hindsight plan` reports about a model, read from its header (GGUF metadata, or a
/// directory's `config.json` and `tokenizer.json`) without loading any weight.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelHeader {
    /// The file or directory.
    pub path: String,
    /// `gguf` or `huggingface`.
    pub format: String,
    /// The supported family it was recognised as (unsupported ones are an error).
    pub architecture: String,
    /// Decoder layers.
    pub layers: usize,
    /// Hidden size.
    pub hidden_size: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Positions the model was trained for: no context may be longer.
    pub context: usize,
    /// Stored weight types and how many tensors have each (GGUF), or the config's `torch_dtype`.
    pub weight_dtypes: std::collections::BTreeMap<String, usize>,
    /// The tokenizer's fingerprint (recorded in every dataset it scores).
    pub tokenizer_sha256: String,
}

/// Reads a model's header and checks it is a family and shape hindsight supports, as loading
/// would, but without reading the weights.
pub fn describe(path: &Path) -> Result<ModelHeader> {
    let (format, cfg, weight_dtypes, tokenizer) = if path.is_dir() {
        let cfg = safetensors::read_config(path)?;
        let text = std::fs::read_to_string(path.join("config.json")).unwrap_or_default();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let dtype = json
            .get("torch_dtype")
            .or_else(|| json.get("dtype"))
            .and_then(|v| v.as_str())
            .unwrap_or("unknown")
            .to_string();
        let tensors = std::collections::BTreeMap::from([(dtype, 0usize)]);
        ("huggingface", cfg, tensors, Tokenizer::from_hf_dir(path)?)
    } else {
        let gguf = gguf_checkpoint::GgufFile::open(path)?;
        let cfg = gguf.config()?;
        let mut dtypes = std::collections::BTreeMap::new();
        for info in gguf.content.tensor_infos.values() {
            *dtypes.entry(format!("{:?}", info.ggml_dtype)).or_insert(0) += 1;
        }
        ("gguf", cfg, dtypes, Tokenizer::from_gguf(&gguf)?)
    };
    cfg.check().map_err(|e| Error::model(path, e))?;
    Ok(ModelHeader {
        path: path.display().to_string(),
        format: format.to_string(),
        architecture: cfg.architecture.as_str().to_string(),
        layers: cfg.num_layers,
        hidden_size: cfg.hidden_size,
        vocab_size: cfg.vocab_size,
        context: cfg.max_position_embeddings,
        weight_dtypes,
        tokenizer_sha256: tokenizer.fingerprint().to_string(),
    })
}
