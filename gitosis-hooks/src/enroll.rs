//! Ferry's enrollment facts and whole-config validation.
//!
//! The admin hook calls [`Enrollment::build`] on the pushed gitosis.conf and
//! `keydir/` **before** activating anything (fixing gitosis weakness W1:
//! a broken push must not lock everybody out). All problems are collected,
//! not just the first, so one push-fix cycle suffices.
//!
//! # `[ferry client NAME]` sections
//!
//! Ferry owns every section whose name is `ferry` or starts with `ferry `;
//! the only valid form is `[ferry client NAME]` with NAME a valid client
//! name ([`crate::username::is_valid_client_name`]). Options (read from the section itself,
//! without `[DEFAULT]` fallbacks, so every fact is written where it
//! applies); unknown options are errors, because a typo such as `qouta`
//! must not silently drop a limit:
//!
//! | option | meaning | default |
//! |---|---|---|
//! | `address` | lower-case LDH host name or dotted-quad IPv4 (no leading zeros) | required |
//! | `port` | SSH port, 1..65535 | 22 |
//! | `user` | account on the client, `^[a-z_][a-z0-9_-]{0,31}$` | required |
//! | `hostkey` | the client's pinned SSH host key, one key line | required |
//! | `git-scheme` | `ssh` or `git` (git:// only when enrolled explicitly) | `ssh` |
//! | `git-port` | git daemon port | 9418 |
//! | `git-roots` | absolute directories the mirrored repos must lie under | none: no git |
//! | `export` | absolute export directory (dumps, archives) | required |
//! | `quota` | total bytes stored (`500M`, `100G`, `2T`, bytes; K/M/G/T = 1024^n) | none |
//! | `max-artifact` | largest single artifact, same syntax | none |
//! | `max-objects` | most objects stored | none |
//! | `job-timeout` | seconds, or with suffix `s`/`m`/`h` | none |
//! | `description` | one line of text | none |
//! | `web` | boolean (`yes`/`no`, …): the client's own web user (named like the client) may browse this client's view, `/c/NAME/` | `no` |
//!
//! Each client also needs `keydir/NAME.pub` (its push key); Ferry grants it
//! `writable` on `queue/NAME` implicitly ([`crate::access`]).
//!
//! # Other checks
//!
//! * key files: gitosis' name rules (skip hidden and non-`.pub` names,
//!   warn about unsafe user names), every key line must parse
//!   (`E_ENROL_KEY`, AC-07), no key under two users (`E_ENROL_DUP_KEY`,
//!   AC-08);
//! * `gitweb`/`daemon` booleans in `[gitosis]` and `[repo …]` must be valid;
//! * `map` targets must be safe relative paths not ending in `.git` (W2);
//! * client names: none of the node's own directory names
//!   ([`crate::username::RESERVED_CLIENT_NAMES`], in any letter case), and
//!   no two clients whose names differ only in letter case (their queue
//!   repos, pools and data would be one on a case-insensitive file system
//!   or object store; the node also compares with the storage it already
//!   has);
//! * nobody but client X may push to `queue/X` (its identity is the queue
//!   name: SECURITY I1, AC-01), and no client may push to `gitosis-admin`;
//! * `[gitosis] repositories`, `generate-files-in`,
//!   `ssh-authorized-keys-path` and group `repositories` are not honoured
//!   (W2: an admin-repo writer could point them anywhere); Ferry takes its
//!   paths from the node's TOML config and warns when they are set.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use crate::access::{
    FERRY_CLIENT_PREFIX, GROUP_PREFIX, Mode, QUEUE_DIR, ferry_client_name, groups_of, have_access, strip_git_suffix,
};
use crate::conf::{Config, DEFAULT_SECTION, parse_bool, split_list};
use crate::escape::{escape, escape_capped};
use crate::keys::{PublicKey, parse_keyfile, parse_line};
use crate::serve::is_safe_relpath;
use crate::username::{RESERVED_CLIENT_NAMES, is_reserved_client_name, is_safe_username};

/// A key file or key line is invalid (AC-07).
pub const E_ENROL_KEY: &str = "E_ENROL_KEY";
/// One key is enrolled under two users (AC-08).
pub const E_ENROL_DUP_KEY: &str = "E_ENROL_DUP_KEY";
/// gitosis.conf content is invalid.
pub const E_ENROL_CONF: &str = "E_ENROL_CONF";

/// Name of the admin repository (writers control the node's enrollment).
pub const ADMIN_REPO: &str = "gitosis-admin";

/// One enrollment problem. `message` names the section, option or file;
/// quoted input in it is escaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollError {
    /// `E_ENROL_KEY`, `E_ENROL_DUP_KEY` or `E_ENROL_CONF`.
    pub code: &'static str,
    /// What is wrong and where.
    pub message: String,
}

impl fmt::Display for EnrollError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let msg = crate::escape::sanitize(&self.message, 400);
        write!(f, "{}: {msg}", self.code)
    }
}

impl std::error::Error for EnrollError {}

/// How the node fetches a client's git repositories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GitScheme {
    /// Over SSH with the node's pull key and the pinned host key.
    Ssh,
    /// Anonymous `git://` (unauthenticated; only when enrolled explicitly).
    Git,
}

/// What the administrator enrolled for one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientEnrollment {
    /// Client id (section name and key file name).
    pub name: String,
    /// Host name or IPv4 address the node connects to.
    pub address: String,
    /// SSH port.
    pub port: u16,
    /// Account on the client the node logs in as.
    pub user: String,
    /// The client's pinned SSH host key.
    pub host_key: PublicKey,
    /// Transport for git mirroring.
    pub git_scheme: GitScheme,
    /// git daemon port (for [`GitScheme::Git`]).
    pub git_port: u16,
    /// Directories the mirrored repos must lie under (empty: no git).
    pub git_roots: Vec<String>,
    /// The client's export directory.
    pub export_dir: String,
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
}

/// The validated enrollment of a whole admin-repo state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Enrollment {
    /// Clients by name.
    pub clients: BTreeMap<String, ClientEnrollment>,
    /// Every user with a valid key file, with its keys (push/admin keys).
    pub users: BTreeMap<String, Vec<PublicKey>>,
    /// Problems that do not block activation; escaped, ready to print.
    pub warnings: Vec<String>,
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
    "export",
    "quota",
    "max-artifact",
    "max-objects",
    "job-timeout",
    "description",
    "web",
];

