//! `[ferry client NAME]` sections: what the administrator enrolls for one
//! client, parsed once into the request grammar's own types.
//!
//! Ferry owns every section whose name is `ferry` or starts with `ferry `;
//! the only valid form is `[ferry client NAME]` with NAME a valid client
//! name ([`crate::username::is_valid_client_name`]). Options are read from
//! the section itself, without `[DEFAULT]` fallbacks, so every fact is
//! written where it applies; unknown options are errors, because a typo
//! such as `qouta` must not silently drop a limit:
//!
//! | option | meaning | default |
//! |---|---|---|
//! | `address` | a [`Host`]: lower-case LDH host name (last label starting with a letter) or dotted-quad IPv4 (no leading zeros) | required |
//! | `port` | SSH port, 1..65535 ([`parse_port`]) | 22 |
//! | `user` | a [`User`] on the client, `^[a-z_][a-z0-9_-]{0,31}$` | required |
//! | `hostkey` | the client's pinned SSH host key, one key line | required |
//! | `git-scheme` | `ssh` or `git` (git:// only when enrolled explicitly) | `ssh` |
//! | `git-port` | git daemon port | 9418 |
//! | `git-roots` | absolute directories the mirrored repos must lie under, each a root [`RemotePath`] | none: no git |
//! | `tree-roots` | absolute directories a snapshot tree's root (`tree` request, `mode = "tree"` on the client) must be or lie under, each a root [`RemotePath`] | none: no trees |
//! | `export` | absolute export directory (dumps, archives), a root [`RemotePath`] | required |
//! | `quota` | total bytes stored (`500M`, `100G`, `2T`, bytes; K/M/G/T = 1024^n), or `unlimited` | the node's `[limits] quota` |
//! | `max-artifact` | largest single artifact, same syntax | the node's `[limits] max_artifact` |
//! | `max-objects` | most objects stored | none |
//! | `job-timeout` | seconds, or with suffix `s`/`m`/`h` | none |
//! | `description` | one line of text | none |
//! | `sources` | the sources expected from this client and how often each must arrive: `NAME:CADENCE …`, cadence `push` or `30m`/`6h`/`1d`/`1w` ([`super::expect`]) | none: no cadence checks |
//! | `web` | boolean (`yes`/`no`, …): the client's own web user (named like the client) may browse this client's view, `/c/NAME/` | `no` |
//! | `keep-last`, `keep-hourly`, `keep-daily`, `keep-weekly`, `keep-monthly`, `keep-yearly`, `keep-within` | retention rules for this client's sources, the whole set ([`super::keep`]) | the node's `[retention]` |
//!
//! # One grammar
//!
//! The address, user, ports, scheme, export dir, git roots and tree roots are the
//! values every request is compared with, so they are parsed here with the
//! request grammar's parsers (`ferry_request`) and stored as its types:
//! the node compares typed values and never parses them again. A root
//! ([`RemotePath::parse_root`]) must leave room below it for a request's
//! path (at most 1024 bytes and 32 segments), so it may have at most 1022
//! bytes and 31 segments: an enrolled root is a root a request can name a
//! path under, and a root that could never be used is refused here, naming
//! the option and the limit, instead of failing every request later.
//!
//! Each client also needs `keydir/NAME.pub` (its push key); Ferry grants it
//! `writable` on `queue/NAME` implicitly ([`crate::access`]).

use ferry_request::{GitScheme, Host, Rejection, RemotePath, User, parse_port};

use super::units::{parse_duration_secs, parse_size_limit, strict_decimal};
use super::{E_ENROL_KEY, Report, quoted, sec};
use crate::conf::{Config, parse_bool, split_list};
use crate::keys::{PublicKey, parse_line};

