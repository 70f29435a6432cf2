//! The node's directories on disk: who owns them, their modes, and what
//! `ferry-node init` says when it may not create them.
//!
//! Two layouts work:
//!
//! - **One account** (`--owner git`, or init run as that account): every
//!   directory belongs to it, `keys/` is 0700.
//! - **Two accounts** (`--owner git:ferry`, where `ferry` is not git's
//!   primary group): `git` (sshd, serve, the hooks) owns every directory and
//!   the keys it makes; the `ferry` account, a member of group `ferry`, runs
//!   scan, check, gc and the daemon through the group. Shared directories
//!   are setgid and group-writable (2770), so files either account makes
//!   stay in group `ferry`; `keys/` is 2750 and its private keys 0640 (only
//!   git makes keys; ssh run by `ferry` accepts a key it does not own that
//!   its group may read). The base directory (git's home, holding
//!   `.ssh/authorized_keys`) is 2750: sshd refuses a group-writable home.
//!   Every ferry-node process clears the group-write bit from its umask so
//!   files the other account must write (locks, the event journal) are
//!   group-writable.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::config::NodeConfig;

/// `--owner ACCOUNT[:GROUP]`, resolved through the system's user database.
#[derive(Debug, Clone)]
pub struct Owner {
    pub user: String,
    pub group: String,
    pub uid: u32,
    pub gid: u32,
    /// GROUP is not the account's primary group: the two-account layout.
    pub shared: bool,
}

impl Owner {
    pub fn parse(spec: &str) -> anyhow::Result<Owner> {
        let (user, group) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        let pw = getent("passwd", user)?;
        let f: Vec<&str> = pw.split(':').collect();
        let (uid, primary): (u32, u32) =
            match (f.get(2).and_then(|s| s.parse().ok()), f.get(3).and_then(|s| s.parse().ok())) {
                (Some(u), Some(g)) => (u, g),
                _ => bail!("getent passwd {user}: unexpected line {pw:?}"),
            };
        let (group, gid) = match group {
            None | Some("") => {
                let gr = getent("group", &primary.to_string())?;
                (gr.split(':').next().unwrap_or_default().to_owned(), primary)
            }
            Some(g) => {
                let gr = getent("group", g)?;
                let gid = gr.split(':').nth(2).and_then(|s| s.parse().ok()).context("getent group: no gid")?;
                (g.to_owned(), gid)
            }
        };
        Ok(Owner { user: user.to_owned(), group, uid, gid, shared: gid != primary })
    }
}

fn getent(db: &str, key: &str) -> anyhow::Result<String> {
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
        bail!("not an account or group name: {}", ferry_text::escape(key, 64));
    }
    let out = ferry_run::Cmd::new("getent").args([db, key]).run()?;
    if !out.status.success() {
        bail!("no {} named {key} (getent {db} {key} found none): create it first", db.replace("passwd", "account"));
    }
    Ok(String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or_default().to_owned())
}

/// Every directory init makes, with its mode in the given layout.
pub fn dirs(cfg: &NodeConfig, shared: bool) -> Vec<(PathBuf, u32)> {
    let (home, rw, keys) = if shared { (0o2750, 0o2770, 0o2750) } else { (0o750, 0o750, 0o700) };
    let mut v = vec![(cfg.base_dir.clone(), home)];
    if let Some(ssh) = cfg.authorized_keys().parent() {
        v.push((ssh.to_owned(), 0o700));
    }
    for d in [cfg.repositories(), cfg.pool_dir(), cfg.data_dir(), cfg.state_dir()] {
        v.push((d, rw));
    }
    v.push((cfg.keys_dir(), keys));
    v
}

/// As root: create every directory (missing parents root-owned 0755) with
/// its owner and mode; an existing one gets them too.
pub fn prepare_as_root(cfg: &NodeConfig, owner: &Owner) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for (d, mode) in dirs(cfg, owner.shared) {
        std::fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
        std::os::unix::fs::chown(&d, Some(owner.uid), Some(owner.gid))
            .with_context(|| format!("cannot chown {}", d.display()))?;
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode))?;
    }
    if owner.shared {
        share_catalog_dir(cfg, owner)?;
    }
    Ok(())
}

