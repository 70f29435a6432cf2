//! Escaping of untrusted text at every sink (SECURITY.md invariant I6,
//! classes NL-01..NL-11, rule C11).
//!
//! Every string that a client could influence — a request line, a file name,
//! a remote's stderr, a ref name — is treated as bytes of unknown meaning.
//! Before it reaches a log line, a terminal, a mail body or a web page it goes
//! through one of the functions here, so that it can neither forge a second
//! log line (`\n`), drive a terminal (ESC, C1 CSI `U+009B`, OSC 52 clipboard
//! writes), reorder what an administrator reads (bidi overrides, zero-width
//! characters) nor inject markup.
//!
//! The one rule behind [`escape_bytes`]: **the output is printable ASCII on a
//! single line**, and every byte of the input that is not plainly printable
//! ASCII is shown as an escape that names it. Nothing is dropped silently and
//! nothing is "repaired", so what an administrator reads is an unambiguous
//! rendering of what the client sent. Output is capped so one hostile field
//! cannot flood a log or a mail.
//!
//! ```
//! use ferry_text::{Untrusted, escape};
//!
//! // A forged second log line and a bidi override both stay visible.
//! assert_eq!(escape("ok\u{202E}deliaf\nINFO forged", 200), r"ok\u{202E}deliaf\nINFO forged");
//! assert_eq!(format!("name={}", Untrusted(b"\x1b]52;c;eA==\x07")), r"name=\x1B]52;c;eA==\x07");
//! ```
//!
//! # Exactly once
//!
//! Untrusted bytes are escaped **once**, with [`escape_bytes`] (or
//! [`Untrusted`]), at the point where they are put into a message — a
//! reason, a journal detail, an error. From then on the message is plain
//! printable ASCII and is never escaped again: every sink (terminal output,
//! JSON output, the journal, `tracing` logs, mail bodies) passes text through
//! [`sanitize`], which leaves printable ASCII — backslashes included — as it
//! is and escapes only what is not printable ASCII. So a message built
//! correctly reaches every sink unchanged, and a raw string that reached a
//! sink by mistake is still shown escaped, once.
//!
//! JSON output carries these same escaped strings, serialised by serde and
//! then made pure ASCII by [`ascii_json`]: a JSON reader decodes exactly the
//! text the human output shows (the `\\` of the raw JSON bytes is JSON's own
//! quoting of one backslash). One escaped form, everywhere.
//!
//! This crate has no dependencies on purpose: it sits under every other Ferry
//! crate and must be easy to audit in one sitting.

#![forbid(unsafe_code)]

pub mod stdout;

use std::fmt;

/// How many characters of an untrusted excerpt are shown by default
/// (SECURITY.md C2: "an escaped ≤ 200-char excerpt").
pub const EXCERPT_CHARS: usize = 200;

/// Width of a quoted mail line, prefix included; 72 columns is what
/// plain-text mail readers wrap at, so our own wrapping is never re-wrapped.
const MAIL_WIDTH: usize = 72;

/// The prefix that marks every line of untrusted text in a mail body. It also
/// keeps a line from ever starting with `.` (SMTP dot-stuffing) or `From `
/// (mbox quoting), so quoted text cannot end or split the message.
const MAIL_PREFIX: &str = "| ";

/// One decoded unit of input: either a whole valid UTF-8 character or a single
/// byte that is not part of one.
#[derive(Clone, Copy)]
enum Unit {
    Char(char),
    Byte(u8),
}

/// Walks `b` unit by unit without ever indexing out of bounds, so hostile
/// input (truncated sequences, overlong forms, surrogates) cannot panic.
///
/// Decoding is lazy: callers that stop early (because the output cap is
/// reached) never look at the rest of a possibly huge input.
struct Units<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Units<'a> {
    fn new(b: &'a [u8]) -> Self {
        Units { b, pos: 0 }
    }
}