const GITOSIS_OPTIONS: &[&str] =
    &["repositories", "generate-files-in", "ssh-authorized-keys-path", "gitweb", "daemon", "loglevel"];

const REPO_OPTIONS: &[&str] = &["gitweb", "daemon", "description", "owner"];

const GROUP_OPTIONS: &[&str] = &["members", "writable", "writeable", "readonly", "repositories"];

const LOGLEVELS: &[&str] = &["DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL", "NOTSET"];

const DEFAULT_PORT: u16 = 22;
const DEFAULT_GIT_PORT: u16 = 9418;
const MAX_PATH: usize = 4096;
const MAX_DESCRIPTION: usize = 256;

/// Strict decimal: digits only, no sign, no leading zeros ("0" itself ok).
fn strict_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    s.parse().ok()
}

/// Sizes: plain bytes or a number with one of `K`, `M`, `G`, `T`
/// (binary: 1024^n; lower case accepted). No spaces, no fractions, no
/// leading zeros; overflow → `None`.
pub fn parse_size(s: &str) -> Option<u64> {
    let (num, shift) = match s.as_bytes().last()? {
        b'K' | b'k' => (s.get(..s.len() - 1)?, 10),
        b'M' | b'm' => (s.get(..s.len() - 1)?, 20),
        b'G' | b'g' => (s.get(..s.len() - 1)?, 30),
        b'T' | b't' => (s.get(..s.len() - 1)?, 40),
        _ => (s, 0),
    };
    strict_decimal(num)?.checked_mul(1u64 << shift)
}

/// A size limit: [`parse_size`], or `unlimited` (`u64::MAX`), which lifts
/// the node's default for one client.
pub fn parse_size_limit(s: &str) -> Option<u64> {
    if s == "unlimited" { Some(u64::MAX) } else { parse_size(s) }
}

/// Durations: seconds, or a number with suffix `s`, `m` or `h`. Overflow
/// → `None`.
pub fn parse_duration_secs(s: &str) -> Option<u64> {
    let (num, mult) = match s.as_bytes().last()? {
        b's' => (s.get(..s.len() - 1)?, 1),
        b'm' => (s.get(..s.len() - 1)?, 60),
        b'h' => (s.get(..s.len() - 1)?, 3600),
        _ => (s, 1),
    };
    strict_decimal(num)?.checked_mul(mult)
}

/// A TCP port: strict decimal 1..=65535.
pub fn parse_port(s: &str) -> Option<u16> {
    let n = strict_decimal(s)?;
    u16::try_from(n).ok().filter(|&p| p != 0)
}

fn is_dotted_quad(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 4 && parts.iter().all(|p| strict_decimal(p).is_some_and(|n| n <= 255) && p.len() <= 3)
}

/// Client address rule: a dotted-quad IPv4 address without leading zeros,
/// or a lower-case LDH host name (labels of `a-z0-9-`, 1..63 characters,
/// not starting or ending with `-`, at most 253 characters, no trailing
/// dot). Names the resolver could read as a number (an all-numeric last
/// label, or a `0x…` label: `inet_aton` accepts `127.1`, `0x7f000001`,
/// `0177.0.0.1`) are refused, so the enrolled address means one thing.
pub fn is_valid_address(s: &str) -> bool {
    if is_dotted_quad(s) {
        return true;
    }
    if s.is_empty() || s.len() > 253 {
        return false;
    }
    let labels: Vec<&str> = s.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
            && !(l.starts_with("0x") && l.len() > 2 && l[2..].bytes().all(|b| b.is_ascii_hexdigit()))
    };
    labels.iter().all(label_ok) && labels.last().is_some_and(|l| !l.bytes().all(|b| b.is_ascii_digit()))
}

/// Client account rule: `^[a-z_][a-z0-9_-]{0,31}$`.
pub fn is_valid_unix_user(s: &str) -> bool {
    let mut b = s.bytes();
    s.len() <= 32
        && b.next().is_some_and(|c| c.is_ascii_lowercase() || c == b'_')
        && b.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
}

/// Absolute path rule for `export` and `git-roots`: `/` followed by one or
/// more segments `[A-Za-z0-9_][A-Za-z0-9._-]{0,99}` separated by single
/// `/`, no `..` anywhere, no trailing `/`, at most 4096 bytes.
pub fn is_valid_abs_path(s: &str) -> bool {
    let Some(rest) = s.strip_prefix('/') else {
        return false;
    };
    s.len() <= MAX_PATH
        && !s.contains("..")
        && !rest.is_empty()
        && rest.split('/').all(|seg| {
            let mut b = seg.bytes();
            seg.len() <= 100
                && b.next().is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_')
                && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
        })
}

/// Collects errors and warnings while building.
#[derive(Default)]
struct Report {
    errors: Vec<EnrollError>,
    warnings: Vec<String>,
}

impl Report {
    fn error(&mut self, code: &'static str, message: String) {
        self.errors.push(EnrollError { code, message });
    }

    fn conf(&mut self, message: String) {
        self.error(E_ENROL_CONF, message);
    }

    fn warn(&mut self, message: String) {
        self.warnings.push(message);
    }
}

/// `[section]` with the name escaped for messages.
fn sec(name: &str) -> String {
    format!("[{}]", escape_capped(name, 100))
}

/// `'value'` escaped for messages.
fn quoted(value: &str) -> String {
    format!("'{}'", escape_capped(value, 100))
}

