//! `hindsight plan PIPELINE.toml` (and `run --dry-run`): what a run would do, worked out before
//! any weight is loaded and without writing anything: the resolved config and its hash, the
//! key-by-key difference from the dataset already at the output, each input with its state in
//! that dataset, the `--where` predicate compiled, and the model's header checked.

use serde::{Deserialize, Serialize};

use super::reader::chunk_id;
use super::state::{self, ChunkState};
use super::{PipelineError, TaskSlice};
use crate::config::{ConfigChange, PipelineConfig};
use crate::model::{self, ModelHeader};
use crate::store::Mirror;

/// The state of one input file in the dataset at the output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum InputState {
    /// No chunk of it is committed: all of it will be scored.
    New,
    /// `chunks` chunks of its current content are committed; a run skips them and scores the
    /// rest (if any).
    Committed { chunks: u64 },
    /// Chunks of an earlier content of the same path are committed (the file was rewritten):
    /// they stay in the dataset and the new content is scored as new chunks.
    Changed { old_chunks: u64 },
}

/// One input file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InputPlan {
    /// The path or URL, as chunks name it.
    pub uri: String,
    /// Size in bytes (0 when unknown).
    pub bytes: u64,
    /// Its state in the dataset.
    #[serde(flatten)]
    pub state: InputState,
}

/// The dataset at the output, as the run would find it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatasetPlan {
    /// The output directory or URL.
    pub output: String,
    /// Whether a dataset exists there (a first run creates it).
    pub exists: bool,
    /// Committed chunks (merged or not).
    pub committed_chunks: u64,
    /// Chunks of a sharded run that is not finalized yet.
    pub unmerged_task_chunks: u64,
    /// The settings that differ from the dataset's identity (empty: the run may add to it).
    pub config_changes: Vec<ConfigChange>,
    /// The dataset's identity hash differs but it predates recorded identities, so the keys
    /// cannot be named.
    pub config_differs_unnamed: bool,
    /// The model's tokenizer matches the one the dataset was made with (`None`: new dataset).
    pub tokenizer_matches: Option<bool>,
    /// The output contract (columns) matches this build's.
    pub contract_matches: Option<bool>,
}

/// Everything `plan` found; `refusals` lists why the run would be refused (empty: it would run).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    /// The resolved dataset identity (the config without input paths and output directory).
    pub config: serde_json::Value,
    /// Its hash, recorded in every shard.
    pub config_sha256: String,
    /// The task slice (`None`: a plain run).
    pub task: Option<(u32, u32)>,
    /// The dataset at the output.
    pub dataset: DatasetPlan,
    /// Input files in reading order.
    pub inputs: Vec<InputPlan>,
    /// The `--where` predicate, compiled against the inputs.
    pub predicate: Option<String>,
    /// The model's header.
    pub model: ModelHeader,
    /// Why the run would be refused, one reason per entry.
    pub refusals: Vec<String>,
}

impl Plan {
    /// Inputs with something to score (new or changed; committed inputs may have a tail).
    pub fn inputs_to_score(&self) -> usize {
        self.inputs
            .iter()
            .filter(|i| !matches!(i.state, InputState::Committed { .. }))
            .count()
    }

