//! What a long unattended run tells the people and systems watching it: one structured event
//! per committed chunk (rows, tokens, episodes/s, input bytes read of the total, ETA), and, when
//! asked for, a Prometheus textfile (`--metrics-file`, for node_exporter's textfile collector
//! or any scraper) rewritten after every chunk and at the end.

use std::path::PathBuf;
use std::time::Instant;

use super::{RunReport, StepCounts};

/// Running totals of one run.
pub struct RunProgress {
    started: Instant,
    bytes_start: u64,
    bytes_total: u64,
    chunks: u64,
    counts: StepCounts,
    metrics: Option<PathBuf>,
}

impl RunProgress {
    /// Starts measuring a run over inputs of `bytes_total` bytes.
    pub fn new(bytes_total: u64, metrics: Option<PathBuf>) -> Self {
        RunProgress {
            started: Instant::now(),
            bytes_start: crate::ingest::input::input_bytes_read(),
            bytes_total,
            chunks: 0,
            counts: StepCounts::default(),
            metrics,
        }
    }

    /// Input bytes this run has read so far.
    pub fn bytes_read(&self) -> u64 {
        crate::ingest::input::input_bytes_read()
            .saturating_sub(self.bytes_start)
            .min(self.bytes_total.max(1))
    }

    /// The inputs' total size.
    pub fn bytes_total(&self) -> u64 {
        self.bytes_total
    }

    /// Seconds left at the current rate, from the input bytes read (`None` before any).
    pub fn eta_seconds(&self) -> Option<f64> {
        let done = self.bytes_read();
        if done == 0 || self.bytes_total == 0 {
            return None;
        }
        let elapsed = self.started.elapsed().as_secs_f64();
        Some(elapsed * (self.bytes_total.saturating_sub(done)) as f64 / done as f64)
    }

    /// Records a committed chunk: logs its event and refreshes the metrics file.
    pub fn chunk_committed(&mut self, chunk_id: &str, source_uri: &str, counts: &StepCounts) {
        self.chunks += 1;
        self.counts.add(counts);
        let elapsed = self.started.elapsed().as_secs_f64();
        let eps = self.counts.episodes_scored as f64 / elapsed.max(1e-9);
        tracing::info!(
            target: "hindsight::chunk",
            chunk = chunk_id,
            source = %crate::util::terminal_safe(source_uri),
            rows = counts.rows_written,
            response_tokens = counts.response_tokens,
            episodes = counts.episodes_scored,
            chunks_committed = self.chunks,
            rows_total = self.counts.rows_written,
            episodes_per_second = (eps * 100.0).round() / 100.0,
            input_bytes_read = self.bytes_read(),
            input_bytes_total = self.bytes_total,
            eta_seconds = self.eta_seconds().map(|s| s.round()),
            "chunk committed"
        );
        self.write_metrics(None);
    }

    /// The final metrics, with the run's ingest counts (after the dataset is published).
    pub fn finish(&self, report: &RunReport) {
        self.write_metrics(Some(report));
    }

    /// A metrics file that cannot be written is a warning, not a failed run: observability
    /// must never cost a night's data.
    fn write_metrics(&self, report: Option<&RunReport>) {
        let Some(path) = &self.metrics else {
            return;
        };
        let text = self.exposition(report);
        if let Err(e) = crate::util::write_atomic(path, text.as_bytes()) {
            tracing::warn!(path = %path.display(), "writing the metrics file failed: {e}");
        }
    }

    /// The Prometheus text exposition of the run so far.
    fn exposition(&self, report: Option<&RunReport>) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: Vec<(String, f64)>| {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            for (labels, v) in samples {
                out.push_str(&format!("{name}{labels} {v}\n"));
            }
        };
        let c = &self.counts;
        let one = |v: u64| vec![(String::new(), v as f64)];
        metric(
            "hindsight_chunks_committed_total",
            "counter",
            "Chunks this run committed.",
            one(self.chunks),
        );
        metric(
            "hindsight_episodes_scored_total",
            "counter",
            "Episodes this run scored.",
            one(c.episodes_scored),
        );
        metric(
            "hindsight_rows_written_total",
            "counter",
            "Rows this run wrote.",
            one(c.rows_written),
        );
        metric(
            "hindsight_response_tokens_total",
            "counter",
            "Response tokens in the rows this run wrote.",
            one(c.response_tokens),
        );
        metric(
            "hindsight_episodes_dropped_total",
            "counter",
            "Episodes this run dropped, by reason.",
            c.dropped
                .iter()
                .map(|(r, n)| (format!("{{reason=\"{}\"}}", r.as_str()), *n as f64))
                .collect(),
        );
        metric(
            "hindsight_input_bytes_read",
            "gauge",
            "Input bytes read so far.",
            one(self.bytes_read()),
        );
        metric(
            "hindsight_input_bytes_total",
            "gauge",
            "Total size of the inputs.",
            one(self.bytes_total),
        );
        metric(
            "hindsight_run_seconds",
            "gauge",
            "Seconds since the run started.",
            vec![(String::new(), self.started.elapsed().as_secs_f64())],
        );
        if let Some(r) = report {
            metric(
                "hindsight_records_read_total",
                "counter",
                "Input records read.",
                one(r.ingest.records_read),
            );
            metric(
                "hindsight_records_quarantined_total",
                "counter",
                "Input records quarantined, by reason.",
                r.ingest
                    .records_quarantined
                    .iter()
                    .map(|(k, n)| (format!("{{reason=\"{}\"}}", escape_label(k)), *n as f64))
                    .collect(),
            );
            metric(
                "hindsight_run_finished",
                "gauge",
                "1 once the run has finished and published its dataset.",
                one(u64::from(!r.stopped_early)),
            );
        }
        out
    }
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
