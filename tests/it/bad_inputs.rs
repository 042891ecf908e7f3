//! Every bad-input case has a defined outcome: exact counts and quarantine reasons.

use std::io::Write;

use crate::common::{counts, reasons, run, run_with, sample};
use hindsight::episode::{
    ingest, EpisodeConfig, IngestOptions, LeadingAssistantPolicy, RolePolicy, SourceFormat,
};
use hindsight::ingest::IngestError;
use hindsight::ingest::{QuarantineEntry, ReaderOptions};

fn write_file(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).expect("write");
    p.display().to_string()
}

fn opts(inputs: Vec<String>) -> IngestOptions {
    IngestOptions {
        inputs,
        ..IngestOptions::default()
    }
}

const HINT: &str = r#"{"prompt": "2+2?", "response": "5", "hint": "It is 4."}"#;

#[test]
fn role_policies_can_quarantine_instead() {
    let mut o = opts(vec![sample("sharegpt.json")]);
    o.episode.non_alternating = RolePolicy::Quarantine;
    o.episode.leading_assistant = LeadingAssistantPolicy::Quarantine;
    let r = run_with(o);
    assert_eq!(
        r.stats.records_quarantined,
        counts(&[
            ("leading_assistant", 1),
            ("non_alternating_roles", 1),
            ("schema_mismatch", 2),
            ("unknown_role", 1)
        ])
    );
    assert_eq!(r.stats.records_with_episodes, 3);
    assert_eq!(
        r.quarantine[0].detail,
        "message 0 (assistant) comes before any user message"
    );
    assert_eq!(r.quarantine[1].detail, "messages 0 and 1 are both `user`");
}

#[test]
fn oversized_record_is_quarantined_without_buffering() {
    let dir = tempfile::tempdir().unwrap();
    let big = format!(
        r#"{{"prompt": "{}", "response": "r", "hint": "h"}}"#,
        "x".repeat(5000)
    );
    let f = write_file(
        &dir,
        "h.jsonl",
        format!("{HINT}\n{big}\n{HINT}\n").as_bytes(),
    );
    let mut o = opts(vec![f]);
    o.reader = ReaderOptions {
        max_record_bytes: 1000,
        ..ReaderOptions::default()
    };
    let r = run_with(o);
    assert_eq!(reasons(&r.quarantine), vec![(1, "record_too_large")]);
    assert_eq!(r.quarantine[0].snippet.len(), 512);
    assert_eq!(r.stats.records_read, 3);
    assert_eq!(r.stats.episodes_filtered, counts(&[("duplicate", 1)]));
}

#[test]
fn array_element_outcomes() {
    let dir = tempfile::tempdir().unwrap();
    // A scalar element, an element with invalid UTF-8, a good one, then garbage.
    let mut bytes = format!("\u{FEFF}[1, {HINT},\n").into_bytes();
    bytes.extend_from_slice(b"{\"prompt\": \"caf\xe9\", \"response\": \"r\", \"hint\": \"h\"},");
    bytes.extend_from_slice(
        br#" {"prompt": "3+3?", "response": "7", "hint": "six"} oops {"prompt": "x"}]"#,
    );
    let f = write_file(&dir, "a.json", &bytes);
    let r = run(&[&f], Some(SourceFormat::Hint));
    assert_eq!(
        reasons(&r.quarantine),
        vec![
            (0, "schema_mismatch"),
            (2, "invalid_utf8"),
            (4, "malformed_json")
        ]
    );
    assert_eq!(
        r.quarantine[0].detail,
        "$: expected a JSON object, got a number"
    );
    assert_eq!(
        r.quarantine[2].detail,
        "expected ',' or ']' between elements; rest of file skipped"
    );
    assert!(r.quarantine[2].snippet.starts_with("oops"));
    assert_eq!(r.stats.records_with_episodes, 2);
    assert_eq!(r.stats.records_read, 5);
}

#[test]
fn array_never_closed_and_trailing_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let f = write_file(&dir, "open.json", format!("[{HINT},\n").as_bytes());
    let r = run(&[&f], None);
    assert_eq!(reasons(&r.quarantine), vec![(1, "truncated")]);
    assert_eq!(
        r.quarantine[0].detail,
        "file ends before the array's closing ']'"
    );
    let g = write_file(&dir, "trail.json", format!("[{HINT}] ]").as_bytes());
    let r = run(&[&g], None);
    assert_eq!(reasons(&r.quarantine), vec![(1, "malformed_json")]);
    assert_eq!(r.stats.records_with_episodes, 1);
}

#[test]
fn concatenated_json_and_stray_closers_terminate() {
    let dir = tempfile::tempdir().unwrap();
    let f = write_file(&dir, "c.json", format!("{HINT}\n}}\n{HINT}").as_bytes());
    let r = run(&[&f], None);
    assert_eq!(reasons(&r.quarantine), vec![(1, "malformed_json")]);
    assert_eq!(r.stats.records_read, 3);
    assert_eq!(r.stats.episodes_filtered, counts(&[("duplicate", 1)]));
}

#[test]
fn jsonl_line_endings_bom_and_truncated_last_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = write_file(
        &dir,
        "crlf.jsonl",
        format!("\u{FEFF}{HINT}\r\n\r\n   \n{{\"prompt\": \"a\", \"resp").as_bytes(),
    );
    let r = run(&[&f], None);
    assert_eq!(reasons(&r.quarantine), vec![(3, "truncated")]);
    assert_eq!(r.stats.records_read, 2);
    assert_eq!(r.stats.records_with_episodes, 1);
    let empty = write_file(&dir, "empty.jsonl", b"\n\n");
    assert_eq!(run(&[&empty], None).stats.records_read, 0);
}

