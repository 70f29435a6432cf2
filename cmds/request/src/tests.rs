//! Grammar tests: DESIGN.md examples, every SECURITY.md RP/GU example that
//! reaches the parser, the precedence order, a round-trip property over
//! generated requests, and a mutation fuzzer that must never panic.

use super::*;

pub(crate) const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const SFTP_URL: &str = "sftp://ferry@172.16.0.60/var/lib/ferry/export/trac/20261122T010203Z.tar.zst";

fn sftp_line(stamp: &str, url: &str, rest: &str) -> String {
    format!("sftp {stamp} {url} {rest}\n")
}

fn good_sftp() -> String {
    sftp_line("20261122T010203Z", SFTP_URL, &format!("sha256={HEX} size=1048576 source=trac"))
}

#[track_caller]
pub(crate) fn reason_of(input: &[u8]) -> Reason {
    match parse(input) {
        Ok(r) => panic!("accepted {:?} as {r:?}", String::from_utf8_lossy(input)),
        Err(e) => e.reason,
    }
}

#[track_caller]
pub(crate) fn rejects(input: impl AsRef<[u8]>, want: Reason) {
    let input = input.as_ref();
    let got = reason_of(input);
    assert_eq!(got, want, "{:?}: {}", String::from_utf8_lossy(input), parse(input).unwrap_err());
}

// ---------------------------------------------------------------- valid

#[test]
fn design_examples_parse() {
    let r = parse(b"git git://172.16.0.60/project.git\n").unwrap();
    let Request::Git(g) = &r else { panic!("{r:?}") };
    assert_eq!(g.url.scheme, GitScheme::Git);
    assert_eq!(g.url.host.as_str(), "172.16.0.60");
    assert_eq!(g.url.user, None);
    assert_eq!(g.url.port, None);
    assert_eq!(g.url.path.as_str(), "/project.git");
    assert_eq!(r.module(), "git");
    assert_eq!(r.to_line(), "git git://172.16.0.60/project.git\n");

    let line = good_sftp();
    let r = parse(line.as_bytes()).unwrap();
    let Request::Sftp(s) = &r else { panic!("{r:?}") };
    assert_eq!(s.stamp.as_str(), "20261122T010203Z");
    assert_eq!(s.stamp.to_unix(), 1_795_309_323);
    assert_eq!(s.url.user.as_str(), "ferry");
    assert_eq!(s.url.host.as_str(), "172.16.0.60");
    assert_eq!(s.url.path.file_name(), "20261122T010203Z.tar.zst");
    assert_eq!(s.sha256.as_str(), HEX);
    assert_eq!(s.size, 1_048_576);
    assert_eq!(s.source.as_str(), "trac");
    assert_eq!(r.module(), "sftp");
    assert_eq!(r.to_line(), line);

    let r = parse(b"dummy hello\n").unwrap();
    assert_eq!(r.module(), "dummy");
    assert_eq!(r, Request::Dummy(DummyRequest { word: Name::parse("hello").unwrap() }));
    assert_eq!(r.to_line(), "dummy hello\n");
    assert_eq!(r.to_string(), "dummy hello");
}

#[test]
fn other_valid_lines() {
    for line in [
        "git ssh://git@client.example:2222/srv/git/repo.git\n",
        "git https://client.example/a/b.git\n",
        "git git://xn--clent-5ua.example/repo.git\n",
        "git git://client.example:22/r\n",
        "dummy a\n",
        &format!("dummy {}\n", "x".repeat(100)),
        &sftp_line("19700101T000000Z", "sftp://_b@h/x", &format!("sha256={} size=0 source=0", "0".repeat(64))),
        &sftp_line(
            "99991231T235959Z",
            "sftp://adminbackup@client.example:65535/var/backup/export/app-20260101.tar.zst",
            &format!("sha256={HEX} size=9223372036854775807 source=app"),
        ),
    ] {
        let r = parse(line.as_bytes()).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        assert_eq!(r.to_line(), line);
    }
}

#[test]
fn crlf_is_accepted_and_stripped() {
    let r = parse(b"git git://client.example/repo.git\r\n").unwrap();
    assert_eq!(r.to_line(), "git git://client.example/repo.git\n");
    let Request::Git(g) = r else { panic!() };
    assert_eq!(g.url.path.file_name(), "repo.git");
    let crlf = good_sftp().replace('\n', "\r\n");
    assert_eq!(parse(crlf.as_bytes()).unwrap().to_line(), good_sftp());
}

// ---------------------------------------------------------------- RP

#[test]
fn rp01_nul_byte() {
    let input = b"git git://client.example/repo\x00/../../etc.git\n";
    let e = parse(input).unwrap_err();
    assert_eq!(e.reason, Reason::ReqCtrlChar);
    assert_eq!(e.offset, Some(29));
    assert!(e.detail.contains("\\x00"), "{}", e.detail);
    rejects(b"\x00", Reason::ReqCtrlChar);
    rejects(b"dummy a\x00\n", Reason::ReqCtrlChar);
}

