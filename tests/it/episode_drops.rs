//! One bad episode is a drop with its reason, never a failed run nor a silently wrong row:
//! a row holding NaN is dropped `non_finite` (NaN passes every threshold comparison and has no
//! compact code), a `pmi` feedback probe longer than the model's context drops its episode
//! (kept, it would pass the relevance filter unfiltered), and so does a control context longer
//! than the model's context (it used to end the whole run). Runs go through the binary on a
//! tiny random Qwen3 checkpoint (`tests/fixtures/models/qwen3`) whose weights the tests edit.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A model directory: the qwen3 fixture checkpoint with its fixture tokenizer, `config` edited
/// and the embedding rows of `poisoned` set to NaN.
fn model_dir(dir: &Path, poisoned: &[u32], edit: impl FnOnce(&mut Value)) {
    let case = fixtures().join("models/qwen3");
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(case.join("config.json")).expect("config"))
            .expect("json");
    edit(&mut config);
    std::fs::write(dir.join("config.json"), config.to_string()).expect("write config");
    let mut tensors =
        candle_core::safetensors::load(case.join("model.safetensors"), &Device::Cpu).expect("load");
    if !poisoned.is_empty() {
        let emb = tensors
            .get("model.embed_tokens.weight")
            .expect("embeddings")
            .to_dtype(DType::F32)
            .expect("f32");
        let (rows, cols) = emb.dims2().expect("2d");
        let mut data: Vec<f32> = emb.flatten_all().expect("flat").to_vec1().expect("vec");
        for &id in poisoned {
            let at = id as usize * cols;
            data[at..at + cols].fill(f32::NAN);
        }
        let t = Tensor::from_vec(data, (rows, cols), &Device::Cpu).expect("tensor");
        tensors.insert("model.embed_tokens.weight".into(), t);
    }
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).expect("save");
    let tok = fixtures().join("tokenizers/qwen3");
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
    ] {
        if tok.join(f).is_file() {
            std::fs::copy(tok.join(f), dir.join(f)).expect("copy tokenizer");
        }
    }
}

/// Runs `hindsight run` on hint records with `model` and returns the manifest's episode counts.
fn run_hints(dir: &Path, model: &Path, records: &[Value]) -> serde_json::Map<String, Value> {
    let input = dir.join("hints.jsonl");
    let text: Vec<String> = records.iter().map(Value::to_string).collect();
    std::fs::write(&input, text.join("\n") + "\n").expect("input");
    let pipeline = dir.join("p.toml");
    std::fs::write(
        &pipeline,
        format!(
            "name = \"drops\"\n[input]\npaths = [{:?}]\nformat = \"hint\"\n[model]\npath = {:?}\n\
             [score]\ntop_k = 5\nrelevance = \"pmi\"\nrelevance_threshold = -1000.0\n\
             [output]\ndir = {:?}\n",
            input.display().to_string(),
            model.display().to_string(),
            dir.join("out").display().to_string()
        ),
    )
    .expect("pipeline");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_hindsight"))
        .args(["run", "--no-progress"])
        .arg(&pipeline)
        .output()
        .expect("run");
    assert!(
        o.status.success(),
        "run failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v = std::process::Command::new(env!("CARGO_BIN_EXE_hindsight"))
        .arg("validate")
        .arg(dir.join("out"))
        .output()
        .expect("validate");
    assert!(
        v.status.success(),
        "the dataset does not validate: {}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("out/manifest.json")).expect("manifest"),
    )
    .expect("manifest json");
    manifest["stats"]["episodes"]
        .as_object()
        .expect("episode counts")
        .clone()
}

fn count(stats: &serde_json::Map<String, Value>, key: &str) -> u64 {
    stats.get(key).and_then(Value::as_u64).unwrap_or(0)
}

fn hint(id: &str, prompt: &str, response: &str, hint: &str) -> Value {
    serde_json::json!({"id": id, "prompt": prompt, "response": response, "hint": hint})
}

#[test]
fn a_row_with_nan_is_dropped_non_finite_and_the_rest_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = dir.path().join("model");
    std::fs::create_dir(&model).expect("mkdir");
    // The token of '@' has a NaN embedding: only the response that contains it turns NaN.
    model_dir(&model, &[], |_| {});
    let tok = hindsight::tokenize::Tokenizer::from_hf_dir(&model).expect("tokenizer");
    let at = tok.encode_text("@").expect("encode");
    assert_eq!(at.len(), 1, "'@' is one token: {at:?}");
    model_dir(&model, &at, |_| {});
    let stats = run_hints(
        dir.path(),
        &model,
        &[
            hint(
                "clean",
                "Add two and two.",
                "It is four.",
                "Say it as a digit.",
            ),
            hint(
                "nan",
                "Which key makes an at sign?",
                "Type the @ sign.",
                "Name the key.",
            ),
        ],
    );
    assert_eq!(count(&stats, "rows_written"), 1, "{stats:?}");
    assert_eq!(count(&stats, "filtered:non_finite"), 1, "{stats:?}");
}

/// A hint episode of the sample data, as the pipeline ingests it.
fn sample_hint_episode() -> hindsight::episode::Episode {
    let r = crate::common::run(&[&crate::common::sample("hints.jsonl")], None);
    r.episodes.into_iter().next().expect("an episode")
}

