//! The contract's columns as data: one row per column, with its values, domain, shape and storage (docs/CONTRACT.md).

use super::*;

pub(super) const fn col(name: &'static str, values: Values) -> Column {
    Column {
        name,
        nullable: false,
        values,
        storage: Storage::Default,
        allowed: None,
        width: Width::Teacher,
        compact: Compact::Same,
        domain: Domain::Any,
        per_token: false,
    }
}

pub(super) const fn domain(mut c: Column, d: Domain) -> Column {
    c.domain = d;
    c
}

pub(super) const fn per_token(mut c: Column) -> Column {
    c.per_token = true;
    c
}

pub(super) const fn student(mut c: Column) -> Column {
    c.width = Width::Student;
    c
}

pub(super) const fn compact(mut c: Column, how: Compact) -> Column {
    c.compact = how;
    c
}

pub(super) const fn nullable(mut c: Column) -> Column {
    c.nullable = true;
    c
}

pub(super) const fn stored(mut c: Column, storage: Storage) -> Column {
    c.storage = storage;
    c
}

pub(super) const fn allowed(mut c: Column, values: &'static [&'static str]) -> Column {
    c.allowed = Some(values);
    c
}

use Storage::{ByteStreamSplit, Plain, Statistics};
use TextKind::{Dictionary, Large, Utf8};

