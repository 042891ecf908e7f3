/// A minimal pipeline with `sets` applied as `--set` overrides.
fn minimal(sets: &[&str]) -> PipelineConfig {
    let text = "name = \"x\"\n[input]\npaths = [\"a.jsonl\"]\n[output]\ndir = \"out\"\n";
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    PipelineConfig::parse(text, Path::new("x.toml"), &sets).expect("cfg")
}

#[test]
fn performance_settings_leave_the_identity_and_the_rest_stay() {
    let cfg = minimal;
    let base = cfg(&[]);
    let fast = cfg(&[
        "score.token_budget=16384",
        "score.batch_episodes=128",
        "score.prefix_sharing=false",
    ]);
    assert_eq!(base.identity_json(), fast.identity_json());
    assert_ne!(base.legacy_identity_json(), fast.legacy_identity_json());
    assert!(base.identity_json()["score"].get("token_budget").is_none());
    assert!(base.legacy_identity_json()["score"]
        .get("token_budget")
        .is_some());
    assert_ne!(
        base.identity_json(),
        cfg(&["score.top_k=5"]).identity_json()
    );
}

/// The relevance windows (issue 31) are part of the identity at their defaults; set to 0 (the
/// whole response / feedback, what earlier builds scored) they are left out, so a dataset made
/// before they existed can be added to with the same scores.
#[test]
fn relevance_windows_are_part_of_the_identity_and_zero_is_the_old_one() {
    let cfg = minimal;
    let base = cfg(&[]);
    assert_eq!(base.identity_json()["score"]["control_tokens"], 8);
    assert_eq!(base.identity_json()["score"]["pmi_tokens"], 32);
    let whole = cfg(&["score.control_tokens=0", "score.pmi_tokens=0"]);
    let score = &whole.identity_json()["score"];
    assert!(score.get("control_tokens").is_none() && score.get("pmi_tokens").is_none());
    let mut old = base.identity_json();
    if let Some(s) = old["score"].as_object_mut() {
        s.remove("control_tokens");
        s.remove("pmi_tokens");
    }
    assert_eq!(whole.identity_json(), old);
    assert_ne!(
        base.identity_json(),
        cfg(&["score.pmi_tokens=16"]).identity_json()
    );
}

/// Template variables change every context's tokens: they are part of the identity, and
/// absent (so earlier datasets keep theirs) when none are set; reserved names are refused.
#[test]
fn chat_template_kwargs_are_part_of_the_identity() {
    let text = "name = \"x\"\n[input]\npaths = [\"a.jsonl\"]\n[output]\ndir = \"out\"\n";
    let cfg = |sets: &[&str]| {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        PipelineConfig::parse(text, Path::new("x.toml"), &sets)
    };
    let base = cfg(&[]).expect("cfg");
    assert!(base.identity_json()["model"]
        .get("chat_template_kwargs")
        .is_none());
    let off = cfg(&["model.chat_template_kwargs.enable_thinking=false"]).expect("cfg");
    assert_eq!(
        off.identity_json()["model"]["chat_template_kwargs"],
        serde_json::json!({"enable_thinking": false})
    );
    assert_ne!(base.identity_json(), off.identity_json());
    let e = cfg(&["model.chat_template_kwargs.messages=1"]).expect_err("reserved");
    assert!(
        e.to_string().contains("chat_template_kwargs.messages"),
        "{e}"
    );
}

#[test]
fn config_diff_names_changed_added_and_removed_keys() {
    let a = serde_json::json!({"score": {"top_k": 20, "relevance": "pmi"}, "x": [1, 2]});
    let b = serde_json::json!({"score": {"top_k": 10, "relevance": "pmi"}, "y": true, "x": [1, 2]});
    let d: Vec<String> = config_diff(&a, &b).iter().map(|c| c.to_string()).collect();
    assert_eq!(d, vec!["score.top_k: 20 -> 10", "y: (unset) -> true"]);
    assert!(config_diff(&a, &a).is_empty());
}

use super::*;

const MINIMAL: &str = r#"
name = "t"
[input]
paths = ["a.jsonl"]
[output]
dir = "out"
"#;

#[test]
fn overrides_are_typed_and_change_the_fingerprint() {
    let p = Path::new("t.toml");
    let base = PipelineConfig::parse(MINIMAL, p, &[]).expect("parse");
    assert_eq!(base.score.top_k, 20);
    let o = PipelineConfig::parse(
        MINIMAL,
        p,
        &["score.top_k=5".into(), "input.format=sharegpt".into()],
    )
    .expect("parse");
    assert_eq!(o.score.top_k, 5);
    assert_eq!(o.format().expect("format"), Some(SourceFormat::Sharegpt));
    assert_ne!(base.fingerprint(), o.fingerprint());
    assert_eq!(
        base.fingerprint(),
        PipelineConfig::parse(MINIMAL, p, &[])
            .expect("p")
            .fingerprint()
    );
}

#[test]
fn unknown_keys_and_bad_values_are_rejected_with_the_key() {
    let p = Path::new("t.toml");
    let e = PipelineConfig::parse(MINIMAL, p, &["score.topk=5".into()]).unwrap_err();
    assert!(e.to_string().contains("topk"), "{e}");
    let e = PipelineConfig::parse(MINIMAL, p, &["score.top_k=zero".into()]).unwrap_err();
    assert!(e.to_string().contains("top_k"), "{e}");
    let e = PipelineConfig::parse(MINIMAL, p, &["input.format=csv".into()]).unwrap_err();
    assert!(e.to_string().contains("csv"), "{e}");
    assert!(PipelineConfig::parse(MINIMAL, p, &["nokey".into()]).is_err());
}
