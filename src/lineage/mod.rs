//! OpenLineage run events (spec 2-0-2): a run tells the platform's lineage service (Marquez,
//! DataHub, OpenMetadata, Airflow's OpenLineage provider) which inputs it read, which dataset
//! it wrote, with the output's schema, the rows and bytes it added and the audit's assertions.
//! START when the run begins, COMPLETE or FAIL when it ends; sent over HTTP, appended to a
//! file, or both. A lineage service that is down never fails the nightly job: the run warns.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::pipeline::publish::AuditSummary;
use crate::sink::schema::{contract_schema, Layout};

/// The spec version the events follow.
pub const SCHEMA_URL: &str = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent";

/// Names the code that made an event (`producer` / `_producer`).
pub const PRODUCER: &str = concat!(
    "https://github.com/hindsight-data/hindsight/tree/v",
    env!("CARGO_PKG_VERSION")
);

/// The `_schemaURL` of each facet hindsight writes (the facet versions of spec 2-0-2).
mod facet_urls {
    const BASE: &str = "https://openlineage.io/spec/facets/";
    pub fn url(path: &str) -> String {
        format!("{BASE}{path}")
    }
    pub const SCHEMA: &str = "1-2-0/SchemaDatasetFacet.json#/$defs/SchemaDatasetFacet";
    pub const OUTPUT_STATISTICS: &str =
        "1-0-2/OutputStatisticsOutputDatasetFacet.json#/$defs/OutputStatisticsOutputDatasetFacet";
    pub const DATA_QUALITY_ASSERTIONS: &str =
        "1-1-0/DataQualityAssertionsDatasetFacet.json#/$defs/DataQualityAssertionsDatasetFacet";
    pub const JOB_TYPE: &str = "2-0-4/JobTypeJobFacet.json#/$defs/JobTypeJobFacet";
    pub const PROCESSING_ENGINE: &str =
        "1-1-1/ProcessingEngineRunFacet.json#/$defs/ProcessingEngineRunFacet";
    pub const ERROR_MESSAGE: &str = "1-0-1/ErrorMessageRunFacet.json#/$defs/ErrorMessageRunFacet";
    pub const PARENT: &str = "1-2-0/ParentRunFacet.json#/$defs/ParentRunFacet";
}

/// Errors of a lineage transport (reported as warnings by the run).
#[derive(Debug, thiserror::Error)]
pub enum LineageError {
    #[error("writing OpenLineage events to {path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sending an OpenLineage event to {url}: {message}")]
    Http { url: String, message: String },
    #[error("{0}")]
    Invalid(String),
}

/// A dataset as OpenLineage names it: `file` + absolute path, `s3://bucket` + key, ...
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetName {
    /// Where the dataset lives (`file`, `s3://bucket`).
    pub namespace: String,
    /// The dataset within it (a path).
    pub name: String,
}

impl DatasetName {
    /// The OpenLineage name of a local path or an object-store URL.
    pub fn of(location: &str) -> Self {
        if crate::store::is_remote(location) {
            if let Ok(u) = url::Url::parse(location) {
                let host = u.host_str().unwrap_or_default();
                let name = u.path().trim_start_matches('/');
                return DatasetName {
                    namespace: format!("{}://{host}", u.scheme()),
                    name: if name.is_empty() { "/" } else { name }.to_string(),
                };
            }
        }
        let local = location.strip_prefix("file://").unwrap_or(location);
        let path = std::path::absolute(Path::new(local)).unwrap_or_else(|_| local.into());
        DatasetName {
            namespace: "file".into(),
            name: path.display().to_string(),
        }
    }

    fn to_json(&self) -> Value {
        json!({"namespace": self.namespace, "name": self.name})
    }
}

/// The run that spawned this one (an Airflow task, a Dagster step): `namespace/job/run-id`,
/// as `$OPENLINEAGE_PARENT_ID` carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentRun {
    pub namespace: String,
    pub job: String,
    pub run_id: String,
}

impl ParentRun {
    /// Parses `namespace/job/run-id` (the job name may hold `/`); `None` when malformed.
    pub fn parse(s: &str) -> Option<Self> {
        let (namespace, rest) = s.split_once('/')?;
        let (job, run_id) = rest.rsplit_once('/')?;
        let ok = !namespace.is_empty() && !job.is_empty() && uuid::Uuid::parse_str(run_id).is_ok();
        ok.then(|| ParentRun {
            namespace: namespace.into(),
            job: job.into(),
            run_id: run_id.into(),
        })
    }
}