fn parse_client(conf: &Config, section: &str, name: &str, rep: &mut Report) -> Option<ClientEnrollment> {
    let before = rep.errors.len();
    let where_ = sec(section);
    for (opt, _) in conf.options(section) {
        if !CLIENT_OPTIONS.contains(&opt) {
            rep.conf(format!("{where_}: unknown option {} (known: {})", quoted(opt), CLIENT_OPTIONS.join(", ")));
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
        if is_valid_address(v) {
            Some(v.to_string())
        } else {
            bad(rep, "address", v, "a lower-case host name or dotted-quad IPv4 address");
            None
        }
    });
    let port = match get("port") {
        None => Some(DEFAULT_PORT),
        Some(v) => parse_port(v).or_else(|| {
            bad(rep, "port", v, "a port number 1..65535");
            None
        }),
    };
    let user = required(rep, "user").and_then(|v| {
        if is_valid_unix_user(v) {
            Some(v.to_string())
        } else {
            bad(rep, "user", v, "an account name matching ^[a-z_][a-z0-9_-]{0,31}$");
            None
        }
    });
    let host_key = required(rep, "hostkey").and_then(|v| match parse_line(v) {
        Ok(k) => Some(k),
        Err(e) => {
            rep.error(E_ENROL_KEY, format!("{where_} option 'hostkey': {e}"));
            None
        }
    });
    let git_scheme = match get("git-scheme") {
        None | Some("ssh") => Some(GitScheme::Ssh),
        Some("git") => Some(GitScheme::Git),
        Some(v) => {
            bad(rep, "git-scheme", v, "'ssh' or 'git'");
            None
        }
    };
    let git_port = match get("git-port") {
        None => Some(DEFAULT_GIT_PORT),
        Some(v) => parse_port(v).or_else(|| {
            bad(rep, "git-port", v, "a port number 1..65535");
            None
        }),
    };
    if get("git-port").is_some() && git_scheme == Some(GitScheme::Ssh) {
        rep.warn(format!("{where_}: 'git-port' is ignored unless git-scheme = git"));
    }
    let mut git_roots: Vec<String> = Vec::new();
    for root in split_list(get("git-roots").unwrap_or("")) {
        if !is_valid_abs_path(root) {
            bad(rep, "git-roots", root, "absolute paths of [A-Za-z0-9_][A-Za-z0-9._-]* segments, no '..'");
        } else if !git_roots.iter().any(|r| r == root) {
            git_roots.push(root.to_string());
        }
    }
    if git_scheme == Some(GitScheme::Git) && get("git-roots").is_none_or(|v| split_list(v).next().is_none()) {
        rep.warn(format!("{where_}: git-scheme = git but no git-roots: no repository can be mirrored"));
    }
    let export_dir = required(rep, "export").and_then(|v| {
        if is_valid_abs_path(v) {
            Some(v.to_string())
        } else {
            bad(rep, "export", v, "an absolute path of [A-Za-z0-9_][A-Za-z0-9._-]* segments, no '..'");
            None
        }
    });
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
        export_dir: export_dir?,
        quota_bytes: quota_bytes?,
        max_artifact_bytes: max_artifact_bytes?,
        max_objects: max_objects?,
        job_timeout_secs: job_timeout_secs?,
        description: description?,
        web: web?,
    })
}

/// Whether Ferry owns the section (case-insensitive `ferry` prefix, so a
/// mis-cased or misspelt Ferry section is reported rather than ignored).
fn is_ferry_owned(section: &str) -> bool {
    let lower = section.to_ascii_lowercase();
    lower == "ferry" || lower.starts_with("ferry ") || lower.starts_with("ferry\t")
}

fn check_bool(conf: &Config, section: &str, option: &str, rep: &mut Report) {
    if let Some(v) = conf.get(section, option)
        && parse_bool(v).is_none()
    {
        rep.conf(format!(
            "{} option '{option}': invalid boolean {} (use yes/no, true/false, on/off, 1/0)",
            sec(section),
            quoted(v)
        ));
    }
}

fn check_gitosis_section(conf: &Config, rep: &mut Report) {
    let section = "gitosis";
    for (opt, value) in conf.options(section) {
        if !GITOSIS_OPTIONS.contains(&opt) {
            rep.warn(format!("[gitosis]: unknown option {} is ignored", quoted(opt)));
            continue;
        }
        let default = match opt {
            "repositories" => Some("repositories"),
            "generate-files-in" => Some("gitosis"),
            "ssh-authorized-keys-path" => Some(".ssh/authorized_keys"),
            _ => None,
        };
        if let Some(default) = default
            && value != default
        {
            rep.warn(format!(
                "[gitosis] option '{opt}' = {} is not honoured: Ferry takes its paths from the node's TOML config",
                quoted(value)
            ));
        }
        if opt == "loglevel" && !LOGLEVELS.contains(&value) {
            rep.warn(format!("Ignored invalid loglevel configuration: {}", quoted(value)));
        }
    }
    check_bool(conf, section, "gitweb", rep);
    check_bool(conf, section, "daemon", rep);
}

/// The map mode and visible name of a `map <mode> <visible>` option name.
fn map_option(opt: &str) -> Option<(&str, &str)> {
    let rest = opt.strip_prefix("map ")?;
    rest.split_once(' ')
}

fn check_group_section(conf: &Config, section: &str, rep: &mut Report) {
    let where_ = sec(section);
    for (opt, value) in conf.options(section) {
        if let Some((mode, visible)) = map_option(opt) {
            if !matches!(mode, "writable" | "writeable" | "readonly") || visible.is_empty() {
                rep.warn(format!("{where_}: option {} is not a valid map and is ignored", quoted(opt)));
                continue;
            }
            if !is_safe_relpath(value) || value.ends_with(".git") {
                rep.conf(format!(
                    "{where_} option {}: map target {} must be a safe relative repository path without .git",
                    quoted(opt),
                    quoted(value)
                ));
            }
            continue;
        }
        if !GROUP_OPTIONS.contains(&opt) {
            rep.warn(format!("{where_}: unknown option {} is ignored", quoted(opt)));
            continue;
        }
        match opt {
            "repositories" => rep.warn(format!(
                "{where_} option 'repositories' = {} is not honoured: Ferry takes its paths from the node's TOML config",
                quoted(value)
            )),
            "writeable" => rep.warn(format!(
                "{where_}: option \"writeable\" is a typo, should be \"writable\" (accepted)"
            )),
            _ => {}
        }
        if matches!(opt, "writable" | "writeable" | "readonly") {
            for entry in split_list(value) {
                if entry != strip_git_suffix(entry) || !is_safe_relpath(entry) {
                    rep.warn(format!(
                        "{where_} option '{opt}': entry {} can never match a request (write paths without .git, safe characters only)",
                        quoted(entry)
                    ));
                }
            }
        }
    }
}