/// Two accounts: the scan (run by the scan account) publishes the catalog
/// into `<web dir>/catalog`, so that directory is made setgid and
/// group-writable for the shared group, and world-readable (it holds only
/// the published `catalog.json` and history page a web server serves).
/// `web/` itself keeps its owner and group (the web view's is the web
/// server's) and gains only the others' search bit, so the scan account
/// can reach `catalog/`; everything else in it is 0750/0640 (`crate::web`),
/// so the bit lists and opens nothing more.
fn share_catalog_dir(cfg: &NodeConfig, owner: &Owner) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let web = cfg.web_dir();
    if !web.exists() {
        std::fs::create_dir_all(&web).with_context(|| format!("cannot create {}", web.display()))?;
        std::os::unix::fs::chown(&web, Some(owner.uid), Some(owner.gid))
            .with_context(|| format!("cannot chown {}", web.display()))?;
        std::fs::set_permissions(&web, std::fs::Permissions::from_mode(0o2750))?;
    }
    let mode = std::fs::metadata(&web)?.permissions().mode() & 0o7777;
    std::fs::set_permissions(&web, std::fs::Permissions::from_mode(mode | 0o001))?;
    let catalog = crate::publish::default_dir(cfg);
    std::fs::create_dir_all(&catalog).with_context(|| format!("cannot create {}", catalog.display()))?;
    std::os::unix::fs::chown(&catalog, Some(owner.uid), Some(owner.gid))
        .with_context(|| format!("cannot chown {}", catalog.display()))?;
    std::fs::set_permissions(&catalog, std::fs::Permissions::from_mode(0o2775))?;
    Ok(())
}

/// After init ran as root: hand everything root made below the node's
/// directories to the owner (files other accounts made are left alone, so
/// re-running init never takes a file away from the scan account).
pub fn chown_made_by_root(cfg: &NodeConfig, owner: &Owner) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let mut stack: Vec<PathBuf> = dirs(cfg, owner.shared).into_iter().map(|(d, _)| d).collect();
    // data/ holds the backups: init writes nothing below it.
    let data = cfg.data_dir();
    while let Some(p) = stack.pop() {
        let Ok(md) = std::fs::symlink_metadata(&p) else { continue };
        if md.uid() == 0 {
            std::os::unix::fs::lchown(&p, Some(owner.uid), Some(owner.gid))
                .with_context(|| format!("cannot chown {}", p.display()))?;
        }
        if md.is_dir() && p != data {
            for e in std::fs::read_dir(&p)?.flatten() {
                stack.push(e.path());
            }
        }
    }
    Ok(())
}

/// Not root: every directory must exist and be writable, or be creatable;
/// otherwise say exactly what root has to do (never a bare "Permission
/// denied").
pub fn check_creatable(cfg: &NodeConfig, config_path: &Path) -> anyhow::Result<()> {
    let me = whoami();
    for (d, mode) in dirs(cfg, false) {
        let target = if d.exists() { d.clone() } else { nearest_existing(&d) };
        if rustix::fs::access(&target, rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK).is_err() {
            let what = if target == d {
                format!("{} exists but {me} may not write it", d.display())
            } else {
                format!("{} does not exist and {me} may not create it in {}", d.display(), target.display())
            };
            bail!(
                "{what}; as root, either let init make every directory (`ferry-node --config {} init --owner {me}[:GROUP] --admin-key KEY`; \
                 two accounts: --owner git:ferry) or create it yourself (`install -d -o {me} -g {me} -m {mode:o} {}`)",
                config_path.display(),
                d.display()
            );
        }
    }
    Ok(())
}

fn nearest_existing(p: &Path) -> PathBuf {
    p.ancestors().find(|a| a.exists()).unwrap_or(Path::new("/")).to_owned()
}

fn whoami() -> String {
    let uid = rustix::process::getuid().as_raw();
    ferry_run::Cmd::new("getent")
        .args(["passwd", &uid.to_string()])
        .run()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).split(':').next().map(str::to_owned))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("uid {uid}"))
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Clear the group-write bit from the umask, so a file one account makes
/// (a lock, the event journal, a pool entry's sidecar) can be written by the
/// other account of the two-account layout. Others' bits are kept as they
/// are; with one account and a private primary group nothing changes.
pub fn share_with_group() {
    let old = rustix::process::umask(rustix::fs::Mode::empty());
    rustix::process::umask(old & !rustix::fs::Mode::WGRP);
}

/// Make `p` if it is missing, and let the group write it whenever it may
/// read it. SQLite creates a database 0644 whatever the umask allows and
/// gives its `-wal`/`-shm` files the database's mode, so in the two-account
/// layout a catalog one account made was read-only for the other: a push
/// (run as `git`) left `-wal`/`-shm` it could not checkpoint away, and every
/// later store by the scan account failed "attempt to write a readonly
/// database". Creating the file first, under [`share_with_group`]'s umask,
/// avoids that; a file this process owns from before gets group-write added
/// (one owned by the other account is left for that account to repair).
pub fn shared_file(p: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o664).open(p) {
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let md = std::fs::symlink_metadata(p)?;
    let mode = md.mode() & 0o7777;
    if md.is_file() && md.uid() == rustix::process::geteuid().as_raw() && mode & 0o040 != 0 && mode & 0o020 == 0 {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode | 0o020))?;
    }
    Ok(())
}