/// Where events go.
#[derive(Debug, Clone, Default)]
pub struct Transport {
    /// The HTTP endpoint events are POSTed to.
    pub url: Option<String>,
    /// `Authorization: Bearer` for the endpoint (`$OPENLINEAGE_API_KEY`).
    pub api_key: Option<String>,
    /// A file each event is appended to as one line.
    pub file: Option<PathBuf>,
}

impl Transport {
    /// Whether events go anywhere.
    pub fn is_enabled(&self) -> bool {
        self.url.is_some() || self.file.is_some()
    }

    /// The endpoint for a configured URL: a bare server gets `/api/v1/lineage`.
    pub fn endpoint(url: &str) -> Result<String, LineageError> {
        let u = url::Url::parse(url)
            .map_err(|e| LineageError::Invalid(format!("OpenLineage URL {url:?}: {e}")))?;
        if !matches!(u.scheme(), "http" | "https") {
            return Err(LineageError::Invalid(format!(
                "OpenLineage URL {url:?}: only http and https are supported"
            )));
        }
        Ok(if u.path() == "/" || u.path().is_empty() {
            format!("{}/api/v1/lineage", url.trim_end_matches('/'))
        } else {
            url.to_string()
        })
    }

    /// Sends one event everywhere configured; the first failure is returned after trying all.
    pub fn send(&self, event: &Value) -> Result<(), LineageError> {
        let mut first = None;
        if let Some(path) = &self.file {
            let mut line = event.to_string();
            line.push('\n');
            let r = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| f.write_all(line.as_bytes()));
            if let Err(source) = r {
                first = Some(LineageError::File {
                    path: path.clone(),
                    source,
                });
            }
        }
        if let Some(url) = &self.url {
            if let Err(e) = post(url, self.api_key.as_deref(), event) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

/// POSTs an event, with a timeout so a hung lineage service cannot hold the job.
fn post(url: &str, api_key: Option<&str>, event: &Value) -> Result<(), LineageError> {
    let err = |message: String| LineageError::Http {
        url: url.to_string(),
        message,
    };
    let body = event.to_string();
    crate::store::block_on(async {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| err(e.to_string()))?;
        let mut req = client
            .post(url)
            .header("Content-Type", "application/json")
            .body(body);
        if let Some(key) = api_key {
            req = req.bearer_auth(key);
        }
        let resp = req.send().await.map_err(|e| err(e.to_string()))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(err(format!("HTTP {}", resp.status())))
        }
    })
}

/// One run of a job, from START to COMPLETE or FAIL: the ids and datasets every event of it
/// repeats.
#[derive(Debug, Clone)]
pub struct LineageRun {
    /// The run's id (a fresh UUID per run).
    pub run_id: uuid::Uuid,
    /// The job's namespace.
    pub namespace: String,
    /// The job's name (the pipeline's `name`).
    pub job: String,
    /// The files the run reads.
    pub inputs: Vec<DatasetName>,
    /// The dataset it writes.
    pub output: DatasetName,
    /// The column layout of the dataset (for the schema facet).
    pub layout: Layout,
    /// The run that launched this one, if any.
    pub parent: Option<ParentRun>,
    /// Where the events go.
    pub transport: Transport,
}

impl LineageRun {
    /// The START event.
    pub fn start(&self) -> Value {
        self.event("START", None, None)
    }

    /// The COMPLETE event of a run that published (or, for a sharded task, finished).
    pub fn complete(&self, audit: Option<&AuditSummary>) -> Value {
        self.event("COMPLETE", audit, None)
    }

    /// The FAIL event, with the error and, for a refused publish, the audit's findings.
    pub fn fail(&self, message: &str, audit: Option<&AuditSummary>) -> Value {
        self.event("FAIL", audit, Some(message))
    }

    /// Sends an event; a failure is a warning (lineage never fails the job).
    pub fn emit(&self, event: &Value) {
        if let Err(e) = self.transport.send(event) {
            tracing::warn!("{e}");
        }
    }

