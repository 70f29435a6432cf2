//! Ferry's enrollment facts and whole-config validation.
//!
//! The admin hook calls [`Enrollment::build`] on the pushed gitosis.conf and
//! `keydir/` **before** activating anything (fixing gitosis weakness W1:
//! a broken push must not lock everybody out). All problems are collected,
//! not just the first, so one push-fix cycle suffices.
//!
//! # Modules
//!
//! * [`client`]: `[ferry client NAME]` sections, parsed into the request
//!   grammar's types ([`ClientEnrollment`]);
//! * [`sections`]: gitosis' own sections and the grants they make;
//! * [`share`]: `[ferry share GROUP]`, the clients of a gitosis group that
//!   share one content store for their snapshot trees;
//! * [`units`]: size and duration syntax.
//!
//! # Whole-config checks
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

use crate::access::{FERRY_CLIENT_PREFIX, GROUP_PREFIX, ferry_client_name};
use crate::conf::Config;
use crate::escape::{escape, escape_capped};
use crate::keys::{PublicKey, parse_keyfile};
use crate::username::{RESERVED_CLIENT_NAMES, is_reserved_client_name, is_safe_username};

pub mod client;
pub mod dataset;
pub mod expect;
pub mod keep;
pub mod sections;
pub mod share;
pub mod tripwire;
pub mod units;

pub use client::ClientEnrollment;
pub use expect::{Cadence, Expected};
pub use keep::{KeepRules, Within};
pub use units::{parse_duration_secs, parse_size, parse_size_limit};

use client::parse_client;
use sections::{
    check_default_section, check_gitosis_section, check_grants, check_group_section, check_repo_section, is_ferry_owned,
};

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

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Enrollment {
    /// Clients by name.
    pub clients: BTreeMap<String, ClientEnrollment>,
    /// Every user with a valid key file, with its keys (push/admin keys).
    pub users: BTreeMap<String, Vec<PublicKey>>,
    /// Retention rules of single sources (`[ferry source CLIENT SOURCE]`),
    /// by (client, source); they override the client's and the node's.
    pub source_keep: BTreeMap<(String, String), KeepRules>,
    /// `alert-on-change` patterns of single sources, by (client, source)
    /// ([`tripwire`]).
    pub source_alerts: BTreeMap<(String, String), Vec<tripwire::Pattern>>,
    /// Problems that do not block activation; escaped, ready to print.
    pub warnings: Vec<String>,
    /// `[ferry dataset NAME]`: name → its `(client, source)` members
    /// ([`dataset`]).
    pub datasets: BTreeMap<String, Vec<(String, String)>>,
    /// `[ferry share GROUP]`: group → its enrolled members, sorted
    /// ([`share`]); each member's [`ClientEnrollment::share`] names it.
    pub shares: BTreeMap<String, Vec<String>>,
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
        check_default_section(conf, &mut rep);
        let mut clients = BTreeMap::new();
        let mut source_keep = BTreeMap::new();
        let mut source_alerts = BTreeMap::new();
        for section in conf.sections() {
            if dataset::dataset_section(section).is_some() || share::share_section(section).is_some() {
                // Parsed below, once every client is known.
            } else if is_ferry_owned(section) {
                if let Some(name) = ferry_client_name(section) {
                    if let Some(c) = parse_client(conf, section, name, &mut rep) {
                        clients.insert(name.to_string(), c);
                    }
                } else if let Some(rest) = section.strip_prefix(FERRY_SOURCE_PREFIX) {
                    if let Some((key, rules, alerts)) = parse_source_section(conf, section, rest, &mut rep) {
                        if let Some(rules) = rules {
                            source_keep.insert(key.clone(), rules);
                        }
                        if !alerts.is_empty() {
                            source_alerts.insert(key, alerts);
                        }
                    }
                } else {
                    rep.conf(format!(
                        "{}: not a valid Ferry section; expected [{FERRY_CLIENT_PREFIX}NAME] with NAME matching ^[A-Za-z][A-Za-z0-9._-]{{0,62}}$ (no '..', not ending in .git or .lock), [{FERRY_SOURCE_PREFIX}CLIENT SOURCE], [ferry dataset NAME] or [ferry share GROUP]",
                        sec(section)
                    ))
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
        let datasets = dataset::parse_datasets(conf, &client_names, &mut rep);
        let (shares, share_of) = share::parse_shares(conf, &client_names, &mut rep);
        for (name, group) in share_of {
            if let Some(c) = clients.get_mut(&name) {
                c.share = Some(group);
            }
        }

        if rep.errors.is_empty() {
            Ok(Enrollment { clients, users, source_keep, source_alerts, warnings: rep.warnings, datasets, shares })
        } else {
            Err(rep.errors)
        }
    }

    /// The retention rules of `client`'s `source`: the source's own
    /// section, else the client's; `None`: the node's `[retention]`.
    pub fn keep_rules(&self, client: &str, source: &str) -> Option<KeepRules> {
        self.source_keep
            .get(&(client.to_owned(), source.to_owned()))
            .copied()
            .or_else(|| self.clients.get(client).and_then(|c| c.keep))
    }

    /// The `alert-on-change` patterns of `client`'s `source` (empty: none).
    pub fn alert_patterns(&self, client: &str, source: &str) -> &[tripwire::Pattern] {
        self.source_alerts.get(&(client.to_owned(), source.to_owned())).map(Vec::as_slice).unwrap_or(&[])
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

/// Section name prefix of one source's options (retention).
pub const FERRY_SOURCE_PREFIX: &str = "ferry source ";

/// `[ferry source CLIENT SOURCE]`: retention rules and tripwire patterns
/// for one source. The client must be enrolled in this gitosis.conf, the
/// source a valid source name, and the section may hold only `keep-*`
/// options and `alert-on-change`.
#[allow(clippy::type_complexity)]
fn parse_source_section(
    conf: &Config,
    section: &str,
    rest: &str,
    rep: &mut Report,
) -> Option<((String, String), Option<KeepRules>, Vec<tripwire::Pattern>)> {
    let where_ = sec(section);
    let Some((client, source)) = rest.split_once(' ') else {
        rep.conf(format!("{where_}: expected [{FERRY_SOURCE_PREFIX}CLIENT SOURCE]"));
        return None;
    };
    let before = rep.errors.len();
    if !crate::username::is_valid_client_name(client) || !conf.has_section(&format!("{FERRY_CLIENT_PREFIX}{client}")) {
        rep.conf(format!("{where_}: {} is not a client enrolled here ([{FERRY_CLIENT_PREFIX}CLIENT])", quoted(client)));
    }
    if let Err(e) = ferry_request::Name::parse(source) {
        rep.conf(format!("{where_}: source {}: {}", quoted(source), e.detail));
    }
    for (opt, _) in conf.options(section) {
        if !keep::KEEP_OPTIONS.contains(&opt) && opt != tripwire::OPTION {
            rep.conf(format!(
                "{where_}: unknown option {} (known: {}, {})",
                quoted(opt),
                keep::KEEP_OPTIONS.join(", "),
                tripwire::OPTION
            ));
        }
    }
    let rules = keep::parse_keep(conf, section, rep);
    let alerts = tripwire::parse_alert_on_change(conf, section, rep);
    if rep.errors.len() != before {
        return None;
    }
    let rules = rules?;
    if rules.is_none() && alerts.is_empty() {
        rep.warn(format!("{where_}: no keep-* or {} option, the section has no effect", tripwire::OPTION));
        return None;
    }
    Some(((client.to_owned(), source.to_owned()), rules, alerts))
}

#[cfg(test)]
mod tests;
