//! Fidelity of every supported model family against Hugging Face transformers (compiled into
//! the one integration test binary: `cargo test --test it families::`).
//!
//! `tests/fixtures/models/` holds tiny random checkpoints of each family, written by
//! transformers, and the log-probs transformers computed for two long token sequences
//! (`scripts/model-fixtures/make_fixtures.py`). Every family must reproduce them within 1e-3
//! through the Hugging Face loader, and through the GGUF loader where the family has a GGUF
//! form; through packing, prefix sharing and the KV cache too. The refusal paths (an unknown
//! rope type, model_type, config key, GGUF key or tensor) are tested here as well.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use hindsight::model::gguf_checkpoint::GgufFile;
use hindsight::model::safetensors::load_transformer_dir;
use hindsight::model::{ComputeMode, PackedBatch, Transformer};
use serde_json::Value;

pub(crate) const TOLERANCE: f64 = 1e-3;

/// The device the tests run on: `$HINDSIGHT_DEVICE` (scripts/gpu-check.sh sets `cuda`), else
/// the CPU.
pub(crate) fn device() -> Device {
    hindsight::model::device::DeviceSpec::from_env()
        .expect("HINDSIGHT_DEVICE")
        .open()
        .expect("device")
}

pub(crate) fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models")
}

fn cases() -> Vec<(String, bool)> {
    let index: Value = serde_json::from_str(
        &std::fs::read_to_string(models_dir().join("index.json")).expect("index.json"),
    )
    .expect("index JSON");
    let mut out: Vec<(String, bool)> = index["cases"]
        .as_object()
        .expect("cases")
        .iter()
        .map(|(k, v)| (k.clone(), v["gguf"].as_bool().unwrap_or(false)))
        .collect();
    out.sort();
    out
}

pub(crate) struct Sequence {
    pub(crate) ids: Vec<u32>,
    logprobs: Vec<f64>,
    top5: Vec<Vec<u32>>,
}

pub(crate) fn reference(name: &str) -> Vec<Sequence> {
    let v: Value = serde_json::from_str(
        &std::fs::read_to_string(models_dir().join(name).join("reference.json"))
            .expect("reference.json"),
    )
    .expect("reference JSON");
    v["sequences"]
        .as_array()
        .expect("sequences")
        .iter()
        .map(|s| Sequence {
            ids: s["ids"]
                .as_array()
                .expect("ids")
                .iter()
                .map(|x| x.as_u64().expect("id") as u32)
                .collect(),
            logprobs: s["logprobs"]
                .as_array()
                .expect("logprobs")
                .iter()
                .map(|x| x.as_f64().expect("lp"))
                .collect(),
            top5: s["top5_ids"]
                .as_array()
                .expect("top5")
                .iter()
                .map(|r| {
                    r.as_array()
                        .expect("row")
                        .iter()
                        .map(|x| x.as_u64().expect("id") as u32)
                        .collect()
                })
                .collect(),
        })
        .collect()
}

/// Log-softmax rows of the logits of `hidden` rows.
pub(crate) fn log_probs(model: &Transformer, hidden: &Tensor) -> Vec<Vec<f64>> {
    let logits = model.logits(hidden).expect("logits");
    let rows: Vec<Vec<f32>> = logits.to_vec2().expect("rows");
    rows.into_iter()
        .map(|r| {
            let m = r.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = m + r.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln();
            r.iter().map(|&x| x as f64 - lse).collect()
        })
        .collect()
}

/// Largest |ours - reference| over every next-token log-prob of a sequence, given the log-prob
/// rows of its positions, and whether the top-5 sets agree (ties aside).
fn compare(rows: &[Vec<f64>], seq: &Sequence) -> (f64, usize) {
    let mut worst = 0f64;
    let mut top_mismatch = 0;
    for t in 0..seq.ids.len() - 1 {
        let ours = rows[t][seq.ids[t + 1] as usize];
        worst = worst.max((ours - seq.logprobs[t]).abs());
        let mut idx: Vec<usize> = (0..rows[t].len()).collect();
        idx.sort_by(|&a, &b| rows[t][b].total_cmp(&rows[t][a]));
        let ours_top: Vec<u32> = idx[..5].iter().map(|&i| i as u32).collect();
        let mut a = ours_top.clone();
        let mut b = seq.top5[t].clone();
        a.sort_unstable();
        b.sort_unstable();
        if a != b {
            // Accept only a swap at the boundary caused by a near-tie.
            let fifth = rows[t][idx[4]];
            let sixth = rows[t][idx[5]];
            if (fifth - sixth).abs() > 1e-4 {
                top_mismatch += 1;
            }
        }
    }
    (worst, top_mismatch)
}

