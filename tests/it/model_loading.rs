//! Loading checkpoints (`cargo test --test it model_loading::`): every tensor's shape and every
//! count and float of a config are checked before anything is allocated or computed, crafted
//! headers are refused rather than crashing the process, keys that transformers reads in a
//! particular order are read in that order, and sharded safetensors load through their index.
//! Fidelity of each family is in `families.rs`; these tests reuse its fixtures and helpers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::quantized::gguf_file::{self, Value as GValue};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use hindsight::model::architecture::RopeScaling;
use hindsight::model::gguf_checkpoint::GgufFile;
use hindsight::model::safetensors::{load_transformer_dir, load_transformer_dir_as};
use hindsight::model::ComputeMode;
use serde_json::{json, Value};

use crate::families::{
    device, edited, load_err, log_probs, models_dir, packed_worst, packed_worst_unchecked,
    reference, TOLERANCE,
};

/// A fixture checkpoint with its tensors edited (and its config as is).
fn with_tensors(name: &str, edit: impl FnOnce(&mut HashMap<String, Tensor>)) -> tempfile::TempDir {
    let dir = edited(name, |_| {});
    let path = dir.path().join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&path, &Device::Cpu).expect("load");
    edit(&mut tensors);
    candle_core::safetensors::save(&tensors, &path).expect("save");
    dir
}

/// `t` with `rows` rows: cut, or extended by repeating its first rows (in fresh storage: a
/// narrowed view is not what a quantizer or a writer expects).
fn with_rows(t: &Tensor, rows: usize) -> Tensor {
    let have = t.dim(0).expect("dim");
    let t = if rows <= have {
        t.narrow(0, 0, rows).expect("narrow")
    } else {
        Tensor::cat(&[t, &t.narrow(0, 0, rows - have).expect("narrow")], 0).expect("cat")
    };
    let mut shape = t.dims().to_vec();
    shape[0] = rows;
    let data: Vec<f32> = t
        .to_dtype(DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1())
        .expect("data");
    Tensor::from_vec(data, shape, &Device::Cpu).expect("tensor")
}

/// A fixture's GGUF rewritten with its metadata and tensors edited.
pub(crate) fn rewrite_gguf(
    name: &str,
    edit_metadata: impl FnOnce(&mut Vec<(String, GValue)>),
    edit_tensors: impl FnOnce(&mut Vec<(String, QTensor)>),
) -> (tempfile::TempDir, PathBuf) {
    let src = models_dir().join(name).join("model.gguf");
    let mut f = std::fs::File::open(&src).expect("open");
    let content = gguf_file::Content::read(&mut f).expect("read");
    let mut metadata: Vec<(String, GValue)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    metadata.sort_by(|a, b| a.0.cmp(&b.0));
    edit_metadata(&mut metadata);
    let mut names: Vec<String> = content.tensor_infos.keys().cloned().collect();
    names.sort();
    let mut tensors = Vec::new();
    for n in &names {
        tensors.push((
            n.clone(),
            content.tensor(&mut f, n, &Device::Cpu).expect("tensor"),
        ));
    }
    edit_tensors(&mut tensors);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("m.gguf");
    let mut out = std::fs::File::create(&path).expect("create");
    let md: Vec<(&str, &GValue)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut out, &md, &ts).expect("write");
    (dir, path)
}

fn set_key(metadata: &mut Vec<(String, GValue)>, key: &str, value: GValue) {
    metadata.retain(|(k, _)| k != key);
    metadata.push((key.to_string(), value));
}

/// The error loading a GGUF that must be refused.
pub(crate) fn gguf_err(p: &Path) -> String {
    match GgufFile::open(p).and_then(|mut g| g.load_transformer(ComputeMode::F32, &Device::Cpu)) {
        Ok(_) => panic!("{} loaded but should be refused", p.display()),
        Err(e) => e.to_string(),
    }
}

/// `hindsight plan` on a model: it reads the header only, and must refuse a crafted one with
/// a message (exit code 1 or 2), never die of a signal or a panic.
fn plan_refusal(model: &Path) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = tempfile::tempdir().expect("tempdir");
    let o = Command::new(env!("CARGO_BIN_EXE_hindsight"))
        .current_dir(&root)
        .args([
            "plan",
            "pipelines/hints.toml",
            "--input",
            "sample-data/hints.jsonl",
        ])
        .arg("--output")
        .arg(out.path().join("ds"))
        .arg("--set")
        .arg(format!("model.path={}", model.display()))
        .output()
        .expect("run hindsight plan");
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        matches!(o.status.code(), Some(1..=3)),
        "plan on {} ended with {:?} (not a refusal): {stderr}",
        model.display(),
        o.status
    );
    stderr
}

