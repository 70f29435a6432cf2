//! Invariant checks behind Ferry's fuzz targets (STYLE.md 17, SECURITY.md
//! C13).
//!
//! Each public function takes arbitrary bytes, feeds them to one parser
//! that faces untrusted input, and **panics** when the parser panics or
//! when its result breaks a property the rest of Ferry relies on. "No
//! panic" alone would miss the bugs that matter here: a parser that accepts
//! a path with `..`, or an error message that carries a raw newline into a
//! log, never crashes.
//!
//! The same functions run in two places:
//!
//! * the cargo-fuzz targets in `fuzz_targets/` (one line each), built and
//!   run by `fuzz/run.sh`;
//! * the workspace test `tests/tests/fuzz_regressions.rs`, which includes
//!   this file with `#[path]` and replays every input kept in
//!   `fuzz/regressions/<target>/`, so crashers stay regression tests in a
//!   plain `cargo test` without nightly or libFuzzer.
//!
//! Hence this file depends on nothing but the parser crates and std.

#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::sync::OnceLock;

use ferry_archive::{ArchiveError, EntryKind, ExtractPolicy, ListEntry, SymlinkPolicy, list_tar_zst};
use ferry_gitosis::access::{Mode, ferry_client_name, have_access};
use ferry_gitosis::authkeys;
use ferry_gitosis::conf::{Config, DEFAULT_SECTION, split_list};
use ferry_gitosis::enroll::{ADMIN_REPO, ClientEnrollment, E_ENROL_CONF, E_ENROL_DUP_KEY, E_ENROL_KEY, Enrollment};
use ferry_gitosis::fuzzing;
use ferry_gitosis::keys::{PublicKey, parse_keyfile, parse_line};
use ferry_gitosis::serve::{
    Allowed, MAX_COMMAND_BYTES, decide, decide_original_command, is_safe_relpath, parse_command, parse_command_bytes,
};
use ferry_gitosis::username::is_safe_username;
use ferry_request::{GitScheme, GitUrl, Host, Reason, RemotePath, Request, User, parse, parse_port};
use ferry_tree::manifest::{self as tree, Kind as TreeKind, Manifest as TreeManifest};

/// One target's checks: panics on a violated invariant.
pub type Check = fn(&[u8]);

/// The fuzz targets by name, as `fuzz/run.sh` and the regression test know
/// them (the directory names under `fuzz/regressions/`).
pub const TARGETS: &[(&str, Check)] = &[
    ("request", request),
    ("ssh_command", ssh_command),
    ("gitosis_conf", gitosis_conf),
    ("keys", keys),
    ("archive_list", archive_list),
    ("tree_manifest", tree_manifest),
];

// ---------------------------------------------------------------------------
// Shared checks

/// A text that may go to a log, a terminal or a mail as it is: one line of
/// printable ASCII (SECURITY I6).
fn assert_log_safe(what: &str, text: &str) {
    assert!(text.bytes().all(|b| (0x20..0x7f).contains(&b)), "{what} is not single-line printable ASCII: {text:?}");
}

/// A repository path serve may hand to git below its root: a non-empty
/// relative path of `/`-separated segments, each starting with an ASCII
/// letter or digit and made of letters, digits, `@ . _ -` only. So no
/// segment is `.`/`..` or hidden, none starts with `-` (option injection),
/// no `//`, no leading `/`. (`a..b` inside a segment is allowed, as in
/// gitosis: it is not a traversal.)
fn assert_safe_repo_path(what: &str, path: &str) {
    assert!(!path.is_empty(), "{what}: empty path");
    assert!(path.len() <= MAX_COMMAND_BYTES, "{what}: path longer than a command: {path:?}");
    for seg in path.split('/') {
        let first = seg.bytes().next();
        assert!(first.is_some_and(|b| b.is_ascii_alphanumeric()), "{what}: bad segment {seg:?} in {path:?}");
        assert!(
            seg.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'@' | b'.' | b'_' | b'-')),
            "{what}: unsafe character in {path:?}"
        );
        assert!(seg != "." && seg != "..", "{what}: traversal segment in {path:?}");
    }
    assert!(is_safe_relpath(path), "{what}: is_safe_relpath disagrees on {path:?}");
}

// ---------------------------------------------------------------------------
// request