/// Both reference sequences packed into one batch (two independent segments).
pub(crate) fn packed_worst(model: &Transformer, seqs: &[Sequence]) -> f64 {
    let (worst, top) = packed_compare(model, seqs);
    assert_eq!(
        top, 0,
        "top-5 sets differ at {top} positions (max |Δ| {worst})"
    );
    worst
}

fn packed_compare(model: &Transformer, seqs: &[Sequence]) -> (f64, usize) {
    let mut batch = PackedBatch::default();
    for s in seqs {
        batch.push_segment(&s.ids, 0, None);
    }
    let hidden = model.forward_hidden(&batch).expect("forward");
    let rows = log_probs(model, &hidden);
    let mut worst = 0f64;
    let mut tops = 0;
    let mut start = 0;
    for s in seqs {
        let (w, top) = compare(&rows[start..start + s.ids.len()], s);
        tops += top;
        worst = worst.max(w);
        start += s.ids.len();
    }
    (worst, tops)
}

pub(crate) fn load_hf(name: &str) -> Transformer {
    load_transformer_dir(&models_dir().join(name), &device())
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .0
}

pub(crate) fn load_gguf(path: &Path) -> Transformer {
    GgufFile::open(path)
        .and_then(|mut g| g.load_transformer(ComputeMode::F32, &device()))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_family_matches_transformers_through_the_hf_loader() {
    let mut report = Vec::new();
    for (name, _) in cases() {
        let model = load_hf(&name);
        let worst = packed_worst(&model, &reference(&name));
        report.push(format!("{name}: {worst:.2e}"));
        assert!(worst < TOLERANCE, "{name}: max |Δ log-prob| {worst}");
    }
    eprintln!("safetensors vs transformers: {}", report.join(", "));
}

#[test]
fn every_gguf_family_matches_transformers_through_the_gguf_loader() {
    let mut report = Vec::new();
    for (name, has_gguf) in cases() {
        if !has_gguf {
            continue;
        }
        let model = load_gguf(&models_dir().join(&name).join("model.gguf"));
        let (worst, top) = packed_compare(&model, &reference(&name));
        report.push(format!("{name}: {worst:.2e}"));
        assert!(
            worst < TOLERANCE && top == 0,
            "{name} (gguf): max |Δ log-prob| {worst}, top-5 differs at {top}"
        );
    }
    assert!(report.len() >= 8, "GGUF cases: {report:?}");
    eprintln!("gguf vs transformers: {}", report.join(", "));
}

#[test]
fn prefix_sharing_and_the_kv_cache_reproduce_the_reference_for_every_family() {
    for (name, _) in cases() {
        let model = load_hf(&name);
        let seq = &reference(&name)[0];
        let split = 37;
        // A shared prefix segment and a child segment that attends to it.
        let mut batch = PackedBatch::default();
        let parent = batch.push_segment(&seq.ids[..split], 0, None);
        batch.push_segment(&seq.ids[split..], split, Some(parent));
        let hidden = model.forward_hidden(&batch).expect("forward");
        let (worst, top) = compare(&log_probs(&model, &hidden), seq);
        assert!(worst < TOLERANCE && top == 0, "{name} prefix: {worst}");

        // KV cache: the prompt in one step, then one token per step.
        let mut caches = vec![hindsight::model::decoder::KvCache::default()];
        let mut prompt = PackedBatch::default();
        prompt.push_segment(&seq.ids[..split], 0, None);
        let mut rows = log_probs(
            &model,
            &model.forward_cached(&prompt, &mut caches).expect("prefill"),
        );
        for (i, &id) in seq.ids[split..].iter().enumerate() {
            let mut step = PackedBatch::default();
            step.push_segment(&[id], split + i, None);
            let h = model.forward_cached(&step, &mut caches).expect("step");
            rows.extend(log_probs(&model, &h));
        }
        let (worst, top) = compare(&rows, seq);
        assert!(worst < TOLERANCE && top == 0, "{name} kv cache: {worst}");
    }
}

/// The device-side attention (what a GPU runs: q/k norms, RoPE and the causal softmax as tensor
/// ops, no host round trip), forced on the CPU backend: every family against transformers,
/// packed and as a shared-prefix child segment; and the interleaved RoPE of quantized GGUF
/// loads against the host path.
#[test]
fn device_attention_matches_transformers_on_every_family() {
    let mut report = Vec::new();
    for (name, has_gguf) in cases() {
        let model = load_hf(&name).with_device_attention(Some(true));
        let worst = packed_worst(&model, &reference(&name));
        assert!(worst < TOLERANCE, "{name}: max |Δ log-prob| {worst}");
        let seq = &reference(&name)[0];
        let mut batch = PackedBatch::default();
        let parent = batch.push_segment(&seq.ids[..37], 0, None);
        batch.push_segment(&seq.ids[37..], 37, Some(parent));
        let hidden = model.forward_hidden(&batch).expect("forward");
        let (prefix_worst, top) = compare(&log_probs(&model, &hidden), seq);
        assert!(
            prefix_worst < TOLERANCE && top == 0,
            "{name} prefix: {prefix_worst}"
        );
        report.push(format!("{name}: {worst:.2e}"));
        if has_gguf && name == "llama" {
            let path = models_dir().join(&name).join("model.gguf");
            let load = || {
                GgufFile::open(&path)
                    .and_then(|mut g| g.load_transformer(ComputeMode::Quantized, &device()))
                    .expect("quantized load")
            };
            let (host, dev) = (load(), load().with_device_attention(Some(true)));
            let mut batch = PackedBatch::default();
            batch.push_segment(&seq.ids, 0, None);
            let a = log_probs(&host, &host.forward_hidden(&batch).expect("host"));
            let b = log_probs(&dev, &dev.forward_hidden(&batch).expect("device"));
            let diff = a
                .iter()
                .flatten()
                .zip(b.iter().flatten())
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f64::max);
            assert!(diff < 1e-4, "interleaved RoPE, device vs host: {diff}");
        }
    }
    eprintln!("device attention vs transformers: {}", report.join(", "));
}

