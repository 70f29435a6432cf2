//! `[ferry share GROUP]` sections: the clients of gitosis group GROUP put
//! the contents of their snapshot trees into one content store (issue 10
//! point 3), so a file two members back up is stored and downloaded once.
//!
//! Why a Ferry section naming a gitosis group, not an option on
//! `[group GROUP]`: gitosis' own sections keep gitosis' options (Ferry
//! warns about any other there, and a gitosis-era tool would silently
//! ignore one), while every Ferry decision sits in a `[ferry …]` section
//! that Ferry validates strictly. Membership is gitosis' own: a client
//! shares when [`crate::access::groups_of`] yields GROUP for it (direct
//! members, `@group` nesting and `@all` alike), so the admin who already
//! groups hosts in gitosis.conf states the opt-in with one line.
//!
//! Sharing is an explicit opt-in because it leaks: a member learns, by
//! what the node does not download, which contents another member holds.
//!
//! Rules, each refusing the push with a reason: GROUP follows the
//! client-name grammar (it names the store's directory), `[group GROUP]`
//! exists, the section has no options, two share groups do not differ only
//! in letter case, and no client is a member of two share groups (its new
//! snapshots link into exactly one store).

use std::collections::{BTreeMap, BTreeSet};

use super::{Report, quoted, sec};
use crate::access::{GROUP_PREFIX, groups_of};
use crate::conf::Config;
use crate::username::is_valid_client_name;

/// Prefix of a share section.
pub const FERRY_SHARE_PREFIX: &str = "ferry share ";

/// The group a section shares, if it is a share section at all (a
/// malformed name still is one, to be refused with a reason).
pub(super) fn share_section(section: &str) -> Option<&str> {
    section.strip_prefix(FERRY_SHARE_PREFIX)
}

/// Every share group of `conf` with its enrolled members (sorted), and
/// each member's group. A client in two share groups is an error.
pub(super) fn parse_shares(
    conf: &Config,
    clients: &BTreeSet<String>,
    rep: &mut Report,
) -> (BTreeMap<String, Vec<String>>, BTreeMap<String, String>) {
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut folded: BTreeMap<String, String> = BTreeMap::new();
    for section in conf.sections() {
        let Some(group) = share_section(section) else { continue };
        let where_ = sec(section);
        let before = rep.errors.len();
        if !is_valid_client_name(group) {
            rep.conf(format!(
                "{where_}: {} is not a share group name (^[A-Za-z][A-Za-z0-9._-]{{0,62}}$, no '..', not ending in .git or .lock): it names the group's store directory",
                quoted(group)
            ));
        } else if !conf.has_section(&format!("{GROUP_PREFIX}{group}")) {
            rep.conf(format!(
                "{where_}: there is no [{GROUP_PREFIX}{group}]; a share names the gitosis group whose clients share"
            ));
        } else if let Some(other) = folded.insert(group.to_ascii_lowercase(), group.to_owned()) {
            rep.conf(format!(
                "share groups '{other}' and '{group}' differ only in letter case: on a case-insensitive file system their stores would be one; rename one"
            ));
        }
        for (opt, _) in conf.options(section) {
            rep.conf(format!("{where_}: unknown option {} (a share section has no options)", quoted(opt)));
        }
        if rep.errors.len() != before {
            continue;
        }
        let members: Vec<String> =
            clients.iter().filter(|c| groups_of(conf, c).iter().any(|g| g == group)).cloned().collect();
        if members.is_empty() {
            rep.warn(format!("{where_}: no enrolled client is a member of [{GROUP_PREFIX}{group}]; nothing is shared"));
        }
        groups.insert(group.to_owned(), members);
    }
    let mut of: BTreeMap<String, String> = BTreeMap::new();
    for (group, members) in &groups {
        for m in members {
            if let Some(first) = of.insert(m.clone(), group.clone()) {
                rep.conf(format!(
                    "client {} is a member of two share groups, '{first}' and '{group}': its snapshot trees use one content store; remove it from one group or drop one [{FERRY_SHARE_PREFIX}GROUP] section",
                    quoted(m)
                ));
            }
        }
    }
    (groups, of)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crate::conf::Config;
    use crate::enroll::{E_ENROL_CONF, EnrollError, Enrollment};
    use crate::keys::tests::{EC256, ED25519, RSA2048};

    const ADMIN: &str = "[gitosis]\n\n[group gitosis-admin]\nmembers = admin@ws\nwritable = gitosis-admin\n\n";

    fn build(extra: &str) -> Result<Enrollment, Vec<EnrollError>> {
        let mut c = ADMIN.to_owned();
        for n in ["web1", "db1", "mail1"] {
            c.push_str(&format!(
                "[ferry client {n}]\naddress = 127.0.0.2\nuser = ferry\nhostkey = {EC256}\nexport = /var/lib/ferry/export\n\n"
            ));
        }
        c.push_str(extra);
        let conf = Config::parse(c.as_bytes()).unwrap();
        let keys: BTreeMap<String, Vec<u8>> = [("web1.pub", ED25519), ("db1.pub", EC256), ("mail1.pub", RSA2048)]
            .iter()
            .map(|(n, k)| (n.to_string(), k.as_bytes().to_vec()))
            .collect();
        Enrollment::build(&conf, &keys)
    }

    #[test]
    fn the_members_of_a_shared_group_share_and_others_do_not() {
        let e =
            build("[group web]\nmembers = web1 @backend\n[group backend]\nmembers = db1\n[ferry share web]\n").unwrap();
        assert_eq!(e.shares.get("web"), Some(&vec!["db1".to_owned(), "web1".to_owned()]));
        assert_eq!(e.clients["web1"].share.as_deref(), Some("web"));
        assert_eq!(e.clients["db1"].share.as_deref(), Some("web"), "nested through @backend");
        assert_eq!(e.clients["mail1"].share, None);
        let e = build("[group web]\nmembers = web1 db1\n").unwrap();
        assert!(e.shares.is_empty() && e.clients["web1"].share.is_none(), "a group alone shares nothing");
    }

    #[test]
    fn a_bad_share_is_refused_with_a_reason() {
        for (extra, needle) in [
            ("[ferry share web]\n", "there is no [group web]"),
            ("[group ../x]\nmembers = web1\n[ferry share ../x]\n", "is not a share group name"),
            ("[group web]\nmembers = web1\n[ferry share web]\nstore = /tmp\n", "unknown option 'store'"),
            (
                "[group web]\nmembers = web1\n[group db]\nmembers = web1 db1\n[ferry share web]\n[ferry share db]\n",
                "client 'web1' is a member of two share groups, 'db' and 'web'",
            ),
            (
                "[group web]\nmembers = web1\n[group Web]\nmembers = db1\n[ferry share web]\n[ferry share Web]\n",
                "differ only in letter case",
            ),
        ] {
            let errs = build(extra).unwrap_err();
            assert!(errs.iter().any(|e| e.code == E_ENROL_CONF && e.message.contains(needle)), "{extra}: {errs:?}");
        }
    }
}
