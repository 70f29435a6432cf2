//! Issue 9, point 1: one grammar for the enrolled endpoint. Enrollment
//! parses `git-roots` and `export` with the request grammar, so a root
//! that is enrolled is a root a request can name a path under, and a root
//! that could never hold one (a request path is at most 1024 bytes and 32
//! segments) is refused when the administrator pushes it — naming the
//! option and the limit — instead of being enrolled and then failing every
//! request with "not under an enrolled git root".

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use ferry_tests::fleet::{Client, Node, commit_and_push, eventually, ok, text};
use ferry_tests::{TestDir, for_each_ref, git};

use crate::hostile::kit;

/// `base` extended to exactly `segments` segments and `bytes` bytes with
/// directory names of the path grammar (at most 100 bytes each).
fn deep_path(base: &Path, segments: usize, bytes: usize) -> String {
    let mut p = base.to_str().expect("UTF-8 test dir").to_owned();
    let have = p.matches('/').count();
    assert!(have < segments, "{p} is already {have} deep");
    let left = segments - have;
    // Every added segment costs its '/' plus at least one byte.
    let chars = bytes.checked_sub(p.len() + left).expect("room for the segments");
    assert!(chars >= left && chars <= left * 100, "cannot spread {chars} bytes over {left} segments");
    for i in 0..left {
        let n = chars / left + usize::from(i < chars % left);
        p.push('/');
        p.push_str(&format!("{}", i % 10).repeat(n));
    }
    assert_eq!((p.len(), p.matches('/').count()), (bytes, segments), "{p}");
    p
}