/// The contract columns of schema version 2, in the order shards store them.
pub static CONTRACT: [Column; 40] = [
    col(
        "schema_version",
        Values::U16(|r| r.schema_version, |r, v| r.schema_version = v),
    ),
    col(
        "sample_id",
        Values::Text(Utf8, |r| &r.sample_id, |r, v| r.sample_id = v),
    ),
    allowed(
        col(
            "source_kind",
            Values::Text(Dictionary, |r| &r.source_kind, |r, v| r.source_kind = v),
        ),
        &["chat_log", "demonstration", "unit_test", "hint"],
    ),
    allowed(
        col(
            "source_format",
            Values::Text(Dictionary, |r| &r.source_format, |r, v| r.source_format = v),
        ),
        &[
            "wildchat",
            "sharegpt",
            "openai",
            "demonstration",
            "unit_test",
            "hint",
        ],
    ),
    col(
        "source_uri",
        Values::Text(Utf8, |r| &r.source_uri, |r, v| r.source_uri = v),
    ),
    stored(
        col(
            "source_record",
            Values::I64(|r| r.source_record, |r, v| r.source_record = v),
        ),
        Statistics,
    ),
    nullable(col(
        "conversation_id",
        Values::OptText(
            |r| r.conversation_id.as_deref(),
            |r, v| r.conversation_id = v,
        ),
    )),
    stored(
        col(
            "turn_index",
            Values::I32(|r| r.turn_index, |r, v| r.turn_index = v),
        ),
        Statistics,
    ),
    stored(
        nullable(col(
            "event_time",
            Values::OptTimestamp(|r| r.event_time, |r, v| r.event_time = v),
        )),
        Statistics,
    ),
    allowed(
        col(
            "method",
            Values::Text(Dictionary, |r| &r.method, |r, v| r.method = v),
        ),
        &["sdft", "sdpo", "opsd", "opd", "hindsight"],
    ),
    col(
        "prompt",
        Values::Messages(|r| &r.prompt, |r, v| r.prompt = v),
    ),
    col(
        "privileged_context",
        Values::Text(
            Large,
            |r| &r.privileged_context,
            |r, v| r.privileged_context = v,
        ),
    ),
    col(
        "teacher_template",
        Values::Text(Utf8, |r| &r.teacher_template, |r, v| r.teacher_template = v),
    ),
    col(
        "teacher_prompt",
        Values::Messages(|r| &r.teacher_prompt, |r, v| r.teacher_prompt = v),
    ),
    col(
        "completion",
        Values::Text(Large, |r| &r.completion, |r, v| r.completion = v),
    ),
    domain(
        col(
            "prompt_ids",
            Values::I32List(|r| &r.prompt_ids, |r, v| r.prompt_ids = v),
        ),
        Domain::TokenId,
    ),
    domain(
        col(
            "teacher_prompt_ids",
            Values::I32List(|r| &r.teacher_prompt_ids, |r, v| r.teacher_prompt_ids = v),
        ),
        Domain::TokenId,
    ),
    domain(
        col(
            "completion_ids",
            Values::I32List(|r| &r.completion_ids, |r, v| r.completion_ids = v),
        ),
        Domain::TokenId,
    ),
    per_token(domain(
        col(
            "loss_mask",
            Values::U8List(|r| &r.loss_mask, |r, v| r.loss_mask = v),
        ),
        Domain::Mask,
    )),
    allowed(
        col(
            "finish_reason",
            Values::Text(Dictionary, |r| &r.finish_reason, |r, v| r.finish_reason = v),
        ),
        &["stop", "length", "unknown"],
    ),
    col(
        "is_on_policy",
        Values::Bool(|r| r.is_on_policy, |r, v| r.is_on_policy = v),
    ),
    per_token(domain(
        stored(
            col(
                "student_logprobs",
                Values::F32List(|r| &r.student_logprobs, |r, v| r.student_logprobs = v),
            ),
            ByteStreamSplit,
        ),
        Domain::LogProb,
    )),
    per_token(domain(
        stored(
            col(
                "teacher_logprobs",
                Values::F32List(|r| &r.teacher_logprobs, |r, v| r.teacher_logprobs = v),
            ),
            ByteStreamSplit,
        ),
        Domain::LogProb,
    )),
    per_token(stored(
        col(
            "advantages",
            Values::F32List(|r| &r.advantages, |r, v| r.advantages = v),
        ),
        ByteStreamSplit,
    )),
    domain(
        compact(
            stored(
                col(
                    "teacher_topk_ids",
                    Values::TopKI32(|r| &r.teacher_topk_ids, |r, v| r.teacher_topk_ids = v),
                ),
                Plain,
            ),
            Compact::Ids,
        ),
        Domain::TokenId,
    ),
    domain(
        compact(
            stored(
                col(
                    "teacher_topk_logprobs",
                    Values::TopKF32(
                        |r| &r.teacher_topk_logprobs,
                        |r, v| r.teacher_topk_logprobs = v,
                    ),
                ),
                ByteStreamSplit,
            ),
            Compact::SortedCodes,
        ),
        Domain::LogProb,
    ),
    per_token(domain(
        stored(
            col(
                "teacher_tail_logmass",
                Values::F32List(
                    |r| &r.teacher_tail_logmass,
                    |r, v| r.teacher_tail_logmass = v,
                ),
            ),
            ByteStreamSplit,
        ),
        Domain::LogProb,
    )),
    domain(
        compact(
            stored(
                nullable(col(
                    "student_topk_logprobs",
                    Values::OptTopKF32(
                        |r| r.student_topk_logprobs.as_deref(),
                        |r, v| r.student_topk_logprobs = v,
                    ),
                )),
                ByteStreamSplit,
            ),
            Compact::Omitted,
        ),
        Domain::LogProb,
    ),
    domain(
        compact(
            student(stored(
                nullable(col(
                    "student_topk_ids",
                    Values::OptTopKI32(
                        |r| r.student_topk_ids.as_deref(),
                        |r, v| r.student_topk_ids = v,
                    ),
                )),
                Plain,
            )),
            Compact::Ids,
        ),
        Domain::TokenId,
    ),
    domain(
        compact(
            student(stored(
                nullable(col(
                    "student_topk_logprobs_self",
                    Values::OptTopKF32(
                        |r| r.student_topk_logprobs_self.as_deref(),
                        |r, v| r.student_topk_logprobs_self = v,
                    ),
                )),
                ByteStreamSplit,
            )),
            Compact::Omitted,
        ),
        Domain::LogProb,
    ),
    domain(
        compact(
            student(stored(
                nullable(col(
                    "teacher_logprobs_at_student_topk",
                    Values::OptTopKF32(
                        |r| r.teacher_logprobs_at_student_topk.as_deref(),
                        |r, v| r.teacher_logprobs_at_student_topk = v,
                    ),
                )),
                ByteStreamSplit,
            )),
            Compact::Codes,
        ),
        Domain::LogProb,
    ),
    per_token(domain(
        stored(
            col(
                "teacher_logz",
                Values::F32List(|r| &r.teacher_logz, |r, v| r.teacher_logz = v),
            ),
            ByteStreamSplit,
        ),
        Domain::LogNormaliser,
    )),
    per_token(domain(
        stored(
            col(
                "student_logz",
                Values::F32List(|r| &r.student_logz, |r, v| r.student_logz = v),
            ),
            ByteStreamSplit,
        ),
        Domain::LogNormaliser,
    )),
    stored(
        col(
            "num_completion_tokens",
            Values::I32(
                |r| r.num_completion_tokens,
                |r, v| r.num_completion_tokens = v,
            ),
        ),
        Statistics,
    ),
    domain(
        stored(
            col(
                "relevance_kl",
                Values::F32(|r| r.relevance_kl, |r, v| r.relevance_kl = v),
            ),
            Statistics,
        ),
        Domain::Finite,
    ),
    domain(
        stored(
            nullable(col(
                "relevance",
                Values::OptF32(|r| r.relevance, |r, v| r.relevance = v),
            )),
            Statistics,
        ),
        Domain::Finite,
    ),
    domain(
        stored(
            nullable(col(
                "relevance_control_kl",
                Values::OptF32(
                    |r| r.relevance_control_kl,
                    |r, v| r.relevance_control_kl = v,
                ),
            )),
            Statistics,
        ),
        Domain::Finite,
    ),
    domain(
        stored(
            nullable(col(
                "relevance_pmi",
                Values::OptF32(|r| r.relevance_pmi, |r, v| r.relevance_pmi = v),
            )),
            Statistics,
        ),
        Domain::Finite,
    ),
    domain(
        stored(
            nullable(col(
                "relevance_pmi_mean",
                Values::OptF32(|r| r.relevance_pmi_mean, |r, v| r.relevance_pmi_mean = v),
            )),
            Statistics,
        ),
        Domain::Finite,
    ),
    domain(
        stored(
            nullable(col(
                "relevance_pmi_answer",
                Values::OptF32(
                    |r| r.relevance_pmi_answer,
                    |r, v| r.relevance_pmi_answer = v,
                ),
            )),
            Statistics,
        ),
        Domain::Finite,
    ),
];