/// The request grammar, `ferry_request::parse`.
///
/// * Accepted: the canonical line [`Request::to_line`] is the input itself
///   (or the input with its CRLF ending turned into LF: the only repair the
///   grammar allows), re-parses to the same request, and is printable
///   ASCII; typed fields keep their promises (no `.`/`..`/hidden/dash path
///   segments, stamps that round-trip through Unix time, sizes ≤ 2^63-1).
/// * Rejected: the `Display` text is one line of printable ASCII starting
///   with the reason code, the code maps back to the reason, and the offset
///   lies inside the input.
/// * Both: the answer is deterministic.
pub fn request(data: &[u8]) {
    let first = parse(data);
    assert_eq!(first, parse(data), "parse is not deterministic");
    match first {
        Ok(req) => check_request(data, &req),
        Err(rej) => {
            let shown = rej.to_string();
            assert_log_safe("rejection", &shown);
            assert!(shown.starts_with(rej.reason.code()), "rejection does not start with its code: {shown:?}");
            assert_eq!(Reason::from_code(rej.code()), Some(rej.reason), "code does not map back");
            if let Some(offset) = rej.offset {
                assert!(offset <= data.len(), "offset {offset} beyond the input ({} bytes): {shown}", data.len());
            }
        }
    }
}

fn check_request(data: &[u8], req: &Request) {
    let line = req.to_line();
    let crlf = line.strip_suffix('\n').map(|l| format!("{l}\r\n"));
    assert!(
        data == line.as_bytes() || crlf.as_deref().is_some_and(|c| data == c.as_bytes()),
        "accepted input is not its canonical line: input {:?}, canonical {line:?}",
        String::from_utf8_lossy(data)
    );
    let body = line.strip_suffix('\n').unwrap_or_else(|| panic!("to_line without final LF: {line:?}"));
    assert_log_safe("canonical request", body);
    assert!(body.starts_with(req.module()), "line does not start with its module: {body:?}");
    assert_eq!(parse(line.as_bytes()).as_ref(), Ok(req), "canonical line does not re-parse to the same request");

    let check_path = |p: &ferry_request::RemotePath| {
        assert!(p.as_str().starts_with('/'), "path not absolute: {p}");
        for seg in p.segments() {
            assert!(!seg.is_empty() && seg != "." && seg != "..", "bad path segment {seg:?} in {p}");
            assert!(!seg.starts_with('-') && !seg.starts_with('.'), "dash/dot segment {seg:?} in {p}");
        }
    };
    match req {
        Request::Git(g) => {
            check_path(&g.url.path);
            assert!(!g.url.host.as_str().starts_with('-'), "host starts with '-'");
            if let Some(u) = &g.url.user {
                assert!(!u.as_str().starts_with('-'), "user starts with '-'");
            }
            let url = g.url.to_url_string();
            assert!(body.ends_with(&url), "URL string {url:?} not in {body:?}");
        }
        Request::Sftp(s) => {
            check_path(&s.url.path);
            assert!(!s.url.host.as_str().starts_with('-'), "host starts with '-'");
            assert!(!s.url.user.as_str().starts_with('-'), "user starts with '-'");
            assert!(s.size <= i64::MAX as u64, "size above 2^63-1");
            let again = ferry_request::Stamp::from_unix(s.stamp.to_unix());
            assert_eq!(again.as_str(), s.stamp.as_str(), "stamp does not round-trip through Unix time");
            assert_eq!(s.sha256.as_str().len(), 64, "digest is not 64 hex digits");
        }
        Request::Tree(t) => {
            check_path(&t.manifest.path);
            check_path(&t.root.path);
            for u in [&t.manifest, &t.root] {
                assert!(!u.host.as_str().starts_with('-'), "host starts with '-'");
                assert!(!u.user.as_str().starts_with('-'), "user starts with '-'");
            }
            assert!(ferry_request::TreeRequest::same_endpoint(&t.manifest, &t.root), "root on another endpoint");
            assert!(t.size <= i64::MAX as u64, "size above 2^63-1");
            assert_eq!(t.sha256.as_str().len(), 64, "digest is not 64 hex digits");
        }
        Request::Dummy(d) => {
            let w = d.word.as_str();
            assert!(w.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric()), "bad dummy word {w:?}");
        }
    }
}

// ---------------------------------------------------------------------------
// ssh_command

/// The configuration `ssh_command` decides against: two enrolled clients,
/// group and `map` grants (some of them unsafe on purpose: serve must
/// refuse those as `Denied::UnsafeMapping`), a group for `@all`.
const SERVE_CONF: &str = "\
[gitosis]

[group admins]
members = admin@ws
writable = gitosis-admin

[group fooers]
members = jdoe
writable = foo a/b.c queue
writeable = typo
readonly = ro public/docs
map writable visible = real/repo
map readonly evil = ../../etc
map readonly dotgit = x.git
map readonly dash = -rf
map readonly abs = /etc/passwd
map readonly sp = a b
map readonly tilde = ~root/x

[group own]
members = clienta
map writable mine = queue/clienta
map writable queue/clientb = queue/clienta

[group readers]
members = @all
readonly = public/docs

