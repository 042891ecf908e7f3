//! What a run tells the platform around it: OpenLineage events (`--openlineage-url`,
//! `--openlineage-file`, `[lineage]`, `$OPENLINEAGE_URL`) and, when Dagster launched it, Dagster
//! Pipes messages. Both see the run start and end, with the audit's findings either way.

use serde_json::Map;

use super::UsageError;
use crate::config::PipelineConfig;
use crate::lineage::{DatasetName, LineageRun, ParentRun, Transport};
use crate::orchestrator::{self, PipesSession};
use crate::pipeline::publish::AuditSummary;
use crate::pipeline::{PipelineError, StepCounts};
use crate::sink::schema::Layout;

/// Inputs listed one by one in lineage events up to this many files; beyond it, the
/// configured paths (a directory or glob of a million files is one dataset to a reader).
const MAX_LISTED_INPUTS: usize = 1000;

/// How a run ended, for the observers.
#[derive(Debug, Default)]
pub struct RunEnd {
    /// The audit before the publish (a single run or the task that finalized).
    pub audit: Option<AuditSummary>,
    /// What the scoring steps did in this run.
    pub counts: Option<StepCounts>,
}

/// The run's observers; either may be absent.
pub struct Observers {
    lineage: Option<LineageRun>,
    pipes: Option<PipesSession>,
    threshold: f32,
    dataset: String,
}

/// Lineage flags a command line may give (they win over the config and the environment).
#[derive(Debug, Default, Clone)]
pub struct LineageFlags {
    /// `--openlineage-url`.
    pub url: Option<String>,
    /// `--openlineage-file`.
    pub file: Option<std::path::PathBuf>,
}

impl Observers {
    /// The observers of a run of `cfg`: lineage when a URL or file is configured, Pipes when
    /// Dagster launched the process. A malformed URL or Pipes context is a usage error.
    pub fn for_run(cfg: &PipelineConfig, flags: &LineageFlags) -> anyhow::Result<Self> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let url = flags
            .url
            .clone()
            .or_else(|| cfg.lineage.url.clone())
            .or_else(|| env("OPENLINEAGE_URL"));
        let transport = Transport {
            url: url
                .map(|u| Transport::endpoint(&u))
                .transpose()
                .map_err(|e| UsageError(e.to_string()))?,
            api_key: env("OPENLINEAGE_API_KEY"),
            file: flags.file.clone().or_else(|| cfg.lineage.file.clone()),
        };
        let dataset = cfg.output.dir.to_string_lossy().to_string();
        let lineage = transport.is_enabled().then(|| {
            let inputs = match crate::ingest::expand_inputs(&cfg.input.paths) {
                Ok(files) if files.len() <= MAX_LISTED_INPUTS => files
                    .iter()
                    .map(|f| DatasetName::of(&f.path.to_string_lossy()))
                    .collect(),
                _ => cfg.input.paths.iter().map(|p| DatasetName::of(p)).collect(),
            };
            LineageRun {
                run_id: uuid::Uuid::new_v4(),
                namespace: cfg
                    .lineage
                    .namespace
                    .clone()
                    .or_else(|| env("OPENLINEAGE_NAMESPACE"))
                    .unwrap_or_else(|| "hindsight".into()),
                job: cfg.name.clone(),
                inputs,
                output: DatasetName::of(&dataset),
                layout: Layout {
                    top_k: cfg.score.top_k,
                    student_top_k: cfg.score.student_top_k,
                    encoding: cfg.contract.encoding,
                },
                parent: env("OPENLINEAGE_PARENT_ID").and_then(|p| {
                    let parsed = ParentRun::parse(&p);
                    if parsed.is_none() {
                        tracing::warn!(
                            "$OPENLINEAGE_PARENT_ID {p:?} is not namespace/job/run-uuid; ignored"
                        );
                    }
                    parsed
                }),
                transport,
            }
        });
        let pipes = PipesSession::from_env(|k| std::env::var(k).ok())
            .map_err(|e| UsageError(e.to_string()))?;
        Ok(Observers {
            lineage,
            pipes,
            threshold: cfg.score.threshold(),
            dataset,
        })
    }

    /// The run begins.
    pub fn started(&self) {
        if let Some(l) = &self.lineage {
            l.emit(&l.start());
            tracing::info!(run_id = %l.run_id, job = %l.job, "OpenLineage START sent");
        }
        if let Some(p) = &self.pipes {
            p.opened();
        }
    }

    /// The run ended with `result`.
    pub fn finished(&self, result: &anyhow::Result<RunEnd>) {
        let failure = result.as_ref().err();
        let audit = match result {
            Ok(end) => end.audit.as_ref(),
            Err(e) => e.downcast_ref::<PipelineError>().and_then(|p| match p {
                PipelineError::AuditFailed(f) => Some(&f.audit),
                _ => None,
            }),
        };
        let message = failure.map(|e| format!("{e:#}"));
        if let Some(l) = &self.lineage {
            let event = match &message {
                None => l.complete(audit),
                Some(m) => l.fail(m, audit),
            };
            l.emit(&event);
        }
        if let Some(p) = &self.pipes {
            if let (Ok(end), Some(a)) = (result, audit) {
                p.materialized(self.metadata(a, end.counts.as_ref()));
            }
            if let Some(a) = audit {
                p.audit_check(a);
            }
            p.closed(message.as_deref());
        }
    }

    /// The materialization's metadata: the dataset as published and what this run added.
    fn metadata(
        &self,
        a: &AuditSummary,
        counts: Option<&StepCounts>,
    ) -> Map<String, serde_json::Value> {
        let t = &a.totals;
        let mut m = Map::new();
        m.insert("dataset".into(), orchestrator::text(&self.dataset));
        m.insert("rows".into(), orchestrator::int(t.rows));
        m.insert("rows_added".into(), orchestrator::int(a.rows_checked));
        m.insert(
            "response_tokens".into(),
            orchestrator::int(t.response_tokens),
        );
        m.insert("bytes".into(), orchestrator::int(t.bytes));
        m.insert("shards".into(), orchestrator::int(t.shards));
        m.insert(
            "bytes_per_token".into(),
            orchestrator::float(t.bytes as f64 / t.response_tokens.max(1) as f64),
        );
        m.insert(
            "relevance_threshold".into(),
            orchestrator::float(f64::from(self.threshold)),
        );
        if let Some(c) = counts {
            let dropped: Map<String, serde_json::Value> = c
                .dropped
                .iter()
                .map(|(r, n)| (r.as_str().to_string(), serde_json::json!(n)))
                .collect();
            m.insert(
                "dropped".into(),
                orchestrator::json_value(serde_json::Value::Object(dropped)),
            );
            m.insert(
                "episodes_scored".into(),
                orchestrator::int(c.episodes_scored),
            );
        }
        m
    }
}
