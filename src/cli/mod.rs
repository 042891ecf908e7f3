//! Command-line interface: argument types and one module per subcommand. The binary's `main`
//! only parses and dispatches, so every command is also callable (and testable) as a library.

pub mod bench;
pub mod compact;
pub mod eval_relevance;
pub mod export;
pub mod export_hf;
pub mod finalize;
pub mod inspect;
pub mod observe;
pub mod plan;
pub mod query;
pub mod report;
pub mod run;
pub mod score;
pub mod stats;
pub mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::model::device::DeviceSpec;
use crate::model::{self, ComputeMode, LoadedModel};

/// Turns LLM interaction logs into self-distillation datasets.
#[derive(Debug, Parser)]
#[command(name = "hindsight", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every subcommand accepts.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// Model selection shared by commands that run the model.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// GGUF file or Hugging Face directory (default: the embedded SmolLM2 in models/, or $HINDSIGHT_MODEL).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// f32 (exact, default), bf16 or f16 (half-precision weights and matmuls), or quantized
    /// (GGUF blocks; approximate).
    #[arg(long, default_value = "f32", value_parser = parse_compute)]
    pub compute: ComputeMode,
    /// cpu, or cuda[:N] (builds with the `cuda` feature); default $HINDSIGHT_DEVICE or cpu.
    #[arg(long)]
    pub device: Option<DeviceSpec>,
}

/// The `--device` flag, else `$HINDSIGHT_DEVICE`, else the CPU.
pub fn resolve_device(flag: Option<DeviceSpec>) -> anyhow::Result<DeviceSpec> {
    match flag {
        Some(d) => Ok(d),
        None => DeviceSpec::from_env().map_err(|e| anyhow::anyhow!("HINDSIGHT_DEVICE: {e}")),
    }
}

fn parse_compute(s: &str) -> Result<ComputeMode, String> {
    ComputeMode::parse(s)
        .ok_or_else(|| format!("unknown compute mode '{s}' (f32, bf16, f16, quantized)"))
}

impl ModelArgs {
    /// Loads the selected model on the selected device.
    pub fn load(&self) -> anyhow::Result<LoadedModel> {
        let path = model::resolve_model_path(self.model.as_deref())?;
        let device = resolve_device(self.device)?;
        tracing::info!(model = %path.display(), compute = self.compute.as_str(), %device, "loading model");
        Ok(model::load(&path, self.compute, &device.open()?)?)
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print model throughput: raw forward tokens/s and scoring episodes/s with and without prefix sharing.
    Bench(bench::BenchArgs),
    /// Run a pipeline (ingest, score, write Parquet shards + manifest); resumable and incremental.
    Run(run::RunArgs),
    /// Show what `run` would do (config and its diff against the dataset, inputs new vs
    /// committed, predicate, model header) without loading weights or writing anything.
    Plan(run::RunArgs),
    /// Score JSONL episodes: token ids, student/teacher log-probs, top-k, tail, relevance.
    Score(score::ScoreArgs),
    /// Rewrite a dataset in a trainer's own layout (`--to axolotl-kd`); resumable and incremental.
    Export(export::ExportArgs),
    /// Write a GGUF model as a Hugging Face directory (safetensors + config + tokenizer.json).
    ExportHf(export_hf::ExportArgs),
    /// Check a dataset directory against the output contract (exit 0: valid, 1: violations, 2: unusable DIR).
    Validate(validate::ValidateArgs),
    /// After all `run --task-index I --num-tasks N` tasks: merge their chunks (dedup across tasks), write the manifest.
    Finalize(finalize::FinalizeArgs),
    /// Rewrite a dataset's many small per-chunk shards into few large ones (rows unchanged), then republish the manifest.
    Compact(compact::CompactArgs),
    /// Summarize a dataset directory: rows, tokens, bytes per response token, relevance, counts.
    Stats(stats::StatsArgs),
    /// Write a self-contained HTML report: funnel, distributions, top-k coverage, token heatmaps.
    Report(report::ReportArgs),
    /// Print one row's response as a terminal heatmap coloured by advantage.
    Inspect(inspect::InspectArgs),
    /// ROC AUC of each relevance method: real follow-ups vs follow-ups from other conversations.
    EvalRelevance(eval_relevance::EvalRelevanceArgs),
    /// SQL over a dataset (tables `dataset` and `quarantine`); prints a table or writes CSV/JSONL/Parquet (exit 2: bad SQL or DIR).
    Query(query::QueryArgs),
}

/// Sets up `tracing` on stderr: human-readable by default, JSON lines with `--log-format json`.
pub fn init_logging(global: &GlobalArgs) {
    let default = match global.verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match global.log_format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// For a dataset named by an object-store URL: downloads its top-level objects (manifest,
/// shards, reports) into a temporary directory that lives as long as the returned mirror.
pub fn fetch_remote_dataset(
    dir: &std::path::Path,
) -> Result<Option<crate::store::Mirror>, crate::store::StoreError> {
    let text = dir.to_string_lossy();
    if !crate::store::is_remote(&text) {
        return Ok(None);
    }
    let m = crate::store::Mirror::open(&text)?;
    m.pull_dataset()?;
    Ok(Some(m))
}

/// Writes a command's report to stdout; a closed pipe (`| head`) is not an error.
pub fn print_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let json_logs = cli.global.log_format == LogFormat::Json;
    match cli.command {
        Command::Bench(a) => bench::run(a),
        Command::ExportHf(a) => export_hf::run(a),
        Command::Export(a) => export::run(a, json_logs),
        Command::Score(a) => score::run(a),
        Command::Run(a) => run::run(a, json_logs),
        Command::Plan(a) => plan::run(a),
        Command::Validate(a) => validate::run(a),
        Command::Stats(a) => stats::run(a),
        Command::Report(a) => report::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::EvalRelevance(a) => eval_relevance::run(a),
        Command::Finalize(a) => finalize::run(a, json_logs),
        Command::Compact(a) => compact::run(a, json_logs),
        Command::Query(a) => query::run(a),
    }
}

/// An error and its causes on one line, skipping a cause whose text the previous message already
/// contains (library errors name their cause inline, so `{:#}` would print it twice).
pub fn error_chain(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    let mut last = out.clone();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !last.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        last = text;
    }
    out
}