[group nested]
members = @own
readonly = nested/docs

[ferry client clienta]
[ferry client clientb]
";

const SERVE_USERS: &[&str] = &["clienta", "clientb", "jdoe", "admin@ws", "nobody"];

fn serve_conf() -> &'static Config {
    static CONF: OnceLock<Config> = OnceLock::new();
    CONF.get_or_init(|| Config::parse(SERVE_CONF.as_bytes()).unwrap_or_else(|e| panic!("SERVE_CONF: {e}")))
}

/// `SSH_ORIGINAL_COMMAND` parsing and the access decision.
///
/// * A parsed command's path is a safe relative path (no `..`/`.`
///   segment, no leading `-`, `.` or `/`, only `[A-Za-z0-9@._-]`), the raw
///   input had no newline or control character and was at most
///   `MAX_COMMAND_BYTES`, and the input ends with `<path>'`.
/// * On UTF-8 input the `&str` and byte entry points agree.
/// * For every user, an allowed request's repository path is safe and has
///   no `.git`; a write is allowed only for receive-pack and never through
///   a read-only grant; a queue repo is only ever the user's own
///   (AC-01); nobody but `admin@ws` may push to `gitosis-admin`.
/// * Every denial's message is one line of printable ASCII.
pub fn ssh_command(data: &[u8]) {
    fuzzing::serve(data);
    let parsed = parse_command_bytes(data);
    if let Ok(text) = std::str::from_utf8(data) {
        assert_eq!(parse_command(text), parsed, "str and bytes parsers disagree");
    }
    match &parsed {
        Ok(cmd) => {
            assert_safe_repo_path("parsed command", &cmd.path);
            assert!(data.len() <= MAX_COMMAND_BYTES, "accepted a command over the length cap");
            assert!(!data.contains(&b'\n'), "accepted a newline");
            assert!(
                !String::from_utf8_lossy(data).chars().any(|c| c.is_control() && c != '\t'),
                "accepted a control character"
            );
            assert!(data.ends_with(format!("{}'", cmd.path).as_bytes()), "path is not the quoted argument's tail");
        }
        Err(d) => assert_log_safe("denial", &d.to_string()),
    }

    let conf = serve_conf();
    for &user in SERVE_USERS {
        let decided = decide_original_command(conf, user, Some(data));
        if let Ok(text) = std::str::from_utf8(data) {
            assert_eq!(decide(conf, user, text), decided, "str and bytes decisions disagree for {user}");
        }
        match decided {
            Ok(a) => {
                check_allowed(&a);
                if let Some(owner) = a.relpath.strip_prefix("queue/") {
                    assert_eq!(owner, user, "{user} was granted another client's queue: {a:?}");
                }
                if a.write && a.relpath == "gitosis-admin" {
                    assert_eq!(user, "admin@ws", "{user} may push to gitosis-admin");
                }
            }
            Err(d) => {
                assert_log_safe("denial", &d.to_string());
                if let Err(p) = &parsed {
                    assert_eq!(&d, p, "decision and parse disagree");
                }
            }
        }
    }
}

/// Properties of a granted request that hold for any configuration.
fn check_allowed(a: &Allowed) {
    assert_safe_repo_path("allowed relpath", &a.relpath);
    assert!(!a.relpath.ends_with(".git"), "allowed relpath ends in .git: {:?}", a.relpath);
    assert_eq!(a.write, a.verb.is_write(), "write flag does not follow the verb");
    if a.write {
        assert!(a.mode.is_write(), "push allowed through a read-only grant");
    }
}

// ---------------------------------------------------------------------------
// gitosis_conf

/// Canonical `ssh-ed25519` key line number `i`: a distinct, well-formed
/// blob for every user the harness enrols.
fn test_key_line(i: usize) -> String {
    let mut blob = Vec::with_capacity(51);
    blob.extend_from_slice(&11u32.to_be_bytes());
    blob.extend_from_slice(b"ssh-ed25519");
    blob.extend_from_slice(&32u32.to_be_bytes());
    let mut point = [0x5au8; 32];
    point[..8].copy_from_slice(&(i as u64).to_be_bytes());
    blob.extend_from_slice(&point);
    format!("ssh-ed25519 {}", base64(&blob))
}

/// Standard padded base64 (so this file needs no dependency).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * k)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The users a fuzzed config names (client sections, `members` tokens),
/// capped so one input cannot make an exec slow.
fn named_users(conf: &Config) -> Vec<String> {
    let mut users = BTreeSet::new();
    for section in conf.sections() {
        if let Some(name) = ferry_client_name(section) {
            users.insert(name.to_string());
        }
        if let Some(members) = conf.get(section, "members") {
            users.extend(split_list(members).filter(|u| is_safe_username(u)).map(str::to_string));
        }
    }
    users.into_iter().take(16).collect()
}

