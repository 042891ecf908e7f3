//! The heatmap in a terminal: each response token on a background coloured by its advantage
//! (green: the teacher likes the token more than the student; red: less), for `inspect`.

use std::fmt::Write;

use super::tokens::TokenView;
use crate::sink::OutputRow;

/// Advantage (nats) at which a colour is fully saturated.
pub const SATURATION_NATS: f32 = 3.0;

/// 24-bit background colour for an advantage: white at 0, green for positive, red for negative.
pub fn advantage_rgb(advantage: f32) -> (u8, u8, u8) {
    let x = (advantage / SATURATION_NATS).clamp(-1.0, 1.0);
    let fade = |v: f32| (255.0 - v * 255.0).round().clamp(0.0, 255.0) as u8;
    if x >= 0.0 {
        (fade(x * 0.75), fade(x * 0.25), fade(x * 0.75))
    } else {
        (fade(-x * 0.25), fade(-x * 0.75), fade(-x * 0.75))
    }
}

/// Makes control characters visible so a token cannot move the cursor or restyle the terminal.
fn visible(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str("↵\n"),
            '\t' => out.push('→'),
            c if crate::util::is_terminal_unsafe(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// The heatmap of one row. With `color`, each token is wrapped in exactly one 24-bit background
/// escape sequence; without, tokens are separated by `|`.
pub fn heatmap(tokens: &[TokenView], color: bool) -> String {
    let mut out = String::new();
    for t in tokens {
        let text = if t.text.is_empty() {
            "·".to_string()
        } else {
            visible(&t.text)
        };
        if color {
            let (r, g, b) = advantage_rgb(t.advantage);
            let _ = write!(out, "\x1b[48;2;{r};{g};{b}m\x1b[38;2;0;0;0m{text}\x1b[0m");
        } else {
            let _ = write!(out, "{text}|");
        }
    }
    out
}

/// A per-token table: position, text, student and teacher log-probs, advantage, and the teacher's
/// top alternatives with probabilities.
pub fn token_table(tokens: &[TokenView]) -> String {
    let mut out = String::from(
        "  pos  token                 student  teacher      adv  teacher top alternatives\n",
    );
    for (i, t) in tokens.iter().enumerate() {
        let text: String = visible(&t.text).replace('\n', "");
        let text: String = format!("{text:?}").chars().take(20).collect();
        let alts = t
            .alternatives
            .iter()
            .map(|(s, lp)| format!("{:?} {:.2}", s, lp.exp()))
            .collect::<Vec<_>>()
            .join("  ");
        let _ = writeln!(
            out,
            "{i:>5}  {text:<20}  {:>7.3}  {:>7.3}  {:>7.3}  {alts}",
            t.student, t.teacher, t.advantage
        );
    }
    out
}

/// Header lines describing a row.
pub fn row_header(row: &OutputRow) -> String {
    let last_user = crate::episode::last_user(&row.prompt);
    let clip = |s: &str, n: usize| {
        let mut c: String = s.chars().take(n).collect();
        if s.chars().count() > n {
            c.push('…');
        }
        visible(&c)
    };
    let mean_adv = if row.advantages.is_empty() {
        0.0
    } else {
        row.advantages.iter().sum::<f32>() / row.advantages.len() as f32
    };
    format!(
        "sample {}  ({} from {}#{}, template {})\nrelevance {}  relevance_kl {:.4}  tokens {}  mean advantage {:.3}\nuser: {}\nprivileged: {}\n",
        visible(&row.sample_id),
        row.source_kind,
        visible(&row.source_uri),
        row.source_record,
        visible(&row.teacher_template),
        row.relevance
            .map_or_else(|| "null (method does not apply)".into(), |r| format!("{r:.4}")),
        row.relevance_kl,
        row.num_completion_tokens,
        mean_adv,
        clip(last_user, 300),
        clip(&row.privileged_context, 300),
    )
}

/// The colour legend.
pub fn legend(color: bool) -> String {
    if !color {
        return format!("tokens separated by '|'; advantage = log p_teacher - log p_student (saturates at ±{SATURATION_NATS} nats)\n");
    }
    let mut out = String::from("legend: ");
    for a in [-3.0f32, -1.5, 0.0, 1.5, 3.0] {
        let (r, g, b) = advantage_rgb(a);
        let _ = write!(
            out,
            "\x1b[48;2;{r};{g};{b}m\x1b[38;2;0;0;0m {a:+.1} \x1b[0m"
        );
    }
    out.push_str(" nats (teacher − student)\n");
    out
}
