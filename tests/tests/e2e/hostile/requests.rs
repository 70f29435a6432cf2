//! Request files (RP), URLs the node must never pull (GU, parse and
//! enrollment level), identity claimed in content (AC-10), text aimed at
//! logs, terminals and mail (NL) and a flood of rejections (RE-05): what a
//! compromised client writes into its own queue.
//!
//! All cases stand in one table, [`table`]; each `#[test]` below pushes
//! the cases of one class (their ids start with the class's prefixes) in
//! one push, scans once, and checks each case's reason code, that nothing
//! outside changed, that every sink (journal, `.why`, `ferry-node` output,
//! mail) stays printable and free of forged lines, and that a valid
//! request still ends in F. `every_case_is_in_exactly_one_class` keeps
//! table and tests in step.

use std::fs;
use std::time::Duration;

use ferry_tests::fleet::{run, text};

use super::kit::{
    BHolds, Ep, Fleet, Plan, assert_classes_cover, assert_done, assert_failed, assert_journal_clean, assert_printable,
    canary, case_classes, events, in_class, next_year, now_stamp, rq, scan,
};

/// The empty file's SHA-256, for sftp lines whose other fields are wrong.
const SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Where the node is, for cases that aim at it.
struct NodeAt {
    addr: String,
    port: u16,
    /// B's data directory on the node.
    data_b: String,
}

