//! Benchmark of the non-model path: read → episodes (→ tokenized contexts, via the hook).
//!
//! Generates a synthetic WildChat-like JSONL at 1× and 10× size in a temp dir and, for each,
//! runs the ingest stream in a fresh child process (so peak RSS is per size), printing MB/s,
//! episodes/s and peak RSS (`VmHWM`). Run: `cargo run --release --example bench_ingest [-- N]`
//! where N is the 1× record count (default 20000); `BENCH_NO_DEDUP=1` turns exact dedup off.
//!
//! Each episode's student and teacher contexts are rendered with the model's chat template and
//! encoded canonically, and its response encoded, with the embedded model's real tokenizer
//! (read from the GGUF metadata; the weights are not loaded). `BENCH_NO_TOKENIZE=1` skips it.
//! `scripts/bench_ingest_python.py` does the same work in Python (json + HF tokenizers).

use std::io::{BufWriter, Write};
use std::time::Instant;

use hindsight::episode::{ingest, Episode, IngestOptions};
use hindsight::model::gguf_checkpoint::GgufFile;
use hindsight::tokenize::Tokenizer;

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Canonical encoding of the student and teacher contexts and the response; returns tokens.
fn tokenize(tok: Option<&Tokenizer>, ep: &Episode) -> Result<usize, Box<dyn std::error::Error>> {
    let Some(tok) = tok else { return Ok(0) };
    let s = tok.encode_chat(&ep.prompt, true)?.ids.len();
    let t = tok.encode_chat(&ep.teacher_prompt, true)?.ids.len();
    let c = match &ep.completion {
        Some(c) => tok.encode_completion(c, ep.ends_turn())?.len(),
        None => 0,
    };
    Ok(s + t + c)
}

fn generate(path: &std::path::Path, records: usize) -> std::io::Result<()> {
    let mut out = BufWriter::new(std::fs::File::create(path)?);
    let words = [
        "explain",
        "the",
        "difference",
        "between",
        "rust",
        "ownership",
        "and",
        "borrowing",
        "please",
        "with",
        "an",
        "example",
        "why",
        "does",
        "my",
        "code",
        "fail",
        "to",
        "compile",
        "thanks",
        "now",
        "in",
        "python",
        "shorter",
        "again",
    ];
    let mut seed: u64 = 42;
    let mut text = |n: usize| {
        let mut s = String::new();
        for _ in 0..n {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            s.push_str(words[(seed >> 33) as usize % words.len()]);
            s.push(' ');
        }
        s
    };
    for i in 0..records {
        let turns: Vec<serde_json::Value> = (0..6)
            .map(|t| {
                let user = t % 2 == 0;
                serde_json::json!({
                    "content": text(if user { 25 } else { 120 }),
                    "role": if user { "user" } else { "assistant" },
                    "turn_identifier": i * 10 + t / 2, "language": "English",
                    "toxic": false, "redacted": false,
                    "timestamp": if user { serde_json::Value::Null } else { "2023-04-09T10:15:02Z".into() },
                })
            })
            .collect();
        let rec = serde_json::json!({
            "conversation_hash": format!("{i:024x}"), "model": "gpt-3.5-turbo",
            "timestamp": "2023-04-09T10:16:00Z", "conversation": turns, "turn": 3,
            "language": "English", "toxic": false, "redacted": false,
        });
        serde_json::to_writer(&mut out, &rec)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

fn measure(path: &str) -> Result<(), Box<dyn std::error::Error>> {
    let tokenizer = if std::env::var_os("BENCH_NO_TOKENIZE").is_none() {
        let model = hindsight::model::resolve_model_path(None)?;
        Some(Tokenizer::from_gguf(&GgufFile::open(&model)?)?)
    } else {
        None
    };
    let start = Instant::now();
    let mut opts = IngestOptions {
        inputs: vec![path.to_string()],
        ..IngestOptions::default()
    };
    // The exact-dedup set is the only state that grows with input (16 bytes per episode);
    // BENCH_NO_DEDUP=1 shows the reader/builder path alone is flat.
    opts.episode.prefilter.dedup = std::env::var_os("BENCH_NO_DEDUP").is_none();
    let mut stream = ingest(opts)?;
    let bytes = stream.input_bytes();
    let mut n = 0u64;
    let mut tok = 0usize;
    for ep in stream.by_ref() {
        tok += tokenize(tokenizer.as_ref(), &ep)?;
        n += 1;
    }
    let stats = stream.finish()?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{:>8.1} MB in {:>6.2}s: {:>7.1} MB/s, {:>9.0} episodes/s, {} episodes, peak RSS {:>7.1} MiB, reconciles={}, {tok} tokens",
        bytes as f64 / 1e6,
        secs,
        bytes as f64 / 1e6 / secs,
        n as f64 / secs,
        n,
        peak_rss_kib() as f64 / 1024.0,
        stats.reconciles()
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 3 && args[1] == "--measure" {
        return measure(&args[2]);
    }
    if args.len() == 4 && args[1] == "--generate" {
        // Writes the synthetic input only (for the Python baseline, scripts/bench_ingest_python.py).
        let n: usize = args[3].parse()?;
        return Ok(generate(std::path::Path::new(&args[2]), n)?);
    }
    let base: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let dir = tempfile::tempdir()?;
    for mult in [1usize, 10] {
        let path = dir.path().join(format!("wildchat_{mult}x.jsonl"));
        generate(&path, base * mult)?;
        print!("{mult:>3}x: ");
        std::io::stdout().flush()?;
        let status = std::process::Command::new(std::env::current_exe()?)
            .arg("--measure")
            .arg(&path)
            .status()?;
        if !status.success() {
            return Err(format!("measure run failed: {status}").into());
        }
    }
    Ok(())
}