fn load(dir: &Path) -> hindsight::model::LoadedModel {
    hindsight::model::load(dir, hindsight::model::ComputeMode::F32, &Device::Cpu).expect("load")
}

/// The prepare step on one candidate with a model of `max_positions`: survivors and counts.
fn prepare_one(
    dir: &Path,
    max_positions: usize,
    episode: &hindsight::episode::Episode,
) -> (usize, hindsight::pipeline::steps::StepCounts) {
    use hindsight::pipeline::steps::prepare::{PrepareStep, Probes};
    use hindsight::pipeline::steps::rollout::Candidate;
    model_dir(dir, &[], |c| {
        c["max_position_embeddings"] = max_positions.into()
    });
    let m = load(dir);
    let mut counts = hindsight::pipeline::steps::StepCounts::default();
    let ready = PrepareStep::new(
        &m,
        Vec::new(),
        Probes {
            feedback: true,
            history: true,
        },
    )
    .apply(
        vec![Candidate {
            episode: episode.clone(),
            sampled: None,
        }],
        &mut counts,
    );
    (ready.len(), counts)
}

#[test]
fn episodes_whose_control_context_or_probe_exceed_the_model_are_dropped_not_kept() {
    use hindsight::pipeline::steps::DropReason;
    use hindsight::score::contexts::{prepare_episode, try_followup_probe};
    let dir = tempfile::tempdir().expect("tempdir");
    model_dir(dir.path(), &[], |_| {});
    let m = load(dir.path());
    // The teacher sees no more than the student here, so the control context (the template
    // with its neutral text) is the longest context; the feedback is long, so the probe (the
    // feedback after the response) is longer still.
    let mut ep = sample_hint_episode();
    ep.teacher_prompt = ep.prompt.clone();
    ep.privileged.text = "Name the capital and say why the other city is wrong. ".repeat(4);
    let tpl = hindsight::template::builtin(&ep.teacher_template).expect("template");
    let p = prepare_episode(&m.tokenizer, &ep, Some(&tpl)).expect("prepare");
    let r = &p.request;
    let completion = r.completion_ids.len();
    let student_teacher = r.prompt_ids.len().max(r.teacher_prompt_ids.len()) + completion;
    let control = r.control_prompt_ids.as_ref().expect("control").len() + completion;
    let response = ep.completion.clone().expect("response");
    let probe = try_followup_probe(&m.tokenizer, &ep, &response, true)
        .expect("probe builds")
        .expect("probe applies");
    let probe_len = probe.after_response.len() + probe.target.len();
    assert!(
        student_teacher < control && control < probe_len,
        "setup: contexts {student_teacher}, control {control}, probe {probe_len}"
    );
    // Room for the student and teacher but not the control context: dropped (the forward
    // pass used to fail, ending the whole run).
    let (kept, counts) = prepare_one(dir.path(), student_teacher, &ep);
    assert_eq!(kept, 0);
    assert_eq!(counts.dropped(DropReason::ExceedsModelContext), 1);
    // Room for every context but not the probe: dropped (it used to be kept with a null
    // relevance, passing the filter unfiltered).
    let (kept, counts) = prepare_one(dir.path(), control, &ep);
    assert_eq!(
        kept, 0,
        "an episode whose probe does not fit is not kept unfiltered"
    );
    assert_eq!(counts.dropped(DropReason::ExceedsModelContext), 1);
    // Room for everything: kept, with its probe.
    let (kept, _) = prepare_one(dir.path(), probe_len, &ep);
    assert_eq!(kept, 1);
}

/// A batch that fails (one request holds an id the model does not have) is scored episode by
/// episode: the bad one is dropped `score_error`, the others are scored.
#[test]
fn a_failing_episode_is_dropped_and_its_batch_still_scores() {
    use hindsight::pipeline::steps::prepare::{PrepareStep, Probes};
    use hindsight::pipeline::steps::rollout::Candidate;
    use hindsight::pipeline::steps::score::{score_batch, ScoreHealth};
    use hindsight::pipeline::steps::{DropReason, StepCounts};
    use hindsight::score::{RelevanceMethod, Scorer, ScorerConfig};
    let m = crate::common::model();
    let r = crate::common::run(&[&crate::common::sample("hints.jsonl")], None);
    let candidates: Vec<Candidate> = r
        .episodes
        .into_iter()
        .take(3)
        .map(|episode| Candidate {
            episode,
            sampled: None,
        })
        .collect();
    let mut counts = StepCounts::default();
    let mut ready = PrepareStep::new(
        m,
        Vec::new(),
        Probes {
            feedback: false,
            history: false,
        },
    )
    .apply(candidates, &mut counts);
    assert_eq!(ready.len(), 3);
    let vocab = m.transformer.config.vocab_size as u32;
    ready[1].prepared.request.completion_ids[0] = vocab + 7;
    let scorer = Scorer::new(
        &m.transformer,
        ScorerConfig {
            relevance: RelevanceMethod::Kl,
            ..ScorerConfig::default()
        },
    );
    let mut health = ScoreHealth::default();
    let scored = score_batch(
        &scorer,
        ready,
        RelevanceMethod::Kl,
        &mut counts,
        &mut health,
    )
    .expect("the run goes on");
    assert_eq!(scored.len(), 2);
    assert_eq!(counts.dropped(DropReason::ScoreError), 1);
    assert_eq!(counts.episodes_scored, 2);
}
