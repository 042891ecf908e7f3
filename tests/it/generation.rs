//! Rollouts with the KV cache agree with the scorer's full forward pass: at temperature 0 every
//! sampled token is the argmax of the student distribution the scorer computes for it; stops are
//! reported honestly; seeds make sampling reproducible.

use crate::common;

use hindsight::episode::Message;
use hindsight::model::generate::{generate, GenerationConfig, GenerationPrompt, StopReason};
use hindsight::score::{ScoreRequest, Scorer, ScorerConfig};

fn prompts() -> Vec<Vec<u32>> {
    let tok = &common::model().tokenizer;
    [
        "What is the capital of France?",
        "Write a haiku about rust (the metal).",
    ]
    .iter()
    .map(|q| {
        let m = vec![Message {
            role: "user".into(),
            content: (*q).into(),
            reasoning: None,
        }];
        tok.encode_chat(&m, true).expect("encode").ids
    })
    .collect()
}

#[test]
fn greedy_tokens_are_the_scorers_argmax_and_stops_are_reported() {
    let m = common::model();
    let eot = m.tokenizer.eot_id();
    let cfg = GenerationConfig {
        max_new_tokens: 24,
        temperature: 0.0,
        ..GenerationConfig::default()
    };
    let prompts = prompts();
    let samples = generate(
        &m.transformer,
        &GenerationPrompt::seeded(&prompts, 0),
        eot,
        &cfg,
    )
    .expect("generate");
    assert_eq!(samples.len(), 2);
    let requests: Vec<ScoreRequest> = samples
        .iter()
        .map(|s| ScoreRequest {
            prompt_ids: prompts[s.prompt_index].clone(),
            teacher_prompt_ids: prompts[s.prompt_index].clone(),
            control_prompt_ids: None,
            completion_ids: s.completion_ids.clone(),
            followup: None,
        })
        .collect();
    let cfg_score = ScorerConfig {
        control: false,
        ..ScorerConfig::default()
    };
    let (scores, _) = Scorer::new(&m.transformer, cfg_score)
        .score(&requests)
        .expect("score");
    for (s, sc) in samples.iter().zip(&scores) {
        let k = sc.k;
        for (t, &id) in s.completion_ids.iter().enumerate() {
            let top = &sc.teacher_topk_logprobs[t * k..(t + 1) * k];
            // The sampled token has the maximal student log-prob at its position.
            assert!(
                (sc.student_logprobs[t] - top[0]).abs() <= 1e-4,
                "t={t}: sampled {id} has {} but the max is {}",
                sc.student_logprobs[t],
                top[0]
            );
        }
        match s.finish_reason {
            StopReason::Stop => assert_eq!(s.completion_ids.last(), Some(&eot)),
            StopReason::Length => {
                assert_eq!(s.completion_ids.len(), 24);
                assert!(!s.completion_ids.contains(&eot));
            }
        }
    }
    // A tight budget ends in `length` with exactly max_new_tokens ids.
    let short = GenerationConfig {
        max_new_tokens: 3,
        ..cfg
    };
    for s in generate(
        &m.transformer,
        &GenerationPrompt::seeded(&prompts, 0),
        eot,
        &short,
    )
    .expect("generate")
    {
        assert_eq!(s.finish_reason, StopReason::Length);
        assert_eq!(s.completion_ids.len(), 3);
    }
}

#[test]
fn seeds_make_sampling_reproducible() {
    let m = common::model();
    let eot = m.tokenizer.eot_id();
    let prompts = prompts();
    let cfg = |seed| GenerationConfig {
        max_new_tokens: 16,
        temperature: 1.0,
        n: 2,
        seed,
        ..GenerationConfig::default()
    };
    let sample = |seed| {
        generate(
            &m.transformer,
            &GenerationPrompt::seeded(&prompts[..1], seed),
            eot,
            &cfg(seed),
        )
        .expect("generate")
    };
    let (a, b, c) = (sample(7), sample(7), sample(8));
    assert_eq!(a.len(), 2);
    assert_eq!(a, b, "same seed, same samples");
    assert_ne!(a, c, "different seed, different samples");
    assert_ne!(
        a[0].completion_ids, a[1].completion_ids,
        "n samples differ from each other"
    );
}

#[test]
fn a_prompts_samples_do_not_depend_on_the_other_prompts_in_its_batch() {
    // The pipeline rolls out a whole scoring batch at once; a demonstration must get the same
    // tokens whether it is generated alone or with others (resume and sharding depend on it).
    let m = common::model();
    let eot = m.tokenizer.eot_id();
    let cfg = GenerationConfig {
        max_new_tokens: 24,
        temperature: 1.0,
        n: 2,
        ..GenerationConfig::default()
    };
    let prompts = prompts();
    let together = GenerationPrompt::seeded(&prompts, 11);
    let both = generate(&m.transformer, &together, eot, &cfg).expect("generate");
    let alone = generate(&m.transformer, &together[1..], eot, &cfg).expect("generate");
    let second: Vec<_> = both
        .iter()
        .filter(|s| s.prompt_index == 1)
        .map(|s| (s.sample_index, s.completion_ids.clone(), s.finish_reason))
        .collect();
    let single: Vec<_> = alone
        .iter()
        .map(|s| (s.sample_index, s.completion_ids.clone(), s.finish_reason))
        .collect();
    assert_eq!(second.len(), 2);
    assert_eq!(second, single);
}
