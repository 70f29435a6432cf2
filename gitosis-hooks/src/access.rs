//! Group membership and repository access (GITOSIS.md 1.4, 1.5), plus
//! Ferry's implicit queue grant.
//!
//! # Ferry extension: implicit queue grant
//!
//! A section `[ferry client NAME]` (with `NAME` a valid client name, see
//! [`crate::username::is_valid_client_name`]) grants user `NAME` `writable`
//! access to `queue/NAME`, with prefix `[gitosis] repositories` (else
//! `repositories`). It is checked **after** all groups, so an explicit
//! group grant (and its `repositories` prefix) wins, exactly as if the
//! grant were a last, implicit group. This is what lets one enrollment
//! section suffice: the admin does not also have to list the client in a
//! `[group]` with `writable = queue/NAME`. The grant needs no other option
//! of the section to be valid because the admin hook validates the whole
//! file (the `enroll` module) before it is activated.

use std::collections::HashMap;

use crate::conf::{Config, split_list};
use crate::username::is_valid_client_name;

/// Access mode asked of [`have_access`]; the names are gitosis' option
/// names. `Writeable` is the misspelling gitosis' serve honours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// `writable`: push (and therefore also fetch).
    Writable,
    /// `writeable`: the typo, accepted by serve with a warning.
    Writeable,
    /// `readonly`: fetch, clone, archive.
    Readonly,
}

impl Mode {
    /// The option name in gitosis.conf.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Writable => "writable",
            Mode::Writeable => "writeable",
            Mode::Readonly => "readonly",
        }
    }

    /// Whether the mode grants push.
    pub fn is_write(self) -> bool {
        matches!(self, Mode::Writable | Mode::Writeable)
    }
}

/// A granted access: the repository root (`prefix`) and the repository
/// path below it without `.git` (`relpath`). The physical repository is
/// `<prefix>/<relpath>.git`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// Repository root as configured (may be relative to `$HOME`).
    pub prefix: String,
    /// Repository path below the root, without `.git`.
    pub relpath: String,
}

/// Section name prefix of gitosis groups.
pub const GROUP_PREFIX: &str = "group ";
/// Section name prefix of Ferry's per-client enrollment sections.
pub const FERRY_CLIENT_PREFIX: &str = "ferry client ";
/// Default repository root (relative to `$HOME`).
pub const DEFAULT_REPOSITORIES: &str = "repositories";
/// Directory (below the repository root) holding the queue repos.
pub const QUEUE_DIR: &str = "queue";

/// The client name of a `[ferry client NAME]` section, if the section is
/// one and NAME is a valid client name.
pub fn ferry_client_name(section: &str) -> Option<&str> {
    let name = section.strip_prefix(FERRY_CLIENT_PREFIX)?;
    is_valid_client_name(name).then_some(name)
}

/// `queue/<name>`: the queue repository path (without `.git`) of a client.
pub fn queue_path(client: &str) -> String {
    format!("{QUEUE_DIR}/{client}")
}

/// `[gitosis] repositories`, else `repositories`.
pub fn global_prefix(conf: &Config) -> String {
    conf.get("gitosis", "repositories").unwrap_or(DEFAULT_REPOSITORIES).to_string()
}

fn is_segment(seg: &str) -> bool {
    let mut bytes = seg.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'@' | b'.' | b'_' | b'-'))
}

/// The safe-path rule on an unquoted relative repository path (gitosis'
/// `ALLOW_RE`, used by serve and for `map` targets): one or more segments
/// separated by single `/`, each starting with an ASCII letter or digit,
/// followed by letters, digits, `@`, `.`, `_`, `-`. No segment can start
/// with `.` (no `..`, no hidden files) or `-` (no option injection).
pub fn is_safe_relpath(path: &str) -> bool {
    !path.is_empty() && path.split('/').all(is_segment)
}

/// Python's `os.path.splitext` test used by gitosis: strip one `.git`
/// extension of the last path component. Leading dots of the component
/// do not start an extension (`a/.git` stays as it is).
pub fn strip_git_suffix(path: &str) -> &str {
    let sep = path.rfind('/').map_or(0, |i| i + 1);
    let Some(dot) = path.rfind('.') else {
        return path;
    };
    if dot < sep {
        return path;
    }
    let component_head = path.get(sep..dot).unwrap_or("");
    if component_head.bytes().all(|b| b == b'.') {
        return path; // only dots before the last dot: no extension
    }
    match path.get(dot..) {
        Some(".git") => path.get(..dot).unwrap_or(path),
        _ => path,
    }
}