/// `a`'s section with `git-roots` (and, if given, `export`) replaced.
fn section_with(a: &Client, git_roots: &str, export: Option<&str>) -> String {
    a.gitosis_section
        .lines()
        .map(|l| {
            if l.starts_with("git-roots = ") {
                format!("git-roots = {git_roots}\n")
            } else if let (Some(e), true) = (export, l.starts_with("export = ")) {
                format!("export = {e}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect()
}

fn push_section(node: &Node, a: &Client, section: &str) -> Output {
    node.admin_push("enroll host-a", |dir| {
        fs::write(dir.join("keydir/host-a.pub"), format!("{}\n", a.public_key)).unwrap();
        let conf = fs::read_to_string(dir.join("gitosis.conf")).unwrap();
        fs::write(dir.join("gitosis.conf"), format!("{conf}\n{section}")).unwrap();
    })
}

/// A git root too long (2,000 bytes) or too deep (40 segments) for any
/// request path below it — or with no room left at all (1,023 bytes, 32
/// segments) — is refused at enrollment, as is such an export dir; the
/// refusal names the option and the limit, and the node stays as it was.
#[test]
fn roots_no_request_could_name_a_path_under_are_refused_at_enrollment() {
    if !kit::tools() {
        return;
    }
    let td = TestDir::new("roots_refused");
    let node = Node::start_with(&td, "backup1", "scan_on_push = false");
    let a = Client::new(&td, "host-a", &[&node]);
    let state = node.srv().join("state");
    let enrolled = || fs::read_link(state.join("enrolled")).unwrap();
    let keys = || fs::read_to_string(node.srv().join(".ssh/authorized_keys")).unwrap();
    let (enrolled_before, keys_before) = (enrolled(), keys());
    let base = a.base.join("deep");
    let cases = [
        ("a 2,000-byte git root", deep_path(&base, 31, 2000), "path longer than 1022 bytes"),
        ("a 40-segment git root", deep_path(&base, 40, 400), "path deeper than 31 segments"),
        ("a git root of 1,023 bytes", deep_path(&base, 31, 1023), "path longer than 1022 bytes"),
        ("a git root of 32 segments", deep_path(&base, 32, 1000), "path deeper than 31 segments"),
    ];
    for (what, root, limit) in &cases {
        for (opt, section) in [
            ("git-roots", section_with(&a, &format!("{} {root}", a.git_root.display()), None)),
            ("export", section_with(&a, &a.git_root.display().to_string(), Some(root))),
        ] {
            let out = push_section(&node, &a, &section);
            let t = text(&out);
            assert!(!out.status.success(), "{what} as {opt}: enrolled: {t}");
            assert!(t.contains("gitosis.conf rejected; the previous enrollment stays in force"), "{what}: {t}");
            assert!(
                t.contains(&format!(
                    "E_ENROL_CONF: [ferry client host-a] option '{opt}' (an absolute path of at most 31"
                )),
                "{what} as {opt}: {t}"
            );
            assert!(
                t.contains(&format!(
                    "{limit} (leaving room below it for a path of at most 1024 bytes and 32 segments)"
                )),
                "{what} as {opt}: {t}"
            );
            assert_eq!(enrolled(), enrolled_before, "{what} as {opt}: the live enrollment changed");
            assert_eq!(keys(), keys_before, "{what} as {opt}: authorized_keys changed");
            assert!(!node.srv().join("repositories/queue/host-a.git").exists(), "{what} as {opt}: host-a got a queue");
        }
    }
    assert!(
        node.events().lines().filter(|l| l.contains("\"enrollment_refused\"")).count() >= cases.len() * 2,
        "every refusal is in the journal: {}",
        node.events()
    );
}

/// The deepest, longest git root the grammar leaves room under (31
/// segments, 1,022 bytes) is enrolled, and a repository right below it —
/// a request path of exactly 1,024 bytes and 32 segments — is mirrored.
#[test]
fn a_root_at_the_limits_is_enrolled_and_a_repository_under_it_mirrors() {
    if !kit::tools() {
        return;
    }
    let td = TestDir::new("roots_at_limit");
    let node = Node::start(&td, "backup1");
    let mut a = Client::new(&td, "host-a", &[&node]);
    let root = PathBuf::from(deep_path(&a.base.join("deep"), 31, 1022));
    fs::create_dir_all(&root).unwrap();
    let old_root = a.git_root.display().to_string();
    let config = fs::read_to_string(&a.config).unwrap();
    let old_line = format!("git_roots = [\"{old_root}\"]");
    assert!(config.contains(&old_line), "{config}");
    fs::write(&a.config, config.replace(&old_line, &format!("git_roots = [\"{}\"]", root.display()))).unwrap();
    a.gitosis_section = section_with(&a, &root.display().to_string(), None);
    a.git_root = root.clone();
    node.enroll(&[&a]);

    // A bare repository named `r` right below the root: its path is the
    // longest and deepest a request may name.
    let bare = root.join("r");
    assert_eq!((bare.as_os_str().len(), bare.components().count() - 1), (1024, 32));
    git(&a.base, &["init", "--quiet", "--bare", bare.to_str().unwrap()]);
    a.ferry_ok(&["hook", "install", bare.to_str().unwrap()]);
    let work = a.base.join("work-r");
    git(&a.base, &["clone", "--quiet", bare.to_str().unwrap(), work.to_str().unwrap()]);
    commit_and_push(&work, "README", "at the limit\n");

    let mirror = node.data("host-a").join("git/r.git");
    // The request is finished (F) only after the mirror's refs and its
    // `ferry-origin` are written: wait for that, not only for the refs.
    eventually("the request to finish", || !node.pool_ids("host-a", "F").is_empty());
    assert!(mirror.join("HEAD").exists() && for_each_ref(&mirror) == for_each_ref(&bare), "mirror refs");
    assert!(node.pool_ids("host-a", "E").is_empty(), "node errors: {}", node.events());
    let origin = fs::read_to_string(mirror.join("ferry-origin")).unwrap();
    assert!(origin.trim().ends_with(bare.to_str().unwrap()), "{origin}");
    let listed = ok(node.cmd().args(["list", "host-a"]));
    assert!(listed.contains("r.git"), "{listed}");
}
