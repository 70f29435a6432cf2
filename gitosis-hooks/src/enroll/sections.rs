//! The checks of gitosis' own sections (`[gitosis]`, `[group …]`,
//! `[repo …]`, `[DEFAULT]`) and of the grants they make: queue and
//! admin-repo protection (SECURITY I1, AC-01), safe `map` targets (W2),
//! valid booleans, and warnings for options gitosis would ignore or Ferry
//! does not honour.

use std::collections::{BTreeMap, BTreeSet};

use super::{ADMIN_REPO, Report, quoted, sec};
use crate::access::{GROUP_PREFIX, Mode, QUEUE_DIR, groups_of, have_access, is_safe_relpath, strip_git_suffix};
use crate::conf::{Config, DEFAULT_SECTION, parse_bool, split_list};
use crate::escape::escape_capped;
use crate::keys::PublicKey;

const GITOSIS_OPTIONS: &[&str] =
    &["repositories", "generate-files-in", "ssh-authorized-keys-path", "gitweb", "daemon", "loglevel"];

const REPO_OPTIONS: &[&str] = &["gitweb", "daemon", "description", "owner"];

const GROUP_OPTIONS: &[&str] = &["members", "writable", "writeable", "readonly", "repositories"];

const LOGLEVELS: &[&str] = &["DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL", "NOTSET"];

/// Whether Ferry owns the section (case-insensitive `ferry` prefix, so a
/// mis-cased or misspelt Ferry section is reported rather than ignored).
pub(super) fn is_ferry_owned(section: &str) -> bool {
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

pub(super) fn check_gitosis_section(conf: &Config, rep: &mut Report) {
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

pub(super) fn check_group_section(conf: &Config, section: &str, rep: &mut Report) {
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

pub(super) fn check_repo_section(conf: &Config, section: &str, rep: &mut Report) {
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
pub(super) fn check_grants(
    conf: &Config,
    users: &BTreeMap<String, Vec<PublicKey>>,
    clients: &BTreeSet<String>,
    rep: &mut Report,
) {
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

/// `[DEFAULT]`: its options are fallbacks for every gitosis section (not
/// for `[ferry client]` sections), so its booleans must be valid and it
/// must not hold access options, which would apply to every group while
/// escaping the per-group checks (found by fuzzing).
pub(super) fn check_default_section(conf: &Config, rep: &mut Report) {
    if !conf.has_defaults() {
        return;
    }
    rep.warn(
        "[DEFAULT] options apply as fallbacks to every gitosis section (not to [ferry client] sections); avoid [DEFAULT]"
            .to_string(),
    );
    check_bool(conf, DEFAULT_SECTION, "gitweb", rep);
    check_bool(conf, DEFAULT_SECTION, "daemon", rep);
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
