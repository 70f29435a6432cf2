//! uid/gid ↔ user/group names, read once from `/etc/passwd` and
//! `/etc/group` and then answered from memory (a 100,000-file tree owned
//! by three users costs two file reads, not 200,000 lookups).
//!
//! Names from other NSS sources (LDAP, sssd) are not looked up: without
//! libc there is no `getpwuid_r`, and the names are a convenience (a
//! restore falls back to the numeric ids, as tar does).

use std::collections::HashMap;
use std::path::Path;

/// Both directions of both maps.
#[derive(Debug, Default, Clone)]
pub(crate) struct Names {
    users: HashMap<u32, Vec<u8>>,
    groups: HashMap<u32, Vec<u8>>,
    uids: HashMap<Vec<u8>, u32>,
    gids: HashMap<Vec<u8>, u32>,
}

/// `name:x:id:…` lines; the first line of a name or id wins, as in NSS.
fn parse(text: &[u8]) -> (HashMap<u32, Vec<u8>>, HashMap<Vec<u8>, u32>) {
    let mut by_id = HashMap::new();
    let mut by_name = HashMap::new();
    for line in text.split(|b| *b == b'\n') {
        let mut f = line.split(|b| *b == b':');
        let (Some(name), Some(_), Some(id)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let Some(id) = std::str::from_utf8(id).ok().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if name.is_empty() || name.len() > crate::manifest::NAME_FIELD_MAX || name.contains(&0) {
            continue;
        }
        by_id.entry(id).or_insert_with(|| name.to_vec());
        by_name.entry(name.to_vec()).or_insert(id);
    }
    (by_id, by_name)
}

impl Names {
    /// The names of this host.
    pub(crate) fn load() -> Names {
        Names::from_files(Path::new("/etc/passwd"), Path::new("/etc/group"))
    }

    /// Names from the given files; a missing file means no names.
    pub(crate) fn from_files(passwd: &Path, group: &Path) -> Names {
        let (users, uids) = parse(&std::fs::read(passwd).unwrap_or_default());
        let (groups, gids) = parse(&std::fs::read(group).unwrap_or_default());
        Names { users, groups, uids, gids }
    }

    pub(crate) fn user(&self, uid: u32) -> Option<&[u8]> {
        self.users.get(&uid).map(Vec::as_slice)
    }

    pub(crate) fn group(&self, gid: u32) -> Option<&[u8]> {
        self.groups.get(&gid).map(Vec::as_slice)
    }

    pub(crate) fn uid(&self, name: &[u8]) -> Option<u32> {
        self.uids.get(name).copied()
    }

    pub(crate) fn gid(&self, name: &[u8]) -> Option<u32> {
        self.gids.get(name).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_directions_first_wins() {
        let (by_id, by_name) =
            parse(b"root:x:0:0::/root:/bin/sh\ntoor:x:0:0\nbob:x:1000:1000\nbad line\nnum:x:abc:0\n");
        assert_eq!(by_id[&0], b"root");
        assert_eq!(by_name[&b"toor".to_vec()], 0);
        assert_eq!(by_name[&b"bob".to_vec()], 1000);
        assert_eq!(by_id.len(), 2);
    }
}
