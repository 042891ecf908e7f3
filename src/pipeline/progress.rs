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
        let written = self
            .exposition(report)
            .map_err(|e| e.to_string())
            .and_then(|text| {
                crate::util::write_atomic(path, text.as_bytes()).map_err(|e| e.to_string())
            });
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), "writing the metrics file failed: {e}");
        }
    }

    /// The run so far in the Prometheus text format (0.0.4), encoded by the `prometheus` crate:
    /// the format node_exporter's textfile collector parses. (OpenMetrics, which
    /// `prometheus-client` writes, declares a counter without its `_total` suffix; that
    /// collector then reads every counter as untyped.)
    fn exposition(&self, report: Option<&RunReport>) -> prometheus::Result<String> {
        let metrics = Metrics::default();
        let c = &self.counts;
        metrics.counter(
            "hindsight_chunks_committed_total",
            "Chunks this run committed.",
            self.chunks,
        )?;
        metrics.counter(
            "hindsight_episodes_scored_total",
            "Episodes this run scored.",
            c.episodes_scored,
        )?;
        metrics.counter(
            "hindsight_rows_written_total",
            "Rows this run wrote.",
            c.rows_written,
        )?;
        metrics.counter(
            "hindsight_response_tokens_total",
            "Response tokens in the rows this run wrote.",
            c.response_tokens,
        )?;
        metrics.by_reason(
            "hindsight_episodes_dropped_total",
            "Episodes this run dropped, by reason.",
            c.dropped.iter().map(|(r, n)| (r.as_str(), *n)),
        )?;
        metrics.gauge(
            "hindsight_input_bytes_read",
            "Input bytes read so far.",
            self.bytes_read() as f64,
        )?;
        metrics.gauge(
            "hindsight_input_bytes_total",
            "Total size of the inputs.",
            self.bytes_total as f64,
        )?;
        metrics.gauge(
            "hindsight_run_seconds",
            "Seconds since the run started.",
            self.started.elapsed().as_secs_f64(),
        )?;
        if let Some(r) = report {
            metrics.counter(
                "hindsight_records_read_total",
                "Input records read.",
                r.ingest.records_read,
            )?;
            metrics.by_reason(
                "hindsight_records_quarantined_total",
                "Input records quarantined, by reason.",
                r.ingest
                    .records_quarantined
                    .iter()
                    .map(|(k, n)| (k.as_str(), *n)),
            )?;
            metrics.gauge(
                "hindsight_run_finished",
                "1 once the run has finished and published its dataset.",
                f64::from(u8::from(!r.stopped_early)),
            )?;
        }
        metrics.encode()
    }
}

/// A registry of one snapshot's metrics.
#[derive(Default)]
struct Metrics(prometheus::Registry);

impl Metrics {
    fn counter(&self, name: &str, help: &str, value: u64) -> prometheus::Result<()> {
        let c = prometheus::IntCounter::new(name, help)?;
        c.inc_by(value);
        self.0.register(Box::new(c))
    }

    fn gauge(&self, name: &str, help: &str, value: f64) -> prometheus::Result<()> {
        let g = prometheus::Gauge::new(name, help)?;
        g.set(value);
        self.0.register(Box::new(g))
    }

    /// A counter with one sample per `reason` label.
    fn by_reason<'a>(
        &self,
        name: &str,
        help: &str,
        counts: impl Iterator<Item = (&'a str, u64)>,
    ) -> prometheus::Result<()> {
        let v = prometheus::IntCounterVec::new(prometheus::Opts::new(name, help), &["reason"])?;
        for (reason, n) in counts {
            v.with_label_values(&[reason]).inc_by(n);
        }
        self.0.register(Box::new(v))
    }

    fn encode(&self) -> prometheus::Result<String> {
        prometheus::TextEncoder::new().encode_to_string(&self.0.gather())
    }
}