    fn event(&self, kind: &str, audit: Option<&AuditSummary>, error: Option<&str>) -> Value {
        let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let mut run_facets = serde_json::Map::new();
        run_facets.insert(
            "processing_engine".into(),
            facet(
                facet_urls::PROCESSING_ENGINE,
                json!({"name": "hindsight", "version": env!("CARGO_PKG_VERSION")}),
            ),
        );
        if let Some(p) = &self.parent {
            run_facets.insert(
                "parent".into(),
                facet(
                    facet_urls::PARENT,
                    json!({
                        "run": {"runId": p.run_id},
                        "job": {"namespace": p.namespace, "name": p.job},
                    }),
                ),
            );
        }
        if let Some(message) = error {
            run_facets.insert(
                "errorMessage".into(),
                facet(
                    facet_urls::ERROR_MESSAGE,
                    json!({"message": message, "programmingLanguage": "Rust"}),
                ),
            );
        }
        let mut output = self.output.to_json();
        if kind != "START" {
            output["facets"] = json!({
                "schema": facet(facet_urls::SCHEMA, json!({"fields": schema_fields(&self.layout)})),
            });
            if let Some(a) = audit {
                output["facets"]["dataQualityAssertions"] = facet(
                    facet_urls::DATA_QUALITY_ASSERTIONS,
                    json!({"assertions": assertions(a)}),
                );
                if a.passed {
                    output["outputFacets"] = json!({
                        "outputStatistics": facet(
                            facet_urls::OUTPUT_STATISTICS,
                            json!({
                                "rowCount": a.rows_checked,
                                "size": a.bytes_checked,
                                "fileCount": a.shards_checked,
                            }),
                        ),
                    });
                }
            }
        }
        json!({
            "eventType": kind,
            "eventTime": time,
            "producer": PRODUCER,
            "schemaURL": SCHEMA_URL,
            "run": {"runId": self.run_id.to_string(), "facets": run_facets},
            "job": {
                "namespace": self.namespace,
                "name": self.job,
                "facets": {
                    "jobType": facet(
                        facet_urls::JOB_TYPE,
                        json!({"processingType": "BATCH", "integration": "HINDSIGHT", "jobType": "JOB"}),
                    ),
                },
            },
            "inputs": self.inputs.iter().map(DatasetName::to_json).collect::<Vec<_>>(),
            "outputs": [output],
        })
    }
}

/// A facet: its fields plus `_producer` and `_schemaURL`.
fn facet(schema: &str, mut fields: Value) -> Value {
    if let Some(m) = fields.as_object_mut() {
        m.insert("_producer".into(), json!(PRODUCER));
        m.insert("_schemaURL".into(), json!(facet_urls::url(schema)));
    }
    fields
}

/// The dataset's columns as the schema facet lists them (nested types spelled as Arrow does).
fn schema_fields(layout: &Layout) -> Vec<Value> {
    contract_schema(layout)
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            json!({
                "name": f.name(),
                "type": f.data_type().to_string(),
                "ordinal_position": i + 1,
            })
        })
        .collect()
}

/// The audit as data-quality assertions: the contract checks, then each drift check.
fn assertions(a: &AuditSummary) -> Vec<Value> {
    let mut out = vec![json!({
        "assertion": "contract",
        "name": "output_contract",
        "success": a.contract_ok(),
        "severity": "error",
        "description": "the contract checks of `hindsight validate` on the shards this run publishes",
        "expected": "0",
        "actual": a.violations_total.to_string(),
    })];
    for c in &a.drift {
        let mut v = json!({
            "assertion": "drift",
            "name": c.name,
            "success": c.passed,
            "severity": if a.drift_accepted { "warn" } else { "error" },
            "expected": format!("<= {}", c.threshold),
        });
        if let Some(x) = c.value {
            v["actual"] = json!(format!("{x:.6}"));
        }
        if let Some(why) = &c.skipped {
            v["description"] = json!(format!("skipped: {why}"));
        }
        out.push(v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datasets_are_named_as_openlineage_names_them() {
        let s3 = DatasetName::of("s3://bucket/nightly/ds");
        assert_eq!(
            (s3.namespace.as_str(), s3.name.as_str()),
            ("s3://bucket", "nightly/ds")
        );
        let local = DatasetName::of("out/ds");
        assert_eq!(local.namespace, "file");
        assert!(local.name.starts_with('/') && local.name.ends_with("out/ds"));
        assert_eq!(DatasetName::of("file:///data/x").name, "/data/x");
    }

    #[test]
    fn a_parent_id_is_namespace_job_and_run_uuid() {
        let p = ParentRun::parse("airflow/nightly.score/0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b")
            .expect("parent");
        assert_eq!(
            (p.namespace.as_str(), p.job.as_str()),
            ("airflow", "nightly.score")
        );
        assert!(ParentRun::parse("airflow/job/not-a-uuid").is_none());
        assert!(ParentRun::parse("just-one-part").is_none());
    }

    #[test]
    fn a_bare_server_url_gets_the_lineage_endpoint() {
        assert_eq!(
            Transport::endpoint("http://marquez:5000").expect("url"),
            "http://marquez:5000/api/v1/lineage"
        );
        assert_eq!(
            Transport::endpoint("https://x.example/custom/path").expect("url"),
            "https://x.example/custom/path"
        );
        assert!(Transport::endpoint("ftp://x").is_err());
    }
}