/// gitosis.conf parsing and enrollment validation.
///
/// * `Config::parse` never panics; a refusal's `Display` is one line of
///   printable ASCII; a parsed file's section names, option names and
///   values hold no control character but the `\n` a continuation line
///   adds (and option names none at all).
/// * `Enrollment::build` never panics, with no key files and with a valid
///   distinct key for every user the file names; every error (`Display`
///   and message) and warning is printable ASCII with one of the three
///   codes.
/// * When the enrollment is accepted, it is safe to activate: no keyed
///   user but client X can push to `queue/X` (AC-01), no client can push
///   to `gitosis-admin`, every decision that is granted names a safe path,
///   and the rendered authorized_keys is idempotent and gives every key
///   `restrict` and the right forced command.
pub fn gitosis_conf(data: &[u8]) {
    fuzzing::conf(data);
    let conf = match Config::parse(data) {
        Ok(c) => c,
        Err(e) => {
            assert_log_safe("gitosis.conf error", &e.to_string());
            return;
        }
    };
    for section in conf.sections() {
        assert!(!section.chars().any(|c| c.is_control() && c != '\t'), "control character in section name {section:?}");
        for (name, value) in conf.options(section) {
            assert!(!name.chars().any(|c| c.is_control() && c != '\t'), "control character in option {name:?}");
            assert!(!value.chars().any(|c| c.is_control() && c != '\t' && c != '\n'), "control in value {value:?}");
        }
    }

    let users = named_users(&conf);
    let keydir: BTreeMap<String, Vec<u8>> = users
        .iter()
        .enumerate()
        .map(|(i, u)| (format!("{u}.pub"), format!("{}\n", test_key_line(i)).into_bytes()))
        .collect();
    for kd in [BTreeMap::new(), keydir] {
        match Enrollment::build(&conf, &kd) {
            Err(errors) => {
                assert!(!errors.is_empty(), "build failed without an error");
                for e in &errors {
                    assert!([E_ENROL_CONF, E_ENROL_KEY, E_ENROL_DUP_KEY].contains(&e.code), "unknown code {}", e.code);
                    assert_log_safe("enrollment error", &e.to_string());
                    assert_log_safe("enrollment error message", &e.message);
                }
            }
            Ok(enr) => check_enrollment(&conf, &enr),
        }
    }
}

fn check_enrollment(conf: &Config, enr: &Enrollment) {
    for w in &enr.warnings {
        assert_log_safe("enrollment warning", w);
    }
    for (name, client) in &enr.clients {
        assert_eq!(&client.name, name);
        assert!(conf.has_section(&format!("ferry client {name}")), "client {name} without its section");
        assert!(enr.users.contains_key(name), "client {name} without a key");
        check_client_endpoint(conf, client);
    }
    // Every repository a keyed user could ask for: each literal grant, each
    // `map` option's visible name (in `[DEFAULT]` too, which gitosis' lookups
    // fall back to), the admin repo and every queue.
    let mut wanted: BTreeSet<String> = BTreeSet::from(["gitosis-admin".to_string()]);
    wanted.extend(enr.clients.keys().map(|c| format!("queue/{c}")));
    for section in conf.sections().chain([DEFAULT_SECTION]) {
        for (name, value) in conf.options(section) {
            if let Some(visible) = name.strip_prefix("map ").and_then(|m| m.split_once(' ')).map(|(_, v)| v) {
                wanted.insert(visible.to_string());
            } else if matches!(name, "writable" | "writeable" | "readonly") {
                wanted.extend(split_list(value).map(str::to_string));
            }
        }
    }
    let wanted: Vec<String> = wanted.into_iter().take(32).collect();
    for user in enr.users.keys() {
        for client in enr.clients.keys().filter(|c| *c != user) {
            let queue = format!("queue/{client}");
            for mode in [Mode::Writable, Mode::Writeable] {
                if let Some(a) = have_access(conf, user, mode, &queue) {
                    panic!("accepted enrollment lets {user} push to {queue} ({mode:?} -> {a:?})");
                }
            }
        }
        for repo in &wanted {
            let Ok(a) = decide(conf, user, &format!("git-receive-pack '{repo}.git'")) else {
                continue;
            };
            check_allowed(&a);
            if let Some(owner) = a.relpath.strip_prefix("queue/")
                && enr.clients.contains_key(owner)
            {
                assert_eq!(
                    owner, user,
                    "accepted enrollment lets {user} push to {owner}'s queue by asking for {repo:?}"
                );
            }
            if enr.clients.contains_key(user) {
                assert_ne!(
                    a.relpath, ADMIN_REPO,
                    "accepted enrollment lets client {user} push to {ADMIN_REPO} by asking for {repo:?}"
                );
            }
        }
    }
    for client in enr.clients.keys() {
        for mode in [Mode::Writable, Mode::Writeable] {
            if let Some(a) = have_access(conf, client, mode, ADMIN_REPO) {
                panic!("accepted enrollment lets client {client} push to {ADMIN_REPO} ({mode:?} -> {a:?})");
            }
        }
    }

    let entries = enr.key_entries();
    let command = |u: &str| format!("/usr/bin/ferry-node serve {u}");
    match authkeys::render("", &entries, &command) {
        Ok(text) => check_authorized_keys(&text, &entries, &command),
        Err(e) => panic!("accepted enrollment does not render: {e}"),
    }
}