// 1. Every tensor's shape is checked against the config.

#[test]
fn a_head_or_norm_of_the_wrong_shape_is_refused_naming_the_tensor() {
    // More rows than vocab_size would shift every logit; fewer would panic in the forward.
    for rows in [769usize, 767] {
        let dir = with_tensors("llama", |t| {
            let head = with_rows(&t["lm_head.weight"], rows);
            t.insert("lm_head.weight".into(), head);
        });
        let e = load_err(dir.path());
        assert!(
            e.contains("lm_head.weight")
                && e.contains(&format!("[{rows}, 64]"))
                && e.contains("[768, 64]"),
            "{e}"
        );
    }
    let dir = with_tensors("llama", |t| {
        let n = with_rows(&t["model.norm.weight"], 65);
        t.insert("model.norm.weight".into(), n);
    });
    let e = load_err(dir.path());
    assert!(
        e.contains("model.norm.weight") && e.contains("[65]") && e.contains("[64]"),
        "{e}"
    );
    let dir = with_tensors("qwen2", |t| {
        let name = "model.layers.1.self_attn.k_proj.bias";
        let b = with_rows(&t[name], 31);
        t.insert(name.into(), b);
    });
    let e = load_err(dir.path());
    assert!(
        e.contains("model.layers.1.self_attn.k_proj.bias") && e.contains("[31]"),
        "{e}"
    );
    // Per-head q/k norms are [head_dim]; a whole-width one is another architecture (OLMo 2).
    let dir = with_tensors("qwen3", |t| {
        let name = "model.layers.0.self_attn.q_norm.weight";
        let w = t[name].repeat(4).expect("repeat");
        t.insert(name.into(), w);
    });
    let e = load_err(dir.path());
    assert!(e.contains("q_norm.weight") && e.contains("[64]"), "{e}");

    // GGUF: the untied `output.weight`.
    for rows in [769usize, 767] {
        let (_d, p) = rewrite_gguf(
            "llama",
            |_| {},
            |tensors| {
                for (name, t) in tensors.iter_mut() {
                    if name == "output.weight" {
                        let dense = t.dequantize(&Device::Cpu).expect("dequantize");
                        *t = QTensor::quantize(&with_rows(&dense, rows), GgmlDType::F32)
                            .expect("quantize");
                    }
                }
            },
        );
        let e = gguf_err(&p);
        assert!(
            e.contains("output.weight")
                && e.contains(&format!("[{rows}, 64]"))
                && e.contains("[768, 64]"),
            "{e}"
        );
    }
}

// 2. Floats that would make NaN or inf logits are refused at load, naming the key.

