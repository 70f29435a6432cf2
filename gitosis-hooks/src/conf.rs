//! `gitosis.conf` parser reproducing Python 2 `RawConfigParser` (GITOSIS.md
//! 1.1).
//!
//! Ferry must read real gitosis.conf files unchanged, and gitosis decided
//! access with Python 2.7's `ConfigParser.RawConfigParser`, so the rules
//! here copy that parser's observable behaviour, quirks included:
//!
//! * comment lines: `#` or `;` in column 0, or a first word `rem` (any case)
//!   starting in column 0; blank lines are skipped;
//! * `[name]` at column 0 opens a section; the name is everything up to the
//!   first `]`, verbatim; text after `]` is ignored; repeating a header
//!   re-opens (merges into) the section; `[DEFAULT]` holds fallbacks;
//! * `name = value` / `name: value` (the first `:` or `=` separates); the
//!   name is right-trimmed and ASCII-lower-cased; the value is stripped; the
//!   first `;` of the value starts an inline comment only when the character
//!   before it is whitespace (Python's `optval[pos-1]`, which for a leading
//!   `;` wraps around to the value's last character); a value of exactly
//!   `""` means empty;
//! * a line starting with whitespace after an option appends `"\n"` plus the
//!   stripped line (no inline-comment handling on continuation lines);
//! * anything before the first section, and any other non-blank line, is a
//!   parse error for the whole file (Ferry reports it instead of crashing,
//!   and the admin hook refuses to activate such a file: weakness W1);
//! * later duplicate options override earlier ones but keep the position of
//!   the first occurrence (Python's ordered dict).
//!
//! What Ferry adds, because this parser faces pushes from the admin repo:
//! the input is bytes and must be UTF-8; NUL, CR (except in a CRLF line end,
//! which is accepted and stripped) and every other control character except
//! TAB and LF are rejected, so values can never carry terminal escapes or
//! log-forging line breaks, and the only whitespace left is space and TAB
//! (which also removes every difference between Python 2's and Rust's idea
//! of whitespace). The file is capped at [`MAX_CONF_BYTES`].

use std::collections::HashMap;
use std::fmt;

use crate::escape;

/// Largest gitosis.conf accepted. Real files are a few KiB; the cap bounds
/// the work any later pass (group resolution, enrollment) does per push.
pub const MAX_CONF_BYTES: usize = 1024 * 1024;

/// Name of Python's fallback section.
pub const DEFAULT_SECTION: &str = "DEFAULT";

/// Cap for the message of a [`ParseError`].
const MESSAGE_CAP: usize = 200;

/// Why a gitosis.conf was refused. `line` is 1-based; 0 means the whole
/// file (e.g. too large).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number, 0 for whole-file problems.
    pub line: usize,
    /// Human-readable reason; any quoted text in it is escaped.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The fields are public, so sanitize again here: a message built by
        // another caller must not reach a log with control characters.
        let msg = escape::sanitize(&self.message, MESSAGE_CAP);
        if self.line == 0 {
            write!(f, "gitosis.conf: {msg}")
        } else {
            write!(f, "gitosis.conf line {}: {msg}", self.line)
        }
    }
}

impl std::error::Error for ParseError {}

impl ParseError {
    fn new(line: usize, message: impl Into<String>) -> Self {
        let message = escape::sanitize(&message.into(), MESSAGE_CAP);
        ParseError { line, message }
    }
}

/// One section: options in first-appearance order plus an index.
#[derive(Debug, Clone, Default)]
struct Section {
    name: String,
    options: Vec<(String, String)>,
    index: HashMap<String, usize>,
}

impl Section {
    fn named(name: &str) -> Self {
        Section { name: name.to_string(), ..Section::default() }
    }

    /// Python's `cursect[optname] = [optval]`: override in place, or append.
    fn set(&mut self, name: String, value: String) {
        match self.index.get(&name) {
            Some(&i) => {
                if let Some(slot) = self.options.get_mut(i) {
                    slot.1 = value;
                }
            }
            None => {
                self.index.insert(name.clone(), self.options.len());
                self.options.push((name, value));
            }
        }
    }