/// Pre-computed membership index over the `[group …]` sections, so that
/// resolution is linear in the size of the file and needs no recursion
/// (a hostile chain of 40 000 nested groups must not overflow the stack).
struct GroupIndex<'a> {
    /// Group names (section name minus `group `) in file order.
    names: Vec<&'a str>,
    /// Member token → indices of the groups listing it, ascending.
    by_member: HashMap<&'a str, Vec<usize>>,
    /// Indices of the groups listing `@all`, ascending.
    at_all: Vec<usize>,
}

impl<'a> GroupIndex<'a> {
    fn new(conf: &'a Config) -> Self {
        let mut names = Vec::new();
        let mut by_member: HashMap<&'a str, Vec<usize>> = HashMap::new();
        let mut at_all = Vec::new();
        for section in conf.sections() {
            let Some(group) = section.strip_prefix(GROUP_PREFIX) else {
                continue;
            };
            let idx = names.len();
            names.push(group);
            let members = conf.get(section, "members").unwrap_or("");
            for token in split_list(members) {
                let list = by_member.entry(token).or_default();
                if list.last() != Some(&idx) {
                    list.push(idx);
                }
                if token == "@all" && at_all.last() != Some(&idx) {
                    at_all.push(idx);
                }
            }
        }
        GroupIndex { names, by_member, at_all }
    }

    /// gitosis' `getMembership`: a depth-first walk in file order through
    /// groups listing the user (or `@all`), then through groups listing
    /// `@<group>`; a shared seen-set makes it loop-safe; `all` comes last.
    fn membership(&self, user: &str) -> Vec<String> {
        struct Frame<'l> {
            list: &'l [usize],
            i: usize,
            j: usize,
        }
        let empty: &[usize] = &[];
        let list_of = |token: &str| -> &[usize] { self.by_member.get(token).map_or(empty, |v| v.as_slice()) };
        let mut seen = vec![false; self.names.len()];
        // All `@all` groups before this position are already seen: a frame
        // always yields the first unseen `@all` group before any later one,
        // so the seen ones form a prefix and new frames can skip it.
        let mut all_seen_prefix = 0usize;
        let mut out = Vec::new();
        let mut stack = vec![Frame { list: list_of(user), i: 0, j: 0 }];
        while let Some(frame) = stack.last_mut() {
            while frame.list.get(frame.i).is_some_and(|&g| seen[g]) {
                frame.i += 1;
            }
            frame.j = frame.j.max(all_seen_prefix);
            while self.at_all.get(frame.j).is_some_and(|&g| seen[g]) {
                frame.j += 1;
            }
            let from_list = frame.list.get(frame.i).copied();
            let from_all = self.at_all.get(frame.j).copied();
            let next = match (from_list, from_all) {
                (None, None) => {
                    stack.pop();
                    continue;
                }
                (Some(a), None) => a,
                (None, Some(b)) => b,
                (Some(a), Some(b)) => a.min(b),
            };
            if from_list == Some(next) {
                frame.i += 1;
            }
            if from_all == Some(next) {
                frame.j += 1;
            }
            seen[next] = true;
            while self.at_all.get(all_seen_prefix).is_some_and(|&g| seen[g]) {
                all_seen_prefix += 1;
            }
            let name = self.names.get(next).copied().unwrap_or("");
            out.push(name.to_string());
            let pseudo = format!("@{name}");
            stack.push(Frame { list: list_of(&pseudo), i: 0, j: 0 });
        }
        // Everyone is always a member of group "all" (even if a `[group
        // all]` listing the user was already yielded, as in gitosis).
        out.push("all".to_string());
        out
    }
}

/// The groups `user` belongs to, in gitosis' order (GITOSIS.md 1.4): file
/// order, depth-first through `@group` nesting, groups listing `@all`
/// included, loop-safe, and `all` always last. Pass `@name` to ask which
/// groups include group `name`.
pub fn groups_of(conf: &Config, user: &str) -> Vec<String> {
    GroupIndex::new(conf).membership(user)
}

