//! `alert-on-change` in `[ferry source CLIENT SOURCE]` (issue 11): path
//! patterns whose change in a new snapshot tree mails the administrators.
//!
//! The patterns live here, in the admin-reviewed gitosis.conf, and not in
//! the client's `[[source]]`: a compromised client could otherwise switch
//! its own tripwire off. A pattern matches a snapshot's relative path
//! (`etc/ssh/sshd_config`): `/` separates segments, `*` matches any run of
//! bytes within one segment, a `**` segment matches zero or more whole
//! segments. Nothing else is special; characters other globs treat as
//! special (`?`, `[`, `]`, `{`, `}`, `\`) are refused, so no reviewer
//! reads a pattern as meaning more than it does.

use super::{Report, quoted, sec};
use crate::conf::Config;

/// The option's name.
pub const OPTION: &str = "alert-on-change";
/// Most patterns one source may list.
pub const MAX_PATTERNS: usize = 64;
/// Longest pattern, in bytes (a path is at most 4095).
pub const MAX_PATTERN: usize = 4095;

/// One validated pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
}

impl Pattern {
    /// Parses one pattern; `Err` says why it is refused.
    pub fn parse(s: &str) -> Result<Pattern, String> {
        if s.is_empty() {
            return Err("an empty pattern".into());
        }
        if s.len() > MAX_PATTERN {
            return Err(format!("longer than {MAX_PATTERN} bytes"));
        }
        if let Some(c) = s.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(format!("character {c:?}: only printable ASCII without spaces"));
        }
        if let Some(c) = s.chars().find(|c| "?[]{}\\".contains(*c)) {
            return Err(format!("'{c}' is not supported (only '*' within a segment and a '**' segment)"));
        }
        if s.starts_with('/') {
            return Err("starts with '/': patterns are relative to the source's root (etc/ssh/*)".into());
        }
        for seg in s.split('/') {
            if seg.is_empty() {
                return Err("an empty segment ('//' or a trailing '/')".into());
            }
            if seg == "." || seg == ".." {
                return Err(format!("a '{seg}' segment"));
            }
            if seg.contains("**") && seg != "**" {
                return Err(format!("'**' must be a whole segment, not part of {seg:?}"));
            }
        }
        Ok(Pattern { text: s.to_owned() })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True if `path` (a snapshot's relative path, `/`-separated) matches.
    pub fn matches(&self, path: &[u8]) -> bool {
        let pat: Vec<&[u8]> = self.text.as_bytes().split(|b| *b == b'/').collect();
        let segs: Vec<&[u8]> = path.split(|b| *b == b'/').collect();
        match_segments(&pat, &segs)
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

fn match_segments(pat: &[&[u8]], path: &[&[u8]]) -> bool {
    match pat.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if *first == b"**" => (0..=path.len()).any(|skip| match_segments(rest, &path[skip..])),
        Some((first, rest)) => match path.split_first() {
            Some((seg, more)) => match_segment(first, seg) && match_segments(rest, more),
            None => false,
        },
    }
}

/// `*` matches any run of bytes in one segment (greedy with backtracking
/// over the last star only, so it stays linear in practice).
fn match_segment(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pat.len() && pat[p] == b'*' {
            star = Some((p, i));
            p += 1;
        } else if p < pat.len() && pat[p] == s[i] {
            p += 1;
            i += 1;
        } else if let Some((sp, si)) = star {
            p = sp + 1;
            i = si + 1;
            star = Some((sp, si + 1));
        } else {
            return false;
        }
    }
    pat[p..].iter().all(|b| *b == b'*')
}

/// The patterns a source section lists (empty: none), every problem
/// recorded in `rep` with the pattern and its reason.
pub(super) fn parse_alert_on_change(conf: &Config, section: &str, rep: &mut Report) -> Vec<Pattern> {
    let Some(v) = conf.get_own(section, OPTION) else {
        return Vec::new();
    };
    let where_ = sec(section);
    let mut out = Vec::new();
    for word in v.split_ascii_whitespace() {
        match Pattern::parse(word) {
            Ok(p) => out.push(p),
            Err(why) => rep.conf(format!("{where_} option '{OPTION}': invalid pattern {} ({why})", quoted(word))),
        }
    }
    if out.is_empty() && v.split_ascii_whitespace().next().is_none() {
        rep.conf(format!("{where_} option '{OPTION}': no pattern (list them space-separated: usr/bin/* etc/ssh/*)"));
    }
    if out.len() > MAX_PATTERNS {
        rep.conf(format!("{where_} option '{OPTION}': {} patterns, at most {MAX_PATTERNS}", out.len()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enroll::{E_ENROL_CONF, Enrollment};
    use crate::keys::tests::{EC256, ED25519};

    fn m(p: &str, path: &str) -> bool {
        Pattern::parse(p).expect("valid").matches(path.as_bytes())
    }

    #[test]
    fn star_stays_in_its_segment_and_double_star_crosses() {
        assert!(m("etc/ssh/*", "etc/ssh/sshd_config"));
        assert!(!m("etc/ssh/*", "etc/ssh/sshd_config.d/x.conf"));
        assert!(!m("etc/ssh/*", "etc/ssh"));
        assert!(!m("etc/ssh/*", "etc/sshd/x"));
        assert!(m("usr/bin/*", "usr/bin/ls"));
        assert!(!m("usr/bin/*", "usr/sbin/ls"));
        assert!(m("etc/ssh/**", "etc/ssh/sshd_config.d/x.conf"));
        assert!(m("etc/ssh/**", "etc/ssh"));
        assert!(m("**/authorized_keys", "root/.ssh/authorized_keys"));
        assert!(m("**/authorized_keys", "authorized_keys"));
        assert!(!m("**/authorized_keys", "root/.ssh/authorized_keys2"));
        assert!(m("home/*/.ssh/auth*", "home/ann/.ssh/authorized_keys"));
        assert!(m("etc/*.conf", "etc/a.b.conf"));
        assert!(!m("etc/*.conf", "etc/a.conf.bak"));
        assert!(m("etc/passwd", "etc/passwd"));
        assert!(!m("etc/passwd", "etc/passwd-"));
        assert!(m("a/*b*c", "a/xxbyyc"));
        assert!(!m("a/*b*c", "a/xxbyyd"));
        // Hostile bytes in a path are just bytes.
        assert!(Pattern::parse("etc/*").expect("valid").matches(b"etc/\xff\n\x1b"));
    }

    #[test]
    fn bad_patterns_are_refused_with_a_reason() {
        for (p, why) in [
            ("/etc/ssh/*", "starts with '/'"),
            ("etc//ssh", "empty segment"),
            ("etc/ssh/", "empty segment"),
            ("etc/../x", "'..' segment"),
            ("etc/a**", "whole segment"),
            ("etc/ss?", "not supported"),
            ("etc/[ab]", "not supported"),
            ("etc/\u{e9}", "printable ASCII"),
        ] {
            match Pattern::parse(p) {
                Ok(_) => panic!("{p:?} accepted"),
                Err(e) => assert!(e.contains(why), "{p:?}: {e}"),
            }
        }
    }

    const BASE: &str = "[gitosis]\n\n[group gitosis-admin]\nmembers = admin@ws\nwritable = gitosis-admin\n\n";

    fn build(extra: &str) -> Result<Enrollment, Vec<crate::enroll::EnrollError>> {
        let c = format!(
            "{BASE}[ferry client host-a]\naddress = 127.0.0.2\nuser = ferry\nhostkey = {EC256}\nexport = /x\n\n{extra}"
        );
        let conf = Config::parse(c.as_bytes()).expect("parses");
        let kd = [("host-a.pub".to_string(), ED25519.as_bytes().to_vec())].into_iter().collect();
        Enrollment::build(&conf, &kd)
    }

    #[test]
    fn the_key_is_read_beside_keep_rules_and_refused_with_its_reason() {
        let e = build("[ferry source host-a etc]\nalert-on-change = usr/bin/* etc/ssh/*\n").expect("valid");
        let p: Vec<&str> = e.alert_patterns("host-a", "etc").iter().map(Pattern::as_str).collect();
        assert_eq!(p, ["usr/bin/*", "etc/ssh/*"]);
        assert!(e.alert_patterns("host-a", "other").is_empty());
        assert!(e.keep_rules("host-a", "etc").is_none(), "no keep-* stated");
        assert!(e.warnings.is_empty(), "{:?}", e.warnings);

        let e = build("[ferry source host-a etc]\nkeep-last = 3\nalert-on-change = etc/**\n").expect("valid");
        assert_eq!(e.alert_patterns("host-a", "etc").len(), 1);
        assert_eq!(e.keep_rules("host-a", "etc").map(|k| k.last), Some(3));

        let errs = build("[ferry source host-a etc]\nalert-on-change = etc/ssh/* /usr/bin/*\n").expect_err("refused");
        assert!(
            errs.iter().any(|e| e.code == E_ENROL_CONF
                && e.message.contains("option 'alert-on-change': invalid pattern '/usr/bin/*' (starts with '/'")),
            "{errs:?}"
        );
        let errs = build("[ferry source host-a etc]\nalert-on-change =\n").expect_err("refused");
        assert!(errs.iter().any(|e| e.message.contains("no pattern")), "{errs:?}");
        let errs = build("[ferry source host-a etc]\nalert-on-chnage = etc/*\n").expect_err("refused");
        assert!(errs.iter().any(|e| e.message.contains("unknown option 'alert-on-chnage'")), "{errs:?}");
    }
}