/// An accepted client's endpoint is in the request grammar (issue 9): each
/// value is its section's own text, re-parsing to itself, and every
/// enrolled root (git roots, export dir) has room for a request path below
/// it — a request naming `<root>/x` at the enrolled endpoint parses back to
/// the same URL and lies under the root. So a root that is enrolled is one
/// a request can use.
fn check_client_endpoint(conf: &Config, c: &ClientEnrollment) {
    let section = format!("ferry client {}", c.name);
    let own = |opt: &str| conf.get_own(&section, opt);
    assert_eq!(own("address"), Some(c.address.as_str()), "{section}: address is not the section's text");
    assert_eq!(Host::parse(c.address.as_str()).as_ref(), Ok(&c.address), "{section}: address does not re-parse");
    assert_eq!(own("user"), Some(c.user.as_str()), "{section}: user is not the section's text");
    assert_eq!(User::parse(c.user.as_str()).as_ref(), Ok(&c.user), "{section}: user does not re-parse");
    for (opt, port, default) in [("port", c.port, 22), ("git-port", c.git_port, 9418)] {
        match own(opt) {
            Some(text) => assert_eq!(parse_port(text), Ok(port), "{section}: {opt}"),
            None => assert_eq!(port, default, "{section}: default {opt}"),
        }
    }
    assert_ne!(c.git_scheme, GitScheme::Https, "{section}: https enrolled");
    assert_eq!(own("export"), Some(c.export_dir.as_str()), "{section}: export is not the section's text");
    let listed: Vec<&str> = split_list(own("git-roots").unwrap_or("")).collect();
    for root in &c.git_roots {
        assert!(listed.contains(&root.as_str()), "{section}: git root {root} not in the section");
    }
    let port = if c.git_scheme == GitScheme::Ssh { c.port } else { c.git_port };
    let user = c.git_scheme.allows_user().then(|| c.user.clone());
    for root in c.git_roots.iter().chain([&c.export_dir]) {
        let below = RemotePath::parse(&format!("{root}/x"))
            .unwrap_or_else(|e| panic!("{section}: enrolled root {root} leaves no room for a request path: {e}"));
        assert_eq!(below.relative_to(root), Some(vec!["x"]), "{section}: {below} not under {root}");
        let url = GitUrl::new(c.git_scheme, user.clone(), c.address.clone(), Some(port), below)
            .unwrap_or_else(|e| panic!("{section}: no URL for the enrolled endpoint: {e}"));
        let line = format!("git {}\n", url.to_url_string());
        match parse(line.as_bytes()) {
            Ok(Request::Git(g)) => assert_eq!(g.url, url, "{section}: {line:?} parses to another URL"),
            other => panic!("{section}: a request under the enrolled root is refused: {line:?} -> {other:?}"),
        }
    }
}

/// A rendered authorized_keys: re-rendering over it changes nothing, and
/// every generated line is `command="<cmd>",restrict <canonical key>`.
fn check_authorized_keys(text: &str, entries: &[(String, PublicKey)], command: &dyn Fn(&str) -> String) {
    match authkeys::render(text, entries, command) {
        Ok(again) => assert_eq!(again, text, "authorized_keys rendering is not idempotent"),
        Err(e) => panic!("re-rendering failed: {e}"),
    }
    // Split on LF only: `lines()` would also eat a CR, turning a preserved
    // "MARKER\r" line into a second marker.
    let body = text.strip_suffix('\n').unwrap_or_else(|| panic!("authorized_keys without final LF"));
    let generated: Vec<&str> = body.split('\n').skip_while(|l| *l != authkeys::MARKER).skip(1).collect();
    let distinct: BTreeSet<(&str, Vec<u8>)> = entries.iter().map(|(u, k)| (u.as_str(), k.blob().to_vec())).collect();
    assert_eq!(generated.len(), distinct.len(), "one line per distinct (user, key)");
    for line in generated {
        let user = authkeys::ferry_line_user(line).unwrap_or_else(|| panic!("generated line not recognised: {line:?}"));
        let prefix = format!("command=\"{}\",restrict ", command(user));
        let key = line.strip_prefix(&prefix).unwrap_or_else(|| panic!("unexpected options: {line:?}"));
        let parsed = parse_line(key).unwrap_or_else(|e| panic!("generated key does not parse ({e}): {line:?}"));
        assert_eq!(parsed.to_line(), key, "generated key is not canonical");
        assert!(entries.iter().any(|(u, k)| u == user && *k == parsed), "line for a key that was not enrolled");
    }
}

