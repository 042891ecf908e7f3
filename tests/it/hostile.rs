//! Hostile and huge inputs fed to the binary (issue 14): memory bounded by design, foreign
//! directories never touched.

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

/// How much more peak RSS a `run` over the OpenAI-format file `big` takes than one over
/// `small` (same pipeline, same `extra` arguments); both runs must succeed.
fn extra_peak_rss(dir: &Path, small: &Path, big: &Path, extra: &[&str], what: &str) -> u64 {
    let measure = |input: &Path, out: &str| {
        let out = dir.join(out);
        let mut args = vec![
            "run".to_string(),
            pipeline(),
            "--input".into(),
            input.display().to_string(),
            "--format".into(),
            "openai".into(),
            "--output".into(),
            out.display().to_string(),
            "--no-progress".into(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (peak, ok, err) = run_measured(&args);
        assert!(ok, "{err}");
        peak
    };
    let base = measure(small, "small-out");
    let peak = measure(big, "big-out");
    eprintln!(
        "peak RSS: one short record {} MB, {what} {} MB (+{} MB)",
        base >> 20,
        peak >> 20,
        peak.saturating_sub(base) >> 20
    );
    peak.saturating_sub(base)
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
    let extra = extra_peak_rss(dir.path(), &small, &big, &[], "400 turns x 30 KB");
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

/// Resume is keyed by content: the chunks of an input rewritten in place with the same size are
/// processed again where their records changed; an untouched input is not.
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
    // The first record's system prompt, which every episode of it carries.
    let mut rewritten = original.clone();
    let at = rewritten
        .windows(7)
        .position(|w| w == b"concise")
        .expect("the first record says 'concise'");
    rewritten[at..at + 7].copy_from_slice(b"CONCISE");
    assert_eq!(rewritten.len(), original.len());
    assert_ne!(rewritten, original);
    std::fs::write(&input, &rewritten).expect("rewrite");
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(&input)
        .and_then(|f| f.set_modified(later))
        .expect("set mtime");
    // Chunks are keyed by their episodes' content: the chunks holding a rewritten record are
    // processed again, the others are recognised as done.
    let (again, skipped) = run();
    assert!(again >= 1, "the rewritten records are processed again");
    assert_eq!(
        again + skipped,
        first,
        "every chunk of the input is accounted for"
    );
}

/// PII a privacy reviewer asked for is scrubbed before anything reaches disk (shards, quarantine
/// snippets cut mid-address included), the user's own pattern applies, and each kind is counted.
#[test]
fn pii_is_scrubbed_everywhere_and_counted_per_kind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secrets = [
        "4111 1111 1111 1111",
        "DE89 3704 0044 0532 0130 00",
        "123-45-6789",
        "josé.garcía@correo.es",
        "+44 20 7946 0958",
        "EMP-123456",
        "sk-ant-api03-abcdefghijklmnopqrstuvwxyz012345-AAAA",
        "2001:db8::8a2e:370:7334",
        "dXNlcjpodW50ZXIy",
    ];
    let first = format!(
        "My card is {}, IBAN {}, SSN {}; write to {} or call {}. I am {}.",
        secrets[0], secrets[1], secrets[2], secrets[3], secrets[4], secrets[5]
    );
    let follow = format!(
        "Wrong: use key {} from host {} with Authorization: Basic {}",
        secrets[6], secrets[7], secrets[8]
    );
    let good = serde_json::json!({"id": "pii-1", "messages": [
        {"role": "user", "content": first},
        {"role": "assistant", "content": "Thanks, I will keep that safe."},
        {"role": "user", "content": follow},
        {"role": "assistant", "content": "Understood."},
    ]});
    // A broken record whose email straddles the 512-byte snippet cut.
    let head = r#"{"id": "pii-2", "messages": [{"role": "user", "content": ""#;
    // The address starts at byte 505 of the line; the snippet is cut at 512.
    let pad = "x".repeat(505 - head.len() - " mail ".len());
    let broken = format!("{head}{pad} mail jane.doe@example.com now");
    let input = dir.path().join("pii.jsonl");
    std::fs::write(&input, format!("{good}\n{broken}\n")).expect("write");
    let config = dir.path().join("pipeline.toml");
    let base = std::fs::read_to_string(pipeline()).expect("pipeline");
    let with_pattern = base.replace(
        "scrub_pii = true",
        "scrub_pii = true\npii_patterns = [{ name = \"employee_id\", pattern = \"EMP-[0-9]{6}\" }]",
    );
    assert_ne!(with_pattern, base);
    std::fs::write(&config, with_pattern).expect("write config");
    let out = dir.path().join("out");
    let (_, ok, stderr) = run_measured(&[
        "run",
        config.to_str().expect("utf8"),
        "--no-progress",
        "--format",
        "openai",
        "--input",
        input.to_str().expect("utf8"),
        "--output",
        out.to_str().expect("utf8"),
    ]);
    assert!(ok, "{stderr}");

    // Everything written, read back through the real reader: shards (every column) and files.
    let q = Command::new(env!("CARGO_BIN_EXE_hindsight"))
        .args(["query"])
        .arg(&out)
        .args(["SELECT * FROM dataset", "--format", "jsonl"])
        .output()
        .expect("query");
    assert!(q.status.success(), "{}", String::from_utf8_lossy(&q.stderr));
    let rows = String::from_utf8_lossy(&q.stdout).into_owned();
    assert!(
        rows.contains("[CARD]") && rows.contains("[EMPLOYEE_ID]"),
        "{rows}"
    );
    let quarantine = std::fs::read_to_string(out.join("quarantine.jsonl")).expect("quarantine");
    let report = std::fs::read_to_string(out.join("run_report.json")).expect("report");
    let manifest = std::fs::read_to_string(out.join("manifest.json")).expect("manifest");
    for text in [&rows, &quarantine, &report, &manifest] {
        for s in secrets
            .iter()
            .chain(&["jane.doe@", "jane.doe", "@example.com"])
        {
            let json_escaped = serde_json::to_string(s).expect("json");
            let json_escaped = json_escaped.trim_matches('"');
            assert!(
                !text.contains(s) && !text.contains(json_escaped),
                "raw `{s}` reached disk:\n{text}"
            );
        }
    }
    let q: serde_json::Value =
        serde_json::from_str(quarantine.lines().next().expect("one line")).expect("json");
    let snippet = q["snippet"].as_str().expect("snippet");
    assert!(snippet.len() <= 512, "{}", snippet.len());
    assert!(
        snippet.contains("mail [EM"),
        "scrubbed before the cut: {snippet}"
    );

    let r: serde_json::Value = serde_json::from_str(&report).expect("json");
    let counts = r
        .pointer("/ingest/pii_scrubbed")
        .unwrap_or_else(|| panic!("no ingest.pii_scrubbed in {report}"));
    for kind in [
        "card",
        "iban",
        "ssn",
        "phone",
        "employee_id",
        "api_key",
        "ip",
        "auth_token",
    ] {
        assert_eq!(counts[kind], 1, "{kind}: {counts}");
    }
    // The record's address and the quarantined one.
    assert_eq!(counts["email"], 2, "{counts}");
}

/// The input walk follows a symlinked directory once: a symlink loop neither recurses nor
/// reads a file twice, and a second link to the same tree adds nothing.
#[test]
fn symlink_loops_in_the_input_walk_are_walked_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(logs.join("day1")).expect("mkdir");
    std::fs::copy(
        format!("{}/sample-data/hints.jsonl", env!("CARGO_MANIFEST_DIR")),
        logs.join("day1/a.jsonl"),
    )
    .expect("copy");
    std::os::unix::fs::symlink(&logs, logs.join("day1/loop")).expect("symlink");
    std::os::unix::fs::symlink(logs.join("day1"), logs.join("again")).expect("symlink");
    let files =
        hindsight::ingest::input::expand_inputs(&[logs.display().to_string()]).expect("expand");
    let names: Vec<String> = files.iter().map(|f| f.path.display().to_string()).collect();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].ends_with("a.jsonl"), "{names:?}");
}

