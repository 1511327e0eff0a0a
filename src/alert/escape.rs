//! Lossless, unambiguous text for attacker-controlled bytes.

use std::borrow::Cow;
use std::fmt::Write;

/// Bytes as a JSON-safe string. Valid UTF-8 comes through unchanged (JSON
/// serialisation escapes its control characters). Otherwise each byte that is
/// not part of a valid UTF-8 sequence becomes `\xNN` and each backslash
/// becomes `\\`, so the original bytes can be recovered.
pub fn escape_bytes(bytes: &[u8]) -> Cow<'_, str> {
    if let Ok(s) = std::str::from_utf8(bytes) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(bytes.len() + 16);
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push_str("\\\\");
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    Cow::Owned(out)
}

/// Bytes made safe to print on a terminal: control characters (C0, DEL, C1,
/// including ESC, CR and LF) and invalid UTF-8 become `\xNN`, backslashes
/// `\\`. One value can never start a new line or move the cursor.
pub fn escape_for_terminal(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                c if c.is_control() => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        let _ = write!(out, "\\x{b:02x}");
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_utf8_is_untouched() {
        assert_eq!(escape_bytes(b"/proc/1/maps"), "/proc/1/maps");
        assert_eq!(escape_bytes("a\\b\né".as_bytes()), "a\\b\né");
    }

    #[test]
    fn invalid_utf8_is_escaped_losslessly() {
        assert_eq!(escape_bytes(b"a\xffb\\c"), "a\\xffb\\\\c");
    }

    #[test]
    fn terminal_escaping_neutralises_control_bytes() {
        assert_eq!(
            escape_for_terminal(b"a\nb\x1b[31m\rc\x7f"),
            "a\\x0ab\\x1b[31m\\x0dc\\x7f"
        );
        assert_eq!(escape_for_terminal("\u{9b}".as_bytes()), "\\xc2\\x9b");
        assert_eq!(escape_for_terminal(b"x\xfe"), "x\\xfe");
    }
}
