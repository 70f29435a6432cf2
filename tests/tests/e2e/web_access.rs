//! Who may browse what in the web view: the shipped nginx site
//! (deploy/nginx-cgit.conf) with the files `ferry-node web` and the
//! gitosis-admin hook write, real nginx + fcgiwrap + cgit, checked with raw
//! HTTP (every URL spelling sent as written) and headless Chromium.
//!
//! Clients host-a and host-b are enrolled with `web = yes`, host-c with
//! `web = no`; each has a web password, and so has the administrator.
//! host-a's password opens host-a's view and nothing of host-b's, however
//! the URL is written; the administrator sees everything; host-c's
//! password opens nothing. Enrolling host-b and revoking host-a take
//! effect without touching nginx.

use std::fs;
use std::path::Path;

use ferry_tests::fleet::{Client, Node, ok, text};
use ferry_tests::{CgitWeb, TestDir, chromium_load, http_get, http_get_auth, http_get_with, require_all};

use crate::hostile::kit;

const SECRET_A: &str = "SECRET-OF-HOST-A";
const SECRET_B: &str = "SECRET-OF-HOST-B";

/// A client enrolled with `web = yes|no` appended to its section.
fn client(td: &TestDir, node: &Node, name: &str, web: bool) -> Client {
    let mut c = Client::new(td, name, &[node]);
    if !c.gitosis_section.ends_with('\n') {
        c.gitosis_section.push('\n');
    }
    c.gitosis_section.push_str(if web { "web = yes\n" } else { "web = no\n" });
    c
}

/// A repository of `c` whose one file holds `secret`, mirrored by `node`;
/// returns the commit id.
fn mirrored_repo(node: &Node, c: &Client, repo: &str, secret: &str) -> String {
    kit::mirrored_repo(node, c, repo, "secret.txt", &format!("{secret} in {repo}\n")).1
}

/// `http://user:password@addr:port<path>`, as a browser is given it.
fn url_with(web: &CgitWeb, user: &str, pw: &str, path: &str) -> String {
    format!("http://{}:{pw}@{}:{}{path}", user.replace('@', "%40"), web.addr(), web.port())
}

/// Nothing of host-b's shows in `body`.
fn assert_nothing_of_b(body: &str, what: &str) {
    for leak in [SECRET_B, "bravo", "host-b"] {
        assert!(!body.contains(leak), "{what}: {leak:?} leaked:\n{body}");
    }
}

/// `user` gets exactly what a wrong password gets at `path`: 401 with a
/// challenge (so an unknown client name cannot be told apart either).
fn assert_401(web: &CgitWeb, user: Option<(&str, &str)>, path: &str) {
    let url = format!("{}{path}", web.base_url());
    let r = match user {
        Some((u, p)) => http_get_auth(&url, u, p),
        None => http_get(&url),
    };
    let who = user.map_or("no credentials", |(u, _)| u);
    assert_eq!(r.status, 401, "{who} GET {path}: {}\n{}", r.text(), web.logs());
    assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"Ferry backups\""), "{who} GET {path}");
    assert_nothing_of_b(&r.text(), &format!("{who} GET {path}"));
    assert!(!r.text().contains(SECRET_A), "{who} GET {path} leaked host-a's data");
}

