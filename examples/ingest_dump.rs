//! Reads inputs, writes episodes as JSONL to stdout and the run statistics to stderr.
//!
//! `cargo run --example ingest_dump -- [--format NAME] [--quarantine PATH] INPUT...`

use std::io::Write;

use hindsight::episode::{ingest, IngestOptions, SourceFormat};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut opts = IngestOptions::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--format" => {
                opts.format = Some(SourceFormat::parse(&args.next().unwrap_or_default())?)
            }
            "--quarantine" => opts.quarantine_path = args.next().map(Into::into),
            _ => opts.inputs.push(a),
        }
    }
    let mut stream = ingest(opts)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for ep in stream.by_ref() {
        serde_json::to_writer(&mut out, &ep)?;
        out.write_all(b"\n")?;
    }
    let quarantined = serde_json::to_string_pretty(stream.quarantined())?;
    let stats = stream.finish()?;
    eprintln!("{}", serde_json::to_string_pretty(&stats)?);
    eprintln!("quarantined (in memory): {quarantined}");
    eprintln!("reconciles: {}", stats.reconciles());
    Ok(())
}
