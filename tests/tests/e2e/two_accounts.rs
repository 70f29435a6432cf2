//! The two-account node layout (issue 15 point 2): `ferry-node init
//! --owner GIT:GROUP` run as root makes every directory for the git account,
//! shared with the scan account through GROUP, and the scan account can run
//! a scan there; with an S3 store (issue 14), what the scan account stores
//! `git` serves back to the client, both reading the credentials and the
//! store key through GROUP. Runs as root only: it creates two throwaway
//! system accounts with useradd and removes them on drop.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use ferry_tests::fleet::{ok, run, text};
use ferry_tests::{Garage, TestDir, ferry_bin, is_root, require_all, ssh_keygen};

/// Two system accounts (`git`-like with home `home`, scan account with its
/// own group, git a member of it), deleted on drop; the accounts lock is
/// held meanwhile (the hostile suite watches `/etc/passwd`).
struct Accounts {
    git: String,
    scan: String,
    _lock: std::fs::File,
}

impl Accounts {
    /// `tag` keeps the names of two tests in one process apart.
    fn create(home: &Path, tag: &str) -> Accounts {
        let n = std::process::id() % 100_000;
        let _lock = ferry_tests::accounts_lock(true);
        let a = Accounts { git: format!("fg{n}{tag}"), scan: format!("fd{n}{tag}"), _lock };
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
    let accts = Accounts::create(&srv, "");
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

/// The scan account stores an artifact in Garage, encrypted; `git`, as the
/// client's `ferry-restore` verb runs, serves it back. Both read the S3
/// credentials and the store key through the shared group (0640), which a
/// 0600 file owned by one of them would not allow; anything looser, or
/// another group, is still refused, naming what is accepted.
#[test]
fn what_the_scan_account_stores_in_s3_git_serves_back() {
    if !is_root()
        || !require_all(&["useradd", "userdel", "runuser", "getent", "ssh-keygen"])
        || !crate::s3_encrypt::tools()
    {
        return;
    }
    let td = TestDir::new("two_accounts_s3");
    let srv = td.join("srv");
    let accts = Accounts::create(&srv, "s");
    let g = Garage::start(&td.join("garage"), "ferry");
    let config = td.join("node.toml");
    let base = format!(
        "name = \"b1\"\nbase_dir = \"{}\"\nprogram = \"{}\"\nscan_on_push = false\n",
        srv.display(),
        ferry_bin("ferry-node").display()
    );
    fs::write(&config, &base).unwrap();
    let admin = td.join("admin");
    ssh_keygen(&admin, "admin@workstation");
    let owner = format!("{}:{}", accts.git, accts.scan);
    ok(Command::new(ferry_bin("ferry-node"))
        .arg("--config")
        .arg(&config)
        .args(["init", "--owner", &owner, "--admin-key"])
        .arg(admin.with_extension("pub")));
    let id = |args: &[&str]| ok(Command::new("id").args(args)).trim().parse::<u32>().unwrap();
    let (scan_uid, group) = (id(&["-u", &accts.scan]), id(&["-g", &accts.scan]));

    // The credentials as README says for two accounts: the scan account's,
    // group-readable by the shared group.
    let creds = td.join("s3.toml");
    fs::write(&creds, format!("access_key_id = \"{}\"\nsecret_access_key = \"{}\"\n", g.key_id, g.secret)).unwrap();
    std::os::unix::fs::chown(&creds, Some(scan_uid), Some(group)).unwrap();
    fs::set_permissions(&creds, fs::Permissions::from_mode(0o640)).unwrap();
    let key = td.join("store.key");
    fs::write(
        &config,
        format!(
            "{base}\n[store]\nkind = \"s3\"\nendpoint = \"{}\"\nregion = \"garage\"\nbucket = \"{}\"\nprefix = \"b1\"\ncredentials = \"{}\"\npart_size_mib = 5\nencrypt = true\nkey = \"{}\"\n",
            g.endpoint(),
            g.bucket,
            creds.display(),
            key.display()
        ),
    )
    .unwrap();
    // keygen by root in this layout: root's file, readable by the group.
    ok(Command::new(ferry_bin("ferry-node")).arg("--config").arg(&config).args(["store", "keygen"]));
    let md = fs::metadata(&key).unwrap();
    assert_eq!((mode(&key), md.uid(), md.gid()), (0o640, 0, group), "the key keygen wrote");

    // Stored by the scan account: more than two 4 MiB ranges.
    let payload: Vec<u8> = (0..9_500_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let file = td.join("payload");
    fs::write(&file, &payload).unwrap();
    let mut c = accts.as_user(&accts.scan);
    c.arg(ferry_bin("ferry-store-put")).arg(&config).args(["host-a", "numbers", "20260101T000000Z"]).arg(&file);
    let path = ok(&mut c).trim().to_owned();
    assert_eq!(path, "host-a/numbers/20260101T000000Z/20260101T000000Z.pipe");
    assert!(g.keys("b1/").contains(&format!("b1/{path}")), "{:?}", g.keys(""));

    // The client's restore verb, run by sshd as `git` (the forced command).
    let conf = srv.join("state/enrolled/gitosis.conf");
    let mut enrolled = fs::read_to_string(&conf).unwrap();
    enrolled.push_str("\n[ferry client host-a]\n");
    fs::write(&conf, enrolled).unwrap();
    let serve = |cmd: &str| {
        let mut c = accts.as_user(&accts.git);
        c.arg("env")
            .arg(format!("SSH_ORIGINAL_COMMAND={cmd}"))
            .arg(ferry_bin("ferry-node"))
            .arg("--config")
            .arg(&config)
            .args(["serve", "host-a"]);
        run(&mut c)
    };
    let out = serve(&format!("ferry-restore get {path} 0"));
    assert!(out.status.success(), "{}", text(&out));
    assert!(out.stdout == payload, "git served {} bytes, not the {} stored", out.stdout.len(), payload.len());
    let out = serve("ferry-restore list numbers");
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains(&path), "{}", text(&out));

    // Looser than 0640, or another group (git's own): refused, naming
    // what is accepted; nothing served.
    let gname = accts.scan.clone();
    for (m, grp, why) in [
        (0o644, group, "readable by group or others (mode 644"),
        (0o660, group, "readable by group or others (mode 660"),
        (0o640, id(&["-g", &accts.git]), "readable by group or others (mode 640"),
    ] {
        std::os::unix::fs::chown(&creds, None, Some(grp)).unwrap();
        fs::set_permissions(&creds, fs::Permissions::from_mode(m)).unwrap();
        let out = serve(&format!("ferry-restore get {path} 0"));
        assert!(!out.status.success() && out.stdout.is_empty(), "{m:o}: {}", text(&out));
        let t = text(&out);
        assert!(t.contains(why) && t.contains(&format!("mode 0640 with group {gname}")), "{m:o}: {t}");
    }
    std::os::unix::fs::chown(&creds, None, Some(group)).unwrap();
    fs::set_permissions(&creds, fs::Permissions::from_mode(0o640)).unwrap();
    // The key's rule is the same: group-writable is refused (E_STORE_KEY).
    fs::set_permissions(&key, fs::Permissions::from_mode(0o660)).unwrap();
    let out = serve(&format!("ferry-restore get {path} 0"));
    assert!(!out.status.success() && out.stdout.is_empty(), "{}", text(&out));
    assert!(text(&out).contains("E_STORE_KEY") && text(&out).contains("store key"), "{}", text(&out));
}
