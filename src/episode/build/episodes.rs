//! Building episodes from parsed records: the chat-log rule (one episode per assistant turn
//! answered by a user turn), provenance, and truncation of privileged text.

use super::*;

impl EpisodeBuilder {
    pub(super) fn strip_think(&self, text: String) -> String {
        match &self.think {
            Some(re) => re.replace_all(&text, "").into_owned(),
            None => text,
        }
    }

    pub(super) fn prov(
        &self,
        meta: &RecordMeta,
        id: Option<String>,
        turn_index: usize,
        time: Option<i64>,
    ) -> Provenance {
        Provenance {
            source_uri: meta.source_uri.clone(),
            source_record: meta.record_index,
            conversation_id: id,
            turn_index: i32::try_from(turn_index).unwrap_or(i32::MAX),
            event_time_us: time,
        }
    }

    pub(super) fn truncate(&self, text: String, flags: &mut Vec<String>) -> String {
        let max = self.cfg.privileged_max_chars;
        if max > 0 && text.len() > max && text.chars().count() > max {
            if !flags.iter().any(|f| f == "privileged_truncated") {
                flags.push("privileged_truncated".into());
            }
            truncate_middle(&text, max)
        } else {
            text
        }
    }

    /// Assembles one episode: truncates privileged text, applies the template.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn episode(
        &self,
        meta: &RecordMeta,
        kind: SourceKind,
        format: SourceFormat,
        provenance: Provenance,
        prompt: Vec<Message>,
        privileged_text: String,
        solution: Option<String>,
        completion: Option<String>,
        is_on_policy: bool,
        mut flags: Vec<String>,
    ) -> Result<Episode, Rejection> {
        if prompt.last().map(|m| m.role.as_str()) != Some("user") {
            return Err(meta.quarantine(
                QuarantineReason::SchemaMismatch,
                "$.prompt: the prompt must end with a user message".into(),
                serde_json::to_string(&prompt)
                    .unwrap_or_default()
                    .as_bytes(),
            ));
        }
        let text = self.truncate(privileged_text, &mut flags);
        let solution = solution.map(|s| self.truncate(s, &mut flags));
        let privileged = PrivilegedContext { text, solution };
        let template = self.template_for(kind);
        let teacher_prompt = template
            .apply(&prompt, &privileged)
            .map_err(|e| meta.quarantine(QuarantineReason::SchemaMismatch, e.to_string(), b""))?;
        let method = if template.id == "opsd_v1" {
            Method::Opsd
        } else {
            kind.default_method()
        };
        Ok(Episode {
            source_kind: kind,
            source_format: format,
            method,
            provenance,
            prompt,
            privileged,
            teacher_template: template.id.clone(),
            teacher_prompt,
            completion,
            reasoning: None,
            finish_reason: FinishReason::Stop,
            is_on_policy,
            flags,
        })
    }

    pub(super) fn chat_episodes(
        &mut self,
        meta: &RecordMeta,
        format: SourceFormat,
        mut chat: ChatLog,
        record: &RawRecord,
    ) -> Result<Vec<Episode>, Rejection> {
        let pf = &self.cfg.prefilter;
        if chat.turns.is_empty() {
            return Err(Rejection::Filtered(RecordFilter::EmptyConversation));
        }
        if pf.drop_toxic && chat.toxic {
            return Err(Rejection::Filtered(RecordFilter::Toxic));
        }
        if pf.drop_redacted && chat.redacted {
            return Err(Rejection::Filtered(RecordFilter::Redacted));
        }
        if !pf.models.is_empty() && !chat.model.as_ref().is_some_and(|m| pf.models.contains(m)) {
            return Err(Rejection::Filtered(RecordFilter::Model));
        }
        let time = chat
            .time_us
            .or_else(|| chat.turns.iter().rev().find_map(|t| t.time_us));
        if let Some(t) = time {
            if self.time_from.is_some_and(|f| t < f) || self.time_to.is_some_and(|to| t >= to) {
                return Err(Rejection::Filtered(RecordFilter::TimeWindow));
            }
        }
        let raw = || serde_json::to_vec(&record.value).unwrap_or_default();
        let mut flags = Vec::new();
        let turns = normalize_turns(
            std::mem::take(&mut chat.turns),
            self.cfg.non_alternating,
            self.cfg.leading_assistant,
            &mut flags,
        )
        .map_err(|(reason, detail)| meta.quarantine(reason, detail, &raw()))?;
        let mut turns = turns;
        for t in turns.iter_mut() {
            self.scrub(&mut t.content);
            if let Some(r) = t.reasoning.as_mut() {
                self.scrub(r);
            }
        }
        let messages: Vec<Message> = turns
            .iter()
            .map(|t| Message {
                role: t.role.clone(),
                content: t.content.as_str().into(),
                reasoning: t.reasoning.as_deref().map(Into::into),
            })
            .collect();
        let flag_ack = self.cfg.prefilter.flag_ack_only;
        let on_policy = self.cfg.logged_responses_on_policy;
        let mut out = Vec::new();
        for i in 1..turns.len().saturating_sub(1) {
            let (prev, cur, next) = (&turns[i - 1], &turns[i], &turns[i + 1]);
            if cur.role != "assistant" || prev.role != "user" || next.role != "user" {
                continue;
            }
            let mut ep_flags = flags.clone();
            if flag_ack && is_ack_only(&next.content) {
                ep_flags.push("ack_only_followup".into());
            }
            if cur.stopped_by_length {
                ep_flags.push("stopped_by_length".into());
            }
            let prov = self.prov(
                meta,
                chat.conversation_id.clone(),
                cur.orig_index,
                cur.time_us,
            );
            let mut ep = self.episode(
                meta,
                SourceKind::ChatLog,
                format,
                prov,
                messages[..i].to_vec(),
                next.content.clone(),
                None,
                Some(cur.content.clone()),
                on_policy,
                ep_flags,
            )?;
            ep.reasoning = cur.reasoning.clone();
            ep.finish_reason = if cur.stopped_by_length {
                FinishReason::Length
            } else {
                FinishReason::Stop
            };
            out.push(ep);
        }
        if out.is_empty() {
            return Err(Rejection::Filtered(RecordFilter::NoEpisode));
        }
        Ok(out)
    }
}