#[test]
fn degenerate_rope_norm_and_scale_parameters_are_refused_naming_the_key() {
    type Edit = fn(&mut Value);
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "llama_linear",
            |c| c["rope_parameters"]["factor"] = json!(0.0),
            "factor",
        ),
        (
            "llama_linear",
            |c| c["rope_parameters"]["factor"] = json!(-2.0),
            "factor",
        ),
        (
            "llama3_scaled",
            |c| c["rope_parameters"]["high_freq_factor"] = json!(1.0),
            "high_freq_factor",
        ),
        (
            "llama3_scaled",
            |c| c["rope_parameters"]["low_freq_factor"] = json!(0.0),
            "low_freq_factor",
        ),
        (
            "llama3_scaled",
            |c| c["rope_parameters"]["original_max_position_embeddings"] = json!(0),
            "original_max_position_embeddings",
        ),
        (
            "llama_yarn",
            |c| c["rope_parameters"]["factor"] = json!(-4.0),
            "factor",
        ),
        (
            "llama_yarn",
            |c| c["rope_parameters"]["beta_fast"] = json!(-1.0),
            "beta_fast",
        ),
        (
            "llama_yarn",
            |c| c["rope_parameters"]["attention_factor"] = json!(0.0),
            "attention_factor",
        ),
        (
            "llama",
            |c| c["rope_parameters"]["rope_theta"] = json!(0.0),
            "rope_theta",
        ),
        (
            "llama",
            |c| c["rms_norm_eps"] = json!(-1e-6),
            "rms_norm_eps",
        ),
        (
            "gemma2",
            |c| c["attn_logit_softcapping"] = json!(-5.0),
            "attn_logit_softcapping",
        ),
        (
            "gemma2",
            |c| c["final_logit_softcapping"] = json!(-3.0),
            "final_logit_softcapping",
        ),
        (
            "gemma2_scalar",
            |c| c["query_pre_attn_scalar"] = json!(0),
            "query_pre_attn_scalar",
        ),
        (
            "phi3",
            |c| c["rope_parameters"]["partial_rotary_factor"] = json!(0.0),
            "partial_rotary_factor",
        ),
    ];
    for (name, edit, key) in cases {
        let e = load_err(edited(name, edit).path());
        assert!(e.contains(key), "{name}: {e}");
    }

    // GGUF floats: NaN or negative epsilon, base, scaling factor, soft-cap.
    let gguf_cases: Vec<(&str, &str, GValue)> = vec![
        (
            "llama",
            "llama.attention.layer_norm_rms_epsilon",
            GValue::F32(f32::NAN),
        ),
        (
            "llama",
            "llama.attention.layer_norm_rms_epsilon",
            GValue::F32(-1e-5),
        ),
        ("llama", "llama.rope.freq_base", GValue::F32(f32::INFINITY)),
        (
            "llama_linear",
            "llama.rope.scaling.factor",
            GValue::F32(f32::NAN),
        ),
        (
            "llama_linear",
            "llama.rope.scaling.factor",
            GValue::F32(-4.0),
        ),
        ("gemma2", "gemma2.attn_logit_softcapping", GValue::F32(-5.0)),
        (
            "gemma2",
            "gemma2.final_logit_softcapping",
            GValue::F32(f32::NAN),
        ),
    ];
    for (name, key, value) in gguf_cases {
        let (_d, p) = rewrite_gguf(name, |m| set_key(m, key, value), |_| {});
        let e = gguf_err(&p);
        assert!(e.contains(key), "{name} {key}: {e}");
    }
}

// 3. Counts and sizes are validated before anything is allocated.

#[test]
fn absurd_counts_and_sizes_are_refused_naming_the_key() {
    type Edit = fn(&mut Value);
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "llama",
            |c| c["num_hidden_layers"] = json!(5000),
            "num_hidden_layers",
        ),
        (
            "llama",
            |c| c["hidden_size"] = json!(1u64 << 20),
            "hidden_size",
        ),
        (
            "llama",
            |c| c["vocab_size"] = json!(1u64 << 30),
            "vocab_size",
        ),
        ("llama", |c| c["vocab_size"] = json!(0), "vocab_size"),
        (
            "llama",
            |c| c["intermediate_size"] = json!(1u64 << 40),
            "intermediate_size",
        ),
        ("llama", |c| c["head_dim"] = json!(1u64 << 40), "head_dim"),
        (
            "llama",
            |c| c["max_position_embeddings"] = json!(1u64 << 40),
            "max_position_embeddings",
        ),
        (
            "llama",
            |c| c["num_attention_heads"] = json!(0),
            "num_attention_heads",
        ),
        (
            "llama",
            |c| c["num_key_value_heads"] = json!(3),
            "num_key_value_heads",
        ),
        (
            "llama",
            |c| c["num_hidden_layers"] = json!(-3),
            "num_hidden_layers",
        ),
        (
            "llama",
            |c| c["num_hidden_layers"] = json!(2.5),
            "num_hidden_layers",
        ),
        // hidden_size 66 is not a multiple of 4 heads: transformers refuses it for Llama.
        ("llama", |c| c["hidden_size"] = json!(66), "hidden_size"),
        (
            "mistral",
            |c| {
                c["hidden_size"] = json!(66);
                c.as_object_mut().expect("object").remove("head_dim");
            },
            "hidden_size",
        ),
        (
            "mistral",
            |c| c["sliding_window"] = json!(1u64 << 40),
            "sliding_window",
        ),
    ];
    for (name, edit, key) in cases {
        let e = load_err(edited(name, edit).path());
        assert!(e.contains(key), "{name} {key}: {e}");
    }

    let gguf_cases: Vec<(&str, GValue)> = vec![
        ("llama.block_count", GValue::I32(-1)),
        ("llama.block_count", GValue::U32(5000)),
        ("llama.embedding_length", GValue::U64(1 << 40)),
        ("llama.attention.head_count", GValue::U32(0)),
        ("llama.attention.head_count_kv", GValue::U32(3)),
        ("llama.context_length", GValue::U64(1 << 40)),
        ("llama.feed_forward_length", GValue::I32(-128)),
        ("llama.vocab_size", GValue::U64(1 << 40)),
    ];
    for (key, value) in gguf_cases {
        let (_d, p) = rewrite_gguf("llama", |m| set_key(m, key, value), |_| {});
        let e = gguf_err(&p);
        assert!(e.contains(key), "{key}: {e}");
    }
}