/// (id, file content, expected reason).
type Case = (String, Vec<u8>, &'static str);

/// Every hostile request file, for client A (`e`) with B (`be`) enrolled
/// beside it; ids are unique over the table.
fn table(e: &Ep, be: &Ep, node: &NodeAt, stamp: &str) -> Vec<Case> {
    let stamp = stamp.to_owned();
    let sha = SHA;
    let art = format!("{}/site/x.tar.zst", e.export);
    let good_sftp = |st: &str| e.sftp(st, &art, sha, 0, "site");
    let ext = canary("ext");
    let (u, h, p, r) = (&e.user, &e.addr, e.port, &e.git_root);

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        // RP-01 NUL
        ("rp01-nul", format!("git ssh://{u}@{h}:{p}{r}/ok.git\0/../../etc.git\n").into_bytes(), "E_REQ_CTRL_CHAR"),
        ("rp01-nul-dummy", b"dummy a\0b\n".to_vec(), "E_REQ_CTRL_CHAR"),
        // RP-02 CR: only a terminating CRLF is accepted (rp02-crlf ends in F)
        ("rp02-cr-end", b"dummy crend\r".to_vec(), "E_REQ_CTRL_CHAR"),
        ("rp02-cr-mid", format!("git ssh://{u}@{h}:{p}{r}/o\rk.git\n").into_bytes(), "E_REQ_CTRL_CHAR"),
        ("rp02-crcrlf", b"dummy x\r\r\n".to_vec(), "E_REQ_CTRL_CHAR"),
        ("rp02-lfcr", b"dummy x\n\r".to_vec(), "E_REQ_CTRL_CHAR"),
        // RP-03 overlong line (file under the 64 KiB push limit)
        ("rp03-long-line", format!("dummy {}\n", "a".repeat(5000)).into_bytes(), "E_REQ_TOO_LONG"),
        ("rp03-long-url", e.repo(&"a".repeat(4100)).into_bytes(), "E_REQ_TOO_LONG"),
        ("rp03-no-lf", b"dummy nolf".to_vec(), "E_REQ_SYNTAX"),
        ("rp03-empty", Vec::new(), "E_REQ_SYNTAX"),
        ("rp03-only-lf", b"\n".to_vec(), "E_REQ_SYNTAX"),
        // RP-04 many lines in one file
        ("rp04-two-lines", b"dummy a\ndummy b\n".to_vec(), "E_REQ_TOO_MANY"),
        ("rp04-many-lines", "dummy x\n".repeat(4000).into_bytes(), "E_REQ_TOO_MANY"),
        ("rp04-same-twice", format!("{}{}", e.repo("ok.git"), e.repo("ok.git")).into_bytes(), "E_REQ_TOO_MANY"),
        // RP-05 grammar deviations
        ("rp05-upper-verb", e.repo("ok.git").replacen("git", "GIT", 1).into_bytes(), "E_REQ_MODULE"),
        ("rp05-upper-dummy", b"Dummy x\n".to_vec(), "E_REQ_MODULE"),
        ("rp05-two-spaces", e.repo("ok.git").replacen(' ', "  ", 1).into_bytes(), "E_REQ_SYNTAX"),
        ("rp05-tab", e.repo("ok.git").replacen(' ', "\t", 1).into_bytes(), "E_REQ_CTRL_CHAR"),
        ("rp05-leading-space", format!(" {}", e.repo("ok.git")).into_bytes(), "E_REQ_SYNTAX"),
        ("rp05-trailing-space", b"dummy x \n".to_vec(), "E_REQ_SYNTAX"),
        ("rp05-no-url", b"git\n".to_vec(), "E_REQ_SYNTAX"),
        ("rp05-extra-field", e.repo("ok.git").replace('\n', " extra\n").into_bytes(), "E_REQ_SYNTAX"),
        ("rp05-extra-kv", e.repo("ok.git").replace('\n', " depth=1\n").into_bytes(), "E_REQ_FIELD"),
        ("rp05-sftp-2-fields", format!("sftp {stamp} {}\n", e.sftp_url(&art)).into_bytes(), "E_REQ_FIELD"),
        ("rp05-sftp-1-field", format!("sftp {}\n", e.sftp_url(&art)).into_bytes(), "E_REQ_SYNTAX"),
        ("rp05-comment", b"# dummy x\n".to_vec(), "E_REQ_MODULE"),
        ("rp05-trailing-comment", b"dummy x # comment\n".to_vec(), "E_REQ_SYNTAX"),
        ("rp05-unknown-verb", b"rsync x\n".to_vec(), "E_REQ_MODULE"),
        (
            "rp05-keys-order",
            good_sftp(&stamp).replace(" size=0 source=site", " source=site size=0").into_bytes(),
            "E_REQ_FIELD",
        ),
        (
            "rp05-key-repeated",
            good_sftp(&stamp).replace(" source=site", " size=0 source=site").into_bytes(),
            "E_REQ_FIELD",
        ),
        ("rp05-key-upper", good_sftp(&stamp).replace("sha256=", "SHA256=").into_bytes(), "E_REQ_FIELD"),
        // RP-06 BOM and invalid UTF-8
        ("rp06-bom", b"\xEF\xBB\xBFdummy x\n".to_vec(), "E_REQ_ENCODING"),
        ("rp06-invalid-utf8", b"dummy \xFF\xFE\n".to_vec(), "E_REQ_ENCODING"),
        ("rp06-overlong-utf8", b"dummy \xC0\xAF\n".to_vec(), "E_REQ_ENCODING"),
        ("rp06-utf16", "dummy x\n".encode_utf16().flat_map(u16::to_le_bytes).collect(), "E_REQ_CTRL_CHAR"),
        // RP-07 non-ASCII and confusable hosts
        ("rp07-cyrillic", format!("git ssh://{u}@cl\u{456}ent.example{r}/ok.git\n").into_bytes(), "E_REQ_CHARSET"),
        ("rp07-fullwidth", format!("git ssh://{u}@\u{ff43}lient.example{r}/ok.git\n").into_bytes(), "E_REQ_CHARSET"),
        ("rp07-zwsp", format!("git ssh://{u}@{h}\u{200b}:{p}{r}/ok.git\n").into_bytes(), "E_REQ_CHARSET"),
        (
            "rp07-punycode",
            format!("git ssh://{u}@xn--clent-5ua.example{r}/ok.git\n").into_bytes(),
            "E_REQ_HOST_NOT_OWNED",
        ),
        ("rp07-upper-host", format!("git ssh://{u}@Client.Example{r}/ok.git\n").into_bytes(), "E_URL_HOST"),
        ("rp07-numeric-host", format!("git ssh://{u}@2130706433:{p}{r}/ok.git\n").into_bytes(), "E_URL_HOST"),
        ("rp07-octal-host", format!("git ssh://{u}@0177.0.0.1:{p}{r}/ok.git\n").into_bytes(), "E_URL_HOST"),
        ("rp07-ipv6", format!("git ssh://{u}@[::1]{r}/ok.git\n").into_bytes(), "E_URL_HOST"),
        ("rp07-trailing-dot", format!("git ssh://{u}@{h}.:{p}{r}/ok.git\n").into_bytes(), "E_URL_HOST"),
        // RP-08 bidi in names
        (
            "rp08-bidi-file",
            e.sftp(&stamp, &format!("{}/app-\u{202e}exe.tar.zst", e.export), sha, 0, "site").into_bytes(),
            "E_REQ_CHARSET",
        ),
        ("rp08-bidi-source", e.sftp(&stamp, &art, sha, 0, "s\u{2066}ite").into_bytes(), "E_REQ_CHARSET"),
        ("rp08-lrm", "dummy ok\u{200e}\n".as_bytes().to_vec(), "E_REQ_CHARSET"),
        // RP-09 traversal in storage names
        ("rp09-dotdot", e.repo("../../../srv/backup/data/host-b/secret.git").into_bytes(), "E_REQ_PATH"),
        ("rp09-dotdot-end", e.repo("..").into_bytes(), "E_REQ_PATH"),
        ("rp09-dot", e.repo(".").into_bytes(), "E_REQ_PATH"),
        ("rp09-dotgit", e.repo(".git").into_bytes(), "E_REQ_NAME"),
        ("rp09-hidden", e.repo(".ssh").into_bytes(), "E_REQ_NAME"),
        ("rp09-trailing-slash", e.repo("ok.git/").into_bytes(), "E_REQ_PATH"),
        ("rp09-double-slash", e.repo("/ok.git").into_bytes(), "E_REQ_PATH"),
        ("rp09-pct", e.repo("%2e%2e%2f%2e%2e%2fx.git").into_bytes(), "E_URL_CHARSET"),
        ("rp09-pct-mixed", e.repo("..%2fhost-b/x.git").into_bytes(), "E_URL_CHARSET"),
        ("rp09-backslash", e.repo("a\\..\\..\\b.git").into_bytes(), "E_URL_CHARSET"),
        ("rp09-300-bytes", e.repo(&format!("{}.git", "n".repeat(296))).into_bytes(), "E_REQ_NAME"),
        ("rp09-33-segments", e.git(&"/a".repeat(33)).into_bytes(), "E_REQ_PATH"),
        ("rp09-nested-repo", e.repo("x.git/y.git").into_bytes(), "E_REQ_NAME"),
        ("rp09-too-deep", e.repo("a/b/c/d/e/f/g/h/i/j.git").into_bytes(), "E_REQ_NAME"),
        ("rp09-root-itself", e.git(r).into_bytes(), "E_REQ_PATH"),
        ("rp09-sibling-prefix", e.git(&format!("{r}x/ok.git")).into_bytes(), "E_REQ_PATH"),
        ("rp09-tilde", e.git("/~root/.ssh").into_bytes(), "E_REQ_NAME"),
        ("rp09-source-dotdot", e.sftp(&stamp, &art, sha, 0, "..").into_bytes(), "E_REQ_NAME"),
        ("rp09-source-slash", e.sftp(&stamp, &art, sha, 0, "a/../../b").into_bytes(), "E_REQ_NAME"),
        ("rp09-dummy-word", b"dummy ../x\n".to_vec(), "E_REQ_NAME"),
        // RP-10 timestamps
        ("rp10-overflow", good_sftp("99999999999999999999").into_bytes(), "E_REQ_TIMESTAMP"),
        ("rp10-negative", good_sftp("-1").into_bytes(), "E_REQ_TIMESTAMP"),
        ("rp10-zero", good_sftp("0").into_bytes(), "E_REQ_TIMESTAMP"),
        ("rp10-plus", good_sftp(&format!("+{stamp}")).into_bytes(), "E_REQ_TIMESTAMP"),
        ("rp10-unix", good_sftp("1767225600").into_bytes(), "E_REQ_TIMESTAMP"),
        ("rp10-float", good_sftp("1767225600.5").into_bytes(), "E_REQ_TIMESTAMP"),
        ("rp10-hex", good_sftp("0x6955B900").into_bytes(), "E_REQ_TIMESTAMP"),
        ("rp10-leading-zero", good_sftp(&format!("0{stamp}")).into_bytes(), "E_REQ_TIMESTAMP"),
        ("rp10-feb30", good_sftp("20260230T000000Z").into_bytes(), "E_REQ_TIMESTAMP"),
        ("rp10-leap-second", good_sftp("20261231T235960Z").into_bytes(), "E_REQ_TIMESTAMP"),
        ("rp10-lowercase", good_sftp(&stamp.to_lowercase()).into_bytes(), "E_REQ_TIMESTAMP"),
        ("rp10-year-10000", good_sftp("100000101T000000Z").into_bytes(), "E_REQ_TIMESTAMP"),
        ("rp10-far-future", good_sftp("99991231T235959Z").into_bytes(), "E_REQ_TIMESTAMP"),
        ("rp10-1970", good_sftp("19700101T000000Z").into_bytes(), "E_REQ_TIMESTAMP"),
        ("rp10-next-year", good_sftp(&next_year(&stamp)).into_bytes(), "E_REQ_TIMESTAMP"),
        // RP-11 digest and size fields
        ("rp11-63-hex", e.sftp(&stamp, &art, &sha[..63], 0, "site").into_bytes(), "E_REQ_DIGEST"),
        ("rp11-65-hex", e.sftp(&stamp, &art, &format!("{sha}0"), 0, "site").into_bytes(), "E_REQ_DIGEST"),
        ("rp11-upper", e.sftp(&stamp, &art, &sha.to_uppercase(), 0, "site").into_bytes(), "E_REQ_DIGEST"),
        ("rp11-prefix", e.sftp(&stamp, &art, &format!("sha256:{}", &sha[7..]), 0, "site").into_bytes(), "E_REQ_DIGEST"),
        ("rp11-non-hex", e.sftp(&stamp, &art, &format!("g{}", &sha[1..]), 0, "site").into_bytes(), "E_REQ_DIGEST"),
        ("rp11-size-neg", good_sftp(&stamp).replace("size=0", "size=-1").into_bytes(), "E_REQ_SIZE"),
        ("rp11-size-zeros", good_sftp(&stamp).replace("size=0", "size=007").into_bytes(), "E_REQ_SIZE"),
        ("rp11-size-huge", good_sftp(&stamp).replace("size=0", "size=99999999999999999999").into_bytes(), "E_REQ_SIZE"),
        ("rp11-size-2e63", good_sftp(&stamp).replace("size=0", "size=9223372036854775808").into_bytes(), "E_REQ_SIZE"),
        ("rp11-size-exp", good_sftp(&stamp).replace("size=0", "size=1e3").into_bytes(), "E_REQ_SIZE"),
        // GU-01/02 remote helpers, GU-03 local paths and scp-like
        ("gu01-ext", format!("git ext::sh%20-c%20touch%20{}\n", ext.display()).into_bytes(), "E_URL_SCHEME"),
        ("gu01-ext-spaced", format!("git ext::sh -c touch% {}\n", ext.display()).into_bytes(), "E_REQ_SYNTAX"),
        ("gu02-fd", b"git fd::17\n".to_vec(), "E_URL_SCHEME"),
        ("gu02-helper", format!("git testgit::ssh://{u}@{h}:{p}{r}/ok.git\n").into_bytes(), "E_URL_SCHEME"),
        ("gu02-persistent-https", format!("git persistent-https://{h}{r}/ok.git\n").into_bytes(), "E_URL_SCHEME"),
        ("gu03-file", format!("git file://{r}/ok.git\n").into_bytes(), "E_URL_SCHEME"),
        ("gu03-local-path", format!("git {}/secret.git\n", be.git_root).into_bytes(), "E_URL_SCHEME"),
        ("gu03-relative", b"git ../host-b/secret.git\n".to_vec(), "E_URL_SCHEME"),
        ("gu03-scp", format!("git {u}@{h}:{r}/ok.git\n").into_bytes(), "E_URL_SCHEME"),
        ("gu03-http", format!("git http://{h}{r}/ok.git\n").into_bytes(), "E_URL_SCHEME"),
        ("gu03-git-plus-ssh", format!("git git+ssh://{u}@{h}:{p}{r}/ok.git\n").into_bytes(), "E_URL_SCHEME"),
        ("gu03-upper-scheme", format!("git SSH://{u}@{h}:{p}{r}/ok.git\n").into_bytes(), "E_URL_SCHEME"),
        ("gu03-not-enrolled-https", format!("git https://{h}{r}/ok.git\n").into_bytes(), "E_URL_SCHEME"),
        ("gu03-not-enrolled-git", format!("git git://{h}{r}/ok.git\n").into_bytes(), "E_URL_SCHEME"),
        ("gu03-sftp-scheme-in-git", format!("git sftp://{u}@{h}:{p}{r}/ok.git\n").into_bytes(), "E_URL_SCHEME"),
        (
            "gu03-git-scheme-in-sftp",
            e.sftp(&stamp, &art, sha, 0, "site").replace("sftp://", "ssh://").into_bytes(),
            "E_URL_SCHEME",
        ),
        // GU-04/05 option injection
        (
            "gu04-upload-pack",
            format!("git --upload-pack=touch%20{}\n", canary("up").display()).into_bytes(),
            "E_URL_DASH",
        ),
        ("gu04-u", b"git -u/bin/sh\n".to_vec(), "E_URL_DASH"),
        ("gu04-config", b"git --config=core.sshCommand=id\n".to_vec(), "E_URL_DASH"),
        ("gu04-dash-segment", e.repo("--upload-pack=x").into_bytes(), "E_URL_DASH"),
        (
            "gu05-proxy-host",
            format!("git ssh://-oProxyCommand=touch%20{}/x\n", canary("px").display()).into_bytes(),
            "E_URL_DASH",
        ),
        ("gu05-proxy-user", format!("git ssh://-oProxyCommand=id@{h}:{p}{r}/ok.git\n").into_bytes(), "E_URL_DASH"),
        (
            "gu05-proxy-sftp-user",
            format!("sftp {stamp} sftp://-oProxyCommand=id@{h}{art} sha256={sha} size=0 source=site\n").into_bytes(),
            "E_URL_DASH",
        ),
        (
            "gu05-proxy-sftp-host",
            format!("sftp {stamp} sftp://{u}@-oProxyCommand=id{art} sha256={sha} size=0 source=site\n").into_bytes(),
            "E_URL_DASH",
        ),
        // GU-07 confused deputy: another enrolled client's host
        (
            "gu07-b-git",
            format!("git ssh://{}@{}:{}{}/secret.git\n", be.user, be.addr, be.port, be.git_root).into_bytes(),
            "E_REQ_HOST_NOT_OWNED",
        ),
        (
            "gu07-b-sftp",
            be.sftp(&stamp, &format!("{}/x.tar.zst", be.export), sha, 0, "site").into_bytes(),
            "E_REQ_HOST_NOT_OWNED",
        ),
        ("gu07-loopback", format!("git ssh://{u}@127.0.0.1:{p}{r}/ok.git\n").into_bytes(), "E_REQ_HOST_NOT_OWNED"),
        ("gu07-localhost", format!("git ssh://{u}@localhost:{p}{r}/ok.git\n").into_bytes(), "E_REQ_HOST_NOT_OWNED"),
        (
            "gu07-node-itself",
            format!("git ssh://{u}@{}:{}/queue/host-b.git\n", node.addr, node.port).into_bytes(),
            "E_REQ_HOST_NOT_OWNED",
        ),
        // GU-11 ports, users, userinfo
        ("gu11-b-port", format!("git ssh://{u}@{h}:{}{r}/ok.git\n", be.port).into_bytes(), "E_URL_PORT"),
        (
            "gu11-port-22",
            format!("git ssh://{u}@{h}:22{r}/ok.git\n").into_bytes(),
            if p == 22 { "E_FETCH_NOT_FOUND" } else { "E_URL_PORT" },
        ),
        ("gu11-port-0", format!("git ssh://{u}@{h}:0{r}/ok.git\n").into_bytes(), "E_URL_PORT"),
        ("gu11-port-65536", format!("git ssh://{u}@{h}:65536{r}/ok.git\n").into_bytes(), "E_URL_PORT"),
        ("gu11-port-sign", format!("git ssh://{u}@{h}:+{p}{r}/ok.git\n").into_bytes(), "E_URL_PORT"),
        ("gu11-port-zero-pad", format!("git ssh://{u}@{h}:0{p}{r}/ok.git\n").into_bytes(), "E_URL_PORT"),
        ("gu11-port-empty", format!("git ssh://{u}@{h}:{r}/ok.git\n").into_bytes(), "E_URL_PORT"),
        (
            "gu11-sftp-port",
            e.sftp(&stamp, &art, sha, 0, "site").replace(&format!(":{p}/"), &format!(":{}/", be.port)).into_bytes(),
            "E_URL_PORT",
        ),
        ("gu11-wrong-user", format!("git ssh://nobody@{h}:{p}{r}/ok.git\n").into_bytes(), "E_URL_USER"),
        ("gu11-no-user", format!("git ssh://{h}:{p}{r}/ok.git\n").into_bytes(), "E_URL_USER"),
        (
            "gu11-sftp-no-user",
            format!("sftp {stamp} sftp://{h}:{p}{art} sha256={sha} size=0 source=site\n").into_bytes(),
            "E_URL_USER",
        ),
        (
            "gu11-sftp-wrong-user",
            e.sftp(&stamp, &art, sha, 0, "site").replace(&format!("//{u}@"), "//adminbackup@").into_bytes(),
            "E_URL_USER",
        ),
        ("gu13-https-userinfo", format!("git https://user:token@{h}{r}/ok.git\n").into_bytes(), "E_URL_USERINFO"),
        ("gu13-https-user", format!("git https://user@{h}{r}/ok.git\n").into_bytes(), "E_URL_USERINFO"),
        ("gu13-ssh-password", format!("git ssh://{u}:secret@{h}:{p}{r}/ok.git\n").into_bytes(), "E_URL_USERINFO"),
        // GU-15 control characters and escapes in URLs
        ("gu15-pct-newline", e.repo("%0ahost=evil.example/r.git").into_bytes(), "E_URL_CHARSET"),
        ("gu15-pct-cr", e.repo("%0d/r.git").into_bytes(), "E_URL_CHARSET"),
        ("gu15-esc", e.repo("\x1b[2Jr.git").into_bytes(), "E_REQ_CTRL_CHAR"),
        ("gu15-query", e.repo("ok.git?x=1").into_bytes(), "E_URL_CHARSET"),
        ("gu15-fragment", e.repo("ok.git#frag").into_bytes(), "E_URL_CHARSET"),
        // path outside the enrolled git roots / export dir
        ("gu-outside-roots", e.git("/etc").into_bytes(), "E_REQ_PATH"),
        ("gu-other-root", e.git(&format!("{}/secret.git", be.git_root)).into_bytes(), "E_REQ_PATH"),
        ("gu-node-data", e.git(&format!("{}/git/secret.git", node.data_b)).into_bytes(), "E_REQ_PATH"),
        // AC-10 identity claimed in content
        ("ac10-client-field", b"dummy x client=host-b\n".to_vec(), "E_REQ_FIELD"),
        ("ac10-sftp-client-field", good_sftp(&stamp).replace("\n", " client=host-b\n").into_bytes(), "E_REQ_FIELD"),
        // NL-01/02/03/08/09/11 hostile text aimed at logs, terminals and mail
        (
            "nl02-forged-line",
            b"dummy x\n2026-01-01T00:00:00Z INFO client=host-b backup ok\n".to_vec(),
            "E_REQ_TOO_MANY",
        ),
        (
            "nl02-forged-json",
            b"dummy x\n{\"ts\":\"2026\",\"level\":\"info\",\"client\":\"host-b\",\"event\":\"request_done\"}\n"
                .to_vec(),
            "E_REQ_TOO_MANY",
        ),
        ("nl01-crlf-bcc", b"dummy x\r\nBcc: attacker@evil.example\r\n".to_vec(), "E_REQ_TOO_MANY"),
        ("nl01-bcc-in-word", b"dummy x\rBcc:attacker@evil.example\n".to_vec(), "E_REQ_CTRL_CHAR"),
        ("nl03-osc52", b"dummy \x1b]52;c;ZXZpbA==\x07\n".to_vec(), "E_REQ_CTRL_CHAR"),
        ("nl03-csi", b"dummy \x1b[2J\x1b[1;1H\n".to_vec(), "E_REQ_CTRL_CHAR"),
        ("nl03-osc8", b"dummy \x1b]8;;http://evil.example\x07x\x1b]8;;\x07\n".to_vec(), "E_REQ_CTRL_CHAR"),
        ("nl03-c1-csi", b"dummy \xC2\x9B2J\n".to_vec(), "E_REQ_CHARSET"),
        ("nl03-del", b"dummy x\x7f\n".to_vec(), "E_REQ_CTRL_CHAR"),
        ("nl08-bidi", "dummy ok\u{202e}deliaf\n".as_bytes().to_vec(), "E_REQ_CHARSET"),
        ("nl09-encoded-word", b"dummy =?utf-8?b?DQpCY2M6IHhAZXZpbA==?=\n".to_vec(), "E_REQ_NAME"),
        ("nl09-long", format!("dummy {}\n", "S".repeat(2000)).into_bytes(), "E_REQ_NAME"),
        ("nl11-html", b"dummy <img/src=x/onerror=alert(1)>\n".to_vec(), "E_REQ_NAME"),
    ];
    // RE-05 log flood: many invalid requests, each one event of bounded size.
    let mut cases: Vec<Case> = cases.into_iter().map(|(id, d, code)| (id.to_owned(), d, code)).collect();
    for i in 0..60 {
        cases.push((
            format!("re05-flood-{i:02}"),
            format!("dummy  {}\x1b[2J\n", "x".repeat(3000)).into_bytes(),
            "E_REQ_CTRL_CHAR",
        ));
    }
    cases
}