/// A Parquet row over `input.max_record_bytes` is quarantined `record_too_large` (measured in
/// the decoded batch, before it becomes JSON) while its neighbours are kept; a compressed
/// Parquet file over `input.max_spool_bytes` is one `unreadable_file` entry.
#[test]
fn parquet_rows_honour_max_record_bytes_and_spooling_is_capped() {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, RecordBatch, StringArray};

    let dir = tempfile::tempdir().expect("tempdir");
    let big_hint = "Canberra is the capital. ".repeat(80_000); // 2 MB
    let column = |v: Vec<&str>| Arc::new(StringArray::from(v)) as ArrayRef;
    let batch = RecordBatch::try_from_iter([
        ("id", column(vec!["h1", "h2", "h3"])),
        (
            "prompt",
            column(vec!["Capital of Australia?", "Capital of France?", "2+2?"]),
        ),
        ("response", column(vec!["Sydney.", "Lyon.", "5."])),
        (
            "hint",
            column(vec![big_hint.as_str(), "It is Paris.", "It is 4."]),
        ),
    ])
    .expect("batch");
    let parquet = dir.path().join("hints.parquet");
    let mut w = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(&parquet).expect("create"),
        batch.schema(),
        None,
    )
    .expect("writer");
    w.write(&batch).expect("write");
    w.close().expect("close");
    let gz = dir.path().join("hints_copy.parquet.gz");
    {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(
            std::fs::File::create(&gz).expect("create"),
            flate2::Compression::fast(),
        );
        e.write_all(&std::fs::read(&parquet).expect("read"))
            .expect("gzip");
        e.finish().expect("gzip");
    }
    let run = |name: &str, inputs: &[&Path], extra: &str| -> serde_json::Value {
        let out = dir.path().join(name);
        let paths: Vec<String> = inputs
            .iter()
            .map(|p| format!("{:?}", p.display().to_string()))
            .collect();
        let config = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "name = \"t\"\n[input]\npaths = [{}]\nformat = \"hint\"\n{extra}\n[output]\ndir = {:?}\n",
                paths.join(", "),
                out.display().to_string()
            ),
        )
        .expect("config");
        let (_, ok, stderr) =
            run_measured(&["run", config.to_str().expect("utf8"), "--no-progress"]);
        assert!(ok, "{stderr}");
        serde_json::from_str(&std::fs::read_to_string(out.join("run_report.json")).expect("report"))
            .expect("json")
    };
    let r = run("capped", &[&parquet], "max_record_bytes = 1000000");
    let q = r
        .pointer("/ingest/records_quarantined")
        .unwrap_or_else(|| panic!("{r}"));
    assert_eq!(q["record_too_large"], 1, "{r}");
    assert_eq!(r["ingest"]["records_read"], 3, "{r}");
    assert_eq!(r["ingest"]["records_with_episodes"], 2, "{r}");
    let quarantine =
        std::fs::read_to_string(dir.path().join("capped/quarantine.jsonl")).expect("quarantine");
    assert!(
        quarantine.contains("larger than max_record_bytes = 1000000"),
        "{quarantine}"
    );
    // The default (64 MiB) keeps the 2 MB row.
    let r = run("default", &[&parquet], "");
    assert_eq!(r["ingest"]["records_with_episodes"], 3, "{r}");

    let r = run("spool", &[&gz], "max_spool_bytes = 1000");
    assert_eq!(
        r["ingest"]["records_quarantined"]["unreadable_file"], 1,
        "{r}"
    );
    let quarantine =
        std::fs::read_to_string(dir.path().join("spool/quarantine.jsonl")).expect("quarantine");
    assert!(
        quarantine.contains("max_spool_bytes = 1000"),
        "{quarantine}"
    );
}