/// Mode of a private key made in `keys_dir`: 0640 when the directory is
/// setgid and lets its group read — the two-account layout `--owner` makes
/// (the scan account reads, via the group, a key git owns; ssh only refuses
/// such a key to its owner) — else 0600. A directory that is merely
/// group-readable (a loose umask) does not count.
pub fn private_key_mode(keys_dir: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(keys_dir) {
        Ok(m) if m.permissions().mode() & 0o2040 == 0o2040 => 0o640,
        _ => 0o600,
    }
}

/// The group the two accounts of the two-account layout share (`init
/// --owner git:GROUP`): the group of the node's state directory when that
/// directory is setgid and group-writable, as only that layout makes it
/// (2770). `None` in the one-account layout (0750).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedGroup {
    pub gid: u32,
    /// The state directory it was read from, for messages.
    pub dir: PathBuf,
}

impl SharedGroup {
    /// The node's shared group, if it has one (type docs).
    pub fn of(cfg: &NodeConfig) -> Option<SharedGroup> {
        use std::os::unix::fs::MetadataExt;
        let dir = cfg.state_dir();
        let md = std::fs::metadata(&dir).ok()?;
        (md.is_dir() && md.mode() & 0o2070 == 0o2070).then_some(SharedGroup { gid: md.gid(), dir })
    }

    /// `name (gid N)`, or the bare gid when the name cannot be looked up.
    pub fn describe(&self) -> String {
        match group_name(self.gid) {
            Some(n) => format!("{n} (gid {})", self.gid),
            None => format!("gid {}", self.gid),
        }
    }

    /// Whether the account `uid` belongs to the group (as its primary group
    /// or as a listed member): the accounts of the node.
    fn has_member(&self, uid: u32) -> bool {
        let Some(pw) = getent_id("passwd", uid) else { return false };
        let f: Vec<&str> = pw.split(':').collect();
        if f.get(3).and_then(|g| g.parse::<u32>().ok()) == Some(self.gid) {
            return true;
        }
        let (Some(name), Some(gr)) = (f.first(), getent_id("group", self.gid)) else { return false };
        gr.split(':').nth(3).is_some_and(|m| m.split(',').any(|m| m == *name))
    }
}

fn getent_id(db: &str, id: u32) -> Option<String> {
    getent(db, &id.to_string()).ok()
}

fn group_name(gid: u32) -> Option<String> {
    getent_id("group", gid).and_then(|g| g.split(':').next().map(str::to_owned)).filter(|n| !n.is_empty())
}