/// What the administrator enrolled for one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientEnrollment {
    /// Client id (section name and key file name).
    pub name: String,
    /// Host name or IPv4 address the node connects to.
    pub address: Host,
    /// SSH port.
    pub port: u16,
    /// Account on the client the node logs in as.
    pub user: User,
    /// The client's pinned SSH host key.
    pub host_key: PublicKey,
    /// Transport for git mirroring: [`GitScheme::Ssh`] or
    /// [`GitScheme::Git`], never [`GitScheme::Https`] (the node pulls only
    /// over ssh with the pinned host key, or git:// where enrolled).
    pub git_scheme: GitScheme,
    /// git daemon port (for [`GitScheme::Git`]).
    pub git_port: u16,
    /// Directories the mirrored repos must lie under (empty: no git), each
    /// with room for a request path below it.
    pub git_roots: Vec<RemotePath>,
    /// Directories a snapshot tree's root must be or lie under (empty: the
    /// client may not send `tree` requests). Unlike a git root, the root
    /// itself may be named: a tree of all of `/home` is the usual case.
    /// These are the directories whose every readable file the node may
    /// pull, so they are enrolled, never taken from the client.
    pub tree_roots: Vec<RemotePath>,
    /// The client's export directory, with room for a request path below
    /// it.
    pub export_dir: RemotePath,
    /// Total storage quota in bytes (`None`: the node's default;
    /// `quota = unlimited` is `u64::MAX`).
    pub quota_bytes: Option<u64>,
    /// Largest single artifact in bytes (`None`: the node's default;
    /// `max-artifact = unlimited` is `u64::MAX`).
    pub max_artifact_bytes: Option<u64>,
    /// Most objects stored.
    pub max_objects: Option<u64>,
    /// Job time limit in seconds.
    pub job_timeout_secs: Option<u64>,
    /// Free text.
    pub description: Option<String>,
    /// The client's own web user may browse its view (`/c/NAME/`); the
    /// administrators may always.
    pub web: bool,
    /// Sources the administrators expect and how often (`sources`); empty:
    /// the node checks no cadence for this client.
    pub expected: Vec<super::Expected>,
    /// Retention rules for this client's sources (`keep-*`); `None`: the
    /// node's `[retention]`. A `[ferry source …]` section overrides them.
    pub keep: Option<super::KeepRules>,
    /// The share group whose one content store this client's snapshot
    /// trees use (`[ferry share GROUP]`, [`super::share`]); `None`: the
    /// client's own store. Set by [`super::Enrollment::build`].
    pub share: Option<String>,
}

/// Options a `[ferry client]` section may have.
const CLIENT_OPTIONS: &[&str] = &[
    "address",
    "port",
    "user",
    "hostkey",
    "git-scheme",
    "git-port",
    "git-roots",
    "tree-roots",
    "export",
    "quota",
    "max-artifact",
    "max-objects",
    "job-timeout",
    "description",
    "sources",
    "web",
];

const DEFAULT_PORT: u16 = 22;
const DEFAULT_GIT_PORT: u16 = 9418;
const MAX_DESCRIPTION: usize = 256;

const PORT_HINT: &str = "a port number 1..65535";
const ROOT_HINT: &str = "an absolute path of at most 31 [A-Za-z0-9_][A-Za-z0-9._-]{0,99} segments and 1022 bytes";

/// A value of the request grammar's type, or an error naming the option,
/// what it must be and the grammar's reason, with its limit (the
/// rejection's detail is escaped already).
fn typed<T>(rep: &mut Report, where_: &str, opt: &str, expected: &str, parsed: Result<T, Rejection>) -> Option<T> {
    parsed.map_err(|e| rep.conf(format!("{where_} option '{opt}' ({expected}): {}", e.detail))).ok()
}

