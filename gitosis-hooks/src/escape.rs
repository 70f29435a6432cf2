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
//!
//! The escaped form is Ferry's one form ([`ferry_text`]): this module only
//! keeps the names this crate's callers use.

/// Default cap, in output characters, for quoted untrusted text.
pub const DEFAULT_CAP: usize = ferry_text::EXCERPT_CHARS;

/// Escapes `s` for safe display and caps it at [`DEFAULT_CAP`] characters
/// ([`ferry_text::escape`]: printable ASCII kept except `\`, which is
/// doubled; `\n`, `\r`, `\t`; other controls `\xNN`; every non-ASCII
/// character `\u{XXXX}`; cut text marked `...[+N bytes]`).
pub fn escape(s: &str) -> String {
    escape_capped(s, DEFAULT_CAP)
}

/// Like [`escape`] with an explicit cap (in output characters).
pub fn escape_capped(s: &str, max_chars: usize) -> String {
    ferry_text::escape(s, max_chars)
}

/// Escapes raw bytes (possibly invalid UTF-8; invalid bytes become `\xNN`).
pub fn escape_bytes(bytes: &[u8], max_chars: usize) -> String {
    ferry_text::escape_bytes(bytes, max_chars)
}

/// Makes already-built message text safe without double-escaping it
/// ([`ferry_text::sanitize`]). Used by `Display` impls whose fields are
/// public, so a message built elsewhere still cannot smuggle control
/// characters into a log.
pub(crate) fn sanitize(s: &str, max_chars: usize) -> String {
    ferry_text::sanitize(s, max_chars)
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
            ("nul\0", "nul\\x00"),
            ("esc\x1b[31m", "esc\\x1B[31m"),
            ("del\x7f", "del\\x7F"),
            ("back\\slash", "back\\\\slash"),
            ("h\u{e9}llo", "h\\u{00E9}llo"),
            ("rtl\u{202e}x", "rtl\\u{202E}x"),
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
        assert!(got.len() <= DEFAULT_CAP + 20);
        assert!(got.ends_with("...[+800 bytes]"));
        let got = escape_capped(&"\n".repeat(100), 10);
        assert_eq!(got, "\\n\\n\\n\\n\\n...[+95 bytes]");
    }

    #[test]
    fn bytes_with_invalid_utf8() {
        assert_eq!(escape_bytes(b"ok\xff\xfe!", 100), "ok\\xFF\\xFE!");
        assert!(escape_bytes(&[0xff; 500], 50).len() <= 70);
    }

    #[test]
    fn sanitize_is_idempotent_on_escaped_text() {
        let once = escape("bad\nline\\");
        assert_eq!(sanitize(&once, 200), once);
        assert_eq!(sanitize("x\ny", 200), "x\\ny");
    }
}
