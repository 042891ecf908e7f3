//! The built-in templates reproduce the independent implementation's teacher prompts byte for byte.

use hindsight::episode::{Message, PrivilegedContext};
use hindsight::template::{builtin, truncate_middle, CONTROL_CONTEXT};

fn messages(v: &serde_json::Value) -> Vec<Message> {
    serde_json::from_value(v.clone()).expect("fixture messages")
}

#[test]
fn golden_teacher_prompts_are_byte_exact() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/scoring_golden.jsonl"
    );
    let text = std::fs::read_to_string(path).expect("fixture");
    let mut n = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let case: serde_json::Value = serde_json::from_str(line).expect("json");
        let id = case["teacher_template"].as_str().expect("template id");
        let template = builtin(id).unwrap_or_else(|| panic!("no built-in {id}"));
        let privileged = PrivilegedContext {
            text: case["privileged_context"]
                .as_str()
                .expect("ctx")
                .to_string(),
            solution: None,
        };
        let got = template
            .apply(&messages(&case["prompt"]), &privileged)
            .expect("apply");
        assert_eq!(
            got,
            messages(&case["teacher_prompt"]),
            "case {}",
            case["name"]
        );
        n += 1;
    }
    assert_eq!(n, 12);
}

#[test]
fn sdpo_blocks_and_control() {
    let t = builtin("sdpo_reprompt_v1").unwrap();
    let prompt = vec![Message {
        role: "user".into(),
        content: "Q".into(),
        reasoning: None,
    }];
    let with_peer = PrivilegedContext {
        text: "E".into(),
        solution: Some("S".into()),
    };
    let out = t.apply(&prompt, &with_peer).unwrap();
    assert_eq!(
        &*out[0].content,
        "Q\nCorrect solution:\n\nS\n\n\nThe following is feedback from your unsuccessful earlier attempt:\n\nE\n\n\n\nCorrectly solve the original question.\n"
    );
    let empty = PrivilegedContext {
        text: String::new(),
        solution: None,
    };
    assert_eq!(
        &*t.apply(&prompt, &empty).unwrap()[0].content,
        "Q\n\nCorrectly solve the original question.\n"
    );
    let h = builtin("hindsight_offline_v1").unwrap();
    let ctrl = h.apply_control(&prompt).unwrap();
    assert!(ctrl[0]
        .content
        .ends_with(&format!("Future User Message: {CONTROL_CONTEXT}")));
}

#[test]
fn apply_keeps_earlier_messages_and_needs_a_user_message() {
    let t = builtin("opd_hint_v1").unwrap();
    let prompt = vec![
        Message {
            role: "system".into(),
            content: "sys".into(),
            reasoning: None,
        },
        Message {
            role: "user".into(),
            content: "u1".into(),
            reasoning: None,
        },
        Message {
            role: "assistant".into(),
            content: "a1".into(),
            reasoning: None,
        },
        Message {
            role: "user".into(),
            content: "u2".into(),
            reasoning: None,
        },
    ];
    let p = PrivilegedContext {
        text: "h".into(),
        solution: None,
    };
    let out = t.apply(&prompt, &p).unwrap();
    assert_eq!(out[..3], prompt[..3]);
    assert_eq!(&*out[3].content, "u2\n\n[user's hint / instruction]\nh");
    assert!(t.apply(&prompt[..1], &p).is_err());
}

#[test]
fn truncate_middle_keeps_head_and_tail() {
    let tb = format!(
        "Traceback (most recent call last):\n{}AssertionError: boom",
        "  frame\n".repeat(1000)
    );
    let out = truncate_middle(&tb, 200);
    assert_eq!(out.chars().count(), 200);
    assert!(out.starts_with("Traceback"));
    assert!(out.ends_with("AssertionError: boom"));
    assert!(out.contains("characters omitted] ...\n"));
}