fn set_web(node: &Node, client: &str, web: &str) -> std::process::Output {
    node.admin_push(&format!("{client}: web = {web}"), |dir| {
        let p = dir.join("gitosis.conf");
        let conf = fs::read_to_string(&p).unwrap();
        let start = conf.find(&format!("[ferry client {client}]")).expect("section");
        let end = conf[start + 1..].find("\n[").map_or(conf.len(), |i| start + 1 + i);
        let section = &conf[start..end];
        let line_start = section.find("\nweb = ").expect("web line") + 1;
        let line_end = section[line_start..].find('\n').map_or(section.len(), |i| line_start + i);
        let new = format!("{}web = {web}{}", &section[..line_start], &section[line_end..]);
        fs::write(&p, format!("{}{new}{}", &conf[..start], &conf[end..])).unwrap();
    })
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn each_client_sees_only_its_own_mirrors_by_any_url() {
    if !require_all(&["/usr/sbin/sshd", "ssh", "git", "ssh-keygen", "cgit", "chromium"]) {
        return;
    }
    let td = TestDir::new("web_access");
    let node = Node::start(&td, "backup1");
    let a = client(&td, &node, "host-a", true);
    let b = client(&td, &node, "host-b", true);
    let c = client(&td, &node, "host-c", false);
    node.enroll(&[&a, &c]);
    mirrored_repo(&node, &a, "project", SECRET_A);

    let admin = node.admin_user();
    let admin_pw = node.web_password(admin);
    let a_pw = node.web_password("host-a");
    let c_pw = node.web_password("host-c");
    // nginx starts before host-b is enrolled: enrolling needs no reload.
    let web = node.start_web(&td.join("web"));

    node.enroll(&[&b]);
    let b_pw = node.web_password("host-b");
    let b_head = mirrored_repo(&node, &b, "project", SECRET_B);
    mirrored_repo(&node, &b, "bravo", SECRET_B);

    // The node's files: only the hashes, readable by the web server's group.
    let cur = node.web_dir().join("current");
    let b_file = fs::read_to_string(cur.join("c/host-b/htpasswd")).unwrap();
    let users: Vec<&str> =
        b_file.lines().filter(|l| !l.starts_with('#')).map(|l| l.split(':').next().unwrap()).collect();
    assert_eq!(users, [admin, "host-b"], "{b_file}");
    assert!(!b_file.contains(&b_pw) && b_file.contains(":$6$"), "{b_file}");
    let c_file = fs::read_to_string(cur.join("c/host-c/htpasswd")).unwrap();
    assert!(!c_file.contains("host-c:"), "web = no: host-c is not in its own file:\n{c_file}");
    for f in ["admin.htpasswd", "cgitrc", "c/host-a/htpasswd", "c/host-a/cgitrc"] {
        assert_eq!(mode(&cur.join(f)), 0o640, "{f}");
    }
    let store = node.srv().join("state/web-passwords");
    assert_eq!(mode(&store), 0o600);
    assert!(!fs::read_to_string(&store).unwrap().contains(&a_pw), "only hashes are stored");
    let conf = fs::read_to_string(node.admin_clone.join("gitosis.conf")).unwrap();
    assert!(!conf.contains("$6$"), "no password (hash) in the reviewed gitosis.conf");

    let base = |path: &str| format!("{}{path}", web.base_url());
    let as_a = |path: &str| http_get_auth(&base(path), "host-a", &a_pw);

    // --- host-a's own view ------------------------------------------------
    let idx = as_a("/c/host-a/git/");
    assert_eq!(idx.status, 200, "{}\n{}", idx.text(), web.logs());
    assert!(idx.text().contains("project"), "{}", idx.text());
    assert_nothing_of_b(&idx.text(), "host-a's index");
    let blob = as_a("/c/host-a/git/project/plain/secret.txt");
    assert_eq!(blob.status, 200);
    assert!(blob.text().contains(SECRET_A));
    for h in ["content-security-policy", "x-content-type-options"] {
        assert!(blob.header(h).is_some(), "{h} missing: {:?}", blob.headers);
    }
    // The same in a browser, credentials in the URL.
    let dom = chromium_load(&url_with(&web, "host-a", &a_pw, "/c/host-a/git/project/tree/secret.txt"))
        .unwrap_or_else(|e| panic!("host-a's own page: {e}\n{}", web.logs()));
    assert!(dom.contains(SECRET_A), "{dom}");
    assert_nothing_of_b(&dom, "host-a's page in Chromium");
    let dom = chromium_load(&url_with(&web, "host-a", &a_pw, "/c/host-a/git/")).unwrap();
    assert!(dom.contains("Ferry backups of host-a") && dom.contains("project"), "{dom}");
    assert_nothing_of_b(&dom, "host-a's index in Chromium");

    // --- host-a's password on host-b's pages: 401 by every spelling --------
    let into_b = [
        "/c/host-b/git/",
        "/c/host-b/git/project/",
        "/c/host-b/git/project/log/",
        "/c/host-b/git/project/tree/secret.txt",
        "/c/host-b/git/project/plain/secret.txt",
        "/c/host-b/git/project/snapshot/project-master.tar.gz",
        "/c/host-b/git/project/info/refs",
        "/c/host-b/git/project.git/HEAD",
        "/c/host-b/git/bravo/",
        "/c/host-b/git",
        "/c/host-b/",
        "/c/host-b",
        "/c/host-b/history.html",
        "/c/host-b/git/?url=project/plain/secret.txt",
        "/c/host-a/../host-b/git/project/",
        "/c/host-a/git/../../host-b/git/project/",
        "/c/host-a/./../host-b/git/project/",
        "/c/host-a//../host-b/git/project/",
        "/c/host-a/%2e%2e/host-b/git/project/",
        "/c/host-a/%2E%2E/host-b/git/project/",
        "/c/host-a/.%2e/host-b/git/project/",
        "/c/host-a/..%2fhost-b/git/project/",
        "/c/host-a/..%2Fhost-b/git/project/",
        "/c/host-a%2f..%2fhost-b/git/project/",
        "/c/host-a/git/..%2f..%2fhost-b/git/project/plain/secret.txt",
        "/c/host-a/git/%2e%2e%2f%2e%2e%2fhost-b/git/project/",
        "/c/./host-b/git/project/",
        "/c//host-b/git/project/",
        "/c/%68ost-b/git/project/",
        // The administrators' view, and paths to the data themselves.
        "/cgit/",
        "/cgit/host-b/git/project/plain/secret.txt",
        "/cgit/?url=host-b/git/project/plain/secret.txt",
        "/cgit-css/../cgit/host-b/git/project/",
        "/cgit-css/..%2fcgit/host-b/git/project/",
        "/data/host-b/git/project.git/HEAD",
        &format!("{}/git/project.git/HEAD", node.data("host-b").display()),
        // Names that are no enrolled client look exactly the same.
        "/c/HOST-B/git/project/",
        "/c/nosuch/git/",
        "/c/host-a.b/git/",
        "/",
    ];
    for path in into_b {
        assert_401(&web, Some(("host-a", &a_pw)), path);
    }
    // Inside host-a's own view, crafted to reach host-b: still only
    // host-a's repositories (cgit knows no other), so nothing of host-b's.
    let inside_a = [
        "/c/host-a/%252e%252e/host-b/git/project/",
        "/c/host-a/git/%252e%252e%252f%252e%252e%252fhost-b/git/project/plain/secret.txt",
        "/c/host-a/git/?url=../host-b/git/project/plain/secret.txt",
        "/c/host-a/git/?url=host-b/git/project/plain/secret.txt",
        "/c/host-a/git/?url=../../../host-b/git/project/plain/secret.txt",
        "/c/host-a/git/?p=host-b/git/project.git;a=blob_plain;f=secret.txt",
        "/c/host-a/git/bravo/",
        "/c/host-a/git/host-b/git/project/",
        "/c/host-a/git/project/plain/../../../host-b/git/project/plain/secret.txt",
        "/c/host-a/git/project/plain/secret.txt?url=../host-b/git/project/plain/secret.txt",
        &format!("/c/host-a/git/project/plain/secret.txt?id={b_head}"),
        &format!("/c/host-a/git/project/commit/?id={b_head}"),
        "/c/host-a/history.html",
    ];
    for path in inside_a {
        let r = as_a(path);
        assert_eq!(r.status, 404, "host-a GET {path}:\n{}", r.text());
        assert!(!r.text().contains(SECRET_B), "host-a GET {path}:\n{}", r.text());
    }

    // In Chromium: host-b's pages do not load with host-a's password, by
    // the plain URL, by the spellings a browser keeps, or with none.
    for path in [
        "/c/host-b/git/project/tree/secret.txt",
        "/c/host-b/git/project/snapshot/project-master.tar.gz",
        "/c/host-b/history.html",
        "/c/host-a/../host-b/git/project/",
        "/c/host-a/%2e%2e/host-b/git/project/",
        "/c/host-a/..%2fhost-b/git/project/tree/secret.txt",
        "/cgit/",
    ] {
        match chromium_load(&url_with(&web, "host-a", &a_pw, path)) {
            Err(e) => assert_eq!(e, "net::ERR_INVALID_AUTH_CREDENTIALS", "{path}"),
            Ok(dom) => panic!("host-a opened {path} in Chromium:\n{dom}"),
        }
    }
    assert_eq!(
        chromium_load(&format!("{}/c/host-a/git/", web.base_url())).err().as_deref(),
        Some("net::ERR_INVALID_AUTH_CREDENTIALS"),
        "no credentials"
    );

    // --- no credentials, wrong ones, and web = no --------------------------
    for path in ["/cgit/", "/c/host-a/git/", "/c/host-a/git/project/plain/secret.txt", "/c/host-b/git/", "/"] {
        assert_401(&web, None, path);
        assert_401(&web, Some(("host-a", "wrong-password-here")), path);
        assert_401(&web, Some(("host-c", &c_pw)), path);
        assert_401(&web, Some(("host-b", &a_pw)), path);
    }
    assert_401(&web, Some(("host-c", &c_pw)), "/c/host-c/git/");
    let bogus = http_get_with(&base("/c/host-a/git/"), &[("Authorization", "Basic !!!notbase64")]);
    assert_eq!(bogus.status, 401);
    // Debian's static cgit files are the one public thing.
    let css = http_get(&base("/cgit-css/cgit.css"));
    assert_eq!(css.status, 200);
    assert_401(&web, None, "/cgit-css/../etc/passwd");
    assert_401(&web, None, "/cgit-css../etc/passwd");
    assert_eq!(http_get(&base("/cgit-css/../../../../etc/passwd")).status, 400, "above the root");

    // --- host-b's own view, the administrator's views -----------------------
    let r = http_get_auth(&base("/c/host-b/git/project/plain/secret.txt"), "host-b", &b_pw);
    assert_eq!((r.status, r.text().contains(SECRET_B)), (200, true), "{}", r.text());
    assert_401(&web, Some(("host-b", &b_pw)), "/c/host-a/git/project/plain/secret.txt");
    let all = chromium_load(&url_with(&web, admin, &admin_pw, "/cgit/")).unwrap();
    for want in ["host-a/git/project", "host-b/git/project", "host-b/git/bravo"] {
        assert!(all.contains(want), "admin view lacks {want}:\n{all}");
    }
    for (path, secret) in [
        ("/c/host-a/git/project/plain/secret.txt", SECRET_A),
        ("/c/host-b/git/project/plain/secret.txt", SECRET_B),
        ("/cgit/host-b/git/bravo/plain/secret.txt", SECRET_B),
    ] {
        let r = http_get_auth(&base(path), admin, &admin_pw);
        assert_eq!((r.status, r.text().contains(secret)), (200, true), "admin GET {path}: {}", r.text());
    }
    // host-c (web = no) has a view for the administrators, empty so far
    // (cgit answers 404 "No repositories found").
    let r = http_get_auth(&base("/c/host-c/git/"), admin, &admin_pw);
    assert_eq!((r.status, r.text().contains("Ferry backups of host-c")), (404, true), "{}", r.text());

    // --- a bad value is refused at the push; revoking needs no reload -------
    let out = set_web(&node, "host-a", "maybe");
    assert!(!out.status.success(), "web = maybe was accepted");
    assert!(text(&out).contains("option 'web'"), "{}", text(&out));
    assert_eq!(as_a("/c/host-a/git/").status, 200, "a refused push changes nothing");
    let out = set_web(&node, "host-a", "no");
    assert!(out.status.success(), "{}", text(&out));
    assert_401(&web, Some(("host-a", &a_pw)), "/c/host-a/git/");
    assert_401(&web, Some(("host-a", &a_pw)), "/c/host-a/git/project/plain/secret.txt");
    let r = http_get_auth(&base("/c/host-a/git/"), admin, &admin_pw);
    assert_eq!(r.status, 200, "administrators keep every view");
    // A removed password opens nothing either.
    assert!(fs::read_to_string(&store).unwrap().contains("host-b:"));
    let del = ok(node.cmd().args(["web", "passwd", "host-b", "--delete"]));
    assert!(del.is_empty(), "{del}");
    assert_401(&web, Some(("host-b", &b_pw)), "/c/host-b/git/");
}

/// Run `ferry-node <args>` with `input` on standard input.
fn node_with_stdin(node: &Node, args: &[&str], input: &str) -> std::process::Output {
    use std::io::Write as _;
    let mut child = node
        .cmd()
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn web_passwords_are_checked_and_a_failed_sync_closes_the_view() {
    if !require_all(&["/usr/sbin/sshd", "ssh", "git", "ssh-keygen", "cgit"]) {
        return;
    }
    let td = TestDir::new("web_passwd");
    let node = Node::start(&td, "backup1");
    let admin = node.admin_user();
    let web = node.start_web(&td.join("web"));
    let cgit = format!("{}/cgit/", web.base_url());
    // cgit's page (a 404 "No repositories found": no client is enrolled).
    let opens = |pw: &str| {
        let r = http_get_auth(&cgit, admin, pw);
        r.status != 401 && r.text().contains("<td class='main'>Ferry backups</td>")
    };
    // init already wrote the view: administrators, nobody with a password.
    assert_401(&web, None, "/cgit/");

    // A typed (piped) password: too short is refused, nothing stored.
    let out = node_with_stdin(&node, &["web", "passwd", admin], "short\n");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("shorter than 12"), "{}", text(&out));
    assert!(!node.srv().join("state/web-passwords").exists());
    let pw = "a passphrase: with spaces";
    let out = node_with_stdin(&node, &["web", "passwd", admin], &format!("{pw}\n"));
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("opens /cgit/"), "{}", text(&out));
    assert!(opens(pw), "{}", web.logs());

    // Only users with a view get a password.
    for (user, why) in [("nobody", "not enrolled"), ("bad:user", "not enrolled")] {
        let out = node_with_stdin(&node, &["web", "passwd", user, "--random"], "");
        assert_eq!(out.status.code(), Some(2), "{user}: {}", text(&out));
        assert!(text(&out).contains(why), "{user}: {}", text(&out));
    }
    let out = node.admin_push("a plain gitosis user", |dir| {
        fs::copy(dir.join(format!("keydir/{admin}.pub")), dir.join("keydir/carol.pub")).unwrap();
    });
    assert!(!out.status.success(), "the same key twice is refused: {}", text(&out));
    let key = ferry_tests::ssh_keygen(&td.join("carol"), "carol");
    let out = node.admin_push("a plain gitosis user", |dir| {
        fs::write(dir.join("keydir/carol.pub"), format!("{key}\n")).unwrap();
    });
    assert!(out.status.success(), "{}", text(&out));
    let out = node_with_stdin(&node, &["web", "passwd", "carol", "--random"], "");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("neither an administrator"), "{}", text(&out));

    // `web sync` reports who may open what.
    let report: serde_json::Value = node.ferry_node_json(&["web", "sync"]);
    assert_eq!(report["admins"][0]["name"], admin);
    assert_eq!(report["admins"][0]["password"], true);

    // A sync that cannot finish closes the view for everyone (fails
    // closed), journals E_WEB_SYNC; the next good sync opens it again.
    let store = node.srv().join("state/web-passwords");
    let good = fs::read_to_string(&store).unwrap();
    fs::write(&store, format!("{good}hand-edited line\n")).unwrap();
    let out = ferry_tests::fleet::run(node.cmd().args(["web", "sync"]));
    assert!(!out.status.success());
    assert!(text(&out).contains("E_WEB_SYNC"), "{}", text(&out));
    assert!(!node.web_dir().join("current").exists());
    assert!(node.events().contains("\"web_sync_failed\""), "{}", node.events());
    assert_401(&web, Some((admin, pw)), "/cgit/");
    fs::write(&store, good).unwrap();
    ok(node.cmd().args(["web", "sync"]));
    assert!(opens(pw));
    // One generation at a time: older ones are removed.
    let gens: Vec<_> = fs::read_dir(node.web_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "current")
        .collect();
    assert_eq!(gens.len(), 1, "{gens:?}");
}