/// `--where` over JSON evaluates blocks bounded in bytes, not 256 records whatever their size:
/// 24 records of 8 MB cost well under what holding them all at once would.
#[test]
fn where_over_big_json_records_holds_a_bounded_block() {
    let dir = tempfile::tempdir().expect("tempdir");
    let record = |i: usize, chars: usize| {
        serde_json::json!({"id": format!("big-{i}"), "messages": [
            {"role": "user", "content": "x".repeat(chars)},
            {"role": "assistant", "content": "ok"},
        ]})
        .to_string()
    };
    let big = dir.path().join("big.jsonl");
    let text: Vec<String> = (0..24).map(|i| record(i, 8 << 20)).collect();
    std::fs::write(&big, text.join("\n") + "\n").expect("write");
    let small = dir.path().join("small.jsonl");
    std::fs::write(&small, record(0, 100) + "\n").expect("write");
    let extra = extra_peak_rss(
        dir.path(),
        &small,
        &big,
        &["--where", "id <> 'none'"],
        "--where over 24 x 8 MB records",
    );
    // All 24 records at once would be 192 MB of text alone.
    assert!(extra < 150 << 20, "+{} MB", extra >> 20);
}

/// Issue 29: a run's memory does not grow with the dataset's age. A dataset holding the rows of
/// a million earlier episodes (a synthetic committed chunk whose id list has 1,000,000 sample
/// ids) costs a run little more peak RSS than an empty dataset: the ids are looked up in a
/// sorted file on disk, built with one bounded batch, not held in memory.
#[test]
fn a_run_on_a_dataset_of_a_million_ids_takes_little_more_memory_than_an_empty_one() {
    const IDS: u64 = 1_000_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let p = crate::common::sample_pipeline(d, &["hints.jsonl"], 8, "");
    let ps = p.to_str().expect("utf8");
    let night2 = format!(
        "{}/sample-data/unit_tests.jsonl",
        env!("CARGO_MANIFEST_DIR")
    );
    let (big, empty) = (d.join("big"), d.join("empty"));
    let (bs, es) = (big.to_str().expect("utf8"), empty.to_str().expect("utf8"));
    let (_, ok, err) = run_measured(&["run", ps, "--output", bs, "--no-progress"]);
    assert!(ok, "{err}");
    // The synthetic chunk: committed, no shards, a million ids (splitmix64 pairs as 32 hex).
    let chunks = big.join("_state/chunks");
    std::fs::write(
        chunks.join("f000000000000001.json"),
        r#"{"chunk_id":"f000000000000001","source_uri":"synthetic","chunk_index":0,"shards":[],"counts":{}}"#,
    )
    .expect("chunk state");
    let mix = |mut z: u64| {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut ids = String::with_capacity(IDS as usize * 33);
    for i in 0..IDS {
        ids.push_str(&format!("{:016x}{:016x}\n", mix(2 * i), mix(2 * i + 1)));
    }
    std::fs::write(chunks.join("f000000000000001.ids"), ids).expect("ids");

    let night = |out: &str| {
        run_measured(&[
            "run",
            ps,
            "--input",
            &night2,
            "--output",
            out,
            "--no-progress",
        ])
    };
    let (rss_empty, ok, err) = night(es);
    assert!(ok, "{err}");
    let (rss_big, ok, err) = night(bs);
    assert!(ok, "{err}");
    let sorted = big.join("_state/idset/run/ids.sorted");
    let on_disk = std::fs::metadata(&sorted).expect("sorted ids").len() / 16;
    assert!(on_disk > IDS, "{on_disk} ids on disk");
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    eprintln!(
        "peak RSS, night 2: empty dataset {:.1} MiB, dataset of {on_disk} ids {:.1} MiB (+{:.1} MiB)",
        mib(rss_empty),
        mib(rss_big),
        mib(rss_big.saturating_sub(rss_empty))
    );
    // One batch of 2^20 ids is 16 MiB; a HashSet<String> of a million ids is ~90 MiB.
    assert!(
        rss_big < rss_empty + (40 << 20),
        "empty {rss_empty} B, a million ids {rss_big} B"
    );
}