/// Parses section `section` of client `name`, recording every problem in
/// `rep`; `None` when there was any.
pub(super) fn parse_client(conf: &Config, section: &str, name: &str, rep: &mut Report) -> Option<ClientEnrollment> {
    let before = rep.errors.len();
    let where_ = sec(section);
    for (opt, _) in conf.options(section) {
        if !CLIENT_OPTIONS.contains(&opt) && !super::keep::KEEP_OPTIONS.contains(&opt) {
            rep.conf(format!(
                "{where_}: unknown option {} (known: {}, {})",
                quoted(opt),
                CLIENT_OPTIONS.join(", "),
                super::keep::KEEP_OPTIONS.join(", ")
            ));
        }
    }
    let get = |opt: &str| conf.get_own(section, opt);
    let bad = |rep: &mut Report, opt: &str, value: &str, expected: &str| {
        rep.conf(format!("{where_} option '{opt}': invalid value {} ({expected})", quoted(value)));
    };
    let required = |rep: &mut Report, opt: &str| -> Option<&str> {
        let v = get(opt);
        if v.is_none_or(str::is_empty) {
            rep.conf(format!("{where_}: required option '{opt}' is missing"));
            return None;
        }
        v
    };

    let address = required(rep, "address").and_then(|v| {
        typed(rep, &where_, "address", "a lower-case host name or dotted-quad IPv4 address", Host::parse(v))
    });
    let port = match get("port") {
        None => Some(DEFAULT_PORT),
        Some(v) => typed(rep, &where_, "port", PORT_HINT, parse_port(v)),
    };
    let user = required(rep, "user")
        .and_then(|v| typed(rep, &where_, "user", "an account name matching ^[a-z_][a-z0-9_-]{0,31}$", User::parse(v)));
    let host_key = required(rep, "hostkey").and_then(|v| match parse_line(v) {
        Ok(k) => Some(k),
        Err(e) => {
            rep.error(E_ENROL_KEY, format!("{where_} option 'hostkey': {e}"));
            None
        }
    });
    let git_scheme = match get("git-scheme") {
        None => Some(GitScheme::Ssh),
        Some(v) => match typed(rep, &where_, "git-scheme", "'ssh' or 'git'", GitScheme::parse(v)) {
            Some(GitScheme::Https) => {
                bad(
                    rep,
                    "git-scheme",
                    v,
                    "'ssh' or 'git': the node pulls over ssh with the pinned host key, or git://",
                );
                None
            }
            other => other,
        },
    };
    let git_port = match get("git-port") {
        None => Some(DEFAULT_GIT_PORT),
        Some(v) => typed(rep, &where_, "git-port", PORT_HINT, parse_port(v)),
    };
    if get("git-port").is_some() && git_scheme == Some(GitScheme::Ssh) {
        rep.warn(format!("{where_}: 'git-port' is ignored unless git-scheme = git"));
    }
    let mut git_roots: Vec<RemotePath> = Vec::new();
    for root in split_list(get("git-roots").unwrap_or("")) {
        if let Some(root) = typed(rep, &where_, "git-roots", ROOT_HINT, RemotePath::parse_root(root))
            && !git_roots.contains(&root)
        {
            git_roots.push(root);
        }
    }
    let mut tree_roots: Vec<RemotePath> = Vec::new();
    for root in split_list(get("tree-roots").unwrap_or("")) {
        if let Some(root) = typed(rep, &where_, "tree-roots", ROOT_HINT, RemotePath::parse_root(root))
            && !tree_roots.contains(&root)
        {
            tree_roots.push(root);
        }
    }
    if git_scheme == Some(GitScheme::Git) && get("git-roots").is_none_or(|v| split_list(v).next().is_none()) {
        rep.warn(format!("{where_}: git-scheme = git but no git-roots: no repository can be mirrored"));
    }
    let export_dir =
        required(rep, "export").and_then(|v| typed(rep, &where_, "export", ROOT_HINT, RemotePath::parse_root(v)));
    let positive =
        |rep: &mut Report, opt: &str, parse: fn(&str) -> Option<u64>, expected: &str| -> Option<Option<u64>> {
            match get(opt) {
                None => Some(None),
                Some(v) => match parse(v) {
                    Some(n) if n > 0 => Some(Some(n)),
                    _ => {
                        rep.conf(format!("{where_} option '{opt}': invalid value {} ({expected})", quoted(v)));
                        None
                    }
                },
            }
        };
    let size_hint = "a positive size such as 1048576, 500M, 100G, 2T, or unlimited";
    let quota_bytes = positive(rep, "quota", parse_size_limit, size_hint);
    let max_artifact_bytes = positive(rep, "max-artifact", parse_size_limit, size_hint);
    let max_objects = positive(rep, "max-objects", strict_decimal, "a positive integer");
    let job_timeout_secs =
        positive(rep, "job-timeout", parse_duration_secs, "seconds, or a number with suffix s, m or h");
    let description = match get("description") {
        None => Some(None),
        Some(v) if v.chars().any(char::is_control) || v.chars().count() > MAX_DESCRIPTION => {
            bad(rep, "description", v, "one line of at most 256 characters");
            None
        }
        Some(v) => Some(Some(v.to_string())),
    };
    let web = match get("web") {
        None => Some(false),
        Some(v) => parse_bool(v).or_else(|| {
            bad(rep, "web", v, "a boolean: yes/no, true/false, on/off, 1/0");
            None
        }),
    };
    let expected = match super::expect::parse_sources(get("sources").unwrap_or("")) {
        Ok(v) => Some(v),
        Err(errors) => {
            for e in errors {
                rep.conf(format!("{where_} option 'sources': {e}"));
            }
            None
        }
    };
    let keep = super::keep::parse_keep(conf, section, rep);

    if rep.errors.len() != before {
        return None;
    }
    Some(ClientEnrollment {
        name: name.to_string(),
        address: address?,
        port: port?,
        user: user?,
        host_key: host_key?,
        git_scheme: git_scheme?,
        git_port: git_port?,
        git_roots,
        tree_roots,
        export_dir: export_dir?,
        quota_bytes: quota_bytes?,
        max_artifact_bytes: max_artifact_bytes?,
        max_objects: max_objects?,
        job_timeout_secs: job_timeout_secs?,
        description: description?,
        web: web?,
        expected: expected?,
        keep: keep?,
        share: None,
    })
}