#[test]
fn rp02_cr_policy() {
    assert!(parse(b"git git://client.example/repo.git\r\n").is_ok());
    let e = parse(b"git git://client.example/repo.git\r").unwrap_err();
    assert_eq!((e.reason, e.offset), (Reason::ReqCtrlChar, Some(33)));
    let e = parse(b"git git://client.example/re\rpo.git\n").unwrap_err();
    assert_eq!((e.reason, e.offset), (Reason::ReqCtrlChar, Some(27)));
    rejects(b"git git://client.example/repo.git\r\r\n", Reason::ReqCtrlChar);
    rejects(b"git git://client.example/repo.git\n\r", Reason::ReqCtrlChar);
    rejects(b"\r\n", Reason::ReqSyntax);
    rejects(b"\r", Reason::ReqCtrlChar);
}

#[test]
fn rp03_overlong() {
    let big = vec![b'a'; 10 << 20];
    let e = parse(&big).unwrap_err();
    assert_eq!((e.reason, e.offset), (Reason::ReqTooLong, Some(65_536)));
    assert!(e.detail.len() < 300);
    // Under the file limit but over the line limit, with or without LF.
    let mut line = vec![b'a'; 5000];
    rejects(&line, Reason::ReqTooLong);
    line.push(b'\n');
    rejects(&line, Reason::ReqTooLong);
    // Exactly at the limits.
    let path = format!("/{}", vec!["a".repeat(99); 10].join("/"));
    let ok = format!("git git://h{path}\n");
    assert!(parse(ok.as_bytes()).is_ok());
    let limits = Limits { max_file_bytes: 65_536, max_line_bytes: ok.len() };
    assert!(parse_with(ok.as_bytes(), &limits).is_ok());
    let limits = Limits { max_line_bytes: ok.len() - 1, ..limits };
    assert_eq!(parse_with(ok.as_bytes(), &limits).unwrap_err().reason, Reason::ReqTooLong);
    let limits = Limits { max_file_bytes: ok.len() - 1, max_line_bytes: 4096 };
    assert_eq!(parse_with(ok.as_bytes(), &limits).unwrap_err().reason, Reason::ReqTooLong);
    // CRLF counts towards the line.
    let crlf = ok.replace('\n', "\r\n");
    let limits = Limits { max_file_bytes: 65_536, max_line_bytes: ok.len() };
    assert_eq!(parse_with(crlf.as_bytes(), &limits).unwrap_err().reason, Reason::ReqTooLong);
}

#[test]
fn rp04_too_many_lines() {
    let one = "git git://client.example/repo.git\n";
    rejects(one.repeat(2), Reason::ReqTooMany);
    rejects(one.repeat(1000), Reason::ReqTooMany);
    // A million lines is over the file limit first, at bounded cost.
    rejects(one.repeat(1_000_000), Reason::ReqTooLong);
    rejects(format!("{one}\n"), Reason::ReqTooMany);
    rejects(format!("{one}x"), Reason::ReqTooMany);
    let e = parse(format!("{one}{one}").as_bytes()).unwrap_err();
    assert_eq!(e.offset, Some(one.len()));
}

#[test]
fn rp05_grammar_deviations() {
    let url = "git://client.example/repo.git";
    rejects(format!("GIT {url}\n"), Reason::ReqModule);
    rejects(format!("Git {url}\n"), Reason::ReqModule);
    rejects(format!("svn {url}\n"), Reason::ReqModule);
    rejects(format!("git  {url}\n"), Reason::ReqSyntax);
    rejects(format!("git\t{url}\n"), Reason::ReqCtrlChar);
    rejects(format!(" git {url}\n"), Reason::ReqSyntax);
    rejects(format!("git {url} \n"), Reason::ReqSyntax);
    rejects("git\n", Reason::ReqSyntax);
    rejects("git \n", Reason::ReqSyntax);
    rejects(format!("git {url} extra\n"), Reason::ReqSyntax);
    rejects(format!("git {url} {url}\n"), Reason::ReqSyntax);
    rejects(format!("sftp 20261122T010203Z {SFTP_URL}\n"), Reason::ReqField);
    rejects("sftp 20261122T010203Z\n", Reason::ReqSyntax);
    rejects("sftp\n", Reason::ReqSyntax);
    rejects("dummy\n", Reason::ReqSyntax);
    rejects("dummy a b\n", Reason::ReqSyntax);
    rejects(format!("# comment {url}\n"), Reason::ReqModule);
    rejects(format!("git {url} # comment\n"), Reason::ReqSyntax);
    rejects(format!("git {url};id\n"), Reason::ReqName);
    rejects("\n", Reason::ReqSyntax);
    rejects("", Reason::ReqSyntax);
    rejects(format!("git {url}"), Reason::ReqSyntax);
    let e = parse(format!("git  {url}\n").as_bytes()).unwrap_err();
    assert_eq!(e.to_string(), format!("E_REQ_SYNTAX at byte 3: two spaces between fields: \"git  {url}\""));
}