impl Iterator for Units<'_> {
    /// The unit and how many input bytes it consumed.
    type Item = (Unit, usize);

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.b.get(self.pos..)?;
        let &lead = rest.first()?;
        let width = match lead {
            0x00..=0x7F => 1,
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF4 => 4,
            _ => 0,
        };
        // `from_utf8` does the hard part (overlong forms, surrogates, range);
        // anything it refuses is shown byte by byte.
        let decoded = rest.get(..width).and_then(|s| std::str::from_utf8(s).ok()).and_then(|s| s.chars().next());
        let item = match decoded {
            Some(c) if width > 0 => (Unit::Char(c), width),
            _ => (Unit::Byte(lead), 1),
        };
        self.pos += item.1;
        Some(item)
    }
}

/// Whether a backslash in the input is an escape of its own (`\\`, for raw
/// bytes) or kept as it is (already escaped message text, see [`sanitize`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Backslash {
    Double,
    Keep,
}

/// Appends the escaped form of one unit to `out`.
fn push_unit(out: &mut String, unit: Unit, bs: Backslash) {
    use fmt::Write as _;
    match unit {
        Unit::Char('\\') if bs == Backslash::Keep => out.push('\\'),
        Unit::Char('\\') => out.push_str("\\\\"),
        Unit::Char('\n') => out.push_str("\\n"),
        Unit::Char('\r') => out.push_str("\\r"),
        Unit::Char('\t') => out.push_str("\\t"),
        Unit::Char(c @ ' '..='~') => out.push(c),
        // Remaining ASCII is C0 controls and DEL.
        Unit::Char(c) if c.is_ascii() => {
            let _ = write!(out, "\\x{:02X}", c as u32);
        }
        // Every non-ASCII character, printable or not: C1 controls, bidi
        // overrides, zero-width characters and homoglyphs all become visible.
        Unit::Char(c) => {
            let _ = write!(out, "\\u{{{:04X}}}", c as u32);
        }
        Unit::Byte(b) => {
            let _ = write!(out, "\\x{b:02X}");
        }
    }
}

/// Escaped units of `b`, each as its own small string, stopping once `limit`
/// output characters would be exceeded. Returns the pieces, how many input
/// bytes they cover and whether the input was cut.
///
/// Working in whole units means a cut never leaves half an escape such as
/// `\u{20` behind, which a reader could misread as something else.
fn escaped_pieces(b: &[u8], limit: usize, bs: Backslash) -> (Vec<String>, usize, bool) {
    let mut pieces = Vec::new();
    let mut used = 0usize;
    let mut consumed = 0usize;
    for (unit, width) in Units::new(b) {
        let mut piece = String::new();
        push_unit(&mut piece, unit, bs);
        if used + piece.len() > limit {
            return (pieces, consumed, true);
        }
        used += piece.len();
        consumed += width;
        pieces.push(piece);
    }
    (pieces, consumed, false)
}

/// The one renderer behind [`escape_bytes`] and [`sanitize`].
fn render(b: &[u8], max_chars: usize, bs: Backslash) -> String {
    let mut out = String::with_capacity(b.len().min(max_chars));
    let mut consumed = 0usize;
    for (unit, width) in Units::new(b) {
        let before = out.len();
        push_unit(&mut out, unit, bs);
        if out.len() > max_chars {
            // Drop the whole escape that did not fit, never half of it.
            out.truncate(before);
            push_marker(&mut out, b.len().saturating_sub(consumed));
            break;
        }
        consumed += width;
    }
    out
}

