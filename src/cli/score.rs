//! `hindsight score`: JSONL of {prompt, privileged_context, teacher_template, completion} in,
//! JSONL of token ids and per-token scores out. The building block the pipeline runs at scale,
//! and a quick way to look at what the teacher thinks of one response.

use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use serde::{Deserialize, Serialize};

use super::ModelArgs;
use crate::episode::{Message, PrivilegedContext};
use crate::score::contexts::{prepare, Prepared, Response};
use crate::score::{EpisodeScores, RelevanceMethod, Scorer, ScorerConfig};
use crate::template;

/// Arguments of `hindsight score`.
#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// Input JSONL ("-" for stdin).
    #[arg(long, short)]
    pub input: PathBuf,
    /// Output JSONL ("-" for stdout).
    #[arg(long, short, default_value = "-")]
    pub output: PathBuf,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Teacher top-k size.
    #[arg(long, default_value_t = 20)]
    pub top_k: usize,
    /// Student top-k size K_s of the student-side values (0 = off).
    #[arg(long, default_value_t = 0)]
    pub student_top_k: usize,
    /// Max tokens per packed forward batch.
    #[arg(long, default_value_t = 4096)]
    pub token_budget: usize,
    /// Score student and teacher contexts separately (slower; for comparison).
    #[arg(long)]
    pub no_prefix_sharing: bool,
    /// Relevance score written to `relevance`: control_kl (default) or kl.
    #[arg(long, default_value = "control_kl", value_parser = parse_relevance)]
    pub relevance: RelevanceMethod,
    /// Response tokens, from the first, the control context is scored on
    /// (`control_kl_topk_tail` and `relevance_control_kl`); 0: the whole response.
    #[arg(long, default_value_t = crate::score::DEFAULT_CONTROL_TOKENS)]
    pub control_tokens: usize,
    /// Lines scored per batch (bounds memory; output order always follows input order).
    #[arg(long, default_value_t = 64)]
    pub chunk: usize,
    /// Exit non-zero if any input line was rejected.
    #[arg(long)]
    pub strict: bool,
    /// Chat template variables as a JSON object, e.g. '{"enable_thinking": false}' (what
    /// transformers' `apply_chat_template(**kwargs)` takes).
    #[arg(long, value_parser = parse_template_vars)]
    pub chat_template_kwargs: Option<TemplateVars>,
}

/// Chat template variables (`--chat-template-kwargs`).
pub type TemplateVars = std::collections::BTreeMap<String, serde_json::Value>;

fn parse_template_vars(s: &str) -> Result<TemplateVars, String> {
    serde_json::from_str(s)
        .map_err(|e| format!("--chat-template-kwargs must be a JSON object: {e}"))
}

/// `score` lines carry no follow-up to probe, so only the KL methods apply here.
fn parse_relevance(s: &str) -> Result<RelevanceMethod, String> {
    RelevanceMethod::parse(s)
        .filter(|m| !m.needs_followup())
        .ok_or_else(|| {
            format!(
                "relevance method '{s}' is not available in `score` (kl, control_kl; the pmi \
                 methods need a follow-up turn: use `run`)"
            )
        })
}

/// One input line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreInput {
    #[serde(default)]
    pub id: Option<String>,
    pub prompt: Vec<Message>,
    #[serde(default)]
    pub privileged_context: String,
    /// A successful peer attempt (SDPO `sdpo_reprompt_v1`).
    #[serde(default)]
    pub solution: Option<String>,
    pub teacher_template: String,
    /// Explicit teacher messages, instead of applying the template.
    #[serde(default)]
    pub teacher_prompt: Option<Vec<Message>>,
    pub completion: String,
    /// The response's reasoning, logged apart from `completion` (rendered where the chat
    /// template has a slot for it).
    #[serde(default, alias = "reasoning")]
    pub reasoning_content: Option<String>,
    #[serde(default = "yes")]
    pub ends_turn: bool,
}

fn yes() -> bool {
    true
}

/// One output line.
#[derive(Debug, Serialize)]
pub struct ScoreOutput<'a> {
    pub id: Option<&'a str>,
    pub line: usize,
    pub teacher_template: &'a str,
    pub rendered_prompt: &'a str,
    pub rendered_teacher_prompt: &'a str,
    pub prompt_ids: &'a [u32],
    pub teacher_prompt_ids: &'a [u32],
    pub completion_ids: &'a [u32],
    /// Null only where the method lacks its input (`control_kl` without a control context).
    pub relevance: Option<f32>,
    #[serde(flatten)]
    pub scores: &'a EpisodeScores,
}

struct Pending {
    line: usize,
    input: ScoreInput,
    prepared: Prepared,
}

