//! The pure part of `serve USER` for the client-side restore verb
//! `ferry-restore` (issue 13 point 2): a client reads back its own
//! backups, read-only, through the same forced command that takes its
//! pushes.
//!
//! The grammar is deliberately tiny, one space between words, no quoting
//! except git's own:
//!
//! - `ferry-restore list SOURCE [STAMP]`: which artifact of the source (or
//!   which mirror) a restore would use; `SOURCE` a request-grammar
//!   [`Name`], `STAMP` a request-grammar [`Stamp`];
//! - `ferry-restore get CLIENT/SOURCE/RECEIVED/FILE OFFSET`: the bytes of
//!   one catalog artifact from `OFFSET` on (resumable downloads); every
//!   segment a [`Name`], `CLIENT` the authenticated user itself;
//! - `ferry-restore git 'REPO'`: git's upload-pack of the user's own mirror
//!   `data/<user>/git/<REPO>.git` (what git sends for
//!   `--upload-pack='ferry-restore git'`); `REPO` is a gitosis safe path.
//!
//! Nothing here names a directory by what the client sent: the data
//! directory is always the authenticated user's (SECURITY I1), every path
//! segment passes the request grammar (no `..`, no `/`-leading, no `.`
//! prefix), and only enrolled clients (`[ferry client USER]`) may use the
//! verb. Nothing in it writes. Refusals reuse [`Denied`], so they are
//! logged as `E_ACL_DENIED` like every other refused command.

use ferry_request::{Name, Stamp};

use crate::conf::Config;
use crate::serve::{Denied, MAX_COMMAND_BYTES, safe_path_arg};

/// The verb's first word.
pub const VERB: &str = "ferry-restore";

/// A granted restore request; every value already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreRequest {
    /// Describe the artifact (or mirror) of `source` as of `at`.
    List { source: Name, at: Option<Stamp> },
    /// Describe every source and mirror of the user as of `at`
    /// (whole-host recovery).
    ListAll { at: Option<Stamp> },
    /// Stream the catalog artifact `path` (`USER/SOURCE/RECEIVED/FILE`)
    /// from byte `offset`.
    Get { path: String, offset: u64 },
    /// upload-pack of `data/<user>/git/<repo>.git`; `repo` is a safe
    /// relative path without `.git`.
    Git { repo: String },
}

/// Whether `original` asks for the restore verb (then
/// [`decide_restore`] decides; otherwise the gitosis rules do).
pub fn is_restore(original: &str) -> bool {
    original.split(' ').next() == Some(VERB)
}

/// Parse and decide a `ferry-restore …` command for `user`.
pub fn decide_restore(conf: &Config, user: &str, original: &str) -> Result<RestoreRequest, Denied> {
    if original.contains('\n') {
        return Err(Denied::Newline);
    }
    if original.len() > MAX_COMMAND_BYTES || original.chars().any(|c| c.is_control()) {
        return Err(Denied::Unknown);
    }
    let rest = original.strip_prefix(VERB).and_then(|r| r.strip_prefix(' ')).ok_or(Denied::Unknown)?;
    if rest == "list-all" {
        return granted(conf, user, RestoreRequest::ListAll { at: None });
    }
    let (sub, args) = rest.split_once(' ').ok_or(Denied::Unknown)?;
    let req = match sub {
        "list" => {
            let words: Vec<&str> = args.split(' ').collect();
            let (source, at) = match words.as_slice() {
                [s] => (*s, None),
                [s, t] => (*s, Some(*t)),
                _ => return Err(Denied::Dangerous),
            };
            let source = Name::parse(source).map_err(|_| Denied::Dangerous)?;
            let at = at.map(Stamp::parse).transpose().map_err(|_| Denied::Dangerous)?;
            RestoreRequest::List { source, at }
        }
        "list-all" => {
            let at = Stamp::parse(args).map_err(|_| Denied::Dangerous)?;
            RestoreRequest::ListAll { at: Some(at) }
        }
        "get" => {
            let (path, offset) = args.split_once(' ').ok_or(Denied::Dangerous)?;
            if offset.is_empty() || !offset.bytes().all(|b| b.is_ascii_digit()) || offset.len() > 19 {
                return Err(Denied::Dangerous);
            }
            let offset: u64 = offset.parse().map_err(|_| Denied::Dangerous)?;
            let segs: Vec<&str> = path.split('/').collect();
            if segs.len() != 4 || segs.iter().any(|s| Name::parse(s).is_err()) {
                return Err(Denied::Dangerous);
            }
            if segs.first() != Some(&user) {
                // Another client's data: the key may read only its own.
                return Err(Denied::ReadDenied);
            }
            RestoreRequest::Get { path: path.to_owned(), offset }
        }
        "git" => {
            let path = safe_path_arg(args).ok_or(Denied::Dangerous)?;
            let repo = path.strip_suffix(".git").unwrap_or(path);
            if repo.is_empty() || repo.split('/').any(|s| Name::parse(s).is_err()) {
                return Err(Denied::Dangerous);
            }
            RestoreRequest::Git { repo: repo.to_owned() }
        }
        _ => return Err(Denied::Unknown),
    };
    granted(conf, user, req)
}