/// Renders untrusted bytes as printable ASCII on one line, at most
/// `max_chars` characters of escaped text plus a truncation marker.
///
/// * printable ASCII `0x20..=0x7E` is kept, except `\` which becomes `\\`
///   (so every backslash in the output starts an escape and the rendering is
///   unambiguous); `"` is kept;
/// * `\n`, `\r`, `\t` become those two-character escapes — a newline can
///   never start a forged log line;
/// * other C0 controls and DEL become `\xNN` (upper-case hex);
/// * every valid non-ASCII UTF-8 character becomes `\u{XXXX}` (at least four
///   upper-case hex digits), so C1 controls, bidi controls and zero-width
///   characters are always visible;
/// * bytes that are not valid UTF-8 become `\xNN`.
///
/// If the whole escaped text would be longer than `max_chars`, it is cut at
/// the last whole escape that fits and `...[+N bytes]` is appended, where `N`
/// is the number of *input* bytes not shown (so the reader knows how much was
/// hidden). The marker is ASCII so the output stays ASCII. Only as much input
/// as is needed is examined, so a 10 MiB hostile field costs no more than a
/// short one.
///
/// Use it where untrusted bytes enter a message, once; sinks use
/// [`sanitize`] (see "Exactly once" above).
pub fn escape_bytes(b: &[u8], max_chars: usize) -> String {
    render(b, max_chars, Backslash::Double)
}

/// The ASCII truncation marker, naming how many input bytes were hidden.
fn push_marker(out: &mut String, hidden: usize) {
    out.push_str("...[+");
    out.push_str(&hidden.to_string());
    out.push_str(" bytes]");
}

/// [`escape_bytes`] for text that is already a `str` (it may still hold
/// controls, bidi overrides or anything else).
pub fn escape(s: &str, max_chars: usize) -> String {
    escape_bytes(s.as_bytes(), max_chars)
}

/// Untrusted bytes on their way to a sink: `Display` escapes them and caps
/// them at [`EXCERPT_CHARS`].
///
/// Wrapping a value in `Untrusted` at the point it is formatted makes the
/// escaping visible in review: `format!("{}", Untrusted(name))` cannot be
/// mistaken for printing the raw value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Untrusted<'a>(pub &'a [u8]);

impl<'a> Untrusted<'a> {
    /// Wraps a `str`; the text is treated exactly like bytes.
    #[allow(clippy::should_implement_trait)] // `FromStr` cannot borrow its input.
    pub fn from_str(s: &'a str) -> Self {
        Untrusted(s.as_bytes())
    }
}

impl<'a> From<&'a str> for Untrusted<'a> {
    fn from(s: &'a str) -> Self {
        Untrusted(s.as_bytes())
    }
}

impl<'a> From<&'a [u8]> for Untrusted<'a> {
    fn from(b: &'a [u8]) -> Self {
        Untrusted(b)
    }
}

impl fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&escape_bytes(self.0, EXCERPT_CHARS))
    }
}

/// Escapes the five characters that are special in HTML text and in quoted
/// attribute values (`&`, `<`, `>`, `"`, `'`), for web status pages (NL-11).
///
/// This makes text inert as markup; it does not make it readable. Pass
/// untrusted text through [`escape`] first when controls or bidi characters
/// could be present, then through this function.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Makes message text safe for a sink without escaping it a second time:
/// printable ASCII, **backslashes included**, is kept as it is; everything
/// else is escaped exactly as [`escape_bytes`] does (`\n`, `\x1B`,
/// `\u{202E}`, …); the result is capped at `max_chars` the same way.
///
/// Messages are built with their untrusted parts already escaped, so for
/// them this is the identity; it is idempotent; and raw text that reaches a
/// sink by mistake still comes out as one line of printable ASCII, escaped
/// once. Every sink — terminal, JSON, journal, log, mail — uses this.
///
/// ```
/// use ferry_text::{escape, sanitize};
///
/// let msg = format!("cannot read {}", escape("a\x1b[31mb", 200));
/// assert_eq!(sanitize(&msg, 200), r"cannot read a\x1B[31mb");
/// assert_eq!(sanitize(&sanitize(&msg, 200), 200), sanitize(&msg, 200));
/// assert_eq!(sanitize("raw\u{202E}x\n", 200), r"raw\u{202E}x\n");
/// ```
pub fn sanitize(s: &str, max_chars: usize) -> String {
    render(s.as_bytes(), max_chars, Backslash::Keep)
}