    fn append(&mut self, name: &str, continuation: &str) {
        if let Some(&i) = self.index.get(name)
            && let Some(slot) = self.options.get_mut(i)
        {
            slot.1.push('\n');
            slot.1.push_str(continuation);
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        let i = *self.index.get(name)?;
        self.options.get(i).map(|(_, v)| v.as_str())
    }
}

/// A parsed gitosis.conf.
#[derive(Debug, Clone, Default)]
pub struct Config {
    sections: Vec<Section>,
    index: HashMap<String, usize>,
    defaults: Section,
}

/// Which section the parser is filling.
#[derive(Clone, Copy)]
enum Cursor {
    None,
    Defaults,
    Section(usize),
}

/// Python 2 whitespace as it can still occur after our control-character
/// filter. (`\r`, `\x0b`, `\x0c` are refused before this is used; `\n`
/// only occurs inside joined continuation values.)
fn is_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

fn strip(s: &str) -> &str {
    s.trim_matches(is_ws)
}

/// Splits a value on whitespace like Python's `str.split()`: how gitosis
/// reads `members`, `writable`, `readonly` lists, so wrapped (continued)
/// lists work.
pub fn split_list(value: &str) -> impl Iterator<Item = &str> {
    value.split(is_ws).filter(|s| !s.is_empty())
}

/// Python's `str.lower()` on a byte string: ASCII only. (Rust's
/// `to_lowercase` would also fold non-ASCII letters, which Python 2 did not.)
fn optionxform(s: &str) -> String {
    s.to_ascii_lowercase()
}

/// Checks a line for characters Ferry refuses (see the module doc).
fn check_line_chars(line: &str, lineno: usize) -> Result<(), ParseError> {
    for c in line.chars() {
        let bad = match c {
            '\t' => None,
            '\0' => Some("NUL byte is not allowed".to_string()),
            '\r' => Some("carriage return is only allowed as part of a CRLF line end".to_string()),
            c if c.is_control() => Some(format!("control character U+{:04X} is not allowed", c as u32)),
            _ => None,
        };
        if let Some(message) = bad {
            return Err(ParseError::new(lineno, message));
        }
    }
    Ok(())
}

/// `SECTCRE.match(line)`: `[`, one or more non-`]`, `]`, anything.
fn section_header(line: &str) -> Option<&str> {
    let rest = line.strip_prefix('[')?;
    let end = rest.find(']')?;
    let name = rest.get(..end)?;
    if name.is_empty() { None } else { Some(name) }
}

/// `OPTCRE.match(line)` plus the value post-processing of `_read`.
/// Returns (lower-cased name, value).
fn option_line(line: &str) -> Option<(String, String)> {
    let first = line.chars().next()?;
    if first == ':' || first == '=' || is_ws(first) {
        return None;
    }
    let sep = line.find([':', '='])?;
    let name = line.get(..sep)?.trim_end_matches(is_ws);
    let mut value = line.get(sep + 1..)?.trim_start_matches(is_ws);
    if let Some(pos) = value.find(';') {
        // Python: `optval[pos-1].isspace()`; index -1 is the last character.
        let before =
            if pos == 0 { value.chars().next_back() } else { value.get(..pos).and_then(|s| s.chars().next_back()) };
        if before.is_some_and(is_ws) {
            value = value.get(..pos).unwrap_or("");
        }
    }
    let value = strip(value);
    let value = if value == "\"\"" { "" } else { value };
    Some((optionxform(name), value.to_string()))
}

/// Escaped excerpt of an offending line for error messages.
fn excerpt(line: &str) -> String {
    format!("\"{}\"", escape::escape_capped(line, 80))
}

impl Config {
    /// Parses gitosis.conf bytes with the rules in the module doc.
    ///
    /// Errors carry the 1-based line number. The first error found is
    /// reported; as in Python any error fails the whole file.
    pub fn parse(bytes: &[u8]) -> Result<Config, ParseError> {
        if bytes.len() > MAX_CONF_BYTES {
            return Err(ParseError::new(
                0,
                format!("file is {} bytes, larger than the limit of {} bytes", bytes.len(), MAX_CONF_BYTES),
            ));
        }
        let text = match std::str::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => {
                let good = bytes.get(..e.valid_up_to()).unwrap_or(&[]);
                let line = good.iter().filter(|&&b| b == b'\n').count() + 1;
                return Err(ParseError::new(line, "file is not valid UTF-8"));
            }
        };

