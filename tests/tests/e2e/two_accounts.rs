//! The two-account node layout (issue 15 point 2): `ferry-node init
//! --owner GIT:GROUP` run as root makes every directory for the git account,
//! shared with the scan account through GROUP, and the scan account can run
//! a scan there. Runs as root only: it creates two throwaway system accounts
//! with useradd and removes them on drop.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use ferry_tests::fleet::{ok, run, text};
use ferry_tests::{TestDir, ferry_bin, is_root, require_all, ssh_keygen};

/// Two system accounts (`git`-like with home `home`, scan account with its
/// own group, git a member of it), deleted on drop.
struct Accounts {
    git: String,
    scan: String,
}

impl Accounts {
    fn create(home: &Path) -> Accounts {
        let n = std::process::id() % 100_000;
        let a = Accounts { git: format!("fg{n}"), scan: format!("fd{n}") };
        ok(Command::new("useradd").args(["-r", "-U", "-M", "-d", "/nonexistent", "-s", "/bin/sh", &a.scan]));
        ok(Command::new("useradd")
            .args(["-r", "-U", "-M", "-s", "/bin/sh", "-G", &a.scan, "-d"])
            .arg(home)
            .arg(&a.git));
        a
    }
    fn as_user(&self, user: &str) -> Command {
        let mut c = Command::new("runuser");
        c.args(["-u", user, "--"]);
        c
    }
}

impl Drop for Accounts {
    fn drop(&mut self) {
        for u in [&self.git, &self.scan] {
            let _ = Command::new("userdel").arg(u).status();
            let _ = Command::new("groupdel").arg(u).stderr(std::process::Stdio::null()).status();
        }
    }
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn init_with_owner_makes_the_two_account_layout_and_the_scan_account_scans() {
    if !is_root() || !require_all(&["useradd", "userdel", "runuser", "getent", "ssh-keygen"]) {
        return;
    }
    let td = TestDir::new("two_accounts");
    let srv = td.join("srv");
    let accts = Accounts::create(&srv);
    let config = td.join("node.toml");
    fs::write(
        &config,
        format!(
            "name = \"b1\"\nbase_dir = \"{}\"\nprogram = \"{}\"\nscan_on_push = false\n",
            srv.display(),
            ferry_bin("ferry-node").display()
        ),
    )
    .unwrap();
    let admin = td.join("admin");
    ssh_keygen(&admin, "admin@workstation");
    let node = |c: &mut Command| {
        c.arg(ferry_bin("ferry-node")).arg("--config").arg(&config);
    };

    // Without root, init names the directory and the command that makes it.
    let mut c = accts.as_user(&accts.scan);
    node(&mut c);
    let out = run(c.args(["init", "--admin-key"]).arg(admin.with_extension("pub")));
    assert!(!out.status.success());
    assert!(text(&out).contains("install -d") && text(&out).contains("--owner"), "{}", text(&out));
    assert!(!text(&out).contains("Permission denied"), "{}", text(&out));

    let mut c = Command::new(ferry_bin("ferry-node"));
    let owner = format!("{}:{}", accts.git, accts.scan);
    ok(c.arg("--config")
        .arg(&config)
        .args(["init", "--owner", &owner, "--admin-key"])
        .arg(admin.with_extension("pub")));
    let uid = |u: &str| ok(Command::new("id").args(["-u", u])).trim().parse::<u32>().unwrap();
    let gid = ok(Command::new("id").args(["-g", &accts.scan])).trim().parse::<u32>().unwrap();
    for (d, m) in
        [("", 0o2750), (".ssh", 0o700), ("repositories", 0o2770), ("pool", 0o2770), ("state", 0o2770), ("keys", 0o2750)]
    {
        let p = srv.join(d);
        assert_eq!(mode(&p), m, "{}", p.display());
        let md = fs::metadata(&p).unwrap();
        assert_eq!((md.uid(), md.gid()), (uid(&accts.git), gid), "{}", p.display());
    }
    assert_eq!(mode(&srv.join("keys/node/id_ed25519")), 0o640);
    // Nothing init made is left to root.
    let mut stack = vec![srv.clone()];
    while let Some(p) = stack.pop() {
        let md = fs::symlink_metadata(&p).unwrap();
        assert_ne!(md.uid(), 0, "{} belongs to root", p.display());
        if md.is_dir() {
            stack.extend(fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }

    // The scan account scans (and its files stay writable by the group).
    let mut c = accts.as_user(&accts.scan);
    node(&mut c);
    ok(c.arg("scan"));
    let events = srv.join("state/events.jsonl");
    assert_eq!(mode(&events) & 0o060, 0o060, "the event journal must be group-writable");
    // The catalog too, and what SQLite makes beside it when the git
    // account opens it (a push does): else the next store by the scan
    // account fails "attempt to write a readonly database".
    let db = srv.join("state/catalog.sqlite");
    assert_eq!(mode(&db) & 0o060, 0o060, "the catalog must be group-writable");
    let mut c = accts.as_user(&accts.git);
    node(&mut c);
    ok(c.arg("list"));
    for side in ["catalog.sqlite-wal", "catalog.sqlite-shm"] {
        let p = srv.join("state").join(side);
        if p.exists() {
            assert_eq!(mode(&p) & 0o060, 0o060, "{} must be group-writable", p.display());
        }
    }

    // ... and publishes the catalog into the shared, setgid catalog dir.
    assert_eq!(mode(&srv.join("web/catalog")), 0o2775);
    assert_eq!(mode(&srv.join("web")) & 0o001, 0o001, "the scan account must reach web/catalog");
    let catalog = srv.join("web/catalog/catalog.json");
    let md = fs::metadata(&catalog).expect("the scan account published no catalog");
    assert_eq!((md.uid(), md.gid()), (uid(&accts.scan), gid), "{}", catalog.display());
}