/// [`sanitize`] for bytes that may not be UTF-8.
pub fn sanitize_bytes(b: &[u8], max_chars: usize) -> String {
    render(b, max_chars, Backslash::Keep)
}

/// Makes serialised JSON pure printable ASCII without changing what it
/// decodes to: every character outside `0x20..=0x7E` — serde_json already
/// writes C0 controls as escapes, but leaves DEL, C1 controls, bidi
/// controls and every other non-ASCII character raw — becomes a JSON
/// `\uXXXX` escape (a surrogate pair above U+FFFF). Outside strings JSON
/// text is ASCII, and inside them `\uXXXX` means that very character, so a
/// JSON reader gets exactly the same values. Newlines between values (as
/// pretty printing writes them) are kept.
///
/// ```
/// // What serde_json writes for the value "x\u{202E}\u{7F}\u{1F600}":
/// let json = "{\"a\":\"x\u{202E}\u{7F}\u{1F600}\"}";
/// assert_eq!(ferry_text::ascii_json(json), r#"{"a":"x\u202e\u007f\ud83d\ude00"}"#);
/// ```
pub fn ascii_json(json: &str) -> String {
    use fmt::Write as _;
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            ' '..='~' | '\n' => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{:04x}", u);
                }
            }
        }
    }
    out
}

/// Quotes message text for a plain-text mail body, once.
///
/// The text is made safe as by [`sanitize`] (already escaped text is kept,
/// anything else is escaped; newlines become the two characters `\n`, so
/// the input cannot create lines of its own), capped at `max_chars`, and
/// only then laid out: lines of at most 72 columns, each starting with `| `
/// so the reader sees at a glance which text came from a client. Lines
/// break after a space where one is near enough, so words stay whole; a
/// word longer than a line is split between two escapes, never inside one.
/// For readability a line also ends after each escaped `\n`; the `\n`
/// stays visible, so this cannot forge anything. Joining the lines without
/// their `| ` prefixes gives back the quoted text exactly. Every output
/// line ends in `\n`.
pub fn mail_quote(s: &[u8], max_chars: usize) -> String {
    let (mut pieces, consumed, cut) = escaped_pieces(s, max_chars, Backslash::Keep);
    if cut {
        let mut marker = String::new();
        push_marker(&mut marker, s.len().saturating_sub(consumed));
        pieces.push(marker);
    }
    let width = MAIL_WIDTH - MAIL_PREFIX.len();
    let mut out = String::new();
    let mut line = String::new();
    let flush = |out: &mut String, line: &mut String| {
        out.push_str(MAIL_PREFIX);
        out.push_str(line);
        out.push('\n');
        line.clear();
    };
    // Words: runs of pieces up to and including a space or an escaped `\n`.
    let mut words: Vec<(Vec<String>, bool)> = Vec::new();
    let mut word: Vec<String> = Vec::new();
    for piece in pieces {
        let ends_line = piece == "\\n";
        let ends_word = ends_line || piece == " ";
        word.push(piece);
        if ends_word {
            words.push((std::mem::take(&mut word), ends_line));
        }
    }
    if !word.is_empty() {
        words.push((word, false));
    }
    for (word, ends_line) in words {
        let len: usize = word.iter().map(String::len).sum();
        if !line.is_empty() && line.len() + len > width {
            flush(&mut out, &mut line);
        }
        for piece in word {
            // Only a word longer than a whole line is split (between escapes).
            if !line.is_empty() && line.len() + piece.len() > width {
                flush(&mut out, &mut line);
            }
            line.push_str(&piece);
        }
        if ends_line {
            flush(&mut out, &mut line);
        }
    }
    if !line.is_empty() || out.is_empty() {
        flush(&mut out, &mut line);
    }
    out
}