#[test]
fn rp06_bom_and_invalid_utf8() {
    rejects(b"\xEF\xBB\xBFgit git://client.example/r.git\n", Reason::ReqEncoding);
    rejects(b"git git://client.example/\xFF\xFE.git\n", Reason::ReqEncoding);
    rejects(b"\xFF", Reason::ReqEncoding);
    rejects(b"git git://client.example/\xC0\xAF.git\n", Reason::ReqEncoding);
    rejects(b"git git://client.example/\xED\xA0\x80\n", Reason::ReqEncoding);
    let e = parse(b"dummy a\xE2\x80\n").unwrap_err();
    assert_eq!((e.reason, e.offset), (Reason::ReqEncoding, Some(7)));
    // A BOM in the middle is valid UTF-8 but not ASCII.
    rejects("dummy a\u{FEFF}\n", Reason::ReqCharset);
}

#[test]
fn rp07_non_ascii_hosts() {
    rejects("git git://cl\u{456}ent.example/repo.git\n", Reason::ReqCharset);
    rejects("git git://\u{ff43}lient.example/repo.git\n", Reason::ReqCharset);
    rejects("git git://client.example\u{200B}/repo.git\n", Reason::ReqCharset);
    // Punycode is plain LDH: the parser accepts it and the enrolment check
    // (byte equality with the enrolled host, E_REQ_HOST_NOT_OWNED) refuses it.
    let r = parse(b"git git://xn--clent-5ua.example/repo.git\n").unwrap();
    let Request::Git(g) = r else { panic!() };
    assert_ne!(g.url.host, Host::parse("client.example").unwrap());
    // Upper case is not folded.
    rejects("git git://CLIENT.example/repo.git\n", Reason::UrlHost);
}

#[test]
fn rp08_bidi_override() {
    let line = format!(
        "sftp 20261122T010203Z sftp://adminbackup@client.example/var/backup/export/app-\u{202E}exe.tar.zst sha256={HEX} size=1 source=app\n"
    );
    let e = parse(line.as_bytes()).unwrap_err();
    assert_eq!(e.reason, Reason::ReqCharset);
    assert!(e.detail.is_ascii() && !e.detail.contains('\u{202E}'));
    assert!(e.detail.contains("\\u{202E}"), "{}", e.detail);
    for c in ['\u{202A}', '\u{2066}', '\u{2069}', '\u{200E}', '\u{200F}', '\u{9B}'] {
        rejects(format!("dummy a{c}\n"), Reason::ReqCharset);
    }
}

#[test]
fn rp09_traversal_in_names() {
    let git = |path: &str| format!("git git://client.example{path}\n");
    for (path, want) in [
        ("/../../../srv/backup/data/clientb/x.git", Reason::ReqPath),
        ("/..", Reason::ReqPath),
        ("/.", Reason::ReqPath),
        ("/.git", Reason::ReqName),
        ("/repo.git/", Reason::ReqPath),
        ("/%2e%2e%2f%2e%2e%2fx.git", Reason::UrlCharset),
        ("/..%2fclientb/x.git", Reason::UrlCharset),
        ("/a\\..\\..\\b.git", Reason::UrlCharset),
        (&format!("/{}.git", "n".repeat(296)), Reason::ReqName),
        ("", Reason::ReqPath),
        ("/", Reason::ReqPath),
        ("/a//b.git", Reason::ReqPath),
        (&"/a".repeat(33), Reason::ReqPath),
        (&format!("{}/x", vec!["/".to_owned() + &"d".repeat(100); 11].concat()), Reason::ReqPath),
    ] {
        rejects(git(path), want);
    }
    let sftp = |source: &str| sftp_line("20261122T010203Z", SFTP_URL, &format!("sha256={HEX} size=1 source={source}"));
    for source in ["..", ".", ".git", "-x", "_x", "a/b", "", &"s".repeat(300), "a:b"] {
        rejects(sftp(source), Reason::ReqName);
    }
    for word in ["..", ".", ".x", "-x", "a/b", "a=b", &"w".repeat(101)] {
        rejects(format!("dummy {word}\n"), Reason::ReqName);
    }
}

/// Issue 16, point 4: a source named like one of the node's own
/// directories below `data/<client>/` is refused, in any letter case.
#[test]
fn reserved_source_names_are_refused_in_any_case() {
    let sftp = |source: &str| sftp_line("20261122T010203Z", SFTP_URL, &format!("sha256={HEX} size=1 source={source}"));
    for source in ["git", "Git", "GIT", "trees", "Store", "tmp", "TMP", "incomplete"] {
        let line = sftp(source);
        let e = parse(line.as_bytes()).unwrap_err();
        assert_eq!(e.reason, Reason::ReqNameReserved, "{source}");
        assert_eq!(e.offset, line.find("source=").map(|i| i + "source=".len()), "{source}");
        assert_eq!(e.code(), "E_REQ_NAME_RESERVED");
    }
    for source in ["gitea", "git-repos", "storage", "trac"] {
        assert!(parse(sftp(source).as_bytes()).is_ok(), "{source}");
    }
    // The dummy word is no storage name.
    assert!(parse(b"dummy git\n").is_ok());
}