/// These crashed the process (capacity overflow, allocation failure) before anything could be
/// refused: `hindsight plan` reads only the header, and it must refuse them with a message.
#[test]
fn hindsight_plan_refuses_crafted_headers_instead_of_crashing() {
    let dir = edited("llama", |c| {
        c["num_hidden_layers"] = json!(10_000_000_000_000_000u64);
    });
    let e = plan_refusal(dir.path());
    assert!(e.contains("num_hidden_layers"), "{e}");
    for (key, value) in [
        ("llama.block_count", GValue::I32(-1)),
        ("llama.block_count", GValue::U64(1 << 50)),
    ] {
        let (_d, p) = rewrite_gguf("llama", |m| set_key(m, key, value), |_| {});
        let e = plan_refusal(&p);
        assert!(e.contains(key), "{key}: {e}");
    }
}

/// A tensor whose dims multiply past the address space (or past the file) is refused when the
/// file is opened, naming it; an alignment of 0 is refused instead of dividing by zero.
#[test]
fn crafted_gguf_tensor_dims_and_alignment_are_refused() {
    let (_d, p) = rewrite_gguf(
        "llama",
        |m| set_key(m, "general.alignment", GValue::U32(0)),
        |_| {},
    );
    let e = match GgufFile::open(&p) {
        Ok(_) => panic!("opened"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("general.alignment"), "{e}");

    // Patch the header's dims of `output_norm.weight` ([64] as one u64) in place.
    let (_d, p) = rewrite_gguf("llama", |_| {}, |_| {});
    let mut bytes = std::fs::read(&p).expect("read");
    let name = b"output_norm.weight";
    let mut needle = (name.len() as u64).to_le_bytes().to_vec();
    needle.extend_from_slice(name);
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle.as_slice())
        .expect("tensor info")
        + needle.len();
    assert_eq!(&bytes[at..at + 4], &1u32.to_le_bytes(), "one dim");
    assert_eq!(&bytes[at + 4..at + 12], &64u64.to_le_bytes(), "dim 64");
    for dim in [1u64 << 62, 1 << 30] {
        bytes[at + 4..at + 12].copy_from_slice(&dim.to_le_bytes());
        std::fs::write(&p, &bytes).expect("write");
        let e = match GgufFile::open(&p) {
            Ok(_) => panic!("opened with dim {dim}"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains("output_norm.weight"), "{e}");
    }
}

// 4. original_max_position_embeddings: nested and top-level.

/// transformers 4 reads `rope_scaling.original_max_position_embeddings` and ignores a top-level
/// one; transformers 5 lets the top-level one win. A transformers-4 config where the two differ
/// means different models to the two versions: refused. Equal, it loads; in the transformers-5
/// layout the top-level one wins, as transformers 5 does.
#[test]
fn original_max_position_embeddings_precedence_follows_transformers() {
    let v4 = |top: Option<u64>| {
        let dir = edited("llama3_scaled", |_| {});
        let text =
            std::fs::read_to_string(models_dir().join("llama3_scaled/config.transformers4.json"))
                .expect("v4 config");
        let mut c: Value = serde_json::from_str(&text).expect("json");
        if let Some(t) = top {
            c["original_max_position_embeddings"] = json!(t);
        }
        std::fs::write(dir.path().join("config.json"), c.to_string()).expect("write");
        dir
    };
    let e = load_err(v4(Some(64)).path());
    assert!(
        e.contains("original_max_position_embeddings") && e.contains("32") && e.contains("64"),
        "{e}"
    );
    let dir = v4(Some(32));
    let model = load_transformer_dir(dir.path(), &device())
        .expect("agreeing keys")
        .0;
    assert!(packed_worst(&model, &reference("llama3_scaled")) < TOLERANCE);

    // The transformers-5 layout: the top-level value wins (transformers 5's rule).
    let dir = edited("llama3_scaled", |c| {
        c["original_max_position_embeddings"] = json!(64)
    });
    let model = load_transformer_dir(dir.path(), &device()).expect("v5").0;
    assert!(matches!(
        model.config.ropes[0].scaling,
        RopeScaling::Llama3 { original_max_position_embeddings, .. }
            if original_max_position_embeddings == 64.0
    ));
}

// 5. Gemma 3 without layer_types.

#[test]
fn gemma3_layer_types_are_derived_from_sliding_window_pattern_as_transformers_does() {
    let without_types = |pattern_key: &'static str, value: Value| {
        edited("gemma3", move |c| {
            let m = c.as_object_mut().expect("object");
            m.remove("layer_types");
            m.remove("_sliding_window_pattern");
            m.insert(pattern_key.into(), value);
        })
    };
    let sliding = |model: &hindsight::model::Transformer| -> Vec<bool> {
        model
            .config
            .layers
            .iter()
            .map(|l| l.sliding_window.is_some())
            .collect()
    };
    // The fixture's layer_types are [sliding, sliding, full]: a pattern of 3.
    let fixture = load_transformer_dir(&models_dir().join("gemma3"), &device())
        .expect("fixture")
        .0;
    assert_eq!(sliding(&fixture), [true, true, false]);
    let dir = without_types("sliding_window_pattern", json!(3));
    let model = load_transformer_dir(dir.path(), &device())
        .expect("pattern 3")
        .0;
    assert_eq!(sliding(&model), [true, true, false]);
    assert!(packed_worst(&model, &reference("gemma3")) < TOLERANCE);

    // Another pattern: another assignment, and the reference no longer matches.
    let dir = without_types("sliding_window_pattern", json!(2));
    let model = load_transformer_dir(dir.path(), &device())
        .expect("pattern 2")
        .0;
    assert_eq!(sliding(&model), [true, false, true]);
    assert!(packed_worst_unchecked(&model, &reference("gemma3")) > 0.05);

    // transformers derives layer_types from `sliding_window_pattern` (default 6) only;
    // `_sliding_window_pattern` is the attribute it writes back. Agreeing with the derivation
    // it is bookkeeping; disagreeing it would be read differently by a person and by
    // transformers: refused, naming it.
    let dir = without_types("_sliding_window_pattern", json!(6));
    let model = load_transformer_dir(dir.path(), &device())
        .expect("default 6")
        .0;
    assert_eq!(sliding(&model), [true, true, true]);
    let e = load_err(without_types("_sliding_window_pattern", json!(3)).path());
    assert!(
        e.contains("_sliding_window_pattern") && e.contains("layer_types"),
        "{e}"
    );
    let e = load_err(without_types("sliding_window_pattern", json!(0)).path());
    assert!(e.contains("sliding_window_pattern"), "{e}");
}