/// Whether a secret file (the S3 credentials, the store key) may be used
/// by this process; the error says why not and what is accepted. `what`
/// names the file ("the S3 credentials file"). Accepted:
///
/// - mode 0600 (no bit for group or others) and owned by this process's
///   account (or by anyone when `root_reads_any` and this is root), or
/// - in the two-account layout only, mode 0640 (group read, nothing
///   else) when the file's group is the node's [`SharedGroup`] and its
///   owner is root or an account in that group: `git` (serving a client's
///   restore) and the scan account both read it, and nobody else does.
///
/// Anything readable by others, writable by the group, or readable by
/// another group is refused: the secret is as good as every backup.
pub fn check_secret_file(
    p: &Path,
    what: &str,
    md: &std::fs::Metadata,
    shared: Option<&SharedGroup>,
    root_reads_any: bool,
) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let mode = md.mode() & 0o777;
    let in_shared = shared.filter(|g| g.gid == md.gid());
    let group_ok = mode & 0o077 == 0o040 && in_shared.is_some();
    if mode & 0o077 != 0 && !group_ok {
        let group = group_name(md.gid()).unwrap_or_else(|| format!("gid {}", md.gid()));
        let accepted = match shared {
            Some(g) => format!(
                "accepted are mode 0600, or mode 0640 with group {} (the node's shared group, that of {}); \
                 `chmod 600` it, or `chgrp {}` and `chmod 640` it",
                g.describe(),
                g.dir.display(),
                group_name(g.gid).unwrap_or_else(|| g.gid.to_string()),
            ),
            None => "accepted is mode 0600 (`chmod 600` it); mode 0640 only in the two-account layout, \
                     with the group of the node's setgid state directory"
                .to_owned(),
        };
        return Err(format!(
            "{what} {} is readable by group or others (mode {mode:o}, group {group}): {accepted}",
            p.display()
        ));
    }
    let me = rustix::process::geteuid().as_raw();
    let owner = md.uid();
    if owner == me || (root_reads_any && me == 0) {
        return Ok(());
    }
    if let Some(g) = in_shared.filter(|_| group_ok)
        && (owner == 0 || g.has_member(owner))
    {
        return Ok(());
    }
    Err(match in_shared.filter(|_| group_ok) {
        Some(g) => format!(
            "{what} {} belongs to uid {owner}, which is neither root nor an account in the node's shared group {}",
            p.display(),
            g.describe()
        ),
        None => format!(
            "{what} {} belongs to uid {owner}, not to the node's account (uid {me}); mode 0600 needs that \
             owner (two-account layout: mode 0640 in the node's shared group, owned by root or one of its accounts)",
            p.display()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_of_root_is_not_shared_and_unknown_names_say_so() {
        let o = Owner::parse("root").unwrap();
        assert_eq!((o.uid, o.gid, o.shared, o.group.as_str()), (0, 0, false, "root"));
        let e = Owner::parse("no-such-account-ferry").unwrap_err().to_string();
        assert!(e.contains("no account named no-such-account-ferry"), "{e}");
        assert!(Owner::parse("a b").is_err());
    }

    #[test]
    fn private_keys_are_group_readable_only_in_a_group_readable_dir() {
        use std::os::unix::fs::PermissionsExt;
        let td = tempfile::tempdir().unwrap();
        std::fs::set_permissions(td.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(private_key_mode(td.path()), 0o600);
        std::fs::set_permissions(td.path(), std::fs::Permissions::from_mode(0o750)).unwrap();
        assert_eq!(private_key_mode(td.path()), 0o600);
        std::fs::set_permissions(td.path(), std::fs::Permissions::from_mode(0o2750)).unwrap();
        assert_eq!(private_key_mode(td.path()), 0o640);
    }

    #[test]
    fn secret_files_are_private_or_readable_by_the_shared_group_only() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let td = tempfile::tempdir().unwrap();
        let p = td.path().join("secret");
        std::fs::write(&p, "x").unwrap();
        let gid = std::fs::metadata(&p).unwrap().gid();
        let shared = SharedGroup { gid, dir: td.path().to_owned() };
        let other = SharedGroup { gid: gid.wrapping_add(1), dir: td.path().to_owned() };
        let check = |mode: u32, g: Option<&SharedGroup>| {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            check_secret_file(&p, "the secret", &std::fs::metadata(&p).unwrap(), g, false)
        };
        for g in [None, Some(&shared), Some(&other)] {
            assert_eq!(check(0o600, g), Ok(()));
            assert_eq!(check(0o400, g), Ok(()));
        }
        assert_eq!(check(0o640, Some(&shared)), Ok(()));
        assert_eq!(check(0o440, Some(&shared)), Ok(()));
        // No shared group (one account): 0600 only, and the message says so.
        let e = check(0o640, None).unwrap_err();
        assert!(e.contains("readable by group or others (mode 640") && e.contains("accepted is mode 0600"), "{e}");
        // Another group, group-writable, or anything for others: refused,
        // naming what is accepted.
        let e = check(0o640, Some(&other)).unwrap_err();
        assert!(e.contains(&format!("mode 0640 with group {}", other.describe())), "{e}");
        for mode in [0o660, 0o644, 0o604, 0o670, 0o650] {
            assert!(check(mode, Some(&shared)).is_err(), "{mode:o}");
        }
        if !is_root() {
            return;
        }
        // Owned by another account: 0600 never; 0640 in the shared group
        // when the owner is in that group (nobody's own group here).
        let nobody = 65534;
        let nogroup = SharedGroup { gid: nobody, dir: td.path().to_owned() };
        if getent_id("passwd", nobody).is_none_or(|pw| pw.split(':').nth(3) != Some("65534")) {
            return;
        }
        std::os::unix::fs::chown(&p, Some(nobody), Some(nobody)).unwrap();
        let e = check(0o600, Some(&nogroup)).unwrap_err();
        assert!(e.contains("belongs to uid 65534, not to the node's account"), "{e}");
        assert_eq!(check(0o640, Some(&nogroup)), Ok(()));
        std::os::unix::fs::chown(&p, Some(nobody), Some(gid)).unwrap();
        let e = check(0o640, Some(&shared)).unwrap_err();
        assert!(e.contains("neither root nor an account in the node's shared group"), "{e}");
        // Root may use the node's key whoever owns it (the store key's rule).
        let md = std::fs::metadata(&p).unwrap();
        assert_eq!(check_secret_file(&p, "the key", &md, Some(&shared), true), Ok(()));
    }
}