/// Requests of the table's classes that must end in F: (id, content, the
/// value stored).
const ACCEPTED: &[(&str, &[u8], &str)] = &[
    // RP-02: a terminating CRLF is accepted, the CR stripped.
    ("rp02-crlf", b"dummy crlf\r\n", "dummy crlf"),
];

case_classes! {
    run rejected;
    /// RP-01: NUL bytes.
    rp01_nul_bytes: ["rp01-"];
    /// RP-02: carriage returns anywhere but before the final LF.
    rp02_carriage_returns: ["rp02-"];
    /// RP-03: over-long lines and URLs, no final LF, empty files.
    rp03_overlong_or_unterminated_lines: ["rp03-"];
    /// RP-04: more than one line in a request file.
    rp04_many_lines: ["rp04-"];
    /// RP-05: deviations from the grammar (case, spacing, fields, keys).
    rp05_grammar_deviations: ["rp05-"];
    /// RP-06: byte-order marks, invalid UTF-8, UTF-16.
    rp06_encodings: ["rp06-"];
    /// RP-07: non-ASCII, confusable and non-canonical hosts.
    rp07_confusable_hosts: ["rp07-"];
    /// RP-08: bidi controls in names.
    rp08_bidi_in_names: ["rp08-"];
    /// RP-09: traversal and odd shapes in storage names.
    rp09_traversal_in_storage_names: ["rp09-"];
    /// RP-10: timestamps out of shape or out of the accepted window.
    rp10_timestamps: ["rp10-"];
    /// RP-11: digest and size fields.
    rp11_digest_and_size_fields: ["rp11-"];
    /// GU-01/GU-02: git remote helpers (`ext::`, `fd::`, …).
    gu01_gu02_remote_helpers: ["gu01-", "gu02-"];
    /// GU-03: local paths, scp-like and other schemes.
    gu03_local_paths_and_other_schemes: ["gu03-"];
    /// GU-04/GU-05: option injection into git and ssh.
    gu04_gu05_option_injection: ["gu04-", "gu05-"];
    /// GU-07: confused deputy: another client's host, loopback, the node.
    gu07_confused_deputy_hosts: ["gu07-"];
    /// GU-11/GU-13: ports, users and userinfo other than enrolled.
    gu11_gu13_ports_users_userinfo: ["gu11-", "gu13-"];
    /// GU-15: control characters and escapes in URLs.
    gu15_url_escapes: ["gu15-"];
    /// Paths outside the enrolled git roots and export directory.
    gu_paths_outside_the_enrolled_roots: ["gu-"];
    /// AC-10: another client's identity claimed in the content.
    ac10_identity_claimed_in_content: ["ac10-"];
    /// NL-01/02/03/08/09/11: text aimed at logs, terminals and mail.
    nl_text_aimed_at_logs_terminals_and_mail: ["nl"];
    /// RE-05: a flood of invalid requests is one event each and one digest.
    re05_log_flood: ["re05-"];
}