        let mut conf = Config::default();
        let mut cursor = Cursor::None;
        // The option a continuation line appends to (Python's `optname`).
        let mut optname: Option<String> = None;

        let pieces: Vec<&str> = text.split('\n').collect();
        let count = pieces.len();
        for (i, raw) in pieces.into_iter().enumerate() {
            let lineno = i + 1;
            let is_last = i + 1 == count;
            if is_last && raw.is_empty() {
                break; // text ended with '\n' (or was empty)
            }
            // Only a CR directly before LF is a line-end; a final line has
            // no LF, so a CR there is a lone CR.
            let line = match raw.strip_suffix('\r') {
                Some(l) if !is_last => l,
                _ => raw,
            };
            check_line_chars(line, lineno)?;

            // comment or blank line?
            if strip(line).is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if line.starts_with(['r', 'R']) {
                let first_word = line.split(is_ws).next().unwrap_or("");
                if first_word.eq_ignore_ascii_case("rem") {
                    continue;
                }
            }
            // continuation line?
            if line.starts_with(is_ws)
                && !matches!(cursor, Cursor::None)
                && let Some(name) = &optname
            {
                let value = strip(line);
                if !value.is_empty() {
                    conf.section_mut(cursor).append(name, value);
                }
                continue;
            }
            // section header?
            if let Some(name) = section_header(line) {
                cursor = if let Some(&idx) = conf.index.get(name) {
                    Cursor::Section(idx)
                } else if name == DEFAULT_SECTION {
                    Cursor::Defaults
                } else {
                    let idx = conf.sections.len();
                    conf.sections.push(Section::named(name));
                    conf.index.insert(name.to_string(), idx);
                    Cursor::Section(idx)
                };
                optname = None;
                continue;
            }
            if matches!(cursor, Cursor::None) {
                let what = if option_line(line).is_some() {
                    "option outside any section"
                } else {
                    "text outside any section (the file must start with a [section] header)"
                };
                return Err(ParseError::new(lineno, format!("{what}: {}", excerpt(line))));
            }
            match option_line(line) {
                Some((name, value)) => {
                    conf.section_mut(cursor).set(name.clone(), value);
                    optname = Some(name);
                }
                None => {
                    let what = if line.starts_with(is_ws) {
                        "indented line without an option to continue"
                    } else if line.starts_with('[') {
                        "malformed section header"
                    } else {
                        "not a section header, comment or 'name = value' line"
                    };
                    return Err(ParseError::new(lineno, format!("{what}: {}", excerpt(line))));
                }
            }
        }
        Ok(conf)
    }

    fn section_mut(&mut self, cursor: Cursor) -> &mut Section {
        match cursor {
            Cursor::Section(i) if i < self.sections.len() => &mut self.sections[i],
            // Cursor::None never reaches here (checked by the caller); the
            // defaults section is a harmless sink if it ever did.
            _ => &mut self.defaults,
        }
    }

    fn section(&self, name: &str) -> Option<&Section> {
        let i = *self.index.get(name)?;
        self.sections.get(i)
    }

    /// `RawConfigParser.get(section, option)`: the option name is
    /// lower-cased; a missing option falls back to `[DEFAULT]`, but only if
    /// the section exists (Python raises `NoSectionError` otherwise);
    /// `get("DEFAULT", x)` reads the defaults directly.
    pub fn get(&self, section: &str, option: &str) -> Option<&str> {
        let option = optionxform(option);
        match self.section(section) {
            Some(s) => s.get(&option).or_else(|| self.defaults.get(&option)),
            None if section == DEFAULT_SECTION => self.defaults.get(&option),
            None => None,
        }
    }

    /// Like [`Config::get`] but without the `[DEFAULT]` fallback: only what
    /// the section itself says. Ferry reads its own `[ferry …]` sections
    /// this way so every enrolled fact is written where it applies.
    pub fn get_own(&self, section: &str, option: &str) -> Option<&str> {
        let option = optionxform(option);
        if section == DEFAULT_SECTION && self.section(section).is_none() {
            return self.defaults.get(&option);
        }
        self.section(section)?.get(&option)
    }