#[test]
fn rp10_timestamp_abuse() {
    let rest = format!("sha256={HEX} size=1 source=app");
    for stamp in [
        "99999999999999999999",
        "-1",
        "0",
        "1767225600",
        "+20261122T010203Z",
        "-20261122T010203Z",
        "1e10",
        "2026e122T010203Z",
        "0x6955B900",
        "0x6955B900000000Z",
        "020261122T010203Z",
        "20261122T010203.5Z",
        "1767225600.5",
        "100000101T000000Z",
        "253402300800",
        "20260230T000000Z",
        "20261122T240000Z",
        "20261122T235960Z",
        "19691231T235959Z",
        "20261122t010203z",
    ] {
        rejects(sftp_line(stamp, SFTP_URL, &rest), Reason::ReqTimestamp);
    }
}

#[test]
fn rp11_digest_format() {
    let line = |d: &str| sftp_line("20261122T010203Z", SFTP_URL, &format!("sha256={d} size=1 source=app"));
    for d in [
        &HEX[..63],
        &format!("{HEX}a"),
        &HEX.to_uppercase(),
        &format!("sha256:{}", &HEX[7..]),
        &format!("g{}", &HEX[1..]),
        "",
        &format!("{}=", &HEX[..63]),
    ] {
        rejects(line(d), Reason::ReqDigest);
    }
    // Syntactically fine; verification after download decides.
    assert!(parse(line(&"0".repeat(64)).as_bytes()).is_ok());
    assert!(parse(line(HEX).as_bytes()).is_ok());
}

#[test]
fn rp12_same_line_twice_in_one_file() {
    // Conflicts across pushes are decided by the store (E_REQ_CONFLICT);
    // the parser's part is that one file holds one request.
    let g = good_sftp();
    rejects(format!("{g}{g}"), Reason::ReqTooMany);
    let a = parse(g.as_bytes()).unwrap();
    let b = parse(g.replace(HEX, &"1".repeat(64)).as_bytes()).unwrap();
    assert_ne!(a, b);
}

#[test]
fn sizes() {
    let line = |s: &str| sftp_line("20261122T010203Z", SFTP_URL, &format!("sha256={HEX} size={s} source=app"));
    for s in [
        "-1",
        "+1",
        "01",
        "00",
        "1e3",
        "0x10",
        "1.5",
        "",
        "9223372036854775808",
        "18446744073709551615",
        "18446744073709551616",
        "99999999999999999999999999",
        "1_000",
        "1k",
    ] {
        rejects(line(s), Reason::ReqSize);
    }
    for (s, n) in [("0", 0), ("1", 1), ("9223372036854775807", i64::MAX as u64)] {
        let Request::Sftp(r) = parse(line(s).as_bytes()).unwrap() else { panic!() };
        assert_eq!(r.size, n);
    }
}

#[test]
fn key_value_fields() {
    let stamp = "20261122T010203Z";
    let sha = format!("sha256={HEX}");
    for rest in [
        format!("{sha} size=1"),
        format!("{sha} size=1 source=app client=clientb"),
        format!("{sha} size=1 client=clientb source=app"),
        format!("{sha} size=1 size=1 source=app"),
        format!("{sha} {sha} size=1 source=app"),
        format!("size=1 {sha} source=app"),
        format!("{sha} source=app size=1"),
        format!("SHA256={HEX} size=1 source=app"),
        format!("=x {sha} size=1 source=app"),
        format!("{sha} size=1 source=app source=app"),
    ] {
        rejects(sftp_line(stamp, SFTP_URL, &rest), Reason::ReqField);
    }
    rejects(sftp_line(stamp, SFTP_URL, &format!("{HEX} size=1 source=app")), Reason::ReqSyntax);
    rejects("git git://client.example/r.git client=clientb\n", Reason::ReqField);
    rejects("dummy hello force=1\n", Reason::ReqField);
}

// ---------------------------------------------------------------- GU

#[test]
fn gu01_ext_transport() {
    // The full example has spaces, so it fails on the field count before
    // the URL is read; the URL on its own fails the scheme allow-list.
    rejects("git ext::sh -c touch% /tmp/pwned\n", Reason::ReqSyntax);
    rejects("git ext::sh\n", Reason::UrlScheme);
    rejects("git ext::sh%20-c%20touch%25%20/tmp/pwned\n", Reason::UrlScheme);
}

#[test]
fn gu02_remote_helpers() {
    for url in [
        "fd::17",
        "foo::bar",
        "testgit::x",
        "hg::https://client.example/r",
        "gcrypt::rsync://client.example/r",
        "persistent-https://client.example/r.git",
        "http://client.example/r.git",
        "git+ssh://client.example/r.git",
        "ssh+git://client.example/r.git",
        "SSH://client.example/r.git",
        "rsync://client.example/r",
    ] {
        rejects(format!("git {url}\n"), Reason::UrlScheme);
    }
}

#[test]
fn gu03_local_paths() {
    for url in [
        "file:///etc",
        "file://client.example/etc",
        "/srv/backup/data/clientb/repo.git",
        "./x",
        "../clientb/repo.git",
        "~backupq/queue/clientb.git",
        "client.example:repo.git",
        "git@client.example:repo.git",
        "C:/x",
    ] {
        rejects(format!("git {url}\n"), Reason::UrlScheme);
    }
    rejects(
        sftp_line("20261122T010203Z", "/var/backup/export/a", &format!("sha256={HEX} size=1 source=a")),
        Reason::UrlScheme,
    );
}