// 6. Sharded safetensors, memory-mapped, converted once to the compute dtype.

/// Splits a fixture's `model.safetensors` into two shards and an index.
fn sharded(name: &str) -> (tempfile::TempDir, Vec<String>) {
    let dir = edited(name, |_| {});
    let whole = dir.path().join("model.safetensors");
    let tensors = candle_core::safetensors::load(&whole, &Device::Cpu).expect("load");
    std::fs::remove_file(&whole).expect("remove");
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let half = names.len() / 2;
    let files = [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ];
    let mut weight_map = serde_json::Map::new();
    for (i, part) in [&names[..half], &names[half..]].into_iter().enumerate() {
        let shard: HashMap<String, Tensor> = part
            .iter()
            .map(|n| ((*n).clone(), tensors[*n].clone()))
            .collect();
        candle_core::safetensors::save(&shard, dir.path().join(files[i])).expect("save");
        for n in part {
            weight_map.insert((*n).clone(), json!(files[i]));
        }
    }
    write_index(dir.path(), weight_map);
    (dir, files.iter().map(|s| s.to_string()).collect())
}

fn write_index(dir: &Path, weight_map: serde_json::Map<String, Value>) {
    let index = json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).expect("index");
}

fn read_index(dir: &Path) -> serde_json::Map<String, Value> {
    let v: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("model.safetensors.index.json")).expect("index"),
    )
    .expect("json");
    v["weight_map"].as_object().expect("map").clone()
}