/// Runs the command.
pub fn run(a: ScoreArgs) -> anyhow::Result<ExitCode> {
    let reader: Box<dyn BufRead> = if a.input.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let f = std::fs::File::open(&a.input)
            .with_context(|| format!("opening input {}", a.input.display()))?;
        Box::new(std::io::BufReader::new(f))
    };
    let writer: Box<dyn Write> = if a.output.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        let f = std::fs::File::create(&a.output)
            .with_context(|| format!("creating output {}", a.output.display()))?;
        Box::new(f)
    };
    let mut out = BufWriter::new(writer);
    // Inputs and outputs are opened first so a typo fails before the model loads.
    let mut m = a.model.load()?;
    if let Some(vars) = a.chat_template_kwargs.clone() {
        m.tokenizer.set_template_vars(vars)?;
    }
    let cfg = ScorerConfig {
        top_k: a.top_k,
        student_top_k: a.student_top_k,
        token_budget: a.token_budget,
        prefix_sharing: !a.no_prefix_sharing,
        relevance: a.relevance,
        control_tokens: a.control_tokens,
        ..ScorerConfig::default()
    };
    let scorer = Scorer::new(&m.transformer, cfg);
    let (mut ok, mut rejected) = (0usize, 0usize);
    let mut pending: Vec<Pending> = Vec::new();
    let flush = |pending: &mut Vec<Pending>,
                 out: &mut BufWriter<Box<dyn Write>>|
     -> anyhow::Result<usize> {
        if pending.is_empty() {
            return Ok(0);
        }
        let requests: Vec<_> = pending.iter().map(|p| p.prepared.request.clone()).collect();
        let (scores, _) = scorer.score(&requests)?;
        let mut non_finite = 0;
        for (p, s) in pending.iter().zip(&scores) {
            if !s.all_finite() {
                tracing::warn!(line = p.line, "rejected: a score is NaN or infinite");
                non_finite += 1;
                continue;
            }
            let row = ScoreOutput {
                id: p.input.id.as_deref(),
                line: p.line,
                teacher_template: &p.input.teacher_template,
                rendered_prompt: &p.prepared.rendered_prompt,
                rendered_teacher_prompt: &p.prepared.rendered_teacher_prompt,
                prompt_ids: &p.prepared.request.prompt_ids,
                teacher_prompt_ids: &p.prepared.request.teacher_prompt_ids,
                completion_ids: &p.prepared.request.completion_ids,
                relevance: s.relevance(a.relevance),
                scores: s,
            };
            serde_json::to_writer(&mut *out, &row)?;
            out.write_all(b"\n")?;
        }
        pending.clear();
        Ok(non_finite)
    };
    for (i, line) in reader.lines().enumerate() {
        let lineno = i + 1;
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(line = lineno, "unreadable line: {e}");
                rejected += 1;
                continue;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(&line, &m.tokenizer) {
            Ok((input, prepared)) => {
                pending.push(Pending {
                    line: lineno,
                    input,
                    prepared,
                });
                ok += 1;
            }
            Err(e) => {
                tracing::warn!(line = lineno, "rejected: {e:#}");
                rejected += 1;
            }
        }
        if pending.len() >= a.chunk.max(1) {
            let n = flush(&mut pending, &mut out)?;
            rejected += n;
            ok -= n;
        }
    }
    let n = flush(&mut pending, &mut out)?;
    rejected += n;
    ok -= n;
    out.flush()?;
    tracing::info!(scored = ok, rejected, "done");
    if a.strict && rejected > 0 {
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_line(
    line: &str,
    tok: &crate::tokenize::Tokenizer,
) -> anyhow::Result<(ScoreInput, Prepared)> {
    let input: ScoreInput = serde_json::from_str(line).context("invalid JSON for a score input")?;
    if input.completion.is_empty() && !input.ends_turn {
        anyhow::bail!("empty completion");
    }
    let tpl = template::builtin(&input.teacher_template).with_context(|| {
        format!(
            "unknown teacher_template '{}' (built-ins: {})",
            input.teacher_template,
            template::BUILTIN_IDS.join(", ")
        )
    })?;
    let privileged = PrivilegedContext {
        text: input.privileged_context.clone(),
        solution: input.solution.clone(),
    };
    let teacher = match &input.teacher_prompt {
        Some(t) => t.clone(),
        None => tpl.apply(&input.prompt, &privileged)?,
    };
    let control = tpl.apply_control(&input.prompt)?;
    let message = Message {
        role: "assistant".into(),
        content: input.completion.as_str().into(),
        reasoning: input.reasoning_content.as_deref().map(Into::into),
    };
    let prepared = prepare(
        tok,
        &input.prompt,
        &teacher,
        Some(&control),
        Response::Logged {
            message: &message,
            ends_turn: input.ends_turn,
        },
    )?;
    Ok((input, prepared))
}