/// Node `backup1` mailing through a real SMTP server, A with a repository
/// `ok`, B with a mirrored secret.
fn fleet(test: &str) -> Option<Fleet> {
    let f = Fleet::start(test, Plan { mail: true, b: BHolds::Mirror, ..Plan::default() })?;
    let _ = f.a.repo("ok");
    Some(f)
}

/// Push the class's cases in one push, scan once, check each and what
/// every sink shows.
fn rejected(test: &str, prefixes: &[&str]) -> Option<Fleet> {
    let f = fleet(test)?;
    let node = NodeAt {
        addr: f.node.sshd.addr().to_string(),
        port: f.node.sshd.port(),
        data_b: f.node.data("host-b").display().to_string(),
    };
    let cases: Vec<Case> = table(&Ep::of(&f.a), &Ep::of(&f.b), &node, &now_stamp())
        .into_iter()
        .filter(|c| in_class(&c.0, prefixes))
        .collect();
    let accepted: Vec<_> = ACCEPTED.iter().filter(|c| in_class(c.0, prefixes)).collect();
    assert!(!cases.is_empty(), "{test}: no case in the table");
    let mut files: Vec<(String, Vec<u8>)> = cases.iter().map(|(id, d, _)| rq(id, d)).collect();
    files.extend(accepted.iter().map(|(id, d, _)| rq(id, d)));
    assert!(files.len() < 256, "one push holds at most 256 request files");
    let before = events(&f.node).len();
    f.q.send(&files);
    scan(&f.node, "host-a");

    for (id, _, code) in &cases {
        assert_failed(&f.node, "host-a", id, code);
    }
    for (id, _, stored) in &accepted {
        assert_done(&f.node, "host-a", id);
        let done = events(&f.node).into_iter().find(|e| e["request"] == *id && e["event"] == "request_done");
        assert_eq!(done.unwrap()["detail"], *stored, "{id}: the value stored");
    }
    // RE-05: one event per rejected request, no more.
    let new_events = events(&f.node).len() - before;
    assert!(new_events <= files.len() + 3, "{new_events} events for {} requests", files.len());
    f.guard.check(test);

    // NL: every sink stays one line of printable ASCII.
    assert_sinks_printable(&f);
    let codes: Vec<&str> = cases.iter().map(|c| c.2).collect();
    assert_mails_clean(&f, &codes);
    Some(f)
}

