//! Tests of the `tree` verb: the contract's example, the endpoint rule,
//! hostile spellings of every field, the precedence of its checks, a
//! round-trip property and a mutation run seeded with tree lines.

use super::tests::{HEX, Rng, gen_host, gen_name, gen_path, gen_port, gen_user, mutate, reason_of, rejects};
use super::*;

const STAMP: &str = "20261122T010203Z";
const MANIFEST: &str = "sftp://ferry@172.16.0.60/var/lib/ferry/export/home/20261122T010203Z.ftree";
const ROOT: &str = "sftp://ferry@172.16.0.60/home";

fn tree_line(stamp: &str, manifest: &str, root: &str, rest: &str) -> String {
    format!("tree {stamp} {manifest} {root} {rest}\n")
}

fn good_tree() -> String {
    tree_line(STAMP, MANIFEST, ROOT, &format!("sha256={HEX} size=4242 source=home"))
}

fn with_root(root: &str) -> String {
    tree_line(STAMP, MANIFEST, root, &format!("sha256={HEX} size=1 source=home"))
}

#[test]
fn contract_example_parses_and_round_trips() {
    let line = good_tree();
    let r = parse(line.as_bytes()).unwrap();
    assert_eq!(r.module(), "tree");
    let Request::Tree(t) = &r else { panic!("{r:?}") };
    assert_eq!(t.stamp.as_str(), STAMP);
    assert_eq!(t.manifest.to_url_string(), MANIFEST);
    assert_eq!(t.manifest.path.file_name(), "20261122T010203Z.ftree");
    assert_eq!(t.root.path.as_str(), "/home");
    assert_eq!(t.root.user.as_str(), "ferry");
    assert_eq!(t.sha256.as_str(), HEX);
    assert_eq!(t.size, 4242);
    assert_eq!(t.source.as_str(), "home");
    assert_eq!(r.to_line(), line);
    assert_eq!(format!("{r}\n"), line);
    let crlf = line.replace('\n', "\r\n");
    assert_eq!(parse(crlf.as_bytes()), Ok(r.clone()));

    // The root may be the manifest's own directory or any other path, and
    // a port written in both URLs is the same endpoint.
    for (m, root) in [
        ("sftp://b@client.example:2222/x/a.ftree", "sftp://b@client.example:2222/x"),
        ("sftp://b@client.example/x/a.ftree", "sftp://b@client.example/"),
        ("sftp://_b@h/e/a.ftree", "sftp://_b@h/srv/data/www"),
    ] {
        let line = tree_line(STAMP, m, root, &format!("sha256={HEX} size=0 source=0"));
        match parse(line.as_bytes()) {
            Ok(r) => assert_eq!(r.to_line(), line),
            Err(e) => assert_eq!(e.reason, Reason::ReqPath, "{line}: {e}"),
        }
    }
}

#[test]
fn root_must_be_the_manifests_endpoint() {
    for (root, what) in [
        ("sftp://other@172.16.0.60/home", "user"),
        ("sftp://ferry@172.16.0.61/home", "host"),
        ("sftp://ferry@client.example/home", "host"),
        ("sftp://ferry@172.16.0.60:22/home", "port"),
    ] {
        let line = with_root(root);
        let e = parse(line.as_bytes()).unwrap_err();
        assert_eq!(e.reason, Reason::ReqTreeRoot, "{line}");
        assert_eq!(e.offset, line.find(root), "{line}");
        assert!(e.detail.contains(what), "{what}: {e}");
    }
    // A port in the manifest URL but not in the root URL is refused too:
    // one endpoint, one spelling.
    let m = "sftp://ferry@172.16.0.60:2222/var/lib/ferry/export/home/a.ftree";
    rejects(tree_line(STAMP, m, ROOT, &format!("sha256={HEX} size=1 source=home")), Reason::ReqTreeRoot);
    let root = "sftp://ferry@172.16.0.60:2222/home";
    assert!(parse(tree_line(STAMP, m, root, &format!("sha256={HEX} size=1 source=home")).as_bytes()).is_ok());
}

