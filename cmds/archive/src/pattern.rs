//! Exclude patterns for [`crate::CreateOptions::exclude`].
//!
//! The syntax is deliberately small, so an administrator can predict what a
//! pattern does without reading a manual:
//!
//! * `*` matches any run of bytes except `/`; `?` matches one character
//!   (one UTF-8 sequence, or one byte of a non-UTF-8 name) except `/`.
//!   There is no `**`, no character class and no escape.
//! * A pattern **without** `/` matches a single path component anywhere in
//!   the tree: `*.tmp` excludes every file or directory whose name ends in
//!   `.tmp`, `cache` excludes every entry named `cache`.
//! * A pattern **with** `/` is anchored at the root and matched against the
//!   whole relative path: `var/cache/*` excludes what is directly inside
//!   `var/cache`, `var/cache` excludes that directory. A leading `/` and a
//!   trailing `/` are ignored (`/var/cache/` is `var/cache`).
//! * An excluded directory is excluded with everything below it.
//!
//! Matching works on raw bytes, so non-UTF-8 names can be matched with `*`.

/// One parsed exclude pattern. See the module docs for the syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExcludePattern {
    /// Matches any component name (the pattern had no `/`).
    Name(Vec<u8>),
    /// Matches the whole relative path (the pattern had a `/`).
    Anchored(Vec<u8>),
}

impl ExcludePattern {
    /// Parses one pattern. An empty pattern (or only slashes) matches
    /// nothing and is returned as `None`.
    pub fn parse(pattern: &str) -> Option<ExcludePattern> {
        let has_slash = pattern.contains('/');
        let trimmed = pattern.trim_matches('/');
        if trimmed.is_empty() {
            return None;
        }
        let bytes = trimmed.as_bytes().to_vec();
        Some(if has_slash { ExcludePattern::Anchored(bytes) } else { ExcludePattern::Name(bytes) })
    }

    /// Whether the entry at relative path `path` (whose last component is
    /// `name`) is excluded by this pattern.
    pub fn matches(&self, path: &[u8], name: &[u8]) -> bool {
        match self {
            ExcludePattern::Name(p) => glob(p, name),
            ExcludePattern::Anchored(p) => glob(p, path),
        }
    }
}

/// Length of the character starting at `s[0]` for `?`: a whole UTF-8
/// sequence when `s` starts with a valid one, else one byte.
fn char_len(s: &[u8]) -> usize {
    let n = match s[0] {
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => 1,
    };
    if n > 1 && s.len() >= n && std::str::from_utf8(&s[..n]).is_ok() { n } else { 1 }
}

/// Iterative glob match with single-star backtracking (linear in practice,
/// never exponential: only the last `*` is ever resumed).
fn glob(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pat.len() && pat[p] == b'*' {
            star = Some((p, i));
            p += 1;
            continue;
        }
        if p < pat.len() && pat[p] == b'?' && s[i] != b'/' {
            p += 1;
            i += char_len(&s[i..]);
            continue;
        }
        if p < pat.len() && pat[p] != b'?' && pat[p] == s[i] {
            p += 1;
            i += 1;
            continue;
        }
        match star {
            // `*` may absorb one more byte, but never a `/`.
            Some((sp, si)) if s[si] != b'/' => {
                star = Some((sp, si + 1));
                p = sp + 1;
                i = si + 1;
            }
            _ => return false,
        }
    }
    while p < pat.len() && pat[p] == b'*' {
        p += 1;
    }
    p == pat.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, path: &[u8]) -> bool {
        let name = path.rsplit(|b| *b == b'/').next().unwrap();
        ExcludePattern::parse(p).unwrap().matches(path, name)
    }

    #[test]
    fn names_match_any_component() {
        assert!(m("*.tmp", b"a/b/x.tmp"));
        assert!(m("*.tmp", b"x.tmp"));
        assert!(!m("*.tmp", b"x.tmp2"));
        assert!(m("cache", b"home/u/cache"));
        assert!(!m("cache", b"home/u/cached"));
        assert!(m("?.c", b"src/a.c"));
        assert!(m("?.c", "src/é.c".as_bytes()));
        assert!(!m("?.c", b"src/ab.c"));
        assert!(m("*", b"\xff\xfe"));
    }

    #[test]
    fn slashes_anchor() {
        assert!(m("var/cache/*", b"var/cache/apt"));
        assert!(!m("var/cache/*", b"var/cache"));
        assert!(!m("var/cache/*", b"x/var/cache/apt"));
        // `*` never crosses a `/` (the subtree goes with its directory).
        assert!(!m("var/*", b"var/cache/apt"));
        assert!(m("/var/cache/", b"var/cache"));
        assert!(m("var/*/apt", b"var/cache/apt"));
        assert!(ExcludePattern::parse("/").is_none());
    }

    #[test]
    fn backtracking() {
        assert!(m("*a*b*c", b"xxaxxbxxbxc"));
        assert!(!m("*a*b*c", b"xxaxxbxxbx"));
        assert!(m("**", b"abc"));
        let long = vec![b'a'; 5000];
        assert!(!m("*a*a*a*a*b", &long));
    }
}