#[test]
fn gu04_leading_dash() {
    rejects("git --upload-pack=touch /tmp/x\n", Reason::ReqSyntax);
    for url in [
        "--upload-pack=touch",
        "-u/bin/sh",
        "--config=core.sshCommand=id",
        "git://client.example/--upload-pack=x",
        "git://client.example/ok/-x",
        "ssh://-client.example/r",
    ] {
        rejects(format!("git {url}\n"), Reason::UrlDash);
    }
}

#[test]
fn gu05_ssh_option_injection() {
    rejects("git ssh://-oProxyCommand=sh%20-c%20id/x\n", Reason::UrlDash);
    rejects("git ssh://-oProxyCommand=id@client.example/r\n", Reason::UrlDash);
    let rest = format!("sha256={HEX} size=1 source=a");
    for url in ["sftp://-oProxyCommand=id@client.example/var/backup/export/a", "sftp://adminbackup@-oProxyCommand=id/x"]
    {
        rejects(sftp_line("20261122T010203Z", url, &rest), Reason::UrlDash);
    }
    for (url, want) in [
        ("sftp://client.example/var/backup/export/a", Reason::UrlUser),
        ("sftp://Admin@client.example/var/backup/export/a", Reason::UrlUser),
        ("sftp://a:b@client.example/var/backup/export/a", Reason::UrlUserinfo),
        ("sftp://a@Client.example/var/backup/export/a", Reason::UrlHost),
    ] {
        rejects(sftp_line("20261122T010203Z", url, &rest), want);
    }
}

#[test]
fn gu11_ports() {
    // A well-formed port is the enrolment check's to compare.
    assert!(parse(b"git git://client.example:22/r\n").is_ok());
    assert!(parse(b"git ssh://client.example:2222/r\n").is_ok());
    for port in ["0", "65536", "-1", "+22", "022", "", "22a", "99999999999999999999"] {
        rejects(format!("git git://client.example:{port}/r\n"), Reason::UrlPort);
    }
}

#[test]
fn gu13_credentials() {
    for url in [
        "https://user:token@client.example/repo.git",
        "https://token@client.example/repo.git",
        "git://user@client.example/repo.git",
        "ssh://user:pw@client.example/repo.git",
    ] {
        rejects(format!("git {url}\n"), Reason::UrlUserinfo);
    }
    assert!(parse(b"git ssh://git@client.example/repo.git\n").is_ok());
}

#[test]
fn gu15_control_characters_in_urls() {
    rejects("git https://client.example/%0ahost=evil.example/r.git\n", Reason::UrlCharset);
    rejects("git https://client.example/%0d/r.git\n", Reason::UrlCharset);
    rejects("git https://client.example/r.git?x\n", Reason::UrlCharset);
    rejects("git https://client.example/r.git#x\n", Reason::UrlCharset);
    // A raw control byte never reaches the URL parser.
    rejects(b"git https://client.example/r\x1b.git\n", Reason::ReqCtrlChar);
    rejects(b"git https://client.example/r\x7f.git\n", Reason::ReqCtrlChar);
    // Standalone, the URL parser refuses it too.
    assert_eq!(GitUrl::parse("https://client.example/r\x1b.git").unwrap_err().reason, Reason::UrlCharset);
}

// ---------------------------------------------------------------- precedence