fn check_repo_section(conf: &Config, section: &str, rep: &mut Report) {
    for (opt, _) in conf.options(section) {
        if !REPO_OPTIONS.contains(&opt) {
            rep.warn(format!("{}: unknown option {} is ignored", sec(section), quoted(opt)));
        }
    }
    check_bool(conf, section, "gitweb", rep);
    check_bool(conf, section, "daemon", rep);
}

/// Write targets a group hands out: literal `writable`/`writeable` entries
/// and `map writable|writeable` targets; likewise for read.
fn group_targets(conf: &Config, group: &str, write: bool) -> Vec<String> {
    let section = format!("{GROUP_PREFIX}{group}");
    let modes: &[&str] = if write { &["writable", "writeable"] } else { &["readonly"] };
    let mut out = Vec::new();
    for mode in modes {
        if let Some(list) = conf.get(&section, mode) {
            out.extend(split_list(list).map(str::to_string));
        }
    }
    for (opt, value) in conf.options(&section) {
        if let Some((mode, _)) = map_option(opt)
            && modes.contains(&mode)
        {
            out.push(value.to_string());
        }
    }
    out
}

/// Queue and admin-repo protection (module doc): returns nothing, records
/// errors/warnings.
fn check_grants(conf: &Config, users: &BTreeMap<String, Vec<PublicKey>>, clients: &BTreeSet<String>, rep: &mut Report) {
    for user in users.keys() {
        let groups = groups_of(conf, user);
        let mut reported = BTreeSet::new();
        for group in &groups {
            for (write, targets) in
                [(true, group_targets(conf, group, true)), (false, group_targets(conf, group, false))]
            {
                for target in targets {
                    if write && clients.contains(user) && target.strip_suffix(".git").unwrap_or(&target) == ADMIN_REPO {
                        // Also through `map writable x = gitosis-admin`,
                        // which have_access() below cannot see (found by
                        // fuzzing).
                        rep.conf(format!(
                            "client {} may push to {ADMIN_REPO} via [group {}]: a client must not control enrollment",
                            quoted(user),
                            escape_capped(group, 100)
                        ));
                        continue;
                    }
                    let Some(owner) = target.strip_prefix(QUEUE_DIR).and_then(|t| t.strip_prefix('/')) else {
                        continue;
                    };
                    if owner == user || !reported.insert((write, target.clone())) {
                        continue;
                    }
                    if !clients.contains(owner) {
                        if write {
                            rep.warn(format!(
                                "[group {}] grants {} to {} but there is no [ferry client {}]",
                                escape_capped(group, 100),
                                quoted(&target),
                                quoted(user),
                                escape_capped(owner, 100)
                            ));
                        }
                    } else if write {
                        rep.conf(format!(
                            "user {} may push to {} via [group {}]: only client {} may push to its queue",
                            quoted(user),
                            quoted(&target),
                            escape_capped(group, 100),
                            quoted(owner)
                        ));
                    } else if clients.contains(user) {
                        rep.warn(format!(
                            "client {} may read {} via [group {}]",
                            quoted(user),
                            quoted(&target),
                            escape_capped(group, 100)
                        ));
                    }
                }
            }
        }
        if clients.contains(user)
            && (have_access(conf, user, Mode::Writable, ADMIN_REPO).is_some()
                || have_access(conf, user, Mode::Writeable, ADMIN_REPO).is_some())
        {
            rep.conf(format!("client {} may push to {ADMIN_REPO}: a client must not control enrollment", quoted(user)));
        }
    }
}

impl Enrollment {
    /// Validates `conf` plus the admin repo's `keydir/` (file name → file
    /// bytes, top-level files only) and builds the enrollment. Returns every
    /// error found, or the enrollment with its warnings.
    pub fn build(conf: &Config, keydir: &BTreeMap<String, Vec<u8>>) -> Result<Enrollment, Vec<EnrollError>> {
        let mut rep = Report::default();

        // keydir/
        let mut users: BTreeMap<String, Vec<PublicKey>> = BTreeMap::new();
        let mut key_files: BTreeSet<&str> = BTreeSet::new();
        let mut fingerprint_owner: HashMap<String, String> = HashMap::new();
        for (file, bytes) in keydir {
            if file.starts_with('.') {
                continue;
            }
            let Some(user) = file.strip_suffix(".pub") else {
                continue;
            };
            if !is_safe_username(user) {
                rep.warn(format!("Unsafe SSH username in keyfile: '{}'", escape(file)));
                continue;
            }
            key_files.insert(user);
            match parse_keyfile(bytes) {
                Err(e) => rep.error(E_ENROL_KEY, format!("keydir/{}: {e}", escape(file))),
                Ok(keys) => {
                    for key in &keys {
                        let fp = key.fingerprint();
                        match fingerprint_owner.get(&fp) {
                            Some(other) => rep.error(
                                E_ENROL_DUP_KEY,
                                format!("key {fp} is in both keydir/{other} and keydir/{}", escape(file)),
                            ),
                            None => {
                                fingerprint_owner.insert(fp, escape(file));
                            }
                        }
                    }
                    users.insert(user.to_string(), keys);
                }
            }
        }

        // sections
        if conf.has_defaults() {
            rep.warn(
                "[DEFAULT] options apply as fallbacks to every gitosis section (not to [ferry client] sections); avoid [DEFAULT]"
                    .to_string(),
            );
            check_bool(conf, DEFAULT_SECTION, "gitweb", &mut rep);
            check_bool(conf, DEFAULT_SECTION, "daemon", &mut rep);
            // Access options in [DEFAULT] would apply to every group while
            // escaping the per-group checks below (found by fuzzing).
            for (opt, _) in conf.options(DEFAULT_SECTION) {
                if matches!(opt, "members" | "writable" | "writeable" | "readonly" | "repositories")
                    || map_option(opt).is_some()
                {
                    rep.conf(format!(
                        "[DEFAULT] must not hold access options ({}); write them in the [group] they belong to",
                        quoted(opt)
                    ));
                }
            }
        }
        let mut clients = BTreeMap::new();
        for section in conf.sections() {
            if is_ferry_owned(section) {
                match ferry_client_name(section) {
                    Some(name) => {
                        if let Some(c) = parse_client(conf, section, name, &mut rep) {
                            clients.insert(name.to_string(), c);
                        }
                    }
                    None => rep.conf(format!(
                        "{}: not a valid Ferry section; expected [{FERRY_CLIENT_PREFIX}NAME] with NAME matching ^[A-Za-z][A-Za-z0-9._-]{{0,62}}$ (no '..', not ending in .git or .lock)",
                        sec(section)
                    )),
                }
            } else if section == "gitosis" {
                check_gitosis_section(conf, &mut rep);
            } else if section.starts_with(GROUP_PREFIX) {
                check_group_section(conf, section, &mut rep);
            } else if section.starts_with("repo ") {
                check_repo_section(conf, section, &mut rep);
            } else if section != "gitweb" {
                rep.warn(format!("{}: section is not used by gitosis or Ferry", sec(section)));
            }
        }

        // every client needs its push key, a name of its own and no
        // name the node keeps for itself
        let mut client_names = BTreeSet::new();
        let mut by_folded: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for section in conf.sections() {
            let Some(name) = ferry_client_name(section) else {
                continue;
            };
            client_names.insert(name.to_string());
            if !key_files.contains(name) {
                rep.error(E_ENROL_KEY, format!("{}: no key file keydir/{name}.pub", sec(section)));
            }
            if is_reserved_client_name(name) {
                rep.conf(format!(
                    "{}: the client name '{name}' is reserved: the node keeps {} (in any letter case) for its own directories; choose another name",
                    sec(section),
                    RESERVED_CLIENT_NAMES.join(", ")
                ));
            }
            let folded = by_folded.entry(name.to_ascii_lowercase()).or_default();
            if !folded.contains(&name) {
                folded.push(name);
            }
        }
        for names in by_folded.values().filter(|n| n.len() > 1) {
            rep.conf(format!(
                "clients {} differ only in letter case: on a case-insensitive file system or object store their queue repos, pools and data would be one; rename all but one",
                names.iter().map(|n| format!("'{n}'")).collect::<Vec<_>>().join(" and ")
            ));
        }
        check_grants(conf, &users, &client_names, &mut rep);

        if rep.errors.is_empty() { Ok(Enrollment { clients, users, warnings: rep.warnings }) } else { Err(rep.errors) }
    }