    /// A human rendering (the JSON form is the struct itself).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let d = &self.dataset;
        out.push_str(&format!("config sha256  {}\n", self.config_sha256));
        if let Some((i, n)) = self.task {
            out.push_str(&format!("task           {i} of {n}\n"));
        }
        out.push_str(&format!(
            "output         {} ({})\n",
            d.output,
            if d.exists {
                format!(
                    "existing dataset: {} committed chunks, {} unmerged task chunks",
                    d.committed_chunks, d.unmerged_task_chunks
                )
            } else {
                "new dataset".to_string()
            }
        ));
        if !d.config_changes.is_empty() {
            out.push_str("config changes against the dataset:\n");
            for c in &d.config_changes {
                out.push_str(&format!("  {c}\n"));
            }
        }
        let m = &self.model;
        let dtypes: Vec<String> = m
            .weight_dtypes
            .iter()
            .map(|(k, n)| {
                if *n > 0 {
                    format!("{k}×{n}")
                } else {
                    k.clone()
                }
            })
            .collect();
        out.push_str(&format!(
            "model          {} ({}): {}, {} layers, hidden {}, vocab {}, context {}, weights {}\n",
            m.path,
            m.format,
            m.architecture,
            m.layers,
            m.hidden_size,
            m.vocab_size,
            m.context,
            dtypes.join(", ")
        ));
        if let Some(p) = &self.predicate {
            out.push_str(&format!("where          {p} (compiled)\n"));
        }
        out.push_str(&format!(
            "inputs         {} files, {} with new content\n",
            self.inputs.len(),
            self.inputs_to_score()
        ));
        for i in &self.inputs {
            let state = match &i.state {
                InputState::New => "new".to_string(),
                InputState::Committed { chunks } => format!("{chunks} chunks committed"),
                InputState::Changed { old_chunks } => {
                    format!(
                        "changed since ({old_chunks} chunks of the old content stay; a run \
                         skips, unscored, the chunks whose episodes did not change)"
                    )
                }
            };
            out.push_str(&format!(
                "  {:<12} {}  {}\n",
                human_bytes(i.bytes),
                crate::util::terminal_safe(&i.uri),
                state
            ));
        }
        if self.refusals.is_empty() {
            out.push_str("plan: the run would proceed\n");
        } else {
            for r in &self.refusals {
                out.push_str(&format!("refused: {r}\n"));
            }
        }
        out
    }
}

