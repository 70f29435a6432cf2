//! Enrollment tests: whole configurations through [`Enrollment::build`],
//! as the admin hook runs it.

use super::*;
use crate::keys::tests::{EC256, ED25519, RSA2048};
use crate::testutil::Rng;
use ferry_request::{GitScheme, RemotePath};

fn conf(s: &str) -> Config {
    match Config::parse(s.as_bytes()) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    }
}

fn keydir(files: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
    files.iter().map(|(n, c)| (n.to_string(), c.as_bytes().to_vec())).collect()
}

fn client_section(name: &str, extra: &str) -> String {
    format!(
        "[ferry client {name}]\naddress = 127.0.0.2\nuser = ferry\nhostkey = {EC256}\nexport = /var/lib/ferry/export\n{extra}"
    )
}

fn build_ok(c: &str, kd: &[(&str, &str)]) -> Enrollment {
    match Enrollment::build(&conf(c), &keydir(kd)) {
        Ok(e) => e,
        Err(errs) => panic!("{}", errs.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n")),
    }
}

fn build_err(c: &str, kd: &[(&str, &str)]) -> Vec<EnrollError> {
    match Enrollment::build(&conf(c), &keydir(kd)) {
        Ok(e) => panic!("expected errors, got {e:?}"),
        Err(errs) => errs,
    }
}

fn has(errs: &[EnrollError], code: &str, needle: &str) -> bool {
    errs.iter().any(|e| e.code == code && e.message.contains(needle))
}

const ADMIN: &str = "[gitosis]\n\n[group gitosis-admin]\nmembers = admin@ws\nwritable = gitosis-admin\n\n";

#[test]
fn full_client_enrollment() {
    let c = format!(
        "{ADMIN}{}",
        client_section(
            "host-a",
            "port = 2222\ngit-scheme = git\ngit-port = 9419\ngit-roots = /srv/git\n  /home/git/repos /srv/git\nquota = 100G\nmax-artifact = 2G\nmax-objects = 100000\njob-timeout = 2h\ndescription = the build host\nweb = yes\n"
        )
    );
    let e = build_ok(&c, &[("host-a.pub", ED25519), ("admin@ws.pub", RSA2048)]);
    let a = match e.client("host-a") {
        Some(a) => a,
        None => panic!("no client"),
    };
    assert_eq!(a.name, "host-a");
    assert_eq!(a.address.as_str(), "127.0.0.2");
    assert_eq!(a.port, 2222);
    assert_eq!(a.user.as_str(), "ferry");
    assert_eq!(a.host_key.key_type(), "ecdsa-sha2-nistp256");
    assert_eq!(a.git_scheme, GitScheme::Git);
    assert_eq!(a.git_port, 9419);
    assert_eq!(a.git_roots.iter().map(RemotePath::as_str).collect::<Vec<_>>(), ["/srv/git", "/home/git/repos"]);
    assert_eq!(a.export_dir.as_str(), "/var/lib/ferry/export");
    assert_eq!(a.quota_bytes, Some(100 << 30));
    assert_eq!(a.max_artifact_bytes, Some(2 << 30));
    assert_eq!(a.max_objects, Some(100_000));
    assert_eq!(a.job_timeout_secs, Some(7200));
    assert_eq!(a.description.as_deref(), Some("the build host"));
    assert!(a.web);
    assert_eq!(e.users.len(), 2);
    assert_eq!(e.key_entries().len(), 2);
    assert!(e.client("nosuch").is_none());
    assert!(e.warnings.is_empty(), "{:?}", e.warnings);
}

#[test]
fn client_defaults() {
    let c = client_section("host-a", "");
    let e = build_ok(&c, &[("host-a.pub", ED25519)]);
    let a = e.client("host-a").cloned();
    let a = match a {
        Some(a) => a,
        None => panic!("no client"),
    };
    assert_eq!(a.port, 22);
    assert_eq!(a.git_scheme, GitScheme::Ssh);
    assert_eq!(a.git_port, 9418);
    assert!(a.git_roots.is_empty());
    assert!(a.tree_roots.is_empty(), "no tree requests unless tree-roots are enrolled");
    assert_eq!(a.quota_bytes, None);
    assert_eq!(a.description, None);
    assert!(!a.web, "no web access unless enrolled with web = yes");
    // `unlimited` lifts the node's default for one client.
    let c = client_section("host-a", "quota = unlimited\nmax-artifact = unlimited\n");
    let e = build_ok(&c, &[("host-a.pub", ED25519)]);
    let a = e.client("host-a").cloned().expect("enrolled");
    assert_eq!((a.quota_bytes, a.max_artifact_bytes), (Some(u64::MAX), Some(u64::MAX)));
}

#[test]
fn client_option_errors_are_all_collected() {
    let c = "[ferry client host-a]\naddress = Host_A\nport = 0\nuser = Root\nhostkey = ssh-dss AAAA\ngit-scheme = http\ngit-port = 99999\ngit-roots = /ok relative /a/../b\nexport = /tmp/\nquota = lots\nmax-artifact = 0\nmax-objects = -5\njob-timeout = 1d\ndescription = two\n  lines\nqouta = 1G\nmail = root\nweb = maybe\n";
    let errs = build_err(c, &[("host-a.pub", ED25519)]);
    let want: &[(&str, &str)] = &[
        (E_ENROL_CONF, "option 'address'"),
        (E_ENROL_CONF, "option 'port'"),
        (E_ENROL_CONF, "option 'user'"),
        (E_ENROL_KEY, "option 'hostkey'"),
        (E_ENROL_CONF, "option 'git-scheme'"),
        (E_ENROL_CONF, "option 'git-port'"),
        (E_ENROL_CONF, "\"relative\""),
        (E_ENROL_CONF, "\"/a/../b\""),
        (E_ENROL_CONF, "option 'export'"),
        (E_ENROL_CONF, "option 'quota'"),
        (E_ENROL_CONF, "option 'max-artifact'"),
        (E_ENROL_CONF, "option 'max-objects'"),
        (E_ENROL_CONF, "option 'job-timeout'"),
        (E_ENROL_CONF, "option 'description'"),
        (E_ENROL_CONF, "option 'web'"),
        (E_ENROL_CONF, "unknown option 'qouta'"),
        (E_ENROL_CONF, "unknown option 'mail'"),
    ];
    for (code, needle) in want {
        assert!(has(&errs, code, needle), "missing {code} {needle}: {errs:#?}");
    }
    assert_eq!(errs.len(), want.len(), "{errs:#?}");
    for e in &errs {
        assert!(e.message.contains("[ferry client host-a]"), "{e}");
    }
}

/// The request grammar's rules at enrollment, for every value requests are
/// compared with: what it refuses here, no request could have matched.
#[test]
fn addresses_users_ports_and_schemes_follow_the_request_grammar() {
    let kd = [("host-a.pub", ED25519)];
    let with = |opt: &str, value: &str| {
        client_section("host-a", &format!("{opt} = {value}\n")).replacen(
            &format!("\n{opt} = {}\n", if opt == "address" { "127.0.0.2" } else { "ferry" }),
            "\n",
            1,
        )
    };
    for ok in ["127.0.0.2", "0.0.0.0", "host-a", "a.example.com", "x1.y2", "0x1.example", "1a.example"] {
        let e = build_ok(&with("address", ok), &kd);
        assert_eq!(e.clients["host-a"].address.as_str(), ok);
    }
    for bad in ["Host", "127.1", "127.0.0.01", "2130706433", "0x7f.0.0.1", "a.123", "a.1b", "-a", "a.", "a_b", "::1"] {
        let errs = build_err(&with("address", bad), &kd);
        assert!(has(&errs, E_ENROL_CONF, "option 'address' (a lower-case host name"), "{bad}: {errs:?}");
    }
    for bad in ["Ferry", "9a", "-a", "a.b", &"a".repeat(33)] {
        let errs = build_err(&with("user", bad), &kd);
        assert!(has(&errs, E_ENROL_CONF, "option 'user'"), "{bad}: {errs:?}");
    }
    for (opt, bad) in [("port", "022"), ("port", "65536"), ("git-port", "0"), ("git-port", "+1")] {
        let errs = build_err(&client_section("host-a", &format!("{opt} = {bad}\n")), &kd);
        assert!(has(&errs, E_ENROL_CONF, &format!("option '{opt}' (a port number 1..65535)")), "{bad}: {errs:?}");
    }
    // https is a transport requests may name, never one the node pulls by.
    let errs = build_err(&client_section("host-a", "git-scheme = https\n"), &kd);
    assert!(has(&errs, E_ENROL_CONF, "option 'git-scheme': invalid value 'https' ('ssh' or 'git'"), "{errs:?}");
    let e = build_ok(&client_section("host-a", "git-scheme = ssh\n"), &kd);
    assert_eq!(e.clients["host-a"].git_scheme, GitScheme::Ssh);
}

/// Issue 9: a root is refused at enrollment when no request path could lie
/// below it (the request grammar allows 1024 bytes and 32 segments), and
/// accepted up to 1022 bytes and 31 segments, where `/x` still fits.
#[test]
fn roots_without_room_for_a_request_path_are_refused_naming_the_limit() {
    let kd = [("host-a.pub", ED25519)];
    // 31 segments, 1022 bytes.
    let max = format!("{}/{}", format!("/{}", "d".repeat(32)).repeat(30), "r".repeat(31));
    assert_eq!((max.len(), max.matches('/').count()), (1022, 31));
    let e = build_ok(
        &client_section("host-a", &format!("git-roots = {max} /srv/git\n"))
            .replace("export = /var/lib/ferry/export", &format!("export = {max}")),
        &kd,
    );
    let a = &e.clients["host-a"];
    assert_eq!(a.git_roots[0].as_str(), max);
    assert_eq!(a.export_dir.as_str(), max);
    let below: RemotePath = format!("{max}/x").parse().unwrap();
    assert_eq!(below.relative_to(&a.git_roots[0]), Some(vec!["x"]));

    let long = format!("/{}", vec!["p".repeat(99); 20].join("/"));
    assert_eq!(long.len(), 2000);
    for (root, limit) in [
        (long.clone(), "path longer than 1022 bytes"),
        (format!("{max}r"), "path longer than 1022 bytes"),
        ("/d".repeat(40), "path deeper than 31 segments"),
        ("/d".repeat(32), "path deeper than 31 segments"),
    ] {
        for (opt, section) in [
            ("git-roots", client_section("host-a", &format!("git-roots = /srv/git {root}\n"))),
            ("tree-roots", client_section("host-a", &format!("tree-roots = /home {root}\n"))),
            ("export", client_section("host-a", "").replace("/var/lib/ferry/export", &root)),
        ] {
            let errs = build_err(&section, &kd);
            assert_eq!(errs.len(), 1, "{errs:?}");
            let shown = errs[0].to_string();
            assert!(shown.contains(&format!("[ferry client host-a] option '{opt}'")), "{shown}");
            assert!(shown.contains("at most 31 [A-Za-z0-9_][A-Za-z0-9._-]{0,99} segments and 1022 bytes"), "{shown}");
            assert!(
                shown.contains(&format!(
                    "{limit} (leaving room below it for a path of at most 1024 bytes and 32 segments)"
                )),
                "{shown}"
            );
        }
    }
}

#[test]
fn required_options() {
    let errs = build_err("[ferry client host-a]\n", &[("host-a.pub", ED25519)]);
    for opt in ["address", "user", "hostkey", "export"] {
        assert!(has(&errs, E_ENROL_CONF, &format!("required option '{opt}'")), "{opt}: {errs:?}");
    }
    assert_eq!(errs.len(), 4);
    // [DEFAULT] does not fill Ferry sections
    let c = format!(
        "[DEFAULT]\naddress = 127.0.0.2\n{}",
        client_section("host-a", "").replace("address = 127.0.0.2\n", "")
    );
    let errs = build_err(&c, &[("host-a.pub", ED25519)]);
    assert!(has(&errs, E_ENROL_CONF, "required option 'address'"));
}

#[test]
fn ferry_section_names() {
    for bad in [
        "ferry",
        "ferry clients host-a",
        "ferry client host..a",
        "ferry client a.git",
        "Ferry client host-a",
        "ferry client ",
        "ferry node x",
    ] {
        let c = format!("[{bad}]\n");
        let errs = build_err(&c, &[]);
        assert!(has(&errs, E_ENROL_CONF, "not a valid Ferry section"), "{bad}: {errs:?}");
    }
    // ferryboat is not Ferry's
    let e = build_ok("[ferryboat]\n", &[]);
    assert_eq!(e.warnings.len(), 1);
}

/// Issue 16, point 4: two clients whose names differ only in case, and
/// names the node keeps for its own directories, are refused.
#[test]
fn client_names_differing_only_in_case_and_reserved_names_are_refused() {
    let c = format!("{ADMIN}{}\n{}", client_section("Host-A", ""), client_section("host-a", ""));
    let errs = build_err(&c, &[("Host-A.pub", ED25519), ("host-a.pub", EC256), ("admin@ws.pub", RSA2048)]);
    assert!(has(&errs, E_ENROL_CONF, "clients 'Host-A' and 'host-a' differ only in letter case"), "{errs:?}");
    for reserved in ["node", "Node", "TMP"] {
        let c = format!("{ADMIN}{}", client_section(reserved, ""));
        let key = format!("{reserved}.pub");
        let errs = build_err(&c, &[(key.as_str(), ED25519), ("admin@ws.pub", RSA2048)]);
        assert!(has(&errs, E_ENROL_CONF, &format!("the client name '{reserved}' is reserved")), "{errs:?}");
    }
    // Names that merely contain a reserved word are fine.
    let c = format!("{ADMIN}{}", client_section("node-1", ""));
    build_ok(&c, &[("node-1.pub", ED25519), ("admin@ws.pub", RSA2048)]);
}

#[test]
fn key_files() {
    let c = format!("{ADMIN}{}", client_section("host-a", ""));
    // missing key file for a client
    let errs = build_err(&c, &[("admin@ws.pub", RSA2048)]);
    assert!(has(&errs, E_ENROL_KEY, "no key file keydir/host-a.pub"), "{errs:?}");
    // bad key file, named; no second "missing" error for it
    let evil = format!("command=\"/bin/sh\" {ED25519}\n");
    let errs = build_err(&c, &[("host-a.pub", &evil)]);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(has(&errs, E_ENROL_KEY, "keydir/host-a.pub: line 1: key line starts with options"));
    // duplicate key across users names both files
    let errs = build_err(&c, &[("host-a.pub", ED25519), ("admin@ws.pub", &format!("{RSA2048}\n{ED25519}\n"))]);
    assert!(has(&errs, E_ENROL_DUP_KEY, "keydir/admin@ws.pub and keydir/host-a.pub"), "{errs:?}");
    // skipped names, unsafe names warned
    let e = build_ok(
        &c,
        &[
            ("host-a.pub", ED25519),
            (".hidden.pub", "junk"),
            ("README", "junk"),
            ("notes.txt", "junk"),
            ("1bad.pub", "junk"),
            ("a\nb.pub", "junk"),
        ],
    );
    assert_eq!(
        e.warnings,
        ["Unsafe SSH username in keyfile: '1bad.pub'", "Unsafe SSH username in keyfile: 'a\\nb.pub'"]
    );
    assert_eq!(e.users.keys().collect::<Vec<_>>(), ["host-a"]);
}

#[test]
fn booleans_and_gitosis_paths() {
    let c = "[gitosis]\ngitweb = maybe\ndaemon = yes\n[repo foo]\ndaemon = 2\ngitweb = on\n[repo bar]\n";
    let errs = build_err(c, &[]);
    assert!(has(&errs, E_ENROL_CONF, "[gitosis] option 'gitweb': invalid boolean 'maybe'"), "{errs:?}");
    assert!(has(&errs, E_ENROL_CONF, "[repo foo] option 'daemon': invalid boolean '2'"), "{errs:?}");
    // [repo bar] inherits [DEFAULT] only, not [gitosis]
    assert_eq!(errs.len(), 2);
    let errs = build_err("[DEFAULT]\ngitweb = perhaps\n[repo x]\n", &[]);
    assert!(has(&errs, E_ENROL_CONF, "[repo x] option 'gitweb'"));
    let e = build_ok(
        "[gitosis]\nrepositories = /etc\ngenerate-files-in = gitosis\nssh-authorized-keys-path = /root/.ssh/authorized_keys\nloglevel = LOUD\n",
        &[],
    );
    assert_eq!(e.warnings.len(), 3, "{:?}", e.warnings);
    assert!(e.warnings[0].contains("'repositories' = '/etc' is not honoured"));
    assert!(e.warnings[1].contains("ssh-authorized-keys-path"));
    assert_eq!(e.warnings[2], "Ignored invalid loglevel configuration: 'LOUD'");
    let e = build_ok("[gitosis]\nrepositories = repositories\nloglevel = DEBUG\n", &[]);
    assert!(e.warnings.is_empty(), "{:?}", e.warnings);
}

#[test]
fn group_checks() {
    let c = "[group g]\nmembers = jdoe\nwritable = ok ok.git ../x\nwriteable = y\nrepositories = /tmp\nmap writable a = ../../etc\nmap readonly b = x.git\nmap writable c = fine/repo\nmap bogus d = e\nmembr = typo\n";
    let errs = build_err(c, &[]);
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(has(&errs, E_ENROL_CONF, "'map writable a': map target '../../etc'"));
    assert!(has(&errs, E_ENROL_CONF, "'map readonly b': map target 'x.git'"));
    let c = "[group g]\nmembers = jdoe\nwritable = ok ok.git ../x\nwriteable = y\nrepositories = /tmp\nmap bogus d = e\nmembr = typo\n";
    let e = build_ok(c, &[]);
    let w = e.warnings.join("\n");
    for needle in [
        "'ok.git' can never match",
        "'../x' can never match",
        "\"writeable\" is a typo",
        "'repositories' = '/tmp' is not honoured",
        "'map bogus d' is not a valid map",
        "unknown option 'membr'",
    ] {
        assert!(w.contains(needle), "{needle}: {w}");
    }
}

/// AC-01 / I1: the queue name is the identity, so nobody else may push it.
#[test]
fn queue_protection() {
    let base = format!("{}{}", client_section("host-a", ""), client_section("host-b", ""));
    let kd = [("host-a.pub", ED25519), ("host-b.pub", EC256), ("admin@ws.pub", RSA2048)];
    // implicit grants alone are fine
    build_ok(&format!("{ADMIN}{base}"), &kd);
    // an explicit grant of the own queue is fine too
    build_ok(&format!("{ADMIN}{base}[group q]\nmembers = host-a\nwritable = queue/host-a\n"), &kd);
    // another client
    let errs = build_err(&format!("{ADMIN}{base}[group q]\nmembers = host-b\nwritable = queue/host-a\n"), &kd);
    assert!(has(&errs, E_ENROL_CONF, "user 'host-b' may push to 'queue/host-a' via [group q]"), "{errs:?}");
    // via @all and nesting and writeable
    let errs = build_err(&format!("{ADMIN}{base}[group q]\nmembers = @all\nwriteable = queue/host-b\n"), &kd);
    assert!(has(&errs, E_ENROL_CONF, "user 'admin@ws' may push to 'queue/host-b'"), "{errs:?}");
    assert!(has(&errs, E_ENROL_CONF, "user 'host-a' may push to 'queue/host-b'"), "{errs:?}");
    // via a map target
    let errs = build_err(&format!("{ADMIN}{base}[group q]\nmembers = host-b\nmap writable mine = queue/host-a\n"), &kd);
    assert!(has(&errs, E_ENROL_CONF, "user 'host-b' may push to 'queue/host-a'"), "{errs:?}");
    // a client with admin rights
    let errs = build_err(&format!("{ADMIN}{base}[group gitosis-admin]\nmembers = admin@ws host-a\n"), &kd);
    assert!(has(&errs, E_ENROL_CONF, "client 'host-a' may push to gitosis-admin"), "{errs:?}");
    // read access of another client's queue is a warning; grants of
    // unenrolled queues too
    let e = build_ok(
        &format!("{ADMIN}{base}[group r]\nmembers = @all\nreadonly = queue/host-a\nwritable = queue/ghost\n"),
        &kd,
    );
    let w = e.warnings.join("\n");
    assert!(w.contains("client 'host-b' may read 'queue/host-a'"), "{w}");
    assert!(w.contains("there is no [ferry client ghost]"), "{w}");
}

/// The whole pure pipeline an admin push goes through: validate, render
/// authorized_keys, then decide the pushes each key may make.
#[test]
fn pipeline_enroll_render_serve() {
    use crate::authkeys::{MARKER, ferry_line_user, render};
    use crate::serve::{Denied, decide};
    let text = format!("{ADMIN}{}", client_section("host-a", ""));
    let c = conf(&text);
    let e = match Enrollment::build(&c, &keydir(&[("host-a.pub", ED25519), ("admin@ws.pub", RSA2048)])) {
        Ok(e) => e,
        Err(errs) => panic!("{errs:?}"),
    };
    let old_gitosis = "command=\"gitosis-serve admin@ws\",no-port-forwarding,no-X11-forwarding,no-agent-forwarding,no-pty ssh-rsa OLD\n";
    let keys = match render(&format!("# mine\n{MARKER}\n{old_gitosis}"), &e.key_entries(), &|u| {
        format!("/usr/lib/ferry/ferry-node serve {u}")
    }) {
        Ok(k) => k,
        Err(err) => panic!("{err}"),
    };
    let users: Vec<&str> = keys.lines().filter_map(ferry_line_user).collect();
    assert_eq!(users, ["admin@ws", "host-a"]);
    assert!(keys.starts_with("# mine\n"));
    assert!(!keys.contains("gitosis-serve"));
    for user in users {
        let own_queue = decide(&c, user, "git-receive-pack 'queue/host-a.git'");
        let admin = decide(&c, user, "git-receive-pack 'gitosis-admin.git'");
        if user == "host-a" {
            assert!(own_queue.is_ok());
            assert_eq!(admin, Err(Denied::WriteDenied));
        } else {
            assert_eq!(own_queue, Err(Denied::WriteDenied));
            assert!(admin.is_ok());
        }
    }
}

#[test]
fn error_display_is_safe() {
    let errs = build_err("[ferry client host-a]\naddress = \u{202e}evil\n", &[]);
    for e in errs {
        let s = e.to_string();
        assert!(s.starts_with("E_ENROL_"));
        assert!(s.bytes().all(|b| (0x20..0x7f).contains(&b)), "{s}");
    }
}

#[test]
fn never_panics_on_mutated_configs() {
    let mut rng = Rng::new(0xe4_70_11);
    let seed = format!(
        "{ADMIN}{}[group q]\nmembers = @all host-a\nwritable = queue/host-a\nmap writable x = queue/host-b\n[repo x]\ngitweb = yes\n",
        client_section("host-a", "quota = 1G\njob-timeout = 5m\ngit-roots = /srv/git\n")
    );
    let kd = keydir(&[("host-a.pub", ED25519), ("admin@ws.pub", RSA2048)]);
    for _ in 0..3_000 {
        let bytes = rng.mutate(seed.as_bytes());
        if let Ok(c) = Config::parse(&bytes) {
            match Enrollment::build(&c, &kd) {
                Ok(e) => {
                    for w in &e.warnings {
                        assert!(w.bytes().all(|b| (0x20..0x7f).contains(&b)), "{w}");
                    }
                }
                Err(errs) => {
                    for e in errs {
                        let s = e.to_string();
                        assert!(s.bytes().all(|b| (0x20..0x7f).contains(&b)), "{s}");
                    }
                }
            }
        }
    }
}

#[test]
fn expected_sources_and_cadences_are_enrolled_or_refused_with_a_reason() {
    let e = build_ok(&client_section("web1", "sources = www:1d shop:6h code:push\n"), &[("web1.pub", ED25519)]);
    let exp = &e.clients["web1"].expected;
    assert_eq!(
        exp.iter().map(|x| (x.source.as_str(), x.cadence)).collect::<Vec<_>>(),
        [("www", Cadence::Every(86_400)), ("shop", Cadence::Every(21_600)), ("code", Cadence::Push)]
    );
    let e = build_ok(&client_section("web1", ""), &[("web1.pub", ED25519)]);
    assert!(e.clients["web1"].expected.is_empty());
    let errs = build_err(&client_section("web1", "sources = www:daily shop\n"), &[("web1.pub", ED25519)]);
    assert!(has(&errs, "E_ENROL_CONF", "option 'sources': 'www:daily': cadence must be"), "{errs:?}");
    assert!(has(&errs, "E_ENROL_CONF", "option 'sources': 'shop' is not NAME:CADENCE"), "{errs:?}");
}

#[test]
fn retention_rules_per_client_and_source() {
    let c = format!(
        "{ADMIN}{}[ferry source host-a db]\nkeep-last = 2\nkeep-within = 1y6m\n",
        client_section("host-a", "keep-daily = 7\nkeep-weekly = 4\n")
    );
    let e = build_ok(&c, &[("host-a.pub", ED25519), ("admin@ws.pub", RSA2048)]);
    let client = e.keep_rules("host-a", "www").expect("client rules");
    assert_eq!((client.daily, client.weekly, client.last, client.monthly), (7, 4, 0, 0));
    let src = e.keep_rules("host-a", "db").expect("source rules");
    assert_eq!((src.last, src.daily, src.within.to_string()), (2, 0, "1y6m".to_string()));
    assert_eq!(e.keep_rules("host-b", "db"), None);
}

#[test]
fn retention_rules_that_keep_nothing_or_are_bad_are_refused() {
    let kd = [("host-a.pub", ED25519), ("admin@ws.pub", RSA2048)];
    let c = format!("{ADMIN}{}", client_section("host-a", "keep-daily = 0\nkeep-within = 0d\n"));
    assert!(has(&build_err(&c, &kd), E_ENROL_CONF, "keep nothing"));
    let c = format!("{ADMIN}{}", client_section("host-a", "keep-daily = -1\nkeep-within = 3x\n"));
    let errs = build_err(&c, &kd);
    assert!(has(&errs, E_ENROL_CONF, "'keep-daily': invalid value '-1'"), "{errs:?}");
    assert!(has(&errs, E_ENROL_CONF, "'keep-within': invalid value '3x'"), "{errs:?}");
    let c = format!("{ADMIN}{}[ferry source host-b db]\nkeep-last = 1\n", client_section("host-a", ""));
    assert!(has(&build_err(&c, &kd), E_ENROL_CONF, "'host-b' is not a client enrolled here"));
    let c = format!("{ADMIN}{}[ferry source host-a db]\nkeep-last = 1\nquota = 1G\n", client_section("host-a", ""));
    assert!(has(&build_err(&c, &kd), E_ENROL_CONF, "unknown option 'quota'"));
    let c = format!("{ADMIN}{}[ferry source host-a ../x]\nkeep-last = 1\n", client_section("host-a", ""));
    assert!(has(&build_err(&c, &kd), E_ENROL_CONF, "source '../x'"));
}

/// Issue 10: `tree-roots` lists the directories a tree request's root may
/// be or lie under, parsed with the request grammar like `git-roots`.
#[test]
fn tree_roots_are_typed_roots() {
    let kd = [("host-a.pub", ED25519)];
    let e = build_ok(&client_section("host-a", "tree-roots = /home\n  /srv/data /home\n"), &kd);
    let a = &e.clients["host-a"];
    assert_eq!(a.tree_roots.iter().map(RemotePath::as_str).collect::<Vec<_>>(), ["/home", "/srv/data"]);
    assert!(a.git_roots.is_empty());
    let exact: RemotePath = "/home".parse().unwrap();
    let below: RemotePath = "/home/alice".parse().unwrap();
    let beside: RemotePath = "/homes".parse().unwrap();
    assert!(exact.is_within(&a.tree_roots[0]) && below.is_within(&a.tree_roots[0]));
    assert!(!beside.is_within(&a.tree_roots[0]));

    for (bad, needle) in [
        ("/", "\"/\""),
        ("relative", "\"relative\""),
        ("/a/../b", "\"/a/../b\""),
        ("/home/.ssh", "\"/home/.ssh\""),
        ("/-x", "\"/-x\""),
        ("/home/", "\"/home/\""),
    ] {
        let errs = build_err(&client_section("host-a", &format!("tree-roots = /srv {bad}\n")), &kd);
        assert_eq!(errs.len(), 1, "{bad}: {errs:?}");
        assert_eq!(errs[0].code, E_ENROL_CONF);
        let shown = errs[0].to_string();
        assert!(shown.contains("[ferry client host-a] option 'tree-roots'") && shown.contains(needle), "{shown}");
    }
}
