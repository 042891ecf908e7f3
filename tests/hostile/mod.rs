//! Hostile and huge inputs fed to the binary (issue 14): memory bounded by design, foreign
//! directories never touched. Compiled into the `bad_inputs` test binary.

use std::path::Path;
use std::process::Command;

/// Peak resident set size of one `hindsight` invocation, measured by `/usr/bin/time -v`, with the
/// command's exit status and stderr.
fn run_measured(args: &[&str]) -> (u64, bool, String) {
    let out = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(env!("CARGO_BIN_EXE_hindsight"))
        .args(args)
        .output()
        .expect("run /usr/bin/time (Debian package `time`)");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let kb = stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes):"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no peak RSS in:\n{stderr}"));
    (kb * 1024, out.status.success(), stderr)
}

/// One OpenAI-format conversation of `turns` messages of about `chars` characters each.
fn conversation(turns: usize, chars: usize) -> String {
    let mut messages = Vec::with_capacity(turns);
    for i in 0..turns {
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        let mut text = format!("turn {i}: ");
        let mut w = 0usize;
        while text.len() < chars {
            text.push_str(["alpha ", "beta ", "gamma ", "delta ", "omega "][w % 5]);
            w += 1;
        }
        messages.push(serde_json::json!({"role": role, "content": text}));
    }
    serde_json::json!({"id": "agent-transcript", "messages": messages}).to_string()
}

fn pipeline() -> String {
    format!("{}/pipelines/chat_logs.toml", env!("CARGO_MANIFEST_DIR"))
}

/// A 400-turn conversation of 30 KB messages (a 12 MB JSONL line) costs no more than a few
/// hundred MB over a one-record run: episodes share the history instead of copying it per turn
/// (which needed ~2.4 GB here before).
#[test]
fn a_400_turn_conversation_runs_in_bounded_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let big = dir.path().join("agent.jsonl");
    std::fs::write(&big, conversation(400, 30_000) + "\n").expect("write");
    let small = dir.path().join("small.jsonl");
    std::fs::write(&small, conversation(4, 200) + "\n").expect("write");
    let measure = |input: &Path, out: &str| {
        let out = dir.path().join(out);
        run_measured(&[
            "run",
            &pipeline(),
            "--input",
            input.to_str().expect("utf8"),
            "--format",
            "openai",
            "--output",
            out.to_str().expect("utf8"),
            "--no-progress",
        ])
    };
    let (base, ok, err) = measure(&small, "small-out");
    assert!(ok, "{err}");
    let (peak, ok, err) = measure(&big, "big-out");
    assert!(ok, "{err}");
    let extra = peak.saturating_sub(base);
    eprintln!(
        "peak RSS: one short record {} MB, 400 turns x 30 KB {} MB (+{} MB)",
        base >> 20,
        peak >> 20,
        extra >> 20
    );
    assert!(
        extra < 300 << 20,
        "the 12 MB conversation costs {} MB more than a short record",
        extra >> 20
    );
    // Nothing lost: every assistant turn is an episode that is kept or dropped with a reason.
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("big-out/run_report.json")).expect("report"),
    )
    .expect("json");
    let text = report.to_string();
    assert!(text.contains("too_long"), "{text}");
}

/// `run` refuses a non-empty directory that is not a hindsight dataset, and touches nothing in
/// it (resume cleanup deletes `part-*` and `*.tmp` files, which may be someone else's).
#[test]
fn run_refuses_a_foreign_directory_and_touches_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let foreign = dir.path().join("shared");
    std::fs::create_dir(&foreign).expect("mkdir");
    let files = [
        ("part-0001.parquet", "someone else's shard"),
        ("upload.tmp", "someone else's upload"),
        ("notes.txt", "notes"),
    ];
    for (name, body) in files {
        std::fs::write(foreign.join(name), body).expect("write");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_hindsight"))
        .args(["run", &pipeline(), "--no-progress", "--output"])
        .arg(&foreign)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "ran in a foreign directory");
    assert!(stderr.contains("is not a hindsight dataset"), "{stderr}");
    for (name, body) in files {
        assert_eq!(
            std::fs::read_to_string(foreign.join(name)).expect("still there"),
            body
        );
    }
    let mut names: Vec<String> = std::fs::read_dir(&foreign)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with(".lock"))
        .collect();
    names.sort();
    assert_eq!(names, ["notes.txt", "part-0001.parquet", "upload.tmp"]);
}

/// Resume is keyed by content identity: an input rewritten in place with the same size (a new
/// modification time) is processed again; an untouched one is not.
#[test]
fn an_input_rewritten_in_place_with_the_same_size_is_not_taken_as_done() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("logs.jsonl");
    let original = std::fs::read(format!(
        "{}/sample-data/openai_messages.jsonl",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("sample");
    std::fs::write(&input, &original).expect("write");
    let out = dir.path().join("out");
    let run = || {
        let o = Command::new(env!("CARGO_BIN_EXE_hindsight"))
            .args(["run", &pipeline(), "--no-progress", "--input"])
            .arg(&input)
            .arg("--output")
            .arg(&out)
            .output()
            .expect("run");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let r: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.join("run_report.json")).expect("report"),
        )
        .expect("json");
        (
            r["chunks_committed"].as_u64().expect("committed"),
            r["chunks_already_committed"].as_u64().expect("skipped"),
        )
    };
    let (first, _) = run();
    assert!(first >= 1);
    assert_eq!(run(), (0, first), "an unchanged input is done");
    // Same bytes count, other content, later modification time.
    let mut rewritten = original.clone();
    let mut replaced = 0;
    for i in 0..rewritten.len().saturating_sub(3) {
        if replaced < 3 && &rewritten[i..i + 3] == b"the" {
            rewritten[i..i + 3].copy_from_slice(b"THE");
            replaced += 1;
        }
    }
    assert_eq!(rewritten.len(), original.len());
    assert_ne!(rewritten, original);
    std::fs::write(&input, &rewritten).expect("rewrite");
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(&input)
        .and_then(|f| f.set_modified(later))
        .expect("set mtime");
    let (again, _) = run();
    assert_eq!(again, first, "the rewritten input is processed again");
}
