//! Small helpers shared across stages.

use sha2::{Digest, Sha256};

/// Hex sha256 of a byte string.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Characters that must never reach a terminal as they are: control characters (escape
/// sequences move the cursor, restyle or retitle the terminal) and the invisible / bidirectional
/// formatting marks that make displayed text differ from the data (Trojan Source).
pub fn is_terminal_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}'
        )
}

/// `s` with every [`is_terminal_unsafe`] character written as a visible `\u{..}` escape: data
/// shown in tables, heatmaps and headers is inert.
pub fn terminal_safe(s: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if is_terminal_unsafe(c) {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn escape_sequences_and_bidi_overrides_become_visible() {
        let s = super::terminal_safe("a\x1b[2Jb\u{202E}c\u{2066}d\x07é");
        assert_eq!(s, "a\\u{1b}[2Jb\\u{202e}c\\u{2066}d\\u{7}é");
        assert!(!s.chars().any(super::is_terminal_unsafe));
    }
}
