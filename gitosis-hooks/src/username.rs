//! User and client names (GITOSIS.md 1.6).
//!
//! A gitosis user name is the base name of `keydir/<user>.pub` and is baked
//! into the forced command of every authorized_keys line, which sshd runs
//! through the account's shell; the character rule is what keeps that shell
//! string safe. Ferry client names additionally become directory names
//! (`pool/<client>/`, `data/<client>/`) and queue repo names
//! (`queue/<client>.git`), so they follow a stricter rule.

/// gitosis' safe-user-name rule: an ASCII letter, then letters, digits,
/// `_`, `.`, `-`; optionally one `@` followed by a letter and then letters,
/// digits, `.`, `-`.
///
/// Unlike gitosis' Python regex (whose `$` also matches before a final
/// newline, so `"jdoe\n"` passed), this is an exact whole-string match.
pub fn is_safe_username(s: &str) -> bool {
    let (local, host) = match s.split_once('@') {
        Some((l, h)) => (l, Some(h)),
        None => (s, None),
    };
    let mut chars = local.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_alphabetic()) {
        return false;
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
        return false;
    }
    match host {
        None => true,
        Some(h) => {
            let mut chars = h.chars();
            chars.next().is_some_and(|c| c.is_ascii_alphabetic())
                && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
        }
    }
}

/// Longest Ferry client name.
pub const MAX_CLIENT_NAME: usize = 63;

/// Ferry client id rule: `^[A-Za-z][A-Za-z0-9._-]{0,62}$`, no `..`, not
/// ending in `.git` or `.lock` (compared ignoring ASCII case), and a safe
/// gitosis user name.
///
/// Why stricter than gitosis: the id names the queue repo
/// `queue/<id>.git` (a name ending in `.git` would be stripped by the
/// `.git` suffix rule and address another repo), the pool and data
/// directories (no `..`, no `@`, bounded length), and git refuses
/// `.lock`-suffixed path components.
pub fn is_valid_client_name(s: &str) -> bool {
    let mut chars = s.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_alphabetic()) {
        return false;
    }
    if s.len() > MAX_CLIENT_NAME {
        return false;
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
        return false;
    }
    let lower = s.to_ascii_lowercase();
    !s.contains("..") && !lower.ends_with(".git") && !lower.ends_with(".lock") && is_safe_username(s)
}

/// Client names the node keeps for its own directories at the levels
/// where a client name becomes a path component (`keys/<client>/`,
/// `pool/<client>/`, `data/<client>/`, `state/known_hosts/<client>`,
/// `queue/<client>.git`): `node` is `keys/node/`, the shared pull key;
/// `tmp` is kept for staging; `lost+found` is what `mkfs` puts at the top
/// of a file system mounted there. Compared ignoring ASCII case.
pub const RESERVED_CLIENT_NAMES: &[&str] = &["node", "tmp", "lost+found"];

/// Whether `s` is a reserved client name, in any letter case.
pub fn is_reserved_client_name(s: &str) -> bool {
    RESERVED_CLIENT_NAMES.iter().any(|r| r.eq_ignore_ascii_case(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gitosis_examples() {
        for ok in ["jdoe", "JDoe", "j.doe_x-1", "jdoe@host", "jdoe@host.example.com", "a", "a@b", "a@b-", "a.", "a..b"]
        {
            assert!(is_safe_username(ok), "{ok}");
        }
        for bad in [
            "1jdoe",
            "-foo",
            "jd\"oe",
            "jdoe@1host",
            "jdoe@host@x",
            "a@b_c",
            "",
            "@host",
            "jdoe@",
            "jdoe\n",
            "jdoe ",
            "j doe",
            "j/doe",
            "_jdoe",
            ".jdoe",
            "j\u{e9}",
            "jdoe;id",
            "jdoe$(id)",
        ] {
            assert!(!is_safe_username(bad), "{bad:?}");
        }
    }

    #[test]
    fn client_names() {
        for ok in ["host-a", "h", "Host.b_c-1", &"a".repeat(63), "gitx", "a.gi"] {
            assert!(is_valid_client_name(ok), "{ok}");
        }
        for bad in [
            "",
            "1host",
            "-h",
            "_h",
            ".h",
            "host..a",
            "host.git",
            "host.GIT",
            "host.lock",
            "host@x",
            "host/x",
            "host x",
            &"a".repeat(64),
            "h\u{e9}",
            "h\n",
        ] {
            assert!(!is_valid_client_name(bad), "{bad:?}");
        }
    }
}
