use super::*;
use crate::model::architecture::RopeScaling;

const BASE: &str = r#""hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100"#;

fn cfg(extra: &str) -> Result<TransformerConfig, ConfigError> {
    parse(&format!("{{{BASE}{extra}}}"))
}

#[test]
fn reads_both_rope_layouts() {
    let v4 = cfg(r#", "model_type": "llama", "rope_theta": 500000.0,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 32}"#)
    .unwrap();
    let v5 = cfg(
        r#", "model_type": "llama", "rope_parameters": {"rope_type": "llama3",
        "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 32}"#,
    )
    .unwrap();
    assert_eq!(v4.ropes, v5.ropes);
    assert_eq!(v5.ropes[0].theta, 500000.0);
    assert!(matches!(v5.ropes[0].scaling, RopeScaling::Llama3 { .. }));
}

/// transformers 5 lets a top-level value override a flat `rope_parameters`; transformers 4
/// reads the one in `rope_scaling`: a transformers-4 config where they differ is refused.
#[test]
fn original_max_position_embeddings_is_read_as_transformers_reads_it() {
    let llama3 = |layout: &str, top: &str| {
        cfg(&format!(
            r#", "model_type": "llama", "max_position_embeddings": 256{top},
            "{layout}": {{"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 32}}"#
        ))
    };
    let orig = |c: TransformerConfig| match c.ropes[0].scaling {
        RopeScaling::Llama3 {
            original_max_position_embeddings,
            ..
        } => original_max_position_embeddings,
        ref other => panic!("{other:?}"),
    };
    let top64 = r#", "original_max_position_embeddings": 64"#;
    let top32 = r#", "original_max_position_embeddings": 32"#;
    assert_eq!(orig(llama3("rope_parameters", top64).unwrap()), 64.0);
    assert_eq!(orig(llama3("rope_parameters", "").unwrap()), 32.0);
    assert_eq!(orig(llama3("rope_scaling", top32).unwrap()), 32.0);
    assert_eq!(orig(llama3("rope_scaling", "").unwrap()), 32.0);
    let e = llama3("rope_scaling", top64).unwrap_err();
    assert!(e.0.contains("transformers 4"), "{e}");
}

#[test]
fn refuses_what_it_does_not_implement_naming_the_key() {
    let e =
        cfg(r#", "model_type": "llama", "rope_scaling": {"rope_type": "dynamic", "factor": 2.0}"#)
            .unwrap_err();
    assert!(e.0.contains("'dynamic'"), "{e}");
    let e = cfg(r#", "model_type": "falcon""#).unwrap_err();
    assert!(e.0.contains("unsupported model_type 'falcon'"), "{e}");
    let e = cfg(r#", "model_type": "llama", "num_experts": 8"#).unwrap_err();
    assert!(e.0.contains("num_experts"), "{e}");
    let e = cfg(r#", "model_type": "llama", "hidden_act": "gelu""#).unwrap_err();
    assert!(e.0.contains("hidden_act 'gelu'"), "{e}");
    let e = cfg(r#", "model_type": "llama", "rope_scaling": {"rope_type": "linear", "factor": 2.0, "foo": 1}"#)
        .unwrap_err();
    assert!(e.0.contains("foo"), "{e}");
    // Inert and switched-off keys are fine.
    cfg(r#", "model_type": "llama", "attention_dropout": 0.1, "num_experts": 0"#).unwrap();
}

#[test]
fn family_defaults() {
    let m = cfg(r#", "model_type": "mistral""#).unwrap();
    assert!(m.layers.iter().all(|l| l.sliding_window == Some(4096)));
    let m = cfg(r#", "model_type": "mistral", "sliding_window": null"#).unwrap();
    assert!(m.layers.iter().all(|l| l.sliding_window.is_none()));
    let g = cfg(r#", "model_type": "gemma2", "head_dim": 16, "sliding_window": 8"#).unwrap();
    assert_eq!(g.attn_softcap, Some(50.0));
    assert_eq!(g.final_softcap, Some(30.0));
    assert_eq!(g.layers[0].sliding_window, Some(8));
    assert_eq!(g.layers[1].sliding_window, None);
    let g3 = cfg(
        r#", "model_type": "gemma3_text", "head_dim": 16, "rope_theta": 1000000.0,
        "rope_local_base_freq": 10000.0, "rope_scaling": {"rope_type": "linear", "factor": 8.0}"#,
    )
    .unwrap();
    assert_eq!(g3.ropes[0].scaling, RopeScaling::Linear { factor: 8.0 });
    assert_eq!(g3.ropes[1].theta, 10000.0);
    assert_eq!(g3.ropes[1].scaling, RopeScaling::None);
    let q = cfg(r#", "model_type": "qwen2", "sliding_window": 4096, "use_sliding_window": false"#)
        .unwrap();
    assert!(q.attention_bias && !q.attention_out_bias);
    assert!(q.layers.iter().all(|l| l.sliding_window.is_none()));
}

/// Configs as the Hub serves them (transformers 4 layout, every key kept) load.
#[test]
fn hub_style_configs_load() {
    let llama31 = r#"{"architectures": ["LlamaForCausalLM"], "attention_bias": false,
        "attention_dropout": 0.0, "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009],
        "hidden_act": "silu", "hidden_size": 64, "initializer_range": 0.02,
        "intermediate_size": 128, "max_position_embeddings": 131072, "mlp_bias": false,
        "model_type": "llama", "num_attention_heads": 4, "num_hidden_layers": 2,
        "num_key_value_heads": 2, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
        "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "rope_theta": 500000.0, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
        "transformers_version": "4.43.0.dev0", "use_cache": true, "vocab_size": 100}"#;
    let c = parse(llama31).unwrap();
    assert_eq!(c.ropes[0].theta, 500000.0);
    let gemma2 = r#"{"architectures": ["Gemma2ForCausalLM"], "attention_bias": false,
        "attention_dropout": 0.0, "attn_logit_softcapping": 50.0, "bos_token_id": 2,
        "cache_implementation": "hybrid", "eos_token_id": 1, "final_logit_softcapping": 30.0,
        "head_dim": 16, "hidden_act": "gelu_pytorch_tanh",
        "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 64, "initializer_range": 0.02,
        "intermediate_size": 128, "max_position_embeddings": 8192, "model_type": "gemma2",
        "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 2,
        "pad_token_id": 0, "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06,
        "rope_theta": 10000.0, "sliding_window": 4096, "sliding_window_size": 4096,
        "torch_dtype": "float32", "transformers_version": "4.42.0.dev0", "use_cache": true,
        "vocab_size": 100}"#;
    let g = parse(gemma2).unwrap();
    assert_eq!(g.activation, Activation::GeluTanh);
    assert!((g.attn_scale - 1.0 / 16.0).abs() < 1e-12);
}