#[test]
fn a_sharded_checkpoint_loads_through_its_index_and_matches_the_reference() {
    let (dir, files) = sharded("llama");
    // A stray file the index does not name is not read (nor hashed).
    std::fs::copy(
        models_dir().join("llama/model.safetensors"),
        dir.path().join("consolidated.safetensors"),
    )
    .expect("copy");
    let (model, sha) = load_transformer_dir(dir.path(), &device()).expect("sharded");
    assert!(packed_worst(&model, &reference("llama")) < TOLERANCE);
    // The weights' identity is the one recorded before: the sha256 of the shards' sha256s.
    let hexes: String = files
        .iter()
        .map(|f| hindsight::model::sha256_file(&dir.path().join(f)).expect("sha"))
        .collect();
    assert_eq!(sha, hindsight::util::sha256_hex(hexes.as_bytes()));
    // A single file keeps its own sha256.
    let (_, sha) = load_transformer_dir(&models_dir().join("llama"), &device()).expect("llama");
    assert_eq!(
        sha,
        hindsight::model::sha256_file(&models_dir().join("llama/model.safetensors")).expect("sha")
    );
}

#[test]
fn a_sharded_index_naming_a_missing_file_or_a_tensor_twice_is_refused() {
    // The index names a shard that is not there.
    let (dir, _) = sharded("llama");
    let mut map = read_index(dir.path());
    map.insert(
        "model.embed_tokens.weight".into(),
        json!("model-00003-of-00003.safetensors"),
    );
    write_index(dir.path(), map);
    let e = load_err(dir.path());
    assert!(e.contains("model-00003-of-00003.safetensors"), "{e}");

    // A tensor stored in both shards.
    let (dir, files) = sharded("llama");
    let first = dir.path().join(&files[0]);
    let mut t = candle_core::safetensors::load(&first, &Device::Cpu).expect("load");
    let second =
        candle_core::safetensors::load(dir.path().join(&files[1]), &Device::Cpu).expect("load");
    let (name, dup) = second.iter().next().expect("a tensor");
    t.insert(name.clone(), dup.clone());
    candle_core::safetensors::save(&t, &first).expect("save");
    let e = load_err(dir.path());
    assert!(e.contains(name.as_str()), "{e}");

    // A tensor the index places in the other shard than the one holding it.
    let (dir, files) = sharded("llama");
    let mut map = read_index(dir.path());
    let moved = "model.norm.weight";
    let now = map[moved].as_str().expect("file").to_string();
    let other = if now == files[0] {
        &files[1]
    } else {
        &files[0]
    };
    map.insert(moved.into(), json!(other));
    write_index(dir.path(), map);
    let e = load_err(dir.path());
    assert!(e.contains(moved), "{e}");
}

/// Loading in bf16 converts each tensor once, straight to bf16: the result is the same network
/// as loading in f32 and casting afterwards (the old path), with half the resident weights.
#[test]
fn loading_in_a_reduced_dtype_matches_loading_in_f32_then_casting() {
    for name in ["llama", "gemma3"] {
        let dir = models_dir().join(name);
        for mode in [ComputeMode::Bf16, ComputeMode::F16] {
            let direct = load_transformer_dir_as(&dir, mode, &device())
                .expect("direct")
                .0;
            let cast = load_transformer_dir(&dir, &device())
                .expect("f32")
                .0
                .with_compute(mode)
                .expect("cast");
            assert_eq!(direct.embed.dtype(), mode.weight_dtype().expect("dense"));
            assert_eq!(direct.final_norm.dtype(), DType::F32, "norms stay f32");
            let mut batch = hindsight::model::PackedBatch::default();
            batch.push_segment(&reference(name)[0].ids, 0, None);
            let a = log_probs(&direct, &direct.forward_hidden(&batch).expect("forward"));
            let b = log_probs(&cast, &cast.forward_hidden(&batch).expect("forward"));
            assert_eq!(a, b, "{name} {}", mode.as_str());
        }
    }
}