/// The journal, every `.why` and what `ferry-node` shows are printable.
fn assert_sinks_printable(f: &Fleet) {
    assert_journal_clean(&f.node);
    for args in [
        vec!["events", "--last", "1000"],
        vec!["list"],
        vec!["--json", "list"],
        vec!["find", "--client", "host-a"],
        vec!["events", "--client", "host-a"],
    ] {
        let out = run(f.node.cmd().args(&args));
        assert!(out.status.success(), "ferry-node {args:?}: {}", text(&out));
        assert_printable(&format!("ferry-node {args:?}"), &out.stdout);
        assert_printable(&format!("ferry-node {args:?} (stderr)"), &out.stderr);
    }
}

/// The administrators got the failures in at most three mails, with the
/// configured recipients only, no forged header, no client text in the
/// subject, and every reason named.
fn assert_mails_clean(f: &Fleet, codes: &[&str]) {
    let Some(smtp) = &f.smtp else {
        return;
    };
    let mails = smtp.wait_for(1, Duration::from_secs(30));
    // RE-05: a flood of rejections is a digest, not a mail per request.
    assert!(mails.len() <= 3, "{} mails for one scan", mails.len());
    for m in &mails {
        // SMTP lines end in CRLF; nothing else may be a control byte.
        let raw = String::from_utf8_lossy(&m.raw).replace("\r\n", "\n");
        assert_printable("raw mail", raw.as_bytes());
        let names: Vec<String> = m.headers.iter().map(|(k, _)| k.to_ascii_lowercase()).collect();
        assert!(!names.iter().any(|n| n == "bcc" || n == "cc"), "injected header: {names:?}");
        assert_eq!(names.iter().filter(|n| *n == "to").count(), 1, "{names:?}");
        assert_eq!(m.envelope_to, vec!["admin@node.example".to_owned()], "recipients from the config only");
        assert_eq!(m.header("To"), Some("admin@node.example"));
        assert!(m.subject.is_ascii() && m.subject.len() < 200, "{:?}", m.subject);
        for bad in ["evil", "Bcc", "attacker", "onerror", "deliaf", "\u{202e}", "=?utf-8?b?DQ"] {
            assert!(!m.subject.contains(bad), "client text in the subject: {:?}", m.subject);
        }
        assert!(!m.body.contains("\nBcc:"), "a forged header line in the body");
        assert!(codes.iter().any(|c| m.body.contains(c)), "the mail names the reasons: {}", m.body);
    }
    let bodies: String = mails.iter().map(|m| m.body.as_str()).collect();
    for c in codes {
        assert!(bodies.contains(c), "{c} is not named in the mails: {bodies}");
    }
    assert!(!mails.is_empty(), "request failures are mailed to the administrators");
}