    /// The enrollment of client `name`.
    pub fn client(&self, name: &str) -> Option<&ClientEnrollment> {
        self.clients.get(name)
    }

    /// Every (user, key) pair, sorted, ready for
    /// [`crate::authkeys::render`].
    pub fn key_entries(&self) -> Vec<(String, PublicKey)> {
        self.users.iter().flat_map(|(u, keys)| keys.iter().map(move |k| (u.clone(), k.clone()))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::tests::{EC256, ED25519, RSA2048};
    use crate::testutil::Rng;

    fn conf(s: &str) -> Config {
        match Config::parse(s.as_bytes()) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    fn keydir(files: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        files.iter().map(|(n, c)| (n.to_string(), c.as_bytes().to_vec())).collect()
    }

    fn client_section(name: &str, extra: &str) -> String {
        format!(
            "[ferry client {name}]\naddress = 127.0.0.2\nuser = ferry\nhostkey = {EC256}\nexport = /var/lib/ferry/export\n{extra}"
        )
    }

    fn build_ok(c: &str, kd: &[(&str, &str)]) -> Enrollment {
        match Enrollment::build(&conf(c), &keydir(kd)) {
            Ok(e) => e,
            Err(errs) => panic!("{}", errs.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n")),
        }
    }

    fn build_err(c: &str, kd: &[(&str, &str)]) -> Vec<EnrollError> {
        match Enrollment::build(&conf(c), &keydir(kd)) {
            Ok(e) => panic!("expected errors, got {e:?}"),
            Err(errs) => errs,
        }
    }

    fn has(errs: &[EnrollError], code: &str, needle: &str) -> bool {
        errs.iter().any(|e| e.code == code && e.message.contains(needle))
    }

    const ADMIN: &str = "[gitosis]\n\n[group gitosis-admin]\nmembers = admin@ws\nwritable = gitosis-admin\n\n";

    #[test]
    fn sizes_and_durations() {
        let sizes = [
            ("0", Some(0)),
            ("1048576", Some(1_048_576)),
            ("1K", Some(1024)),
            ("500M", Some(500 << 20)),
            ("100G", Some(100 << 30)),
            ("2T", Some(2 << 40)),
            ("2t", Some(2 << 40)),
            ("16777215T", Some(16_777_215u64 << 40)),
            ("16777216T", None),
            ("18446744073709551615", Some(u64::MAX)),
            ("18446744073709551616", None),
            ("", None),
            ("M", None),
            ("1.5G", None),
            ("-1", None),
            ("+1", None),
            ("01", None),
            ("1 G", None),
            ("1GB", None),
            ("1P", None),
        ];
        for (s, want) in sizes {
            assert_eq!(parse_size(s), want, "{s}");
        }
        let durations = [
            ("90", Some(90)),
            ("90s", Some(90)),
            ("5m", Some(300)),
            ("2h", Some(7200)),
            ("0", Some(0)),
            ("1d", None),
            ("h", None),
            ("5M", None),
            ("", None),
            ("18446744073709551615h", None),
        ];
        for (s, want) in durations {
            assert_eq!(parse_duration_secs(s), want, "{s}");
        }
    }

    #[test]
    fn addresses_users_paths() {
        for ok in
            ["127.0.0.2", "0.0.0.0", "255.255.255.255", "host-a", "a.example.com", "x1.y2", "localhost", "0x.example"]
        {
            assert!(is_valid_address(ok), "{ok}");
        }
        for bad in [
            "",
            "Host",
            "127.1",
            "127.0.0.01",
            "0177.0.0.1",
            "256.0.0.1",
            "1.2.3.4.5",
            "2130706433",
            "0x7f000001",
            "0x7f.0.0.1",
            "a.123",
            "-a",
            "a-",
            "a..b",
            "a.",
            ".a",
            "a_b",
            "h\u{e9}",
            "::1",
            "a b",
            "a/b",
        ] {
            assert!(!is_valid_address(bad), "{bad}");
        }
        for ok in ["ferry", "_x", "adminbackup", "a-b_c9", &"a".repeat(32)] {
            assert!(is_valid_unix_user(ok), "{ok}");
        }
        for bad in ["", "Ferry", "9a", "-a", "a.b", &"a".repeat(33), "a b"] {
            assert!(!is_valid_unix_user(bad), "{bad}");
        }
        for ok in ["/var/lib/ferry/export", "/srv", "/a/_b/c.d-e", "/0"] {
            assert!(is_valid_abs_path(ok), "{ok}");
        }
        for bad in [
            "",
            "/",
            "relative",
            "/a/",
            "//a",
            "/a//b",
            "/a/../b",
            "/a/b..c",
            "/.hidden",
            "/a/-x",
            "/a b",
            &format!("/{}", "a".repeat(101)),
        ] {
            assert!(!is_valid_abs_path(bad), "{bad}");
        }
        assert_eq!(parse_port("22"), Some(22));
        assert_eq!(parse_port("65535"), Some(65535));
        for bad in ["0", "65536", "022", "", "-1", "2 2"] {
            assert_eq!(parse_port(bad), None, "{bad}");
        }
    }

    #[test]
    fn full_client_enrollment() {
        let c = format!(
            "{ADMIN}{}",
            client_section(
                "host-a",
                "port = 2222\ngit-scheme = git\ngit-port = 9419\ngit-roots = /srv/git\n  /home/git/repos /srv/git\nquota = 100G\nmax-artifact = 2G\nmax-objects = 100000\njob-timeout = 2h\ndescription = the build host\nweb = yes\n"
            )
        );
        let e = build_ok(&c, &[("host-a.pub", ED25519), ("admin@ws.pub", RSA2048)]);
        let a = match e.client("host-a") {
            Some(a) => a,
            None => panic!("no client"),
        };
        assert_eq!(a.name, "host-a");
        assert_eq!(a.address, "127.0.0.2");
        assert_eq!(a.port, 2222);
        assert_eq!(a.user, "ferry");
        assert_eq!(a.host_key.key_type(), "ecdsa-sha2-nistp256");
        assert_eq!(a.git_scheme, GitScheme::Git);
        assert_eq!(a.git_port, 9419);
        assert_eq!(a.git_roots, ["/srv/git", "/home/git/repos"]);
        assert_eq!(a.export_dir, "/var/lib/ferry/export");
        assert_eq!(a.quota_bytes, Some(100 << 30));
        assert_eq!(a.max_artifact_bytes, Some(2 << 30));
        assert_eq!(a.max_objects, Some(100_000));
        assert_eq!(a.job_timeout_secs, Some(7200));
        assert_eq!(a.description.as_deref(), Some("the build host"));
        assert!(a.web);
        assert_eq!(e.users.len(), 2);
        assert_eq!(e.key_entries().len(), 2);
        assert!(e.client("nosuch").is_none());
        assert!(e.warnings.is_empty(), "{:?}", e.warnings);
    }

    #[test]
    fn client_defaults() {
        let c = client_section("host-a", "");
        let e = build_ok(&c, &[("host-a.pub", ED25519)]);
        let a = e.client("host-a").cloned();
        let a = match a {
            Some(a) => a,
            None => panic!("no client"),
        };
        assert_eq!(a.port, 22);
        assert_eq!(a.git_scheme, GitScheme::Ssh);
        assert_eq!(a.git_port, 9418);
        assert!(a.git_roots.is_empty());
        assert_eq!(a.quota_bytes, None);
        assert_eq!(a.description, None);
        assert!(!a.web, "no web access unless enrolled with web = yes");
        // `unlimited` lifts the node's default for one client.
        let c = client_section("host-a", "quota = unlimited\nmax-artifact = unlimited\n");
        let e = build_ok(&c, &[("host-a.pub", ED25519)]);
        let a = e.client("host-a").cloned().expect("enrolled");
        assert_eq!((a.quota_bytes, a.max_artifact_bytes), (Some(u64::MAX), Some(u64::MAX)));
    }

    #[test]
    fn client_option_errors_are_all_collected() {
        let c = "[ferry client host-a]\naddress = Host_A\nport = 0\nuser = Root\nhostkey = ssh-dss AAAA\ngit-scheme = http\ngit-port = 99999\ngit-roots = /ok relative /a/../b\nexport = /tmp/\nquota = lots\nmax-artifact = 0\nmax-objects = -5\njob-timeout = 1d\ndescription = two\n  lines\nqouta = 1G\nmail = root\nweb = maybe\n";
        let errs = build_err(c, &[("host-a.pub", ED25519)]);
        let want: &[(&str, &str)] = &[
            (E_ENROL_CONF, "option 'address'"),
            (E_ENROL_CONF, "option 'port'"),
            (E_ENROL_CONF, "option 'user'"),
            (E_ENROL_KEY, "option 'hostkey'"),
            (E_ENROL_CONF, "option 'git-scheme'"),
            (E_ENROL_CONF, "option 'git-port'"),
            (E_ENROL_CONF, "'relative'"),
            (E_ENROL_CONF, "'/a/../b'"),
            (E_ENROL_CONF, "option 'export'"),
            (E_ENROL_CONF, "option 'quota'"),
            (E_ENROL_CONF, "option 'max-artifact'"),
            (E_ENROL_CONF, "option 'max-objects'"),
            (E_ENROL_CONF, "option 'job-timeout'"),
            (E_ENROL_CONF, "option 'description'"),
            (E_ENROL_CONF, "option 'web'"),
            (E_ENROL_CONF, "unknown option 'qouta'"),
            (E_ENROL_CONF, "unknown option 'mail'"),
        ];
        for (code, needle) in want {
            assert!(has(&errs, code, needle), "missing {code} {needle}: {errs:#?}");
        }
        assert_eq!(errs.len(), want.len(), "{errs:#?}");
        for e in &errs {
            assert!(e.message.contains("[ferry client host-a]"), "{e}");
        }
    }

    #[test]
    fn required_options() {
        let errs = build_err("[ferry client host-a]\n", &[("host-a.pub", ED25519)]);
        for opt in ["address", "user", "hostkey", "export"] {
            assert!(has(&errs, E_ENROL_CONF, &format!("required option '{opt}'")), "{opt}: {errs:?}");
        }
        assert_eq!(errs.len(), 4);
        // [DEFAULT] does not fill Ferry sections
        let c = format!(
            "[DEFAULT]\naddress = 127.0.0.2\n{}",
            client_section("host-a", "").replace("address = 127.0.0.2\n", "")
        );
        let errs = build_err(&c, &[("host-a.pub", ED25519)]);
        assert!(has(&errs, E_ENROL_CONF, "required option 'address'"));
    }

    #[test]
    fn ferry_section_names() {
        for bad in [
            "ferry",
            "ferry clients host-a",
            "ferry client host..a",
            "ferry client a.git",
            "Ferry client host-a",
            "ferry client ",
            "ferry node x",
        ] {
            let c = format!("[{bad}]\n");
            let errs = build_err(&c, &[]);
            assert!(has(&errs, E_ENROL_CONF, "not a valid Ferry section"), "{bad}: {errs:?}");
        }
        // ferryboat is not Ferry's
        let e = build_ok("[ferryboat]\n", &[]);
        assert_eq!(e.warnings.len(), 1);
    }

    /// Issue 16, point 4: two clients whose names differ only in case, and
    /// names the node keeps for its own directories, are refused.
    #[test]
    fn client_names_differing_only_in_case_and_reserved_names_are_refused() {
        let c = format!("{ADMIN}{}\n{}", client_section("Host-A", ""), client_section("host-a", ""));
        let errs = build_err(&c, &[("Host-A.pub", ED25519), ("host-a.pub", EC256), ("admin@ws.pub", RSA2048)]);
        assert!(has(&errs, E_ENROL_CONF, "clients 'Host-A' and 'host-a' differ only in letter case"), "{errs:?}");
        for reserved in ["node", "Node", "TMP"] {
            let c = format!("{ADMIN}{}", client_section(reserved, ""));
            let key = format!("{reserved}.pub");
            let errs = build_err(&c, &[(key.as_str(), ED25519), ("admin@ws.pub", RSA2048)]);
            assert!(has(&errs, E_ENROL_CONF, &format!("the client name '{reserved}' is reserved")), "{errs:?}");
        }
        // Names that merely contain a reserved word are fine.
        let c = format!("{ADMIN}{}", client_section("node-1", ""));
        build_ok(&c, &[("node-1.pub", ED25519), ("admin@ws.pub", RSA2048)]);
    }

    #[test]
    fn key_files() {
        let c = format!("{ADMIN}{}", client_section("host-a", ""));
        // missing key file for a client
        let errs = build_err(&c, &[("admin@ws.pub", RSA2048)]);
        assert!(has(&errs, E_ENROL_KEY, "no key file keydir/host-a.pub"), "{errs:?}");
        // bad key file, named; no second "missing" error for it
        let evil = format!("command=\"/bin/sh\" {ED25519}\n");
        let errs = build_err(&c, &[("host-a.pub", &evil)]);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(has(&errs, E_ENROL_KEY, "keydir/host-a.pub: line 1: key line starts with options"));
        // duplicate key across users names both files
        let errs = build_err(&c, &[("host-a.pub", ED25519), ("admin@ws.pub", &format!("{RSA2048}\n{ED25519}\n"))]);
        assert!(has(&errs, E_ENROL_DUP_KEY, "keydir/admin@ws.pub and keydir/host-a.pub"), "{errs:?}");
        // skipped names, unsafe names warned
        let e = build_ok(
            &c,
            &[
                ("host-a.pub", ED25519),
                (".hidden.pub", "junk"),
                ("README", "junk"),
                ("notes.txt", "junk"),
                ("1bad.pub", "junk"),
                ("a\nb.pub", "junk"),
            ],
        );
        assert_eq!(
            e.warnings,
            ["Unsafe SSH username in keyfile: '1bad.pub'", "Unsafe SSH username in keyfile: 'a\\nb.pub'"]
        );
        assert_eq!(e.users.keys().collect::<Vec<_>>(), ["host-a"]);
    }

    #[test]
    fn booleans_and_gitosis_paths() {
        let c = "[gitosis]\ngitweb = maybe\ndaemon = yes\n[repo foo]\ndaemon = 2\ngitweb = on\n[repo bar]\n";
        let errs = build_err(c, &[]);
        assert!(has(&errs, E_ENROL_CONF, "[gitosis] option 'gitweb': invalid boolean 'maybe'"), "{errs:?}");
        assert!(has(&errs, E_ENROL_CONF, "[repo foo] option 'daemon': invalid boolean '2'"), "{errs:?}");
        // [repo bar] inherits [DEFAULT] only, not [gitosis]
        assert_eq!(errs.len(), 2);
        let errs = build_err("[DEFAULT]\ngitweb = perhaps\n[repo x]\n", &[]);
        assert!(has(&errs, E_ENROL_CONF, "[repo x] option 'gitweb'"));
        let e = build_ok(
            "[gitosis]\nrepositories = /etc\ngenerate-files-in = gitosis\nssh-authorized-keys-path = /root/.ssh/authorized_keys\nloglevel = LOUD\n",
            &[],
        );
        assert_eq!(e.warnings.len(), 3, "{:?}", e.warnings);
        assert!(e.warnings[0].contains("'repositories' = '/etc' is not honoured"));
        assert!(e.warnings[1].contains("ssh-authorized-keys-path"));
        assert_eq!(e.warnings[2], "Ignored invalid loglevel configuration: 'LOUD'");
        let e = build_ok("[gitosis]\nrepositories = repositories\nloglevel = DEBUG\n", &[]);
        assert!(e.warnings.is_empty(), "{:?}", e.warnings);
    }

    #[test]
    fn group_checks() {
        let c = "[group g]\nmembers = jdoe\nwritable = ok ok.git ../x\nwriteable = y\nrepositories = /tmp\nmap writable a = ../../etc\nmap readonly b = x.git\nmap writable c = fine/repo\nmap bogus d = e\nmembr = typo\n";
        let errs = build_err(c, &[]);
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(has(&errs, E_ENROL_CONF, "'map writable a': map target '../../etc'"));
        assert!(has(&errs, E_ENROL_CONF, "'map readonly b': map target 'x.git'"));
        let c = "[group g]\nmembers = jdoe\nwritable = ok ok.git ../x\nwriteable = y\nrepositories = /tmp\nmap bogus d = e\nmembr = typo\n";
        let e = build_ok(c, &[]);
        let w = e.warnings.join("\n");
        for needle in [
            "'ok.git' can never match",
            "'../x' can never match",
            "\"writeable\" is a typo",
            "'repositories' = '/tmp' is not honoured",
            "'map bogus d' is not a valid map",
            "unknown option 'membr'",
        ] {
            assert!(w.contains(needle), "{needle}: {w}");
        }
    }

    /// AC-01 / I1: the queue name is the identity, so nobody else may push it.
    #[test]
    fn queue_protection() {
        let base = format!("{}{}", client_section("host-a", ""), client_section("host-b", ""));
        let kd = [("host-a.pub", ED25519), ("host-b.pub", EC256), ("admin@ws.pub", RSA2048)];
        // implicit grants alone are fine
        build_ok(&format!("{ADMIN}{base}"), &kd);
        // an explicit grant of the own queue is fine too
        build_ok(&format!("{ADMIN}{base}[group q]\nmembers = host-a\nwritable = queue/host-a\n"), &kd);
        // another client
        let errs = build_err(&format!("{ADMIN}{base}[group q]\nmembers = host-b\nwritable = queue/host-a\n"), &kd);
        assert!(has(&errs, E_ENROL_CONF, "user 'host-b' may push to 'queue/host-a' via [group q]"), "{errs:?}");
        // via @all and nesting and writeable
        let errs = build_err(&format!("{ADMIN}{base}[group q]\nmembers = @all\nwriteable = queue/host-b\n"), &kd);
        assert!(has(&errs, E_ENROL_CONF, "user 'admin@ws' may push to 'queue/host-b'"), "{errs:?}");
        assert!(has(&errs, E_ENROL_CONF, "user 'host-a' may push to 'queue/host-b'"), "{errs:?}");
        // via a map target
        let errs =
            build_err(&format!("{ADMIN}{base}[group q]\nmembers = host-b\nmap writable mine = queue/host-a\n"), &kd);
        assert!(has(&errs, E_ENROL_CONF, "user 'host-b' may push to 'queue/host-a'"), "{errs:?}");
        // a client with admin rights
        let errs = build_err(&format!("{ADMIN}{base}[group gitosis-admin]\nmembers = admin@ws host-a\n"), &kd);
        assert!(has(&errs, E_ENROL_CONF, "client 'host-a' may push to gitosis-admin"), "{errs:?}");
        // read access of another client's queue is a warning; grants of
        // unenrolled queues too
        let e = build_ok(
            &format!("{ADMIN}{base}[group r]\nmembers = @all\nreadonly = queue/host-a\nwritable = queue/ghost\n"),
            &kd,
        );
        let w = e.warnings.join("\n");
        assert!(w.contains("client 'host-b' may read 'queue/host-a'"), "{w}");
        assert!(w.contains("there is no [ferry client ghost]"), "{w}");
    }

    /// The whole pure pipeline an admin push goes through: validate, render
    /// authorized_keys, then decide the pushes each key may make.
    #[test]
    fn pipeline_enroll_render_serve() {
        use crate::authkeys::{MARKER, ferry_line_user, render};
        use crate::serve::{Denied, decide};
        let text = format!("{ADMIN}{}", client_section("host-a", ""));
        let c = conf(&text);
        let e = match Enrollment::build(&c, &keydir(&[("host-a.pub", ED25519), ("admin@ws.pub", RSA2048)])) {
            Ok(e) => e,
            Err(errs) => panic!("{errs:?}"),
        };
        let old_gitosis = "command=\"gitosis-serve admin@ws\",no-port-forwarding,no-X11-forwarding,no-agent-forwarding,no-pty ssh-rsa OLD\n";
        let keys = match render(&format!("# mine\n{MARKER}\n{old_gitosis}"), &e.key_entries(), &|u| {
            format!("/usr/lib/ferry/ferry-node serve {u}")
        }) {
            Ok(k) => k,
            Err(err) => panic!("{err}"),
        };
        let users: Vec<&str> = keys.lines().filter_map(ferry_line_user).collect();
        assert_eq!(users, ["admin@ws", "host-a"]);
        assert!(keys.starts_with("# mine\n"));
        assert!(!keys.contains("gitosis-serve"));
        for user in users {
            let own_queue = decide(&c, user, "git-receive-pack 'queue/host-a.git'");
            let admin = decide(&c, user, "git-receive-pack 'gitosis-admin.git'");
            if user == "host-a" {
                assert!(own_queue.is_ok());
                assert_eq!(admin, Err(Denied::WriteDenied));
            } else {
                assert_eq!(own_queue, Err(Denied::WriteDenied));
                assert!(admin.is_ok());
            }
        }
    }

    #[test]
    fn error_display_is_safe() {
        let errs = build_err("[ferry client host-a]\naddress = \u{202e}evil\n", &[]);
        for e in errs {
            let s = e.to_string();
            assert!(s.starts_with("E_ENROL_"));
            assert!(s.bytes().all(|b| (0x20..0x7f).contains(&b)), "{s}");
        }
    }

    #[test]
    fn never_panics_on_mutated_configs() {
        let mut rng = Rng::new(0xe4_70_11);
        let seed = format!(
            "{ADMIN}{}[group q]\nmembers = @all host-a\nwritable = queue/host-a\nmap writable x = queue/host-b\n[repo x]\ngitweb = yes\n",
            client_section("host-a", "quota = 1G\njob-timeout = 5m\ngit-roots = /srv/git\n")
        );
        let kd = keydir(&[("host-a.pub", ED25519), ("admin@ws.pub", RSA2048)]);
        for _ in 0..3_000 {
            let bytes = rng.mutate(seed.as_bytes());
            if let Ok(c) = Config::parse(&bytes) {
                match Enrollment::build(&c, &kd) {
                    Ok(e) => {
                        for w in &e.warnings {
                            assert!(w.bytes().all(|b| (0x20..0x7f).contains(&b)), "{w}");
                        }
                    }
                    Err(errs) => {
                        for e in errs {
                            let s = e.to_string();
                            assert!(s.bytes().all(|b| (0x20..0x7f).contains(&b)), "{s}");
                        }
                    }
                }
            }
        }
    }
}