#[test]
fn hostile_root_urls() {
    for (root, want) in [
        ("sftp://ferry@172.16.0.60/home/../etc", Reason::ReqPath),
        ("sftp://ferry@172.16.0.60/home/./x", Reason::ReqPath),
        ("sftp://ferry@172.16.0.60/home/", Reason::ReqPath),
        ("sftp://ferry@172.16.0.60//home", Reason::ReqPath),
        ("sftp://ferry@172.16.0.60", Reason::ReqPath),
        ("sftp://ferry@172.16.0.60/home/.ssh", Reason::ReqName),
        ("sftp://ferry@172.16.0.60/-oProxyCommand=id", Reason::UrlDash),
        ("sftp://-oProxyCommand=id@172.16.0.60/home", Reason::UrlDash),
        ("-sftp://ferry@172.16.0.60/home", Reason::UrlDash),
        ("file:///home", Reason::UrlScheme),
        ("ssh://ferry@172.16.0.60/home", Reason::UrlScheme),
        ("/home", Reason::UrlScheme),
        ("172.16.0.60:/home", Reason::UrlScheme),
        ("sftp://172.16.0.60/home", Reason::UrlUser),
        ("sftp://ferry:pw@172.16.0.60/home", Reason::UrlUserinfo),
        ("sftp://ferry@172.16.0.60/home%2f..", Reason::UrlCharset),
        ("sftp://ferry@172.16.0.60/home?x", Reason::UrlCharset),
        ("sftp://ferry@[::1]/home", Reason::UrlCharset),
        ("sftp://ferry@172.16.0.60:0/home", Reason::UrlPort),
        ("sftp://ferry@127.1/home", Reason::UrlHost),
    ] {
        let line = with_root(root);
        let got = reason_of(line.as_bytes());
        // Some spellings trip an earlier rule of the URL grammar; what
        // matters is that each is refused with the URL grammar's reason,
        // never accepted and never ReqTreeRoot (that comes after).
        assert_ne!(got, Reason::ReqTreeRoot, "{root}");
        if want != Reason::UrlCharset {
            assert_eq!(got, want, "{root}: {}", parse(line.as_bytes()).unwrap_err());
        }
    }
    let root = format!("sftp://ferry@172.16.0.60{}", "/d".repeat(33));
    rejects(with_root(&root), Reason::ReqPath);
    rejects(with_root("sftp://ferry@172.16.0.60/h\u{e9}me"), Reason::ReqCharset);
    rejects(with_root("sftp://ferry@172.16.0.60/h\u{202e}me"), Reason::ReqCharset);
    rejects(with_root("sftp://ferry@172.16.0.60/h\tme"), Reason::ReqCtrlChar);
    rejects(with_root("sftp://ferry@172.16.0.60/h\x00me"), Reason::ReqCtrlChar);
    rejects(with_root("sftp://ferry@172.16.0.60/h\rme"), Reason::ReqCtrlChar);
}

#[test]
fn fields_and_keys() {
    let sha = format!("sha256={HEX}");
    // The sftp shape is not a tree: `sha256=…` takes the root's place, so
    // the keys that follow are one short and out of order.
    rejects(format!("tree {STAMP} {MANIFEST} {sha} size=1 source=home\n"), Reason::ReqField);
    rejects(format!("tree {STAMP} {MANIFEST}\n"), Reason::ReqSyntax);
    rejects("tree\n", Reason::ReqSyntax);
    // A fourth positional field.
    rejects(format!("tree {STAMP} {MANIFEST} {ROOT} {ROOT} {sha} size=1 source=home\n"), Reason::ReqSyntax);
    for rest in [
        format!("{sha} size=1"),
        format!("{sha} source=home size=1"),
        format!("size=1 {sha} source=home"),
        format!("{sha} size=1 source=home root=/etc"),
        format!("{sha} size=1 source=home source=home"),
        format!("{sha} size=1 client=other source=home"),
    ] {
        rejects(tree_line(STAMP, MANIFEST, ROOT, &rest), Reason::ReqField);
    }
    for verb in ["TREE", "Tree", "trees", "ftree"] {
        rejects(good_tree().replacen("tree", verb, 1), Reason::ReqModule);
    }
    rejects(good_tree().replace("size=4242", "size=-1"), Reason::ReqSize);
    rejects(good_tree().replace("size=4242", "size=9223372036854775808"), Reason::ReqSize);
    rejects(good_tree().replace(HEX, &HEX.to_uppercase()), Reason::ReqDigest);
    rejects(
        good_tree().replace(STAMP, "20261131T000000Z").replacen("20261131T000000Z.ftree", "x.ftree", 1),
        Reason::ReqTimestamp,
    );
    for reserved in ["trees", "store", "STORE", "git", "tmp", "incomplete", "lost+found"] {
        let line = good_tree().replace("source=home", &format!("source={reserved}"));
        let got = reason_of(line.as_bytes());
        assert!(matches!(got, Reason::ReqNameReserved | Reason::ReqName), "{reserved}: {got:?}");
    }
    rejects(good_tree().replace("source=home", "source=trees"), Reason::ReqNameReserved);
    rejects(good_tree().replace("source=home", "source=../home"), Reason::ReqName);
    rejects(good_tree().replace(" source", "  source"), Reason::ReqSyntax);
    rejects(format!("{}\ndummy x\n", good_tree().trim_end()), Reason::ReqTooMany);
}