/// Whether `s` is a safe token for ids and names:
/// `^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$`.
///
/// Such a token can be a path component (never `.`, `..`, empty, or starting
/// with `-` or `.`), a command-line word that is never an option, and a log
/// field that needs no escaping.
pub fn is_safe_token(s: &str) -> bool {
    let b = s.as_bytes();
    match b.split_first() {
        Some((first, rest)) => {
            first.is_ascii_alphanumeric()
                && rest.len() <= 99
                && rest.iter().all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_clean(s: &str) -> bool {
        s.bytes().all(|b| (0x20..=0x7E).contains(&b))
    }

    #[test]
    fn printable_ascii_is_kept() {
        assert_eq!(escape("hello world \"q\" ~!", 200), "hello world \"q\" ~!");
        assert_eq!(escape("", 200), "");
    }

    #[test]
    fn backslash_is_doubled() {
        assert_eq!(escape(r"a\b", 200), r"a\\b");
        // A literal `\n` in the input cannot be confused with an escaped LF.
        assert_eq!(escape("\\n", 200), "\\\\n");
        assert_ne!(escape("\\n", 200), escape("\n", 200));
    }

    #[test]
    fn named_escapes() {
        assert_eq!(escape("a\nb\rc\td", 200), "a\\nb\\rc\\td");
    }

    #[test]
    fn c0_and_del_are_hex() {
        assert_eq!(escape_bytes(b"\x00\x01\x1b\x7f", 200), "\\x00\\x01\\x1B\\x7F");
    }

    #[test]
    fn non_ascii_is_unicode_escape() {
        assert_eq!(escape("é", 200), "\\u{00E9}");
        assert_eq!(escape("😀", 200), "\\u{1F600}");
        assert_eq!(escape("clіent", 200), "cl\\u{0456}ent");
    }

    #[test]
    fn invalid_utf8_is_hex() {
        assert_eq!(escape_bytes(b"\xff\xfe", 200), "\\xFF\\xFE");
        // Truncated sequence, overlong form, surrogate.
        assert_eq!(escape_bytes(b"\xe2\x80", 200), "\\xE2\\x80");
        assert_eq!(escape_bytes(b"\xc0\xaf", 200), "\\xC0\\xAF");
        assert_eq!(escape_bytes(b"\xed\xa0\x80", 200), "\\xED\\xA0\\x80");
        assert_eq!(escape_bytes(b"\xe2\x80a", 200), "\\xE2\\x80a");
    }

    // NL-01: CRLF used to add mail headers.
    #[test]
    fn nl01_crlf_header_injection() {
        let s = escape("x\r\nBcc: attacker@evil.example", 200);
        assert_eq!(s, "x\\r\\nBcc: attacker@evil.example");
        assert!(is_clean(&s));
        assert_eq!(escape("a\nTo: x@evil.example", 200), "a\\nTo: x@evil.example");
    }

    // NL-02: a forged log line.
    #[test]
    fn nl02_log_forging() {
        let s = escape("repo\n2026-01-01T00:00:00Z INFO client=clientb backup ok", 200);
        assert!(!s.contains('\n'));
        assert_eq!(s, "repo\\n2026-01-01T00:00:00Z INFO client=clientb backup ok");
    }

    // NL-03: OSC 52 clipboard, CSI clear screen, OSC 8 hyperlink, C1 CSI.
    #[test]
    fn nl03_terminal_escapes() {
        assert_eq!(escape("\x1b]52;c;aGVsbG8=\x07", 200), "\\x1B]52;c;aGVsbG8=\\x07");
        assert_eq!(escape("\x1b[2J\x1b[1;1H", 200), "\\x1B[2J\\x1B[1;1H");
        assert_eq!(escape("\x1b]8;;http://evil\x07", 200), "\\x1B]8;;http://evil\\x07");
        assert_eq!(escape_bytes(b"\xC2\x9B2J", 200), "\\u{009B}2J");
        // A lone C1 byte (invalid UTF-8) is escaped too.
        assert_eq!(escape_bytes(b"\x9B2J", 200), "\\x9B2J");
    }

    // RP-08 / NL-08: bidi override, isolates, marks, zero-width space.
    #[test]
    fn nl08_bidi_and_zero_width() {
        assert_eq!(escape("ok\u{202E}deliaf", 200), "ok\\u{202E}deliaf");
        assert_eq!(escape("app-\u{202E}exe.tar.zst", 200), "app-\\u{202E}exe.tar.zst");
        assert_eq!(escape("client.example\u{200B}", 200), "client.example\\u{200B}");
        for c in ('\u{202A}'..='\u{202E}')
            .chain('\u{2066}'..='\u{2069}')
            .chain(['\u{200B}', '\u{200E}', '\u{200F}', '\u{FEFF}'])
        {
            let s = escape(&c.to_string(), 200);
            assert_eq!(s, format!("\\u{{{:04X}}}", c as u32));
        }
    }

    // NL-09: encoded words are plain ASCII and harmless here; long text is capped.
    #[test]
    fn nl09_encoded_word_and_overlong() {
        let ew = "=?utf-8?b?DQpCY2M6IHhAZXZpbA==?=";
        assert_eq!(escape(ew, 200), ew);
        let long = "s".repeat(2000);
        let out = escape(&long, 200);
        assert_eq!(out, format!("{}...[+1800 bytes]", "s".repeat(200)));
    }

    // NL-11: markup on a status page.
    #[test]
    fn nl11_html() {
        assert_eq!(html_escape("<img src=x onerror=alert(1)>"), "&lt;img src=x onerror=alert(1)&gt;");
        assert_eq!(html_escape("a&b\"c'd"), "a&amp;b&quot;c&#39;d");
        assert_eq!(html_escape("&amp;"), "&amp;amp;");
    }

    #[test]
    fn truncation_counts_input_bytes_and_keeps_escapes_whole() {
        assert_eq!(escape("abcdef", 6), "abcdef");
        assert_eq!(escape("abcdef", 5), "abcde...[+1 bytes]");
        assert_eq!(escape("abcdef", 0), "...[+6 bytes]");
        assert_eq!(escape("", 0), "");
        // `\u{202E}` is 8 chars; with room for 5 it is not split.
        assert_eq!(escape("ab\u{202E}", 5), "ab...[+3 bytes]");
        assert_eq!(escape("ab\u{202E}", 10), "ab\\u{202E}");
        assert_eq!(escape_bytes(b"\x00\x00", 6), "\\x00...[+1 bytes]");
    }

    #[test]
    fn huge_input_is_cheap_and_capped() {
        let big = vec![b'a'; 10 << 20];
        let out = escape_bytes(&big, EXCERPT_CHARS);
        assert_eq!(out.len(), 200 + "...[+10485560 bytes]".len());
    }

    #[test]
    fn untrusted_display() {
        assert_eq!(Untrusted(b"a\nb").to_string(), "a\\nb");
        assert_eq!(Untrusted::from_str("\u{202E}").to_string(), "\\u{202E}");
        assert_eq!(Untrusted::from("x").to_string(), "x");
        let long = "y".repeat(300);
        assert_eq!(Untrusted::from_str(&long).to_string(), format!("{}...[+100 bytes]", "y".repeat(EXCERPT_CHARS)));
    }

    #[test]
    fn mail_quote_prefixes_and_wraps() {
        assert_eq!(mail_quote(b"", 200), "| \n");
        assert_eq!(mail_quote(b"hello", 200), "| hello\n");
        let q = mail_quote(b"line one\n.\nFrom me\x1b[2J", 200);
        assert_eq!(q, "| line one\\n\n| .\\n\n| From me\\x1B[2J\n");
        let long = "z".repeat(150);
        let q = mail_quote(long.as_bytes(), 1000);
        let lines: Vec<&str> = q.lines().collect();
        assert_eq!(lines.len(), 3);
        for l in &lines {
            assert!(l.starts_with("| "));
            assert!(l.len() <= 72);
        }
        assert_eq!(lines.concat().replace("| ", ""), long);
    }

    #[test]
    fn mail_quote_never_splits_escapes_and_is_capped() {
        let s = "a".repeat(68) + "\u{202E}\u{202E}";
        let q = mail_quote(s.as_bytes(), 1000);
        assert_eq!(q, format!("| {}\n| \\u{{202E}}\\u{{202E}}\n", "a".repeat(68)));
        let q = mail_quote("b".repeat(500).as_bytes(), 100);
        assert!(q.ends_with("...[+400 bytes]\n"));
        for l in q.lines() {
            assert!(l.starts_with("| ") && l.len() <= 72 && is_clean(l));
        }
    }

    #[test]
    fn sanitize_keeps_escaped_text_and_escapes_the_rest_once() {
        let once = escape("a\x1b[31mb \\ \u{202E}", 200);
        assert_eq!(once, r"a\x1B[31mb \\ \u{202E}");
        // Already escaped message text passes unchanged, however often.
        assert_eq!(sanitize(&once, 200), once);
        assert_eq!(sanitize(&sanitize(&once, 200), 200), once);
        // Raw text is escaped once; a backslash of its own stays one.
        assert_eq!(sanitize("a\x1b[31mb", 200), r"a\x1B[31mb");
        assert_eq!(sanitize("C:\\dir\n\u{9B}\u{7F}", 200), r"C:\dir\n\u{009B}\x7F");
        assert_eq!(sanitize_bytes(b"\xff\\", 200), r"\xFF\");
        assert_eq!(sanitize("abcdef", 3), "abc...[+3 bytes]");
        let mut rng = Rng(7);
        for _ in 0..5_000 {
            let len = (rng.next() % 48) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let out = sanitize_bytes(&bytes, usize::MAX);
            assert!(is_clean(&out), "{out:?}");
            assert_eq!(sanitize(&out, usize::MAX), out, "idempotent");
        }
    }

    #[test]
    fn ascii_json_escapes_everything_outside_printable_ascii() {
        assert_eq!(ascii_json("{\"k\":\"plain \\\\ \\u001b\"}"), "{\"k\":\"plain \\\\ \\u001b\"}");
        assert_eq!(
            ascii_json("[\"\u{202E}\u{2066}\u{200F}\u{61C}\u{9B}\u{7F}\"]"),
            r#"["\u202e\u2066\u200f\u061c\u009b\u007f"]"#
        );
        assert_eq!(ascii_json("[\n  \"\u{1F600}\"\n]"), "[\n  \"\\ud83d\\ude00\"\n]");
    }

    #[test]
    fn mail_quote_quotes_escaped_text_once() {
        let msg = format!("cannot read {}", escape("a\x1b[31mb", 200));
        assert_eq!(mail_quote(msg.as_bytes(), 200), "| cannot read a\\x1B[31mb\n");
        // Raw text that reaches the mail is still escaped, once.
        assert_eq!(mail_quote(b"raw a\x1b[31mb", 200), "| raw a\\x1B[31mb\n");
    }

    #[test]
    fn mail_quote_wraps_at_word_boundaries() {
        let text = "The quick brown fox jumps over the lazy dog and keeps running through \
                    the escaped \x1b[31m field without ever splitting a word in two";
        let q = mail_quote(text.as_bytes(), 1000);
        let lines: Vec<&str> = q.lines().collect();
        assert!(lines.len() >= 2, "{q}");
        for l in &lines {
            assert!(l.starts_with("| ") && l.len() <= 72 && is_clean(l), "{l:?}");
        }
        // Every line but the last ends after a space: no word was cut.
        for l in &lines[..lines.len() - 1] {
            assert!(l.ends_with(' '), "{l:?} ends inside a word");
        }
        let joined: String = lines.iter().map(|l| &l[2..]).collect();
        assert_eq!(joined, sanitize(text, 1000));
        // A word longer than a line is split, but between escapes only.
        let long = format!("{}\u{202E}{}", "w".repeat(69), "v".repeat(10));
        let q = mail_quote(long.as_bytes(), 1000);
        assert_eq!(q, format!("| {}\n| \\u{{202E}}{}\n", "w".repeat(69), "v".repeat(10)));
    }

    #[test]
    fn safe_tokens() {
        for ok in ["a", "A", "0", "trac", "repo.git", "a-b_c.d", &"x".repeat(100)] {
            assert!(is_safe_token(ok), "{ok}");
        }
        for bad in ["", ".", "..", ".git", "-x", "_x", "a/b", "a b", "a\nb", "é", "a%2e", &"x".repeat(101)] {
            assert!(!is_safe_token(bad), "{bad:?}");
        }
    }

    /// Small xorshift so the property test needs no extra crates.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn random_bytes_always_give_clean_bounded_output() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..20_000 {
            let len = (rng.next() % 64) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let max = (rng.next() % 80) as usize;
            let out = escape_bytes(&bytes, max);
            assert!(is_clean(&out), "{out:?}");
            let full = escape_bytes(&bytes, usize::MAX);
            if full.len() <= max {
                assert_eq!(out, full);
            } else {
                // A prefix of the full rendering, cut between escapes, then the marker.
                let marker = out.rfind("...[+").unwrap();
                assert!(marker <= max);
                assert!(full.starts_with(&out[..marker]));
            }
            let q = mail_quote(&bytes, max);
            for l in q.lines() {
                assert!(l.starts_with("| ") && l.len() <= 72 && is_clean(l));
            }
        }
    }

    #[test]
    fn valid_utf8_roundtrips_through_unescape() {
        // A tiny reference unescaper shows the rendering is unambiguous.
        fn unescape(s: &str) -> Vec<u8> {
            let b = s.as_bytes();
            let mut out = Vec::new();
            let mut i = 0;
            while i < b.len() {
                if b[i] != b'\\' {
                    out.push(b[i]);
                    i += 1;
                    continue;
                }
                match b[i + 1] {
                    b'\\' => {
                        out.push(b'\\');
                        i += 2;
                    }
                    b'n' => {
                        out.push(b'\n');
                        i += 2;
                    }
                    b'r' => {
                        out.push(b'\r');
                        i += 2;
                    }
                    b't' => {
                        out.push(b'\t');
                        i += 2;
                    }
                    b'x' => {
                        let h = std::str::from_utf8(&b[i + 2..i + 4]).unwrap();
                        out.push(u8::from_str_radix(h, 16).unwrap());
                        i += 4;
                    }
                    b'u' => {
                        let end = i + s[i..].find('}').unwrap();
                        let h = &s[i + 3..end];
                        let c = char::from_u32(u32::from_str_radix(h, 16).unwrap()).unwrap();
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                        i = end + 1;
                    }
                    _ => panic!("bad escape in {s}"),
                }
            }
            out
        }
        let mut rng = Rng(12345);
        for _ in 0..5_000 {
            let len = (rng.next() % 40) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| match rng.next() % 4 {
                    0 => rng.next() as u8,
                    1 => b"\\\n\r\t\x1b\x7f"[(rng.next() % 6) as usize],
                    _ => b'a' + (rng.next() % 26) as u8,
                })
                .collect();
            let mut with_chars = bytes.clone();
            with_chars.extend_from_slice("\u{202E}é😀".as_bytes());
            for input in [bytes, with_chars] {
                let out = escape_bytes(&input, usize::MAX);
                assert_eq!(unescape(&out), input);
            }
        }
    }
}