/// Exit statuses, the same for every command (README, "Exit codes"); the Kubernetes manifests'
/// `podFailurePolicy` and schedulers key on them.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// A failure while working (I/O, store, model, a bug): retrying may help.
    pub const FAILURE: u8 = 1;
    /// A usage or configuration error (flags, pipeline file, `--where`): retrying cannot help.
    pub const USAGE: u8 = 2;
    /// The dataset at the output was made with another config, model, tokenizer or contract,
    /// or the directory is not a dataset: retrying cannot help.
    pub const IDENTITY: u8 = 3;
    /// A quality guard failed (`--min-rows`, `--max-quarantine-fraction`): the run finished and
    /// published, but its result does not look like a healthy night; or the audit refused the
    /// new shards and nothing was published.
    pub const GUARD: u8 = 4;
    /// Not ready yet, try again later (EX_TEMPFAIL): finalize before every task has finished,
    /// or another run holds the dataset's lock.
    pub const NOT_READY: u8 = 75;
    /// `validate`: the dataset has contract violations.
    pub const INVALID: u8 = 1;
}

/// A usage error a command finds itself (a bad flag combination): exit [`exit::USAGE`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The exit status for a failed command, from the first cause that has a meaning.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    use crate::pipeline::state::StateError;
    use crate::pipeline::PipelineError;
    for cause in e.chain() {
        if let Some(p) = cause.downcast_ref::<PipelineError>() {
            match p {
                PipelineError::Config(_) | PipelineError::Predicate(_) => return exit::USAGE,
                PipelineError::Guard(_) | PipelineError::AuditFailed(_) => return exit::GUARD,
                PipelineError::NotReady(_) => return exit::NOT_READY,
                PipelineError::State(s) => match s {
                    StateError::Mismatch { .. } | StateError::Foreign { .. } => {
                        return exit::IDENTITY
                    }
                    StateError::Locked(_) => return exit::NOT_READY,
                    _ => {}
                },
                _ => {}
            }
        }
        match cause.downcast_ref::<StateError>() {
            Some(StateError::Mismatch { .. } | StateError::Foreign { .. }) => {
                return exit::IDENTITY
            }
            Some(StateError::Locked(_)) => return exit::NOT_READY,
            _ => {}
        }
        if cause.downcast_ref::<crate::config::ConfigError>().is_some()
            || cause.downcast_ref::<UsageError>().is_some()
        {
            return exit::USAGE;
        }
    }
    exit::FAILURE
}

/// Prints a failed command's error: `error: …` on stderr, or, in JSON log mode, one `ERROR`
/// event with the message and the exit status.
pub fn report_error(e: &anyhow::Error, json: bool) -> u8 {
    let code = exit_code(e);
    let message = error_chain(e);
    if json {
        tracing::error!(exit_code = code, "{message}");
    } else {
        eprintln!("error: {message}");
    }
    code
}

/// A command's report: one `hindsight::report` event holding it as an object in JSON log mode,
/// else its human summary on stderr.
pub fn emit_report<T: serde::Serialize>(
    json_logs: bool,
    message: &str,
    report: &T,
    summary: &str,
) -> anyhow::Result<()> {
    if json_logs {
        json_event(
            "hindsight::report",
            message,
            "report",
            serde_json::to_value(report)?,
        );
    } else {
        eprintln!("{summary}");
    }
    Ok(())
}

/// Writes a JSON document as one log line shaped like `tracing`'s JSON events
/// (`timestamp`, `level`, `fields.message`, `fields.<name>`, `target`), so a log pipeline gets
/// the run report as an object, not as an escaped string.
pub fn json_event(target: &str, message: &str, name: &str, value: serde_json::Value) {
    let mut fields = serde_json::Map::new();
    fields.insert("message".into(), message.into());
    fields.insert(name.into(), value);
    let line = serde_json::json!({
        "timestamp": rfc3339_now(),
        "level": "INFO",
        "fields": fields,
        "target": target,
    });
    eprintln!("{line}");
}

/// The current UTC time as RFC 3339 with microseconds.
fn rfc3339_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_micros()
    )
}