#[test]
fn truncated_gzip_keeps_complete_lines() {
    let dir = tempfile::tempdir().unwrap();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    for i in 0..2000 {
        writeln!(
            enc,
            r#"{{"prompt": "q{i} {}", "response": "r", "hint": "h"}}"#,
            i * 7919 % 1000
        )
        .unwrap();
    }
    let gz = enc.finish().unwrap();
    let f = write_file(&dir, "cut.jsonl.gz", &gz[..gz.len() / 2]);
    let r = run(&[&f], None);
    assert_eq!(r.stats.records_quarantined, counts(&[("read_error", 1)]));
    let good = r.stats.records_with_episodes;
    assert!(good > 100 && good < 2000, "{good}");
    assert_eq!(r.stats.records_read, good + 1);
    assert_eq!(r.quarantine[0].record_index, good as i64);
}

#[test]
fn unreadable_files_and_unknown_format() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_file(&dir, "junk.parquet", b"PAR1 this is not parquet");
    let u = write_file(&dir, "unknown.jsonl", b"{\"foo\": 1}\n{\"bar\": 2}\n");
    let r = run(&[&p, &u], None);
    assert_eq!(
        reasons(&r.quarantine),
        vec![
            (-1, "unreadable_file"),
            (0, "unknown_format"),
            (1, "unknown_format")
        ]
    );
    assert_eq!(r.stats.records_read, 3);
}

#[test]
fn missing_inputs_are_user_errors() {
    let e = ingest(opts(vec!["/nonexistent/file.jsonl".into()])).err();
    assert!(matches!(e, Some(IngestError::NoInput(_))));
    let e = ingest(opts(vec![sample("nothing*.jsonl")])).err();
    assert!(matches!(e, Some(IngestError::NoInput(_))));
    let mut o = opts(vec![sample("hints.jsonl")]);
    o.episode.templates.hint = "no_such_template".into();
    assert!(matches!(ingest(o).err(), Some(IngestError::Template(_))));
}

#[test]
fn quarantine_file_is_written_bounded_and_scrubbed() {
    let dir = tempfile::tempdir().unwrap();
    let line = format!(
        "{{\"prompt\": \"mail me at bob@example.org {}\" BROKEN\n",
        "é".repeat(600)
    );
    let f = write_file(&dir, "q.jsonl", line.as_bytes());
    let qpath = dir.path().join("quarantine.jsonl");
    let mut o = opts(vec![f.clone()]);
    o.quarantine_path = Some(qpath.clone());
    let stats = ingest(o).unwrap().finish().unwrap();
    assert_eq!(stats.records_quarantined, counts(&[("malformed_json", 1)]));
    let text = std::fs::read_to_string(&qpath).unwrap();
    let entries: Vec<QuarantineEntry> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(
        (e.source_uri.as_str(), e.record_index, e.byte_offset),
        (f.as_str(), 0, Some(0))
    );
    assert!(e.snippet.len() <= 512);
    assert!(e.snippet.contains("[EMAIL]") && !e.snippet.contains("bob@"));
    let raw: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    for k in [
        "source_uri",
        "record_index",
        "byte_offset",
        "reason",
        "detail",
        "snippet",
    ] {
        assert!(raw.get(k).is_some(), "{k}");
    }
}

#[test]
fn configurable_prefilters() {
    // Language: only English; the two Chinese episodes are filtered.
    let mut o = opts(vec![sample("wildchat_1m.parquet")]);
    o.episode.prefilter.languages = vec!["en".into()];
    let r = run_with(o);
    assert_eq!(r.stats.episodes_filtered, counts(&[("language", 2)]));
    // Keep toxic, drop redacted, drop ack-only, time window.
    let mut o = opts(vec![
        sample("wildchat_1m.parquet"),
        sample("wildchat_1m.jsonl"),
    ]);
    let pf = &mut o.episode.prefilter;
    pf.drop_toxic = false;
    pf.drop_redacted = true;
    pf.drop_ack_only = true;
    pf.time_to = Some("2023-09-02T00:00:00Z".into());
    let r = run_with(o);
    assert_eq!(
        r.stats.records_filtered,
        counts(&[("no_episode", 1), ("redacted", 1), ("time_window", 1)])
    );
    assert_eq!(
        r.stats.episodes_filtered,
        counts(&[("ack_only_followup", 1)])
    );
    assert_eq!(r.stats.episodes_emitted, 6);
    // Char and token caps.
    let mut o = opts(vec![sample("wildchat_1m.parquet")]);
    o.episode.prefilter.max_message_chars = Some(150);
    o.episode.prefilter.max_episode_tokens = Some(60);
    let r = run_with(o);
    assert_eq!(
        r.stats.episodes_filtered,
        counts(&[("too_long", 1), ("too_many_tokens", 2)])
    );
}

#[test]
fn custom_template_from_config_and_on_policy_logs() {
    let cfg: EpisodeConfig = serde_json::from_value(serde_json::json!({
        "templates": {"hint": "my_hint"},
        "custom_templates": [{"id": "my_hint", "format": "{prompt}\n\nHINT: {hint}"}],
        "logged_responses_on_policy": true
    }))
    .unwrap();
    let mut o = opts(vec![sample("hints.jsonl")]);
    o.episode = cfg;
    let r = run_with(o);
    assert_eq!(r.episodes[0].teacher_template, "my_hint");
    assert_eq!(
        &*r.episodes[0].teacher_prompt[0].content,
        "What is the capital of Australia?\n\nHINT: The capital is Canberra, not Sydney."
    );
    assert!(r.episodes[0].is_on_policy);
}