#[test]
fn precedence_is_pinned() {
    let small = Limits { max_file_bytes: 64, max_line_bytes: 32 };
    let p = |b: &[u8]| parse_with(b, &small).unwrap_err().reason;
    // 1. file size beats everything, even a BOM and NUL.
    let mut big = b"\xEF\xBB\xBF\x00".to_vec();
    big.resize(65, b'\xFF');
    assert_eq!(p(&big), Reason::ReqTooLong);
    // 2. BOM beats NUL and invalid UTF-8.
    assert_eq!(p(b"\xEF\xBB\xBF\x00\xFF"), Reason::ReqEncoding);
    // 3. invalid UTF-8 beats an earlier control byte.
    assert_eq!(p(b"\x00\xFF"), Reason::ReqEncoding);
    // 4. a control byte beats an earlier non-ASCII character.
    assert_eq!(p("\u{e9}\x00".as_bytes()), Reason::ReqCtrlChar);
    assert_eq!(p("\u{e9}\r".as_bytes()), Reason::ReqCtrlChar);
    // 5. non-ASCII beats a second line.
    assert_eq!(p("a\n\u{e9}\n".as_bytes()), Reason::ReqCharset);
    // 6. a second line beats the line length.
    assert_eq!(p(format!("{}\nb\n", "a".repeat(40)).as_bytes()), Reason::ReqTooMany);
    // 7. line length beats the missing LF.
    assert_eq!(p("a".repeat(40).as_bytes()), Reason::ReqTooLong);
    // 8. missing LF beats spacing.
    assert_eq!(p(b"git  x"), Reason::ReqSyntax);
    assert_eq!(parse_with(b"git  x", &small).unwrap_err().offset, Some(6));
    // 9. spacing beats an unknown verb.
    assert_eq!(p(b"GIT  x\n"), Reason::ReqSyntax);
    // 10. unknown verb beats field count.
    assert_eq!(p(b"GIT\n"), Reason::ReqModule);
    // 11. field structure beats values.
    assert_eq!(p(b"git -x y\n"), Reason::ReqSyntax);
    let line = format!("sftp 0 {SFTP_URL} size=x sha256=y source=z\n");
    assert_eq!(reason_of(line.as_bytes()), Reason::ReqField);
    // 12. values left to right.
    let line = "sftp 0 ftp://x sha256=y size=x source=.\n";
    assert_eq!(reason_of(line.as_bytes()), Reason::ReqTimestamp);
    let line = "sftp 20261122T010203Z ftp://x sha256=y size=x source=.\n";
    assert_eq!(reason_of(line.as_bytes()), Reason::UrlScheme);
    let line = format!("sftp 20261122T010203Z {SFTP_URL} sha256=y size=x source=.\n");
    assert_eq!(reason_of(line.as_bytes()), Reason::ReqDigest);
    let line = format!("sftp 20261122T010203Z {SFTP_URL} sha256={HEX} size=x source=.\n");
    assert_eq!(reason_of(line.as_bytes()), Reason::ReqSize);
    let line = format!("sftp 20261122T010203Z {SFTP_URL} sha256={HEX} size=1 source=.\n");
    assert_eq!(reason_of(line.as_bytes()), Reason::ReqName);
}

#[test]
fn url_check_order_is_pinned() {
    let r = |url: &str| reason_of(format!("git {url}\n").as_bytes());
    // Leading dash before scheme.
    assert_eq!(r("-x://a/b"), Reason::UrlDash);
    // Scheme before component dashes and charset.
    assert_eq!(r("ftp://-a/%"), Reason::UrlScheme);
    // Component dash before charset.
    assert_eq!(r("ssh://-a%20b/x"), Reason::UrlDash);
    assert_eq!(r("git://a/b/-c%"), Reason::UrlDash);
    // Charset before userinfo, host, port and path.
    assert_eq!(r("https://u:p@A.b:0/%/.."), Reason::UrlCharset);
    // Userinfo before host.
    assert_eq!(r("https://u@A.b/x"), Reason::UrlUserinfo);
    assert_eq!(r("ssh://u:p@A.b/x"), Reason::UrlUserinfo);
    // User before host.
    assert_eq!(r("ssh://U@A.b/x"), Reason::UrlUser);
    // Host before port.
    assert_eq!(r("git://A.b:0/x"), Reason::UrlHost);
    // Port before path.
    assert_eq!(r("git://a.b:0/.."), Reason::UrlPort);
    // Path structure and names in segment order.
    assert_eq!(r("git://a.b/.x/.."), Reason::ReqName);
    assert_eq!(r("git://a.b/../.x"), Reason::ReqPath);
}

#[test]
fn offsets_are_file_offsets() {
    let e = parse(b"git git://client.example:0/r\n").unwrap_err();
    assert_eq!(e.offset, Some(25));
    let line = format!("sftp 20261122T010203Z {SFTP_URL} sha256={HEX} size=01 source=a\n");
    let e = parse(line.as_bytes()).unwrap_err();
    assert_eq!(e.offset, line.find("size=").map(|i| i + 5));
    let e = parse(b"dummy ok.-/\n").unwrap_err();
    assert_eq!(e.offset, Some(10));
    let e = parse(b"GIT x\n").unwrap_err();
    assert_eq!(e.offset, Some(0));
}

#[test]
fn limits_default() {
    assert_eq!(Limits::default(), Limits { max_file_bytes: 65_536, max_line_bytes: 4_096 });
}

// ---------------------------------------------------------------- properties

/// xorshift64: deterministic, tiny, no extra crates.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    pub(crate) fn string(&mut self, first: &[u8], rest: &[u8], max_rest: u64) -> String {
        let mut s = String::new();
        s.push(char::from(*self.pick(first)));
        for _ in 0..self.below(max_rest + 1) {
            s.push(char::from(*self.pick(rest)));
        }
        s
    }
}

const LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const NAME_REST: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-";