    /// Section names in file order, without `[DEFAULT]`.
    pub fn sections(&self) -> impl Iterator<Item = &str> {
        self.sections.iter().map(|s| s.name.as_str())
    }

    /// The section's own options (lower-cased names, final values) in
    /// order of first appearance. `[DEFAULT]` options are not merged in
    /// (unlike Python's `items()`), so callers can tell what a section
    /// itself says; `options("DEFAULT")` lists the defaults.
    pub fn options(&self, section: &str) -> Vec<(&str, &str)> {
        let s = match self.section(section) {
            Some(s) => s,
            None if section == DEFAULT_SECTION => &self.defaults,
            None => return Vec::new(),
        };
        s.options.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }

    /// `RawConfigParser.has_section`: false for `DEFAULT`.
    pub fn has_section(&self, section: &str) -> bool {
        self.index.contains_key(section)
    }

    /// Whether the file had a `[DEFAULT]` section with any option. Such
    /// options silently apply to every section; enrollment warns about it.
    pub fn has_defaults(&self) -> bool {
        !self.defaults.options.is_empty()
    }
}

/// gitosis' boolean rule (`RawConfigParser.getboolean`):
/// `1/yes/true/on` and `0/no/false/off`, case-insensitive, nothing else.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "1" | "yes" | "true" | "on" => Some(true),
        "0" | "no" | "false" | "off" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Rng;

    fn parse(s: &str) -> Config {
        match Config::parse(s.as_bytes()) {
            Ok(c) => c,
            Err(e) => panic!("parse failed: {e}"),
        }
    }

    fn err(s: &[u8]) -> ParseError {
        match Config::parse(s) {
            Ok(c) => panic!("expected error, got {c:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn example_from_gitosis_md() {
        let c = parse(
            "[gitosis]\ndaemon = no\ngitweb = no\n\n[group gitosis-admin]\nmembers = admin@workstation\nwritable = gitosis-admin\n\n[group backup-hosts]\nmembers = host-a host-b @new-hosts\nwritable = queue/host-a queue/host-b\n\n[repo queue/host-a]\ndescription = backup request queue for host-a\nowner = Backup Bot\n",
        );
        let names: Vec<&str> = c.sections().collect();
        assert_eq!(names, ["gitosis", "group gitosis-admin", "group backup-hosts", "repo queue/host-a"]);
        assert_eq!(c.get("gitosis", "daemon"), Some("no"));
        assert_eq!(c.get("group backup-hosts", "members"), Some("host-a host-b @new-hosts"));
        assert_eq!(c.get("repo queue/host-a", "owner"), Some("Backup Bot"));
        assert_eq!(c.get("nosuch", "owner"), None);
        assert!(c.has_section("gitosis"));
        assert!(!c.has_section("DEFAULT"));
    }

    #[test]
    fn comments_and_rem() {
        let c = parse(
            "# comment\n; comment\n[s]\n#x = 1\n;y = 2\nrem z = 3\nREM whatever\nRem\nremark = 4\nrem= 5\n  \n\t\n",
        );
        assert_eq!(c.options("s"), vec![("remark", "4"), ("rem", "5")]);
    }

    #[test]
    fn indented_comment_is_not_a_comment() {
        // ' # x' after an option is a continuation line, not a comment.
        let c = parse("[s]\na = 1\n # x\n");
        assert_eq!(c.get("s", "a"), Some("1\n# x"));
        // ...and without an option before it, an error.
        assert_eq!(err(b"[s]\n # x\n").line, 2);
    }

    #[test]
    fn section_headers() {
        let c = parse("[group  foo] trailing text\nmembers = a\n[ x ]\n[[y]\n[g]]\n");
        let names: Vec<&str> = c.sections().collect();
        assert_eq!(names, ["group  foo", " x ", "[y", "g"]);
        assert_eq!(c.get("group  foo", "members"), Some("a"));
        assert_eq!(c.get("group foo", "members"), None);
    }

    #[test]
    fn repeated_headers_merge_and_keep_position() {
        let c = parse("[a]\nx = 1\n[b]\ny = 2\n[a]\nz = 3\nx = 4\n");
        let names: Vec<&str> = c.sections().collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(c.options("a"), vec![("x", "4"), ("z", "3")]);
    }

    #[test]
    fn option_names_and_values() {
        let c = parse(
            "[s]\nName = v\nMAP Writable Foo = bar\nspaced   name\t= spaced value  \ncolon: yes\nboth: a = b\neq = a: b\nempty =\nquoted = \"\"\nquoted2 = \"x\"\n",
        );
        assert_eq!(c.get("s", "name"), Some("v"));
        assert_eq!(c.get("s", "NAME"), Some("v"));
        assert_eq!(c.get("s", "map writable foo"), Some("bar"));
        assert_eq!(c.get("s", "spaced   name"), Some("spaced value"));
        assert_eq!(c.get("s", "colon"), Some("yes"));
        assert_eq!(c.get("s", "both"), Some("a = b"));
        assert_eq!(c.get("s", "eq"), Some("a: b"));
        assert_eq!(c.get("s", "empty"), Some(""));
        assert_eq!(c.get("s", "quoted"), Some(""));
        assert_eq!(c.get("s", "quoted2"), Some("\"x\""));
    }

    #[test]
    fn non_ascii_names_are_not_case_folded() {
        // Python 2 lower() on bytes folds ASCII only.
        let c = parse("[s]\n\u{c4}X = 1\n");
        assert_eq!(c.get("s", "\u{c4}x"), Some("1"));
        assert_eq!(c.get("s", "\u{e4}x"), None);
    }

    #[test]
    fn inline_comments() {
        let cases = [
            ("a = b ; c", "b"),
            ("a = b\t; c", "b"),
            ("a = b;c", "b;c"),
            ("a = b # c", "b # c"),
            // only the first ';' is considered
            ("a = b;c ; d", "b;c ; d"),
            // leading ';': Python looks at optval[-1], the last character
            ("a = ;c", ";c"),
            ("a = ;c ", ""),
            ("a =;c", ";c"),
            ("a = x ;", "x"),
        ];
        for (line, want) in cases {
            let c = parse(&format!("[s]\n{line}\n"));
            assert_eq!(c.get("s", "a"), Some(want), "line {line:?}");
        }
    }

    #[test]
    fn continuation_lines() {
        let c = parse("[s]\nmembers = a\n  b ; not a comment\n\tc\n\n  d\n# x\n e\nother = 1\n");
        assert_eq!(c.get("s", "members"), Some("a\nb ; not a comment\nc\nd\ne"));
        let list: Vec<&str> = split_list(c.get("s", "members").unwrap_or("")).collect();
        assert_eq!(list, ["a", "b", ";", "not", "a", "comment", "c", "d", "e"]);
        // a continuation of an empty value starts with "\n"
        let c = parse("[s]\nm =\n  x\n");
        assert_eq!(c.get("s", "m"), Some("\nx"));
        // a duplicate option resets, later continuation appends to it
        let c = parse("[s]\nm = a\n b\nm = c\n d\n");
        assert_eq!(c.get("s", "m"), Some("c\nd"));
    }

    #[test]
    fn header_resets_continuation() {
        assert_eq!(err(b"[s]\na = 1\n[t]\n  x\n").line, 4);
    }

    #[test]
    fn defaults_are_fallbacks() {
        let c = parse("[DEFAULT]\nx = d\ny = d\n[s]\nx = s\n");
        assert_eq!(c.get("s", "x"), Some("s"));
        assert_eq!(c.get("s", "y"), Some("d"));
        assert_eq!(c.get_own("s", "y"), None);
        assert_eq!(c.get("DEFAULT", "y"), Some("d"));
        assert_eq!(c.get("nosuch", "y"), None);
        assert!(c.has_defaults());
        let names: Vec<&str> = c.sections().collect();
        assert_eq!(names, ["s"]);
        assert_eq!(c.options("DEFAULT"), vec![("x", "d"), ("y", "d")]);
        // lower-case [default] is an ordinary section
        let c = parse("[default]\nx = 1\n[s]\n");
        assert_eq!(c.get("s", "x"), None);
    }

    #[test]
    fn parse_errors() {
        let cases: &[(&[u8], usize, &str)] = &[
            (b"x = 1\n[s]\n", 1, "option outside any section"),
            (b"\n\njunk\n", 3, "text outside any section"),
            (b"[s]\njunk\n", 2, "not a section header"),
            (b"[s]\n= x\n", 2, "not a section header"),
            (b"[s]\n: x\n", 2, "not a section header"),
            (b"[s]\n[]\n", 2, "malformed section header"),
            (b"[s]\n[unclosed\n", 2, "malformed section header"),
            (b"[s]\n  orphan\n", 2, "indented line"),
            (b"[s]\na = \x00\n", 2, "NUL"),
            (b"[s]\na = b\rc\n", 2, "carriage return"),
            (b"[s]\na = b\r", 2, "carriage return"),
            (b"[s]\na = \x1b[31m\n", 2, "U+001B"),
            (b"[s]\na = \x0c\n", 2, "U+000C"),
            (b"[s]\na = \xc2\x85\n", 2, "U+0085"),
            (b"[s]\na = \xff\n", 2, "UTF-8"),
            (b"\xef\xbb\xbf[s]\n", 1, "outside any section"),
        ];
        for &(input, line, needle) in cases {
            let e = err(input);
            assert_eq!(e.line, line, "input {input:?}: {e}");
            assert!(e.message.contains(needle), "input {input:?}: {e}");
            let shown = e.to_string();
            assert!(shown.bytes().all(|b| (0x20..0x7f).contains(&b)), "{shown}");
        }
        let e = err(b"x = 1\n");
        assert_eq!(e.to_string(), "gitosis.conf line 1: option outside any section: \"x = 1\"");
    }

    #[test]
    fn error_messages_are_escaped_and_capped() {
        let mut input = b"[s]\n".to_vec();
        input.extend_from_slice("junk \u{202e}".repeat(200).as_bytes());
        let e = err(&input);
        let shown = e.to_string();
        assert!(shown.len() < 260, "{shown}");
        assert!(shown.contains("\\u{202E}"));
        // a hand-built error with control characters is sanitized on display
        let e = ParseError { line: 3, message: "bad\nline".into() };
        assert_eq!(e.to_string(), "gitosis.conf line 3: bad\\nline");
    }

    #[test]
    fn crlf_accepted() {
        let c = parse("[s]\r\na = b ; c\r\n  d\r\n");
        assert_eq!(c.get("s", "a"), Some("b\nd"));
    }

    #[test]
    fn size_cap() {
        let mut big = b"[s]\n".to_vec();
        big.resize(MAX_CONF_BYTES + 1, b'#');
        let e = err(&big);
        assert_eq!(e.line, 0);
        assert!(e.to_string().starts_with("gitosis.conf: file is"));
        let mut ok = b"[s]\n".to_vec();
        ok.resize(MAX_CONF_BYTES, b' ');
        assert!(Config::parse(&ok).is_ok());
    }

    #[test]
    fn empty_and_no_trailing_newline() {
        assert_eq!(parse("").sections().count(), 0);
        let c = parse("[s]\na = 1");
        assert_eq!(c.get("s", "a"), Some("1"));
    }

    #[test]
    fn booleans() {
        for t in ["1", "yes", "YES", "true", "True", "on", "oN"] {
            assert_eq!(parse_bool(t), Some(true), "{t}");
        }
        for f in ["0", "no", "No", "false", "FALSE", "off"] {
            assert_eq!(parse_bool(f), Some(false), "{f}");
        }
        for bad in ["", "y", "n", "2", "yes ", "enabled", "t"] {
            assert_eq!(parse_bool(bad), None, "{bad}");
        }
    }

    #[test]
    fn never_panics_on_random_bytes() {
        let mut rng = Rng::new(0x5eed_c0f1);
        let alphabet = b"[]=:;# \t\nremREMgroup@all\r\x00\xff\xc3\xa9\"";
        for _ in 0..20_000 {
            let len = rng.below(200);
            let bytes: Vec<u8> = (0..len)
                .map(|_| if rng.below(4) == 0 { rng.byte() } else { alphabet[rng.below(alphabet.len())] })
                .collect();
            match Config::parse(&bytes) {
                Ok(c) => {
                    for s in c.sections() {
                        let _ = c.options(s);
                    }
                }
                Err(e) => {
                    let shown = e.to_string();
                    assert!(shown.bytes().all(|b| (0x20..0x7f).contains(&b)));
                }
            }
        }
    }
}
