//! `[ferry dataset NAME]` sections: sources across hosts restored as one
//! (issue 13; seed 004 "the shop": a database and two directories on two
//! hosts). `sources = web1:www db1:shopdb` lists `CLIENT:SOURCE` pairs;
//! the node restores them all as of one moment
//! (`ferry-node restore --dataset NAME DIR`).
//!
//! A dataset is checked like a client section: its name by the client-name
//! grammar, each pair's client enrolled in the same push, each source by
//! the request grammar's source-name rules. A bad section refuses the push.

use std::collections::{BTreeMap, BTreeSet};

use ferry_request::{Name, is_reserved_source};

use super::{Report, quoted, sec};
use crate::conf::Config;
use crate::username::is_valid_client_name;

/// Prefix of a dataset section.
pub const FERRY_DATASET_PREFIX: &str = "ferry dataset ";

/// Options a dataset section may have.
const DATASET_OPTIONS: &[&str] = &["sources"];

/// The dataset a section names, if it is a dataset section at all (a
/// malformed name still is one, to be refused with a reason).
pub(super) fn dataset_section(section: &str) -> Option<&str> {
    section.strip_prefix(FERRY_DATASET_PREFIX)
}

/// Parse `[ferry dataset NAME]`: its members, in the order listed.
pub(super) fn parse_dataset(
    conf: &Config,
    section: &str,
    name: &str,
    clients: &BTreeSet<String>,
    rep: &mut Report,
) -> Option<Vec<(String, String)>> {
    let where_ = sec(section);
    let before = rep.errors.len();
    if !is_valid_client_name(name) {
        rep.conf(format!(
            "{where_}: {} is not a dataset name (^[A-Za-z][A-Za-z0-9._-]{{0,62}}$, no '..', not ending in .git or .lock)",
            quoted(name)
        ));
    }
    for (opt, _) in conf.options(section) {
        if !DATASET_OPTIONS.contains(&opt) {
            rep.conf(format!("{where_}: unknown option {} (known: {})", quoted(opt), DATASET_OPTIONS.join(", ")));
        }
    }
    let mut members: Vec<(String, String)> = Vec::new();
    match conf.get_own(section, "sources") {
        None | Some("") => rep.conf(format!("{where_}: required option 'sources' (CLIENT:SOURCE ...) is missing")),
        Some(v) => {
            for item in crate::conf::split_list(v) {
                let Some((c, s)) = item.split_once(':') else {
                    rep.conf(format!("{where_} option 'sources': {} is not CLIENT:SOURCE", quoted(item)));
                    continue;
                };
                if !is_valid_client_name(c) {
                    rep.conf(format!("{where_} option 'sources': {} is not a client name", quoted(c)));
                } else if !clients.contains(c) {
                    rep.conf(format!(
                        "{where_} option 'sources': client {} is not enrolled (no [ferry client {}] section)",
                        quoted(c),
                        crate::escape::escape_capped(c, 100)
                    ));
                } else if let Err(e) = Name::parse(s) {
                    rep.conf(format!("{where_} option 'sources': {}: {}", quoted(item), e.detail));
                } else if is_reserved_source(s) {
                    rep.conf(format!("{where_} option 'sources': {}: '{s}' is reserved", quoted(item)));
                } else if members.iter().any(|(mc, ms)| mc == c && ms == s) {
                    rep.conf(format!("{where_} option 'sources': {} is listed twice", quoted(item)));
                } else {
                    members.push((c.to_owned(), s.to_owned()));
                }
            }
        }
    }
    (rep.errors.len() == before).then_some(members)
}

/// Every dataset of `conf` (sections after the clients are known).
pub(super) fn parse_datasets(
    conf: &Config,
    clients: &BTreeSet<String>,
    rep: &mut Report,
) -> BTreeMap<String, Vec<(String, String)>> {
    let mut out = BTreeMap::new();
    for section in conf.sections() {
        if let Some(name) = dataset_section(section)
            && let Some(m) = parse_dataset(conf, section, name, clients, rep)
        {
            out.insert(name.to_owned(), m);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crate::conf::Config;
    use crate::enroll::{E_ENROL_CONF, EnrollError, Enrollment};
    use crate::keys::tests::{EC256, ED25519, RSA2048};

    const ADMIN: &str = "[gitosis]\n\n[group gitosis-admin]\nmembers = admin@ws\nwritable = gitosis-admin\n\n";

    fn build(datasets: &str) -> Result<Enrollment, Vec<EnrollError>> {
        let mut c = ADMIN.to_owned();
        for n in ["web1", "db1"] {
            c.push_str(&format!(
                "[ferry client {n}]\naddress = 127.0.0.2\nuser = ferry\nhostkey = {EC256}\nexport = /var/lib/ferry/export\n\n"
            ));
        }
        c.push_str(datasets);
        let conf = Config::parse(c.as_bytes()).unwrap();
        let keys: BTreeMap<String, Vec<u8>> = [("web1.pub", ED25519), ("db1.pub", EC256), ("admin@ws.pub", RSA2048)]
            .iter()
            .map(|(n, k)| (n.to_string(), k.as_bytes().to_vec()))
            .collect();
        Enrollment::build(&conf, &keys)
    }

    #[test]
    fn a_dataset_names_sources_across_clients() {
        let e = build("[ferry dataset shop]\nsources = web1:www db1:shopdb\n  web1:uploads\n").unwrap();
        let want: Vec<(String, String)> =
            [("web1", "www"), ("db1", "shopdb"), ("web1", "uploads")].map(|(c, s)| (c.into(), s.into())).to_vec();
        assert_eq!(e.datasets.get("shop"), Some(&want));
    }

    #[test]
    fn a_bad_dataset_is_refused_with_a_reason() {
        for (section, needle) in [
            ("[ferry dataset shop]\nsources = web9:www\n", "'web9' is not enrolled"),
            ("[ferry dataset shop]\nsources = web1\n", "'web1' is not CLIENT:SOURCE"),
            ("[ferry dataset shop]\nsources = web1:../x\n", "'web1:../x'"),
            ("[ferry dataset shop]\nsources = web1:git\n", "reserved"),
            ("[ferry dataset shop]\nsources = web1:www web1:www\n", "listed twice"),
            ("[ferry dataset shop]\n", "required option 'sources'"),
            ("[ferry dataset shop]\nsources = web1:www\nkeep = 3\n", "unknown option 'keep'"),
            ("[ferry dataset ../x]\nsources = web1:www\n", "is not a dataset name"),
        ] {
            let errs = build(section).unwrap_err();
            assert!(errs.iter().any(|e| e.code == E_ENROL_CONF && e.message.contains(needle)), "{section}: {errs:?}");
        }
    }
}