/// gitosis' `haveAccess` (GITOSIS.md 1.5) followed by Ferry's implicit
/// queue grant (module doc).
///
/// `path` is the validated request path; one `.git` extension is stripped.
/// For each group in [`groups_of`] order: a literal entry of the group's
/// `mode` list (exact, case-sensitive) maps to the path itself, else an
/// option `map <mode> <path>` (looked up lower-cased, so case-insensitive)
/// maps to its value, verbatim. The first hit returns; its prefix is the
/// group's `repositories`, else `[gitosis] repositories`, else
/// `repositories`. Lookups use `[DEFAULT]` fallbacks like gitosis did.
pub fn have_access(conf: &Config, user: &str, mode: Mode, path: &str) -> Option<Access> {
    let path = strip_git_suffix(path);
    for group in groups_of(conf, user) {
        let section = format!("{GROUP_PREFIX}{group}");
        let listed = conf.get(&section, mode.as_str()).is_some_and(|repos| split_list(repos).any(|r| r == path));
        let mapping = if listed {
            Some(path.to_string())
        } else {
            conf.get(&section, &format!("map {} {}", mode.as_str(), path)).map(str::to_string)
        };
        if let Some(relpath) = mapping {
            let prefix = conf.get(&section, "repositories").map(str::to_string).unwrap_or_else(|| global_prefix(conf));
            return Some(Access { prefix, relpath });
        }
    }
    if mode == Mode::Writable {
        let wanted = path.strip_prefix(QUEUE_DIR)?.strip_prefix('/')?;
        if wanted == user && is_valid_client_name(user) && conf.has_section(&format!("{FERRY_CLIENT_PREFIX}{user}")) {
            return Some(Access { prefix: global_prefix(conf), relpath: queue_path(user) });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(s: &str) -> Config {
        match Config::parse(s.as_bytes()) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    fn acc(prefix: &str, relpath: &str) -> Option<Access> {
        Some(Access { prefix: prefix.into(), relpath: relpath.into() })
    }

    // Membership cases modelled on gitosis' group tests.
    #[test]
    fn membership_basic() {
        let c = conf("[group hackers]\nmembers = jdoe\n");
        assert_eq!(groups_of(&c, "jdoe"), ["hackers", "all"]);
        assert_eq!(groups_of(&c, "other"), ["all"]);
        let c = conf("[group hackers]\n");
        assert_eq!(groups_of(&c, "jdoe"), ["all"]);
        let c = conf("[group hackers]\nmembers = wsmith jdoe danny\n");
        assert_eq!(groups_of(&c, "jdoe"), ["hackers", "all"]);
        let c = conf("[group hackers]\nmembers = wsmith\n  jdoe\n");
        assert_eq!(groups_of(&c, "jdoe"), ["hackers", "all"]);
    }

    #[test]
    fn membership_nested_and_order() {
        let c = conf("[group hackers]\nmembers = wsmith @smackers\n[group smackers]\nmembers = danny jdoe\n");
        assert_eq!(groups_of(&c, "jdoe"), ["smackers", "hackers", "all"]);
        let c = conf(
            "[group hackers]\nmembers = wsmith @smackers\n[group smackers]\nmembers = danny @whackers\n[group whackers]\nmembers = jdoe\n",
        );
        assert_eq!(groups_of(&c, "jdoe"), ["whackers", "smackers", "hackers", "all"]);
        // depth-first: the nested parent comes right after its child, before
        // later direct memberships
        let c = conf("[group a]\nmembers = @c\n[group b]\nmembers = jdoe\n[group c]\nmembers = jdoe\n");
        assert_eq!(groups_of(&c, "jdoe"), ["b", "c", "a", "all"]);
    }

    #[test]
    fn membership_loops_and_undefined() {
        let c = conf("[group hackers]\nmembers = @smackers\n[group smackers]\nmembers = @hackers jdoe\n");
        assert_eq!(groups_of(&c, "jdoe"), ["smackers", "hackers", "all"]);
        let c = conf("[group a]\nmembers = @nosuch jdoe @a\n");
        assert_eq!(groups_of(&c, "jdoe"), ["a", "all"]);
    }

    #[test]
    fn membership_at_all() {
        let c = conf("[group readers]\nmembers = @all\n[group x]\nmembers = @readers\n");
        assert_eq!(groups_of(&c, "anyone"), ["readers", "x", "all"]);
        // @all groups also match the pseudo-users of the recursion
        let c = conf("[group a]\nmembers = jdoe\n[group b]\nmembers = @all\n[group c]\nmembers = jdoe\n");
        assert_eq!(groups_of(&c, "jdoe"), ["a", "b", "c", "all"]);
        // [group all] applies to everyone via the final "all"; if it also
        // lists the user, gitosis yields it twice
        let c = conf("[group all]\nmembers = jdoe\n");
        assert_eq!(groups_of(&c, "jdoe"), ["all", "all"]);
        assert_eq!(groups_of(&c, "x"), ["all"]);
    }

    #[test]
    fn membership_defaults_and_odd_names() {
        let c = conf("[DEFAULT]\nmembers = jdoe\n[group a]\n[group b]\nmembers = x\n");
        assert_eq!(groups_of(&c, "jdoe"), ["a", "all"]);
        let c = conf("[group  spaced]\nmembers = jdoe\n[groupx]\nmembers = jdoe\n");
        assert_eq!(groups_of(&c, "jdoe"), [" spaced", "all"]);
    }

    #[test]
    fn deep_nesting_does_not_overflow() {
        // about 1 MiB: the deepest chain the size cap lets through
        let mut s = String::from("[group g0]\nmembers=jdoe\n");
        for i in 1..34_000 {
            s.push_str(&format!("[group g{i}]\nmembers=@g{}\n", i - 1));
        }
        let c = conf(&s);
        let groups = groups_of(&c, "jdoe");
        assert_eq!(groups.len(), 34_001);
        assert_eq!(groups[33_999], "g33999");
        // many @all groups and a deep chain together stay fast
        let mut s = String::new();
        for i in 0..20_000 {
            s.push_str(&format!("[group g{i}]\nmembers = @all @g{}\n", i + 1));
        }
        let c = conf(&s);
        assert_eq!(groups_of(&c, "x").len(), 20_001);
    }

    #[test]
    fn git_suffix() {
        let cases = [
            ("foo.git", "foo"),
            ("foo", "foo"),
            ("a/b.git", "a/b"),
            ("foo.git.git", "foo.git"),
            ("a..git", "a."),
            ("..git", "..git"),
            (".git", ".git"),
            ("a/.git", "a/.git"),
            ("a.b/c", "a.b/c"),
            ("a.git/c", "a.git/c"),
            ("foo.GIT", "foo.GIT"),
            ("", ""),
        ];
        for (input, want) in cases {
            assert_eq!(strip_git_suffix(input), want, "{input}");
        }
    }

    // Access cases modelled on gitosis' access tests.
    #[test]
    fn access_literal_and_modes() {
        let c = conf("[group fooers]\nmembers = jdoe\nwritable = foo/bar\n");
        assert_eq!(have_access(&c, "jdoe", Mode::Writable, "foo/bar"), acc("repositories", "foo/bar"));
        assert_eq!(have_access(&c, "jdoe", Mode::Writable, "foo/bar.git"), acc("repositories", "foo/bar"));
        assert_eq!(have_access(&c, "jdoe", Mode::Readonly, "foo/bar"), None);
        assert_eq!(have_access(&c, "jdoe", Mode::Writeable, "foo/bar"), None);
        assert_eq!(have_access(&c, "other", Mode::Writable, "foo/bar"), None);
        assert_eq!(have_access(&c, "jdoe", Mode::Writable, "Foo/bar"), None);
        assert_eq!(have_access(&c, "jdoe", Mode::Writable, "foo"), None);
        let c = conf("[group fooers]\nmembers = jdoe\nreadonly = foo/bar\nwriteable = baz\n");
        assert_eq!(have_access(&c, "jdoe", Mode::Readonly, "foo/bar"), acc("repositories", "foo/bar"));
        assert_eq!(have_access(&c, "jdoe", Mode::Writable, "foo/bar"), None);
        assert_eq!(have_access(&c, "jdoe", Mode::Writeable, "baz"), acc("repositories", "baz"));
    }

    #[test]
    fn access_map() {
        let c = conf(
            "[group fooers]\nmembers = jdoe\nmap writable foo/bar = quux/thud\nmap readonly Ro = some/where.git\n",
        );
        assert_eq!(have_access(&c, "jdoe", Mode::Writable, "foo/bar"), acc("repositories", "quux/thud"));
        assert_eq!(have_access(&c, "jdoe", Mode::Writable, "FOO/Bar.git"), acc("repositories", "quux/thud"));
        // map targets are verbatim (validation is enrollment's/serve's job)
        assert_eq!(have_access(&c, "jdoe", Mode::Readonly, "ro"), acc("repositories", "some/where.git"));
        assert_eq!(have_access(&c, "jdoe", Mode::Readonly, "foo/bar"), None);
    }

    #[test]
    fn access_prefixes_and_first_match() {
        let c = conf(
            "[gitosis]\nrepositories = /srv/git\n[group a]\nmembers = jdoe\nrepositories = elsewhere\nwritable = x\n[group b]\nmembers = jdoe\nwritable = x y\n",
        );
        assert_eq!(have_access(&c, "jdoe", Mode::Writable, "x"), acc("elsewhere", "x"));
        assert_eq!(have_access(&c, "jdoe", Mode::Writable, "y"), acc("/srv/git", "y"));
        let c = conf("[group a]\nmembers = @all\nreadonly = pub\n[group all]\nwritable = w\n");
        assert_eq!(have_access(&c, "anyone", Mode::Readonly, "pub"), acc("repositories", "pub"));
        assert_eq!(have_access(&c, "anyone", Mode::Writable, "w"), acc("repositories", "w"));
    }

    #[test]
    fn access_nested_example_from_gitosis_md() {
        let c = conf(
            "[group backup-hosts]\nmembers = host-a host-b @new-hosts\nwritable = queue/host-a queue/host-b\n[group new-hosts]\nmembers = host-c\n[group readers]\nmembers = @all\nreadonly = public/docs\n",
        );
        assert!(have_access(&c, "host-c", Mode::Writable, "queue/host-a.git").is_some());
        assert!(have_access(&c, "host-c", Mode::Writable, "queue/host-b").is_some());
        assert!(have_access(&c, "nobody", Mode::Readonly, "public/docs").is_some());
        assert!(have_access(&c, "nobody", Mode::Writable, "queue/host-a").is_none());
    }

    #[test]
    fn ferry_implicit_queue_grant() {
        let c = conf("[gitosis]\nrepositories = /srv/repos\n[ferry client host-a]\naddress = x\n");
        assert_eq!(have_access(&c, "host-a", Mode::Writable, "queue/host-a.git"), acc("/srv/repos", "queue/host-a"));
        assert_eq!(have_access(&c, "host-a", Mode::Writable, "queue/host-a"), acc("/srv/repos", "queue/host-a"));
        // only writable, only its own queue, only the exact name
        assert_eq!(have_access(&c, "host-a", Mode::Writeable, "queue/host-a"), None);
        assert_eq!(have_access(&c, "host-a", Mode::Readonly, "queue/host-a"), None);
        assert_eq!(have_access(&c, "host-b", Mode::Writable, "queue/host-a"), None);
        assert_eq!(have_access(&c, "host-a", Mode::Writable, "queue/host-b"), None);
        assert_eq!(have_access(&c, "host-a", Mode::Writable, "queue/HOST-A"), None);
        assert_eq!(have_access(&c, "host-a", Mode::Writable, "host-a"), None);
        assert_eq!(have_access(&c, "host-a", Mode::Writable, "x/queue/host-a"), None);
        // without [gitosis] repositories the default prefix is used
        let c = conf("[ferry client host-a]\n");
        assert_eq!(have_access(&c, "host-a", Mode::Writable, "queue/host-a"), acc("repositories", "queue/host-a"));
        // invalid names grant nothing
        let c = conf("[ferry client a.git]\n[ferry client  b]\n");
        assert_eq!(have_access(&c, "a.git", Mode::Writable, "queue/a.git.git"), None);
        assert_eq!(have_access(&c, " b", Mode::Writable, "queue/ b"), None);
        // a group grant comes first and keeps its prefix
        let c =
            conf("[ferry client host-a]\n[group g]\nmembers = host-a\nrepositories = grp\nwritable = queue/host-a\n");
        assert_eq!(have_access(&c, "host-a", Mode::Writable, "queue/host-a"), acc("grp", "queue/host-a"));
    }

    #[test]
    fn ferry_client_section_names() {
        assert_eq!(ferry_client_name("ferry client host-a"), Some("host-a"));
        assert_eq!(ferry_client_name("ferry client "), None);
        assert_eq!(ferry_client_name("ferry client a b"), None);
        assert_eq!(ferry_client_name("ferry clients a"), None);
        assert_eq!(ferry_client_name("group a"), None);
    }
}