/// `req` for an enrolled client; only those have a data directory to read
/// back.
fn granted(conf: &Config, user: &str, req: RestoreRequest) -> Result<RestoreRequest, Denied> {
    if !conf.has_section(&format!("ferry client {user}")) {
        return Err(Denied::ReadDenied);
    }
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf() -> Config {
        match Config::parse(b"[gitosis]\n[ferry client clienta]\n[ferry client clientb]\n[group admins]\nmembers = admin\nwritable = gitosis-admin\n") {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn restore_grammar_and_permissions() {
        let c = conf();
        let name = |s: &str| Name::parse(s).unwrap();
        let p = "clienta/site/20261122T010203Z/site.tar.zst";
        let cases: Vec<(&str, String, Result<RestoreRequest, Denied>)> = vec![
            ("clienta", "ferry-restore list site".into(), Ok(RestoreRequest::List { source: name("site"), at: None })),
            (
                "clienta",
                "ferry-restore list site 20261122T010203Z".into(),
                Ok(RestoreRequest::List { source: name("site"), at: Some(Stamp::parse("20261122T010203Z").unwrap()) }),
            ),
            ("clienta", format!("ferry-restore get {p} 0"), Ok(RestoreRequest::Get { path: p.into(), offset: 0 })),
            ("clienta", format!("ferry-restore get {p} 77"), Ok(RestoreRequest::Get { path: p.into(), offset: 77 })),
            ("clienta", "ferry-restore git '/project'".into(), Ok(RestoreRequest::Git { repo: "project".into() })),
            ("clienta", "ferry-restore git 'team/app.git'".into(), Ok(RestoreRequest::Git { repo: "team/app".into() })),
            ("clienta", "ferry-restore list-all".into(), Ok(RestoreRequest::ListAll { at: None })),
            (
                "clienta",
                "ferry-restore list-all 20261122T010203Z".into(),
                Ok(RestoreRequest::ListAll { at: Some(Stamp::parse("20261122T010203Z").unwrap()) }),
            ),
            ("clienta", "ferry-restore list-all ../x".into(), Err(Denied::Dangerous)),
            ("admin", "ferry-restore list-all".into(), Err(Denied::ReadDenied)),
            // another client's data
            ("clientb", format!("ferry-restore get {p} 0"), Err(Denied::ReadDenied)),
            // not an enrolled client (the admin key, a stranger)
            ("admin", "ferry-restore list site".into(), Err(Denied::ReadDenied)),
            ("stranger", "ferry-restore git 'project'".into(), Err(Denied::ReadDenied)),
            // `..`, absolute paths, odd shapes
            ("clienta", "ferry-restore list ..".into(), Err(Denied::Dangerous)),
            ("clienta", "ferry-restore list /etc/passwd".into(), Err(Denied::Dangerous)),
            ("clienta", "ferry-restore list ../clientb".into(), Err(Denied::Dangerous)),
            ("clienta", "ferry-restore get clienta/../clientb/x/y 0".into(), Err(Denied::Dangerous)),
            ("clienta", "ferry-restore get /etc/passwd/x/y 0".into(), Err(Denied::Dangerous)),
            ("clienta", "ferry-restore get clienta/site/x 0".into(), Err(Denied::Dangerous)),
            ("clienta", format!("ferry-restore get {p} -1"), Err(Denied::Dangerous)),
            ("clienta", format!("ferry-restore get {p} 1e3"), Err(Denied::Dangerous)),
            ("clienta", format!("ferry-restore get {p} 99999999999999999999"), Err(Denied::Dangerous)),
            ("clienta", "ferry-restore git '../queue/clientb'".into(), Err(Denied::Dangerous)),
            ("clienta", "ferry-restore git project".into(), Err(Denied::Dangerous)),
            ("clienta", "ferry-restore git '.hidden'".into(), Err(Denied::Dangerous)),
            ("clienta", "ferry-restore list site 2026-11-22".into(), Err(Denied::Dangerous)),
            ("clienta", "ferry-restore list site x y".into(), Err(Denied::Dangerous)),
            ("clienta", "ferry-restore list  site".into(), Err(Denied::Dangerous)),
            // unknown sub-verbs, control characters, newlines
            ("clienta", "ferry-restore put site".into(), Err(Denied::Unknown)),
            ("clienta", "ferry-restore".into(), Err(Denied::Unknown)),
            ("clienta", "ferry-restore list site\r".into(), Err(Denied::Unknown)),
            ("clienta", "ferry-restore list site\nsh".into(), Err(Denied::Newline)),
        ];
        for (user, command, want) in &cases {
            assert_eq!(&decide_restore(&c, user, command), want, "{user}: {command:?}");
        }
        assert!(is_restore("ferry-restore list x"));
        assert!(!is_restore("git-upload-pack 'ferry-restore'"));
        assert!(!is_restore("ferry-restorex list x"));
    }

    /// Whatever arrives, a granted request stays inside the user's data:
    /// a `get` names the user's own rows, every name is a safe token.
    #[test]
    fn random_input_never_escapes_the_users_data() {
        let c = conf();
        let mut rng = crate::testutil::Rng::new(0x7e5704e);
        let seeds: &[&[u8]] = &[
            b"ferry-restore get clienta/site/20261122T010203Z/site.tar.zst 12",
            b"ferry-restore list site 20261122T010203Z",
            b"ferry-restore git '/team/app.git'",
            b"ferry-restore list-all 20261122T010203Z",
        ];
        for round in 0..30_000 {
            let input = if round % 2 == 0 {
                let seed = seeds[rng.below(seeds.len())];
                rng.mutate(seed)
            } else {
                (0..rng.below(64)).map(|_| rng.byte()).collect()
            };
            let text = String::from_utf8_lossy(&input);
            match decide_restore(&c, "clienta", &text) {
                Ok(RestoreRequest::Get { path, .. }) => {
                    assert!(path.starts_with("clienta/"), "{text:?}");
                    assert!(path.split('/').all(ferry_text::is_safe_token), "{text:?}");
                }
                Ok(RestoreRequest::Git { repo }) => {
                    assert!(repo.split('/').all(ferry_text::is_safe_token), "{text:?}")
                }
                Ok(RestoreRequest::List { source, .. }) => assert!(ferry_text::is_safe_token(source.as_str())),
                Ok(RestoreRequest::ListAll { .. }) | Err(_) => {}
            }
        }
    }
}