// ---------------------------------------------------------------------------
// keys

/// Key lines, key files and authorized_keys rendering over arbitrary
/// existing text.
///
/// * An accepted key line re-emits as `type base64` (printable ASCII, no
///   comment, no options) that parses to the same key, with an OpenSSH
///   `SHA256:` fingerprint; a refusal's message is printable ASCII.
/// * A key file's keys are distinct and re-parse one by one.
/// * Rendering two fixed entries over the input as an existing
///   authorized_keys file succeeds, is idempotent, keeps the foreign lines
///   in order and emits exactly our two lines after the marker.
pub fn keys(data: &[u8]) {
    fuzzing::keys(data);
    fuzzing::authkeys(data);
    if let Ok(text) = std::str::from_utf8(data) {
        match parse_line(text) {
            Ok(k) => {
                let line = k.to_line();
                assert_log_safe("key line", &line);
                assert_eq!(line.split(' ').count(), 2, "canonical key line is not 'type base64': {line:?}");
                assert_eq!(parse_line(&line).as_ref(), Ok(&k), "canonical key line does not re-parse");
                let fp = k.fingerprint();
                assert!(fp.starts_with("SHA256:") && fp.len() == 7 + 43, "odd fingerprint {fp:?}");
            }
            Err(e) => assert_log_safe("key error", &e.to_string()),
        }
    }
    match parse_keyfile(data) {
        Ok(keys) => {
            assert!(!keys.is_empty(), "key file accepted without keys");
            for (i, k) in keys.iter().enumerate() {
                assert_eq!(parse_line(&k.to_line()).as_ref(), Ok(k));
                assert!(!keys[..i].contains(k), "duplicate key accepted in one file");
            }
        }
        Err(e) => assert_log_safe("key file error", &e.to_string()),
    }

    let existing = String::from_utf8_lossy(data);
    let entries: Vec<(String, PublicKey)> = ["alice", "bob@host"]
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let k = parse_line(&test_key_line(1000 + i)).unwrap_or_else(|e| panic!("test key: {e}"));
            (u.to_string(), k)
        })
        .collect();
    let command = |u: &str| format!("ferry-node serve {u}");
    match authkeys::render(&existing, &entries, &command) {
        Ok(text) => {
            check_authorized_keys(&text, &entries, &command);
            let kept = authkeys::preserved_lines(&existing);
            let head: Vec<&str> = text.split('\n').take(kept.len()).collect();
            assert_eq!(head, kept, "foreign lines not preserved in order");
        }
        Err(e) => panic!("render over arbitrary existing text failed: {e}"),
    }
}

// ---------------------------------------------------------------------------
// archive_list

/// Wraps `tar` into a zstd frame of raw (stored) blocks, so the fuzzer's
/// byte edits land on tar headers one to one and no compressor is needed.
fn zstd_stored(tar: &[u8]) -> Vec<u8> {
    const BLOCK: usize = 1 << 17;
    let mut out = Vec::with_capacity(tar.len() + 16 + tar.len() / BLOCK * 3);
    out.extend_from_slice(&[0x28, 0xb5, 0x2f, 0xfd]); // magic
    out.push(0x00); // frame header descriptor: no content size, no checksum, no dictionary
    out.push(0x38); // window descriptor: 2^17 bytes
    let mut chunks = tar.chunks(BLOCK).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[0x01, 0x00, 0x00]); // one empty last raw block
    }
    while let Some(chunk) = chunks.next() {
        let last = u32::from(chunks.peek().is_none());
        let header = ((chunk.len() as u32) << 3) | last; // block type 0: raw
        out.extend_from_slice(&header.to_le_bytes()[..3]);
        out.extend_from_slice(chunk);
    }
    out
}

/// Policies small enough that one exec stays fast.
fn list_policies() -> [ExtractPolicy; 2] {
    let cap = |p: ExtractPolicy| ExtractPolicy {
        max_entries: 4096,
        max_total_bytes: 16 << 20,
        max_file_bytes: 16 << 20,
        ..p
    };
    [cap(ExtractPolicy::hostile()), cap(ExtractPolicy::default())]
}