/// Copies a fixture checkpoint into a temporary directory with its config edited.
pub(crate) fn edited(name: &str, edit: impl FnOnce(&mut Value)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = models_dir().join(name);
    std::fs::copy(
        src.join("model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .expect("copy");
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).expect("cfg"))
            .expect("json");
    edit(&mut cfg);
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).expect("write");
    dir
}

pub(crate) fn load_err(dir: &Path) -> String {
    match load_transformer_dir(dir, &Device::Cpu) {
        Ok(_) => panic!("{} loaded but should be refused", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn transformers4_and_transformers5_configs_agree() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = models_dir().join("llama3_scaled");
    std::fs::copy(
        src.join("model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .expect("copy");
    std::fs::copy(
        src.join("config.transformers4.json"),
        dir.path().join("config.json"),
    )
    .expect("copy");
    let v4 = std::fs::read_to_string(dir.path().join("config.json")).expect("read");
    assert!(v4.contains("\"rope_scaling\"") && !v4.contains("rope_parameters"));
    let model = load_transformer_dir(dir.path(), &device())
        .expect("v4 config")
        .0;
    let worst = packed_worst(&model, &reference("llama3_scaled"));
    assert!(worst < TOLERANCE, "transformers-4 layout: {worst}");
}

/// The fixtures are sensitive to what they test: dropping the feature moves log-probs far
/// beyond the tolerance (so a loader that ignored it could not pass).
#[test]
fn the_fixtures_detect_an_ignored_feature() {
    type Edit = fn(&mut Value);
    let cases: [(&str, Edit); 5] = [
        (
            "llama3_scaled",
            |c| {
                c["rope_parameters"] =
                    serde_json::json!({"rope_type": "default", "rope_theta": 500000.0})
            },
        ),
        ("mistral", |c| c["sliding_window"] = Value::Null),
        ("gemma2", |c| c["attn_logit_softcapping"] = Value::Null),
        (
            "llama_yarn",
            |c| {
                c["rope_parameters"] =
                    serde_json::json!({"rope_type": "default", "rope_theta": 10000.0})
            },
        ),
        ("phi3", |c| {
            c["rope_parameters"]["partial_rotary_factor"] = serde_json::json!(1.0)
        }),
    ];
    for (name, edit) in cases {
        let dir = edited(name, edit);
        let model = load_transformer_dir(dir.path(), &device())
            .expect("edited config loads")
            .0;
        let worst = packed_worst_unchecked(&model, &reference(name));
        assert!(
            worst > 0.05,
            "{name}: dropping the feature changes log-probs by only {worst}"
        );
    }
}

pub(crate) fn packed_worst_unchecked(model: &Transformer, seqs: &[Sequence]) -> f64 {
    let mut batch = PackedBatch::default();
    for s in seqs {
        batch.push_segment(&s.ids, 0, None);
    }
    let rows = log_probs(model, &model.forward_hidden(&batch).expect("forward"));
    let mut worst = 0f64;
    let mut start = 0;
    for s in seqs {
        worst = worst.max(compare(&rows[start..start + s.ids.len()], s).0);
        start += s.ids.len();
    }
    worst
}

#[test]
fn unknown_rope_type_model_type_and_keys_are_refused_by_name() {
    let e = load_err(
        edited("llama", |c| {
            c["rope_parameters"] =
                serde_json::json!({"rope_type": "longrope", "rope_theta": 10000.0, "factor": 2.0})
        })
        .path(),
    );
    assert!(e.contains("rope type 'longrope' is not implemented"), "{e}");
    let e = load_err(edited("llama", |c| c["model_type"] = "mixtral".into()).path());
    assert!(e.contains("unsupported model_type 'mixtral'"), "{e}");
    let e = load_err(edited("qwen3", |c| c["num_experts"] = 8.into()).path());
    assert!(e.contains("num_experts"), "{e}");
    let e = load_err(edited("llama", |c| c["sliding_window"] = 32.into()).path());
    assert!(e.contains("sliding_window=32"), "{e}");
    let e = load_err(
        edited("llama", |c| {
            c["rope_parameters"] = serde_json::json!({"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0})
        })
        .path(),
    );
    assert!(e.contains("'dynamic'"), "{e}");
    // A weight the config does not account for (biases the config says are absent).
    let e = load_err(
        edited("qwen2", |c| {
            let m = c.as_object_mut().expect("object");
            m.insert("model_type".into(), "llama".into());
            for k in [
                "use_sliding_window",
                "max_window_layers",
                "layer_types",
                "sliding_window",
            ] {
                m.remove(k);
            }
        })
        .path(),
    );
    assert!(e.contains("would not use") && e.contains("bias"), "{e}");
}

#[test]
fn unknown_gguf_keys_and_tensors_are_refused_by_name() {
    use crate::model_loading::{gguf_err, rewrite_gguf};
    use candle_core::quantized::gguf_file::Value as GValue;
    use candle_core::quantized::{GgmlDType, QTensor};
    // The llama fixture with one metadata key and/or one tensor (of `output_norm`'s shape) added.
    let rewrite = |extra_key: Option<(&str, GValue)>, extra_tensor: Option<&str>| {
        rewrite_gguf(
            "llama",
            |md| md.extend(extra_key.map(|(k, v)| (k.to_string(), v))),
            |ts| {
                if let Some(t) = extra_tensor {
                    let hidden =
                        Tensor::ones(64, candle_core::DType::F32, &Device::Cpu).expect("tensor");
                    let q = QTensor::quantize(&hidden, GgmlDType::F32).expect("quantize");
                    ts.push((t.to_string(), q));
                }
            },
        )
    };
    // The unedited rewrite loads (the harness itself is sound).
    let (_d, plain) = rewrite(None, None);
    load_gguf(&plain);
    let (_d, p) = rewrite(Some(("llama.expert_count", GValue::U32(8))), None);
    assert!(gguf_err(&p).contains("llama.expert_count"));
    let (_d, p) = rewrite(
        Some(("llama.rope.scaling.type", GValue::String("yarn".into()))),
        None,
    );
    let e = gguf_err(&p);
    assert!(e.contains("rope.scaling.type='yarn'"), "{e}");
    // An unknown tensor, and a known name the config does not use (a lone gate bias).
    for extra in ["blk.0.ffn_gate_exps.weight", "blk.0.ffn_gate.bias"] {
        let (_d, p) = rewrite(None, Some(extra));
        let e = gguf_err(&p);
        assert!(e.contains(extra) && e.contains("would not use"), "{e}");
    }
}

/// Tokenizers of each family's kind (byte-level BPE with Llama 3's and Qwen's splits,
/// SentencePiece-style BPE with and without the `▁` prefix, `rstrip` role tokens, non-special
/// added tokens like `<think>`), with chat templates in each family's format; the reference
/// is transformers' own `apply_chat_template` + tokenizer (`scripts/model-fixtures/`).
#[test]
fn family_tokenizers_and_templates_match_transformers() {
    use hindsight::episode::Message;
    use hindsight::tokenize::Tokenizer;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizers");
    let mut names: Vec<String> = std::fs::read_dir(&root)
        .expect("tokenizer fixtures")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 5, "{names:?}");
    for name in names {
        let dir = root.join(&name);
        let tok = Tokenizer::from_hf_dir(&dir).unwrap_or_else(|e| panic!("{name}: {e}"));
        let r: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("reference.json")).expect("reference"),
        )
        .expect("json");
        let ids = |v: &Value| -> Vec<u32> {
            v.as_array()
                .expect("ids")
                .iter()
                .map(|x| x.as_u64().expect("id") as u32)
                .collect()
        };
        for t in r["texts"].as_array().expect("texts") {
            let text = t["text"].as_str().expect("text");
            assert_eq!(
                tok.encode_text(text).expect("encode"),
                ids(&t["ids"]),
                "{name}: {text:?}"
            );
        }
        for c in r["chats"].as_array().expect("chats") {
            let messages: Vec<Message> =
                serde_json::from_value(c["messages"].clone()).expect("messages");
            let gen = c["add_generation_prompt"].as_bool().expect("flag");
            let enc = tok
                .encode_chat(&messages, gen)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(enc.rendered, c["rendered"].as_str().expect("r"), "{name}");
            assert_eq!(enc.ids, ids(&c["ids"]), "{name}: {:?}", c["rendered"]);
        }
        // Every added token, special or not, is one id where the template emits it (the chats
        // above include Qwen3's `<think>` from the generation prompt), but never from message
        // text: a typed token adds no occurrence of its id.
        for (text, id) in r["added"].as_object().expect("added") {
            let id = id.as_u64().expect("id") as u32;
            let chat = |content: String| {
                let m = Message {
                    role: "user".into(),
                    content: content.into(),
                    reasoning: None,
                };
                tok.encode_chat(&[m], true).expect("encode").ids
            };
            let count = |v: &[u32]| v.iter().filter(|&&x| x == id).count();
            let typed = chat(format!("I typed {text} here"));
            let plain = chat("I typed it here".into());
            assert_eq!(
                count(&typed),
                count(&plain),
                "{name}: {text} parsed out of text"
            );
        }
        let injected = &r["injected"];
        let ours = tok
            .encode_text(injected["text"].as_str().expect("text"))
            .expect("encode");
        assert_ne!(
            ours,
            ids(&injected["hf_ids"]),
            "{name}: injection-safe differs from HF"
        );
    }
}

/// bf16 and f16 weights drift from the f32 reference by a bounded amount on every family (the
/// measured numbers are in docs/MODEL.md); f32 stays within the 1e-3 tolerance above.
#[test]
fn reduced_precision_drift_is_bounded_on_every_family() {
    for mode in [ComputeMode::Bf16, ComputeMode::F16] {
        let mut report = Vec::new();
        let (mut overall_max, mut sum, mut count) = (0f64, 0f64, 0usize);
        for (name, _) in cases() {
            let model = load_hf(&name).with_compute(mode).expect("cast");
            let mut batch = PackedBatch::default();
            let seqs = reference(&name);
            for s in &seqs {
                batch.push_segment(&s.ids, 0, None);
            }
            let rows = log_probs(&model, &model.forward_hidden(&batch).expect("forward"));
            let (mut worst, mut start) = (0f64, 0);
            for s in &seqs {
                for t in 0..s.ids.len() - 1 {
                    let d = (rows[start + t][s.ids[t + 1] as usize] - s.logprobs[t]).abs();
                    worst = worst.max(d);
                    sum += d;
                    count += 1;
                }
                start += s.ids.len();
            }
            overall_max = overall_max.max(worst);
            report.push(format!("{name}: {worst:.3}"));
        }
        let mean = sum / count as f64;
        eprintln!(
            "{}: mean |Δ log-prob| {mean:.4}, max per family: {}",
            mode.as_str(),
            report.join(", ")
        );
        assert!(
            mean > 1e-5,
            "{}: no drift at all means the cast did nothing",
            mode.as_str()
        );
        assert!(
            mean < MEAN_DRIFT_BOUND,
            "{}: mean drift {mean}",
            mode.as_str()
        );
        assert!(
            overall_max < MAX_DRIFT_BOUND,
            "{}: max drift {overall_max}",
            mode.as_str()
        );
    }
}

/// Upper bound on reduced-precision drift on these fixtures (sharp attention and large
/// weights make them harsher than real checkpoints).
const MEAN_DRIFT_BOUND: f64 = 0.1;
const MAX_DRIFT_BOUND: f64 = 5.0;

/// End to end through the binary: `hindsight score --model DIR` on a checkpoint of each family
/// paired with a tokenizer of its kind reproduces transformers' prompt ids, completion ids and
/// student log-probs (`chat_reference.json`, made by the fixture script).
#[test]
fn hindsight_score_on_each_family_directory_matches_transformers() {
    let mut checked = 0;
    for (name, _) in cases() {
        let case_dir = models_dir().join(&name);
        let Ok(text) = std::fs::read_to_string(case_dir.join("chat_reference.json")) else {
            continue;
        };
        let r: Value = serde_json::from_str(&text).expect("json");
        let dir = tempfile::tempdir().expect("tempdir");
        for f in ["config.json", "model.safetensors"] {
            std::fs::copy(case_dir.join(f), dir.path().join(f)).expect("copy");
        }
        let tok_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tokenizers")
            .join(r["tokenizer"].as_str().expect("tokenizer"));
        for f in [
            "tokenizer.json",
            "tokenizer_config.json",
            "chat_template.jinja",
        ] {
            std::fs::copy(tok_dir.join(f), dir.path().join(f)).expect("copy");
        }
        let input = dir.path().join("in.jsonl");
        let line = serde_json::json!({
            "id": name,
            "prompt": r["prompt"],
            "privileged_context": "The bug is the minus sign.",
            "teacher_template": "opd_hint_v1",
            "completion": r["completion"],
        });
        std::fs::write(&input, format!("{line}\n")).expect("write");
        let out = dir.path().join("out.jsonl");
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_hindsight"))
            .args(["score", "--strict", "--model"])
            .arg(dir.path())
            .arg("-i")
            .arg(&input)
            .arg("-o")
            .arg(&out)
            .output()
            .expect("run");
        assert!(
            o.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let row: Value =
            serde_json::from_str(std::fs::read_to_string(&out).expect("out").trim()).expect("row");
        assert_eq!(row["rendered_prompt"], r["rendered_prompt"], "{name}");
        assert_eq!(row["prompt_ids"], r["prompt_ids"], "{name}");
        assert_eq!(row["completion_ids"], r["completion_ids"], "{name}");
        let ours = row["student_logprobs"].as_array().expect("student");
        let theirs = r["student_logprobs"].as_array().expect("reference");
        assert_eq!(ours.len(), theirs.len(), "{name}");
        for (a, b) in ours.iter().zip(theirs) {
            let (a, b) = (a.as_f64().expect("f"), b.as_f64().expect("f"));
            assert!((a - b).abs() < TOLERANCE, "{name}: {a} vs {b}");
        }
        checked += 1;
    }
    assert!(checked >= 8, "{checked} families checked end to end");
}
