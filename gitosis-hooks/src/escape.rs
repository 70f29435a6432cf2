//! Escaping of untrusted text before it reaches a log line, a terminal or a
//! mail (SECURITY I6).
//!
//! Every error and warning this crate builds may quote bytes that came from
//! an admin-repo push or an SSH client: a section name, a key file name, an
//! option value, a command line. Those strings go to stderr (relayed to the
//! pusher as `remote:` lines), to the node's log and possibly into mail.
//! Quoting them raw would let an attacker forge log lines (`\n`), drive a
//! terminal (`ESC`), or hide text (bidi overrides). So everything outside
//! printable ASCII is rendered as a visible escape, and quoted text is
//! capped so one hostile value cannot flood a log.

/// Default cap, in output characters, for quoted untrusted text.
pub const DEFAULT_CAP: usize = 200;

/// Escapes `s` for safe display and caps it at [`DEFAULT_CAP`] characters.
///
/// Printable ASCII is kept except `\`, which is doubled so the escaping is
/// unambiguous; `\n`, `\r`, `\t`, `\0` get their usual short forms; other
/// ASCII controls become `\xNN`; every non-ASCII character becomes
/// `\u{XXXX}`. The result is pure printable ASCII.
pub fn escape(s: &str) -> String {
    escape_capped(s, DEFAULT_CAP)
}

/// Like [`escape`] with an explicit cap (in output characters). Text cut
/// off is marked with a trailing `...`.
pub fn escape_capped(s: &str, max_chars: usize) -> String {
    let mut out = String::new();
    for c in s.chars() {
        let piece = escape_char(c);
        if out.len() + piece.len() > max_chars {
            out.push_str("...");
            return out;
        }
        out.push_str(&piece);
    }
    out
}

/// Escapes raw bytes (possibly invalid UTF-8): valid UTF-8 runs are
/// escaped as by [`escape_capped`], invalid bytes become `\xNN`.
pub fn escape_bytes(bytes: &[u8], max_chars: usize) -> String {
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            let piece = escape_char(c);
            if out.len() + piece.len() > max_chars {
                out.push_str("...");
                return out;
            }
            out.push_str(&piece);
        }
        for b in chunk.invalid() {
            let piece = format!("\\x{b:02x}");
            if out.len() + piece.len() > max_chars {
                out.push_str("...");
                return out;
            }
            out.push_str(&piece);
        }
    }
    out
}

/// Makes already-built message text safe without double-escaping it:
/// only characters outside printable ASCII are escaped (a `\` stays as
/// it is), then the text is capped. Used by `Display` impls whose fields
/// are public, so a message built elsewhere still cannot smuggle control
/// characters into a log.
pub(crate) fn sanitize(s: &str, max_chars: usize) -> String {
    let mut out = String::new();
    for c in s.chars() {
        let piece = if c == '\\' { "\\".to_string() } else { escape_char(c) };
        if out.len() + piece.len() > max_chars {
            out.push_str("...");
            return out;
        }
        out.push_str(&piece);
    }
    out
}

fn escape_char(c: char) -> String {
    match c {
        '\\' => "\\\\".to_string(),
        '\n' => "\\n".to_string(),
        '\r' => "\\r".to_string(),
        '\t' => "\\t".to_string(),
        '\0' => "\\0".to_string(),
        ' '..='~' => c.to_string(),
        c if c.is_ascii() => format!("\\x{:02x}", c as u32),
        c => format!("\\u{{{:04x}}}", c as u32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_printable_ascii(s: &str) -> bool {
        s.bytes().all(|b| (0x20..0x7f).contains(&b))
    }

    #[test]
    fn escapes_controls_and_non_ascii() {
        let cases = [
            ("plain text", "plain text"),
            ("a\nb", "a\\nb"),
            ("a\r\n", "a\\r\\n"),
            ("tab\there", "tab\\there"),
            ("nul\0", "nul\\0"),
            ("esc\x1b[31m", "esc\\x1b[31m"),
            ("del\x7f", "del\\x7f"),
            ("back\\slash", "back\\\\slash"),
            ("h\u{e9}llo", "h\\u{00e9}llo"),
            ("rtl\u{202e}x", "rtl\\u{202e}x"),
        ];
        for (input, want) in cases {
            let got = escape(input);
            assert_eq!(got, want, "input {input:?}");
            assert!(is_printable_ascii(&got));
        }
    }

    #[test]
    fn caps_length() {
        let long = "x".repeat(1000);
        let got = escape(&long);
        assert!(got.len() <= DEFAULT_CAP + 3);
        assert!(got.ends_with("..."));
        let got = escape_capped(&"\n".repeat(100), 10);
        assert_eq!(got, "\\n\\n\\n\\n\\n...");
    }

    #[test]
    fn bytes_with_invalid_utf8() {
        assert_eq!(escape_bytes(b"ok\xff\xfe!", 100), "ok\\xff\\xfe!");
        assert!(escape_bytes(&[0xff; 500], 50).len() <= 53);
    }

    #[test]
    fn sanitize_is_idempotent_on_escaped_text() {
        let once = escape("bad\nline\\");
        assert_eq!(sanitize(&once, 200), once);
        assert_eq!(sanitize("x\ny", 200), "x\\ny");
    }
}