/// `list_tar_zst`, the extractor's validation without writing.
///
/// Input starting with the zstd magic is used as is (fuzzing the frame
/// decoder too); anything else is a tar stream, wrapped in stored blocks.
/// Under the hostile and the default policy:
///
/// * accepted entries have normalised relative paths (no empty, `.` or
///   `..` component, no leading `/`) within the length and depth caps, no
///   path twice, a size only for files, under the hostile policy in-tree
///   relative symlink targets that do not climb above the root (the
///   default keeps targets verbatim), hard links only to earlier files,
///   and no device or FIFO under the hostile policy;
/// * a refusal's `Display` is one line of printable ASCII starting with
///   its reason code.
pub fn archive_list(data: &[u8]) {
    let input = if data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) { data.to_vec() } else { zstd_stored(data) };
    for policy in list_policies() {
        match list_tar_zst(Cursor::new(&input), &policy) {
            Ok(entries) => check_listing(&entries, &policy),
            Err(e) => check_archive_error(&e),
        }
    }
}

fn check_archive_error(e: &ArchiveError) {
    let shown = e.to_string();
    assert_log_safe("archive error", &shown);
    if !matches!(e, ArchiveError::Io { .. }) {
        assert!(shown.starts_with(e.code()), "archive error does not start with its code: {shown:?}");
    }
}

fn check_listing(entries: &[ListEntry], policy: &ExtractPolicy) {
    assert!(entries.len() as u64 <= policy.max_entries, "more entries than the cap");
    let mut seen: BTreeSet<&[u8]> = BTreeSet::new();
    let mut files: BTreeSet<&[u8]> = BTreeSet::new();
    for e in entries {
        let p = e.path.as_slice();
        let shown = String::from_utf8_lossy(p);
        assert!(p.len() <= policy.max_path_bytes, "path over the cap: {shown:?}");
        if !p.is_empty() {
            assert!(!p.starts_with(b"/"), "absolute path {shown:?}");
            let comps: Vec<&[u8]> = p.split(|&b| b == b'/').collect();
            assert!(comps.len() <= policy.max_depth, "path deeper than the cap: {shown:?}");
            for c in &comps {
                assert!(!c.is_empty() && *c != b"." && *c != b"..", "unnormalised path {shown:?}");
                assert!(c.len() <= policy.max_component_bytes, "component over the cap: {shown:?}");
                assert!(!c.contains(&0), "NUL in {shown:?}");
            }
            if policy.strict_names {
                let text = std::str::from_utf8(p).unwrap_or_else(|_| panic!("non-UTF-8 name under strict_names"));
                assert!(!text.chars().any(char::is_control), "control character under strict_names: {shown:?}");
            }
        }
        assert!(seen.insert(p) || (p.is_empty() && e.kind == EntryKind::Dir), "duplicate entry {shown:?}");
        if e.kind != EntryKind::File {
            assert_eq!(e.size, 0, "size on a non-file {shown:?}");
        }
        assert!(e.size <= policy.max_file_bytes, "file over the cap: {shown:?}");
        match e.kind {
            EntryKind::File => {
                files.insert(p);
            }
            EntryKind::Symlink => {
                let t = e.link_target.as_deref().unwrap_or_else(|| panic!("symlink without target: {shown:?}"));
                match policy.symlinks {
                    SymlinkPolicy::Reject => panic!("symlink accepted under Reject: {shown:?}"),
                    SymlinkPolicy::Any => {}
                    SymlinkPolicy::InTree => check_in_tree_link(p, t),
                }
            }
            EntryKind::HardLink => {
                assert!(policy.hardlinks, "hard link accepted while disallowed: {shown:?}");
                let t = e.link_target.as_deref().unwrap_or_else(|| panic!("hard link without target: {shown:?}"));
                assert!(files.contains(t), "hard link {shown:?} to something not an earlier file");
            }
            EntryKind::Fifo | EntryKind::CharDev | EntryKind::BlockDev => {
                assert!(policy.devices, "device or FIFO accepted while disallowed: {shown:?}");
            }
            EntryKind::Dir => {}
        }
    }
}

/// An in-tree symlink target: relative, and never climbing above the
/// archive root when resolved lexically from the link's directory.
fn check_in_tree_link(link: &[u8], target: &[u8]) {
    let shown = String::from_utf8_lossy(link);
    assert!(!target.is_empty(), "empty symlink target on {shown:?}");
    assert!(!target.starts_with(b"/"), "absolute symlink target on {shown:?}");
    let mut depth = link.split(|&b| b == b'/').count() as i64 - 1;
    for c in target.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                depth -= 1;
                assert!(depth >= 0, "symlink {shown:?} -> {:?} leaves the tree", String::from_utf8_lossy(target));
            }
            _ => depth += 1,
        }
    }
}