#[test]
fn precedence_within_a_tree_line() {
    let bad_root = "sftp://other@172.16.0.60/home";
    // Stamp before either URL.
    let line = tree_line("0", "ftp://x", bad_root, "sha256=y size=x source=.");
    assert_eq!(reason_of(line.as_bytes()), Reason::ReqTimestamp);
    // Manifest URL before the root URL.
    let line = tree_line(STAMP, "ftp://x", "ftp://y", "sha256=y size=x source=.");
    let e = parse(line.as_bytes()).unwrap_err();
    assert_eq!((e.reason, e.offset), (Reason::UrlScheme, line.find("ftp://x")));
    // Root URL's own grammar before the endpoint check.
    let line = tree_line(STAMP, MANIFEST, "sftp://other@172.16.0.60/..", "sha256=y size=x source=.");
    assert_eq!(reason_of(line.as_bytes()), Reason::ReqPath);
    // Endpoint check before the keys' values.
    let line = tree_line(STAMP, MANIFEST, bad_root, "sha256=y size=x source=.");
    assert_eq!(reason_of(line.as_bytes()), Reason::ReqTreeRoot);
    // Then digest, size, source.
    let line = tree_line(STAMP, MANIFEST, ROOT, "sha256=y size=x source=.");
    assert_eq!(reason_of(line.as_bytes()), Reason::ReqDigest);
    let line = tree_line(STAMP, MANIFEST, ROOT, &format!("sha256={HEX} size=x source=."));
    assert_eq!(reason_of(line.as_bytes()), Reason::ReqSize);
    let line = tree_line(STAMP, MANIFEST, ROOT, &format!("sha256={HEX} size=1 source=."));
    let e = parse(line.as_bytes()).unwrap_err();
    assert_eq!((e.reason, e.offset), (Reason::ReqName, line.find("source=").map(|i| i + 7)));
    // Structure (key order) before any value.
    let line = tree_line("0", "ftp://x", bad_root, "size=x sha256=y source=.");
    assert_eq!(reason_of(line.as_bytes()), Reason::ReqField);
}

#[test]
fn the_longest_tree_line_fits_the_default_limit() {
    let user = "u".repeat(32);
    let host = ["a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(61)].join(".");
    let path = format!("/{}", "p".repeat(100)).repeat(10);
    let path = format!("{path}{}", "/q".repeat(7));
    assert_eq!(path.len(), 1024);
    let url = format!("sftp://{user}@{host}:65535{path}");
    let line =
        tree_line(STAMP, &url, &url, &format!("sha256={HEX} size=9223372036854775807 source={}", "s".repeat(100)));
    assert!(line.len() <= Limits::default().max_line_bytes, "{}", line.len());
    assert_eq!(parse(line.as_bytes()).map(|r| r.to_line()), Ok(line));
}

fn gen_tree(rng: &mut Rng) -> Request {
    let (user, host, port) = (gen_user(rng), gen_host(rng), gen_port(rng));
    let mut bytes = [0u8; 32];
    for b in &mut bytes {
        *b = rng.next() as u8;
    }
    let url = |path| SftpUrl::new(user.clone(), host.clone(), port, path).unwrap_or_else(|e| panic!("{e}"));
    Request::Tree(TreeRequest {
        stamp: Stamp::from_unix(rng.below(MAX_UNIX as u64 + 1) as i64),
        manifest: url(gen_path(rng)),
        root: url(gen_path(rng)),
        sha256: Digest::from_bytes(bytes),
        size: rng.below(i64::MAX as u64) >> rng.below(63),
        source: gen_name(rng),
    })
}

#[test]
fn round_trip_property() {
    let mut rng = Rng(0x7F4A_7C15_9E37_79B9);
    for _ in 0..10_000 {
        let r = gen_tree(&mut rng);
        let line = r.to_line();
        assert!(line.len() <= 4096, "{line}");
        assert_eq!(parse(line.as_bytes()), Ok(r.clone()), "{line}");
    }
}

#[test]
fn mutations_never_panic_and_accepted_tree_lines_are_canonical() {
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let mut seeds = vec![good_tree().into_bytes()];
    for _ in 0..10 {
        seeds.push(gen_tree(&mut rng).to_line().into_bytes());
    }
    let (mut accepted, mut refused_root) = (0u32, 0u32);
    for i in 0..100_000 {
        let mut input = seeds[i % seeds.len()].clone();
        mutate(&mut rng, &mut input);
        match parse(&input) {
            Ok(r) => {
                accepted += 1;
                let line = r.to_line();
                let crlf = format!("{}\r\n", line.trim_end_matches('\n'));
                assert!(input == line.as_bytes() || input == crlf.as_bytes(), "{:?}", String::from_utf8_lossy(&input));
                if let Request::Tree(t) = &r {
                    assert!(TreeRequest::same_endpoint(&t.manifest, &t.root), "{line}");
                }
            }
            Err(e) => {
                refused_root += u32::from(e.reason == Reason::ReqTreeRoot);
                assert!(e.detail.bytes().all(|b| (0x20..0x7f).contains(&b)), "{:?}", e.detail);
                assert!(e.offset.is_some_and(|o| o <= input.len()), "{e:?}");
            }
        }
    }
    assert!(accepted > 500 && refused_root > 100, "{accepted} {refused_root}");
}