pub(crate) fn gen_host(rng: &mut Rng) -> Host {
    let text = if rng.below(4) == 0 {
        (0..4).map(|_| rng.below(256).to_string()).collect::<Vec<_>>().join(".")
    } else {
        let n = 1 + rng.below(4);
        let mut labels = Vec::new();
        for i in 0..n {
            let first: &[u8] = if i == n - 1 { LOWER } else { b"abcxyz0189" };
            let mut l = rng.string(first, b"abcdefghijklmnopqrstuvwxyz0123456789-", 10);
            if l.ends_with('-') {
                l.push('z');
            }
            labels.push(l);
        }
        labels.join(".")
    };
    Host::parse(&text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

pub(crate) fn gen_user(rng: &mut Rng) -> User {
    let u = rng.string(b"abcdefghijklmnopqrstuvwxyz_", b"abcz019_-", 31);
    User::parse(&u).unwrap_or_else(|e| panic!("{u}: {e}"))
}

pub(crate) fn gen_port(rng: &mut Rng) -> Option<u16> {
    match rng.below(4) {
        0 => None,
        1 => Some(*rng.pick(&[1, 22, 9418, 65535])),
        _ => Some(1 + rng.below(65535) as u16),
    }
}

pub(crate) fn gen_path(rng: &mut Rng) -> RemotePath {
    let mut first = ALNUM.to_vec();
    first.push(b'_');
    let deep = rng.below(10) == 0;
    let depth = 1 + rng.below(if deep { 32 } else { 6 });
    let max_seg = if depth > 10 { 20 } else { 99 };
    let segs: Vec<String> = (0..depth)
        .map(|_| {
            let max = rng.below(max_seg + 1);
            rng.string(&first, NAME_REST, max)
        })
        .collect();
    let text = format!("/{}", segs.join("/"));
    RemotePath::parse(&text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

pub(crate) fn gen_name(rng: &mut Rng) -> Name {
    let max = if rng.below(10) == 0 { 99 } else { 12 };
    let n = rng.string(ALNUM, NAME_REST, max);
    Name::parse(&n).unwrap_or_else(|e| panic!("{n}: {e}"))
}

fn gen_request(rng: &mut Rng) -> Request {
    match rng.below(3) {
        0 => {
            let scheme = *rng.pick(&[GitScheme::Git, GitScheme::Ssh, GitScheme::Https]);
            let user = (scheme == GitScheme::Ssh && rng.below(2) == 0).then(|| gen_user(rng));
            let url = GitUrl::new(scheme, user, gen_host(rng), gen_port(rng), gen_path(rng))
                .unwrap_or_else(|e| panic!("{e}"));
            Request::Git(GitRequest { url })
        }
        1 => {
            let mut bytes = [0u8; 32];
            for b in &mut bytes {
                *b = rng.next() as u8;
            }
            let size = match rng.below(5) {
                0 => 0,
                1 => i64::MAX as u64,
                _ => rng.below(i64::MAX as u64) >> rng.below(63),
            };
            let secs = match rng.below(5) {
                0 => 0,
                1 => MAX_UNIX,
                _ => rng.below(MAX_UNIX as u64 + 1) as i64,
            };
            Request::Sftp(SftpRequest {
                stamp: Stamp::from_unix(secs),
                url: SftpUrl::new(gen_user(rng), gen_host(rng), gen_port(rng), gen_path(rng))
                    .unwrap_or_else(|e| panic!("{e}")),
                sha256: Digest::from_bytes(bytes),
                size,
                source: gen_name(rng),
            })
        }
        _ => Request::Dummy(DummyRequest { word: gen_name(rng) }),
    }
}

#[test]
fn round_trip_property() {
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    for _ in 0..20_000 {
        let r = gen_request(&mut rng);
        let line = r.to_line();
        assert!(line.len() <= 4096, "{line}");
        assert_eq!(parse(line.as_bytes()), Ok(r.clone()), "{line}");
        let crlf = format!("{}\r\n", line.trim_end_matches('\n'));
        assert_eq!(parse(crlf.as_bytes()), Ok(r.clone()), "{line}");
        // The canonical line is all the typed value knows: no other text.
        assert_eq!(format!("{r}\n"), line);
    }
}

/// Bytes a mutation likes to insert: separators, every delimiter the
/// grammar knows, controls, and the starts of multi-byte sequences.
const INTERESTING: &[u8] = b" \t\r\n\x00\x1b\x7f-./:@%=?#\\_Tz0189AaZ\xc2\x9b\xe2\x80\xae\xef\xbb\xbf\xff";

pub(crate) fn mutate(rng: &mut Rng, input: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(4) {
        let len = input.len() as u64;
        let at = rng.below(len + 1) as usize;
        match rng.below(8) {
            0 if at < input.len() => input[at] ^= 1 << rng.below(8),
            1 if at < input.len() => input[at] = *rng.pick(INTERESTING),
            2 => input.insert(at, *rng.pick(INTERESTING)),
            3 => input.insert(at, rng.next() as u8),
            4 if at < input.len() => {
                input.remove(at);
            }
            5 => input.truncate(at),
            6 if at < input.len() => {
                let end = (at + 1 + rng.below(20) as usize).min(input.len());
                let chunk = input[at..end].to_vec();
                let to = rng.below(input.len() as u64 + 1) as usize;
                input.splice(to..to, chunk);
            }
            _ if at < input.len() => {
                let c = input[at];
                input[at] = match c {
                    b'a'..=b'z' => c.to_ascii_uppercase(),
                    b'0'..=b'8' => c + 1,
                    _ => b'-',
                };
            }
            _ => input.push(*rng.pick(INTERESTING)),
        }
    }
}

#[test]
fn mutations_never_panic_and_accepted_input_is_canonical() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut seeds: Vec<Vec<u8>> = vec![
        b"git git://172.16.0.60/project.git\n".to_vec(),
        b"git ssh://git@client.example:2222/srv/git/repo.git\r\n".to_vec(),
        b"git https://client.example/a/b.git\n".to_vec(),
        good_sftp().into_bytes(),
        b"dummy hello\n".to_vec(),
    ];
    for _ in 0..20 {
        seeds.push(gen_request(&mut rng).to_line().into_bytes());
    }
    let (mut accepted, mut rejected) = (0u32, 0u32);
    for i in 0..200_000 {
        let mut input = seeds[i % seeds.len()].clone();
        mutate(&mut rng, &mut input);
        match parse(&input) {
            Ok(r) => {
                accepted += 1;
                let line = r.to_line();
                let crlf = format!("{}\r\n", line.trim_end_matches('\n'));
                assert!(
                    input == line.as_bytes() || input == crlf.as_bytes(),
                    "accepted a non-canonical spelling: {:?} -> {line:?}",
                    String::from_utf8_lossy(&input)
                );
                assert_eq!(parse(line.as_bytes()), Ok(r));
            }
            Err(e) => {
                rejected += 1;
                assert!(e.detail.bytes().all(|b| (0x20..0x7f).contains(&b)), "unescaped detail {:?}", e.detail);
                assert!(e.detail.len() <= 500, "{}", e.detail);
                assert!(e.offset.is_some_and(|o| o <= input.len()), "{e:?}");
                let shown = e.to_string();
                assert!(shown.starts_with(e.reason.code()) && !shown.contains('\n'));
            }
        }
    }
    // The mutator must exercise both outcomes to be worth anything.
    assert!(accepted > 1_000 && rejected > 100_000, "{accepted} {rejected}");
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(7);
    for _ in 0..50_000 {
        let len = rng.below(200) as usize;
        let bytes: Vec<u8> =
            (0..len).map(|_| if rng.below(2) == 0 { *rng.pick(INTERESTING) } else { rng.next() as u8 }).collect();
        let _ = parse(&bytes);
        if let Ok(s) = std::str::from_utf8(&bytes) {
            let _ = GitUrl::parse(s);
            let _ = SftpUrl::parse(s);
            let _ = Host::parse(s);
            let _ = RemotePath::parse(s);
            let _ = Stamp::parse(s);
            let _ = Digest::parse(s);
            let _ = parse_port(s);
        }
    }
}

/// A root that passes `RemotePath::parse_root` (an enrolled export dir or
/// git root) has room for a request path below it; one that fails could
/// never hold one, and the refusal names the root's limit.
#[test]
fn enrolled_roots_leave_room_for_a_request_path() {
    // 31 segments, 1022 bytes: the largest root.
    let root = format!("{}/{}", format!("/{}", "d".repeat(32)).repeat(30), "r".repeat(31));
    assert_eq!((root.len(), root.matches('/').count()), (1022, 31));
    let parsed = RemotePath::parse_root(&root).unwrap();
    let below = RemotePath::parse(&format!("{root}/x")).unwrap();
    assert_eq!(below.relative_to(&parsed), Some(vec!["x"]));
    let line = format!("git ssh://ferry@172.16.0.60{root}/x\n");
    assert!(parse(line.as_bytes()).is_ok(), "{line}");

    // One byte or one segment more leaves no room: still a RemotePath, not
    // a root.
    for (bad, limit) in [
        (format!("{root}r"), "path longer than 1022 bytes"),
        ("/d".repeat(32), "path deeper than 31 segments"),
        (format!("/{}", "a/".repeat(1000)).trim_end_matches('/').to_owned(), "path longer than 1022 bytes"),
        ("/d".repeat(40), "path deeper than 31 segments"),
    ] {
        let e = RemotePath::parse_root(&bad).unwrap_err();
        assert_eq!(e.reason, Reason::ReqPath, "{bad}");
        assert!(e.detail.starts_with(limit), "{bad}: {e}");
        assert!(e.detail.contains("room below it for a path of at most 1024 bytes and 32 segments"), "{e}");
    }
    assert!(RemotePath::parse(&format!("{root}r")).is_ok());
    assert!(RemotePath::parse(&"/d".repeat(32)).is_ok());
    // Every other rule is the path grammar's own.
    for (bad, want) in [("relative", Reason::ReqPath), ("/a/../b", Reason::ReqPath), ("/-x", Reason::UrlDash)] {
        assert_eq!(RemotePath::parse_root(bad).unwrap_err().reason, want, "{bad}");
    }
}

#[test]
fn git_schemes_have_one_spelling() {
    for s in [GitScheme::Git, GitScheme::Ssh, GitScheme::Https] {
        assert_eq!(GitScheme::parse(s.as_str()), Ok(s));
        assert_eq!(s.as_str().parse::<GitScheme>(), Ok(s));
    }
    for bad in ["", "SSH", "Git", "http", "file", "ssh ", "git+ssh"] {
        assert_eq!(GitScheme::parse(bad).unwrap_err().reason, Reason::UrlScheme, "{bad:?}");
    }
}