// ---------------------------------------------------------------------------
// tree_manifest

/// Limits small enough that one exec stays fast, and the defaults.
fn tree_limits() -> [tree::Limits; 2] {
    [tree::Limits { max_entries: 4096, max_total_bytes: 1 << 30, max_line_bytes: 64 << 10 }, tree::Limits::default()]
}

/// `ferry_tree::manifest::parse`, the node's reader of client manifests.
///
/// * Accepted: the input is exactly the canonical text of what was parsed
///   (one spelling per manifest: `write(parse(t)) == t`), which re-parses
///   to the same manifest and passes `check`; every path is relative and
///   normalised within NAME_MAX/PATH_MAX, entries are sorted strictly, every
///   parent is a directory listed earlier, hard-link groups are numbered in
///   order, have two members or more and agree on all but the path; the
///   limits hold; the streaming reader agrees.
/// * Rejected: the `Display` is one line of printable ASCII starting with
///   the reason code, and the line number lies within the input.
/// * Both: the answer is deterministic.
pub fn tree_manifest(data: &[u8]) {
    for limits in tree_limits() {
        let first = tree::parse(data, &limits);
        assert_eq!(first, tree::parse(data, &limits), "parse is not deterministic");
        match tree::read(data, &limits) {
            Ok(m) => assert_eq!(first.as_ref().ok(), Some(&m), "the streaming reader accepts what parse refuses"),
            Err(tree::ReadError::Refused(e)) => assert_eq!(first.as_ref().err(), Some(&e), "parse and read disagree"),
            Err(tree::ReadError::Io(e)) => panic!("reading a slice failed: {e}"),
        }
        match first {
            Ok(m) => check_tree_manifest(data, &m, &limits),
            Err(e) => {
                let shown = e.to_string();
                assert_log_safe("manifest refusal", &shown);
                assert!(shown.starts_with(e.code()), "refusal does not start with its code: {shown:?}");
                let lines = data.split(|b| *b == b'\n').count() as u64;
                assert!(e.line >= 1 && e.line <= lines + 1, "line {} outside the input ({lines} lines)", e.line);
            }
        }
    }
}

fn check_tree_manifest(data: &[u8], m: &TreeManifest, limits: &tree::Limits) {
    let text = m.to_bytes();
    assert!(text == data, "accepted input is not its canonical text");
    assert_eq!(tree::parse(&text, limits).as_ref(), Ok(m), "canonical text does not re-parse to the same manifest");
    assert_eq!(m.check(limits), Ok(()), "check refuses what parse accepted");
    assert!(m.entries.len() as u64 <= limits.max_entries, "more entries than the cap");
    assert!(m.total_file_bytes() <= limits.max_total_bytes, "more bytes than the cap");
    let mut dirs: BTreeSet<&[u8]> = BTreeSet::new();
    let mut groups: BTreeMap<u64, &tree::Entry> = BTreeMap::new();
    let mut prev: Option<&[u8]> = None;
    for e in &m.entries {
        let p = e.path.as_slice();
        let shown = String::from_utf8_lossy(p);
        assert!(prev.is_none_or(|q| q < p), "not sorted strictly at {shown:?}");
        prev = Some(p);
        assert!(!p.is_empty() && p.len() <= tree::PATH_MAX && !p.starts_with(b"/"), "bad path {shown:?}");
        for c in p.split(|&b| b == b'/') {
            assert!(!c.is_empty() && c != b"." && c != b"..", "unnormalised path {shown:?}");
            assert!(c.len() <= tree::NAME_MAX && !c.contains(&0), "bad component in {shown:?}");
        }
        if let Some(i) = p.iter().rposition(|&b| b == b'/') {
            assert!(dirs.contains(&p[..i]), "{shown:?} is not below a directory listed earlier");
        }
        if let TreeKind::Symlink { target } = &e.kind {
            assert!(!target.is_empty() && !target.contains(&0), "bad symlink target on {shown:?}");
        }
        if let Some(n) = e.link {
            match groups.get(&n) {
                Some(first) => assert!(first.same_inode_data(e), "group {n} members disagree at {shown:?}"),
                None => {
                    assert_eq!(n, groups.len() as u64 + 1, "group {n} out of sequence at {shown:?}");
                    assert!(e.kind != TreeKind::Dir, "a directory in a link group: {shown:?}");
                    groups.insert(n, e);
                }
            }
        }
        if e.kind == TreeKind::Dir {
            dirs.insert(p);
        }
    }
    for (n, first) in &groups {
        let members = m.entries.iter().filter(|e| e.link == Some(*n)).count();
        assert!(members >= 2, "group {n} ({:?}) has one member", String::from_utf8_lossy(&first.path));
    }
}