/// RP-12: the same id again with other content is a conflict; the first
/// stays as it was processed and nothing new runs; the identical re-push
/// of a finished id is a silent no-op.
#[test]
fn rp12_same_id_with_other_content_is_a_conflict() {
    let Some(f) = fleet("rp12_same_id") else {
        return;
    };
    let (node, q) = (&f.node, &f.q);
    q.send(&[rq("rp12-same-id", "dummy first\n")]);
    scan(node, "host-a");
    assert_done(node, "host-a", "rp12-same-id");
    q.send(&[rq("rp12-same-id", "dummy second\n")]);
    scan(node, "host-a");
    let conflicts: Vec<_> = events(node)
        .into_iter()
        .filter(|e| e["event"] == "request_conflict" && e["request"] == "rp12-same-id")
        .collect();
    assert_eq!(conflicts.len(), 1, "one conflict event: {conflicts:?}");
    assert_eq!(conflicts[0]["reason"], "E_REQ_CONFLICT");
    assert_eq!(fs::read_to_string(node.pool("host-a").join("Frp12-same-id")).unwrap(), "dummy first\n");
    let runs =
        events(node).into_iter().filter(|e| e["event"] == "request_done" && e["request"] == "rp12-same-id").count();
    assert_eq!(runs, 1, "the conflicting copy never ran");
    // The identical re-push of a finished id is a silent no-op.
    q.send(&[rq("rp12-same-id", "dummy first\n")]);
    scan(node, "host-a");
    assert_eq!(
        events(node).into_iter().filter(|e| e["event"] == "request_conflict" && e["request"] == "rp12-same-id").count(),
        1
    );
    assert_sinks_printable(&f);
    f.finish("rp12");
}

/// The table and the tests agree.
#[test]
fn every_case_is_in_exactly_one_class() {
    let ep = |n: u16| Ep {
        user: "root".into(),
        addr: format!("127.0.0.{n}"),
        port: 2200 + n,
        git_root: format!("/srv/host{n}/git"),
        export: format!("/srv/host{n}/export"),
    };
    let node = NodeAt { addr: "127.0.0.9".into(), port: 2209, data_b: "/srv/node/data/host-b".into() };
    let cases = table(&ep(1), &ep(2), &node, &now_stamp());
    let ids: Vec<&str> = cases.iter().map(|c| c.0.as_str()).chain(ACCEPTED.iter().map(|c| c.0)).collect();
    assert_classes_cover(&ids, CLASSES);
}