fn human_bytes(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// Works out what `run` would do with `cfg`, loading no weights and writing nothing (a remote
/// dataset's `_state/` is read into a temporary staging directory).
///
/// Errors are what `run` would fail with before scoring: an invalid predicate, inputs that do
/// not exist, an unsupported model. Conditions under which the dataset would refuse the run
/// (another config or model, an unfinalized sharded run) are listed in [`Plan::refusals`].
pub fn plan(cfg: &PipelineConfig, task: Option<TaskSlice>) -> Result<Plan, PipelineError> {
    let mirror = Mirror::open(&cfg.output.dir.to_string_lossy())?;
    mirror.pull_tree("_state")?;
    if mirror.remote().is_some() {
        // Only to name changed keys of a dataset whose binding predates its identity copy; a
        // dataset without a manifest yet has nothing to name them from.
        if let Err(e) = mirror.pull(crate::sink::MANIFEST_FILE) {
            tracing::debug!("no manifest to compare with: {e}");
        }
    }
    let identity = state::choose_identity(
        mirror.local(),
        cfg.identity_json(),
        cfg.legacy_identity_json(),
    )?;
    let identity = crate::sink::meta::canonical_json(&identity);
    let config_sha256 = crate::sink::meta::config_sha256(&identity);
    let files = crate::ingest::expand_inputs(&cfg.input.paths)?;
    let predicate = match cfg.input.r#where.as_deref() {
        Some(sql) => {
            crate::sql::WherePredicate::compile(sql, &files, &cfg.input.reader_options())
                .map_err(|e| PipelineError::Predicate(e.to_string()))?;
            Some(sql.to_string())
        }
        None => None,
    };
    let model_path = model::resolve_model_path(cfg.model.path.as_deref())?;
    let header = model::describe(&model_path)?;

    let found = state::peek(mirror.local())?;
    let mut refusals = Vec::new();
    let single = task.is_none_or(|t| t.is_single());
    let (mut dataset, chunks) = match found {
        None => (
            DatasetPlan {
                output: mirror.label(),
                exists: false,
                committed_chunks: 0,
                unmerged_task_chunks: 0,
                config_changes: Vec::new(),
                config_differs_unnamed: false,
                tokenizer_matches: None,
                contract_matches: None,
            },
            Vec::new(),
        ),
        Some((binding, chunks)) => {
            let recorded = state::recorded_identity(mirror.local(), &binding);
            let config_changes = match &recorded {
                Some(old) => crate::config::config_diff(old, &identity),
                None => Vec::new(),
            };
            let differs = binding.config_sha256 != config_sha256;
            let tokenizer_matches = binding.tokenizer_sha256 == header.tokenizer_sha256;
            let contract_matches =
                binding.contract_sha256 == crate::sink::schema::contract_sha256();
            if differs {
                refusals.push(if config_changes.is_empty() {
                    format!(
                        "the dataset was made with another pipeline config ({} there, {} now)",
                        short(&binding.config_sha256),
                        short(&config_sha256)
                    )
                } else {
                    format!(
                        "the dataset was made with another pipeline config: {}",
                        config_changes
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                });
            }
            if !tokenizer_matches {
                refusals.push("the dataset was made with another tokenizer".into());
            }
            if !contract_matches {
                refusals
                    .push("the dataset was written with another output contract (columns)".into());
            }
            let unmerged = chunks.iter().filter(|c| c.task.is_some()).count() as u64;
            if single {
                if let Some(n) = chunks
                    .iter()
                    .filter_map(|c| c.task)
                    .map(|t| t.num_tasks)
                    .find(|n| *n != 1)
                {
                    refusals.push(format!(
                        "the dataset holds chunks of a sharded run ({n} tasks) that was not \
                         finalized; run `hindsight finalize` first"
                    ));
                }
            }
            (
                DatasetPlan {
                    output: mirror.label(),
                    exists: true,
                    committed_chunks: chunks.len() as u64,
                    unmerged_task_chunks: unmerged,
                    config_changes,
                    config_differs_unnamed: differs && recorded.is_none(),
                    tokenizer_matches: Some(tokenizer_matches),
                    contract_matches: Some(contract_matches),
                },
                chunks,
            )
        }
    };
    // The model's weights are hashed when a run loads them; plan reads only the header, so a
    // different checkpoint with the same tokenizer is caught by the run, not here.
    dataset.config_changes.sort_by(|a, b| a.key.cmp(&b.key));

    let inputs = files
        .iter()
        .map(|f| {
            let uri = f.path.display().to_string();
            let identity = crate::store::input_identity(&uri);
            InputPlan {
                bytes: crate::store::input_size(&uri),
                state: input_state(&uri, &identity, &chunks),
                uri,
            }
        })
        .collect();
    Ok(Plan {
        config: identity,
        config_sha256,
        task: task.map(|t| (t.index, t.count)),
        dataset,
        inputs,
        predicate,
        model: header,
        refusals,
    })
}

/// A committed chunk of `uri` belongs to its current content when it was read from an input of
/// the same identity (recorded in the chunk; for chunks from before content ids, when its id is
/// `chunk_id(uri, identity, chunk_index)`); other chunks of the same path are of an earlier
/// content. (A run re-reads a changed input and skips, unscored, the chunks whose episodes did
/// not change: plan cannot know which without reading it.)
fn input_state(uri: &str, identity: &str, chunks: &[ChunkState]) -> InputState {
    let (mut current, mut old) = (0u64, 0u64);
    for c in chunks.iter().filter(|c| c.source_uri == uri) {
        let same = match &c.source_identity {
            Some(id) => id == identity,
            None => c.chunk_id == chunk_id(uri, identity, c.chunk_index),
        };
        if same {
            current += 1;
        } else {
            old += 1;
        }
    }
    match (current, old) {
        (0, 0) => InputState::New,
        (0, old_chunks) => InputState::Changed { old_chunks },
        (chunks, _) => InputState::Committed { chunks },
    }
}

fn short(h: &str) -> String {
    h.chars().take(12).collect()
}
