//! What the client's sftp server serves (SF): paths outside the export
//! directory, files that are no regular files, sizes and digests that lie,
//! conflicting artifacts, and a client sftp server that answers garbage,
//! huge frames, escapes or nothing; and the node's pull key on the client
//! (SF-10), a read-only window on the export directory.
//!
//! Each failed download must leave nothing on the node: no artifact, no
//! temporary file.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ferry_tests::fleet::{Node, ok, run, text};
use ferry_tests::{hash_tree, sha256_bytes, ssh_cmd};

use super::kit::{
    Ep, Fleet, Plan, assert_classes_cover, assert_done, assert_failed, canary, case_classes, hostile_gate, in_class,
    next_year, noise, now_stamp, restore_gate, rq, scan, why,
};

/// Node `backup1`; host-a may store artifacts of up to 8M and its jobs
/// get 8 s.
pub(super) fn fleet(test: &str) -> Option<Fleet> {
    Fleet::start(test, Plan { a_section: "max-artifact = 8M\njob-timeout = 8s\n", ..Plan::default() })
}

/// Write `data` at `rel` in host-a's export directory `ex` (`x` as the
/// node sees it); returns its path in a request, digest and size.
pub(super) fn put(ex: &Path, x: &str, rel: &str, data: &[u8]) -> (String, String, u64) {
    let p = ex.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, data).unwrap();
    (format!("{x}/{rel}"), sha256_bytes(data), data.len() as u64)
}

/// Nothing of a failed download stays: no artifact of source `s`, no
/// temporary file anywhere in host-a's data.
pub(super) fn assert_no_partial_download(node: &Node) {
    assert!(!node.data("host-a").join("s").exists(), "no failed download left anything");
    // Without a download stored there is no data directory at all.
    let mut stack: Vec<_> = Some(node.data("host-a")).into_iter().filter(|d| d.exists()).collect();
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            assert!(!n.starts_with(".tmp"), "temporary file left: {}", e.path().display());
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
}

/// What host-a's export directory serves the cases.
const GOOD: (usize, u64) = (100, 7);
const C1: &[u8] = b"first version\n";
const C2: &[u8] = b"other version!\n";

/// The files the table's cases name, written into export directory `ex`:
/// a good file, a symlink, a fifo, a directory, a sparse 9 MiB file and
/// two versions of one artifact.
fn serve(ex: &Path, x: &str) {
    put(ex, x, "files/good.bin", &noise(GOOD.0, GOOD.1));
    symlink("/etc/passwd", ex.join("files/link")).unwrap();
    ok(Command::new("mkfifo").arg(ex.join("files/fifo")));
    fs::create_dir_all(ex.join("files/adir")).unwrap();
    fs::File::create(ex.join("files/sparse.bin")).unwrap().set_len(9 << 20).unwrap();
    put(ex, x, "files/c1.bin", C1);
    put(ex, x, "files/c2.bin", C2);
}

/// (id, request line, expected reason or "F").
type Case = (&'static str, String, &'static str);

/// Every SF request of host-a (`e`, export `x` = `e.export`) with B's
/// export at `b_export`.
fn table(e: &Ep, b_export: &str, stamp: &str) -> Vec<Case> {
    let stamp = stamp.to_owned();
    let x = e.export.clone();
    let file = |rel: &str, data: &[u8]| (format!("{x}/{rel}"), sha256_bytes(data), data.len() as u64);
    let (good_path, good_sha, _) = file("files/good.bin", &noise(GOOD.0, GOOD.1));
    let sparse = Path::new(&x).join("files/sparse.bin");
    let (c1_path, c1_sha, c1_len) = file("files/c1.bin", C1);
    let (c2_path, c2_sha, c2_len) = file("files/c2.bin", C2);
    let zeros = "0".repeat(64);
    let empty_sha = sha256_bytes(b"");
    let sf: Vec<Case> = vec![
        ("sf-ok", e.sftp(&stamp, &good_path, &good_sha, 100, "good"), "F"),
        ("sf03-dotdot", e.sftp(&stamp, &format!("{x}/../../../etc/passwd"), &good_sha, 100, "s"), "E_REQ_PATH"),
        ("sf03-inner-dotdot", e.sftp(&stamp, &format!("{x}/files/../../x"), &good_sha, 100, "s"), "E_REQ_PATH"),
        ("sf03-outside", e.sftp(&stamp, "/etc/passwd", &good_sha, 100, "s"), "E_REQ_PATH"),
        ("sf03-sibling", e.sftp(&stamp, &format!("{x}x/files/good.bin"), &good_sha, 100, "s"), "E_REQ_PATH"),
        ("sf03-export-itself", e.sftp(&stamp, &x, &good_sha, 100, "s"), "E_REQ_PATH"),
        ("sf03-double-slash", e.sftp(&stamp, &format!("{x}//files/good.bin"), &good_sha, 100, "s"), "E_REQ_PATH"),
        ("sf03-tilde", e.sftp(&stamp, "/~root/.ssh/id_rsa", &good_sha, 100, "s"), "E_REQ_NAME"),
        ("sf03-b-export", e.sftp(&stamp, &format!("{}/x.tar.zst", b_export), &good_sha, 100, "s"), "E_REQ_PATH"),
        ("sf04-symlink", e.sftp(&stamp, &format!("{x}/files/link"), &good_sha, 100, "s"), "E_FETCH_NOT_REGULAR"),
        ("sf04-fifo", e.sftp(&stamp, &format!("{x}/files/fifo"), &good_sha, 100, "s"), "E_FETCH_NOT_REGULAR"),
        ("sf04-dir", e.sftp(&stamp, &format!("{x}/files/adir"), &good_sha, 100, "s"), "E_FETCH_NOT_REGULAR"),
        ("sf-missing", e.sftp(&stamp, &format!("{x}/files/nope.tar.zst"), &good_sha, 100, "s"), "E_FETCH_NOT_FOUND"),
        ("sf01-declared-smaller", e.sftp(&stamp, &good_path, &good_sha, 10, "s"), "E_FETCH_LIMIT"),
        ("sf01-declared-larger", e.sftp(&stamp, &good_path, &good_sha, 200, "s"), "E_FETCH_SIZE_MISMATCH"),
        ("sf01-declared-empty", e.sftp(&stamp, &good_path, &empty_sha, 0, "s"), "E_FETCH_LIMIT"),
        ("sf06-digest", e.sftp(&stamp, &good_path, &zeros, 100, "s"), "E_FETCH_DIGEST_MISMATCH"),
        ("sf-max-artifact", e.sftp(&stamp, &sparse.display().to_string(), &zeros, 9 << 20, "s"), "E_FETCH_LIMIT"),
        ("sf-max-artifact-lying", e.sftp(&stamp, &sparse.display().to_string(), &zeros, 100, "s"), "E_FETCH_LIMIT"),
        ("sf-reserved-source", e.sftp(&stamp, &good_path, &good_sha, 100, "git"), "E_REQ_NAME_RESERVED"),
        ("sf-future", e.sftp(&next_year(&stamp), &good_path, &good_sha, 100, "s"), "E_REQ_TIMESTAMP"),
        ("sf12-conf-a", e.sftp(&stamp, &c1_path, &c1_sha, c1_len, "conf"), "F"),
        ("sf12-conf-b", e.sftp(&stamp, &c2_path, &c2_sha, c2_len, "conf"), "E_REQ_CONFLICT"),
        ("sf12-conf-c", e.sftp(&stamp, &c1_path, &c1_sha, c1_len, "conf"), "F"),
    ];
    sf
}

case_classes! {
    run downloaded;
    /// SF-01: declared sizes that lie, and artifacts over `max-artifact`.
    sf01_sizes_and_the_artifact_limit: ["sf01-", "sf-max-artifact"];
    /// SF-03: paths outside the export directory.
    sf03_paths_outside_the_export: ["sf03-"];
    /// SF-04: symlinks, fifos, directories and missing files.
    sf04_no_regular_file: ["sf04-", "sf-missing"];
    /// SF-06: a digest that does not match, beside a good download.
    sf06_digest_mismatch: ["sf06-", "sf-ok"];
    /// A reserved source name and a stamp a year ahead.
    sf_reserved_source_and_future_stamp: ["sf-reserved", "sf-future"];
    /// SF-12: one source and stamp with another digest is a conflict.
    sf12_conflicting_artifacts: ["sf12-conf"] then the_first_artifact_stays;
}

/// Download the class's cases in one push and one scan; check each.
fn downloaded(test: &str, prefixes: &[&str]) -> Option<Fleet> {
    let f = fleet(test)?;
    let e = Ep::of(&f.a);
    serve(&f.a.base.join("export"), &e.export);
    let b_export = f.b.base.join("export").display().to_string();
    let sf: Vec<Case> = table(&e, &b_export, &now_stamp()).into_iter().filter(|c| in_class(c.0, prefixes)).collect();
    f.q.send(&sf.iter().map(|(id, line, _)| rq(id, line)).collect::<Vec<_>>());
    scan(&f.node, "host-a");
    let node = &f.node;

    for (id, _, want) in &sf {
        if *want == "F" {
            assert_done(node, "host-a", id);
        } else {
            assert_failed(node, "host-a", id, want);
        }
    }
    assert_no_partial_download(node);
    f.guard.check("downloads");
    Some(f)
}

/// The conflict left the first artifact as it was, the identical
/// duplicate stored nothing new.
fn the_first_artifact_stays(f: &Fleet) {
    let node = &f.node;
    let c1_sha = sha256_bytes(C1);

    // artifact as it was, the identical duplicate stored nothing new.
    let conf: serde_json::Value =
        serde_json::from_str(&ok(node.cmd().args(["--json", "find", "--client", "host-a", "--source", "conf"])))
            .unwrap();
    assert_eq!(conf.as_array().unwrap().len(), 1, "{conf}");
    assert_eq!(conf[0]["sha256"], c1_sha.as_str());
}

/// The table and the tests agree.
#[test]
fn every_download_case_is_in_exactly_one_class() {
    let e = Ep {
        user: "root".into(),
        addr: "127.0.0.1".into(),
        port: 2201,
        git_root: "/srv/a/git".into(),
        export: "/srv/a/export".into(),
    };
    let ids: Vec<&str> = table(&e, "/srv/b/export", &now_stamp()).iter().map(|c| c.0).collect();
    assert_classes_cover(&ids, CLASSES);
}

/// A client sftp server whose answer is `script`: the request for a file
/// of its own (`src`) ends in `code`, stores nothing, and the guard holds.
/// Returns how long the scan took.
fn served_by(f: &Fleet, id: &str, src: &str, script: &str, code: &str) -> Duration {
    let (node, a, q) = (&f.node, &f.a, &f.q);
    let e = Ep::of(a);
    let old = hostile_gate(node, a, script);
    let (p, s, l) =
        put(&a.base.join("export"), &e.export, &format!("files/{src}.bin"), format!("{id} case\n").as_bytes());
    q.send(&[rq(id, e.sftp(&now_stamp(), &p, &s, l, src))]);
    let t0 = Instant::now();
    scan(node, "host-a");
    let took = t0.elapsed();
    restore_gate(node, a, old);
    eprintln!("{id}: {:?}", why(node, "host-a", id));
    assert_failed(node, "host-a", id, code);
    assert!(!node.data("host-a").join(src).exists(), "{src}: nothing stored");
    f.guard.check("hostile sftp server");
    took
}

/// SF: a server that answers zeros (a zero-length packet) or a huge
/// frame: both refused by the frame guard.
#[test]
fn sf_frames_of_zero_or_huge_length() {
    let Some(f) = fleet("sf_frames") else {
        return;
    };
    served_by(&f, "sf-garbage-zeros", "g1", "head -c 300000 /dev/zero", "E_FETCH_LIMIT");
    let took = served_by(
        &f,
        "sf-huge-frame",
        "g2",
        "printf '\\377\\377\\377\\377\\033[2J'\nexec cat /dev/zero",
        "E_FETCH_LIMIT",
    );
    assert!(took < Duration::from_secs(20), "{took:?}");
    f.finish("sf frames");
}

/// NL-03: a server writing escapes and forged log lines on stderr: the
/// job fails and the journal stays clean.
#[test]
fn nl03_sftp_server_stderr() {
    let Some(f) = fleet("nl03_sftp_stderr") else {
        return;
    };
    served_by(
        &f,
        "nl03-sftp-stderr",
        "g4",
        "printf '\\033]52;c;ZXZpbA==\\007\\033[2J\\r\\nINFO client=host-b ok\\302\\233\\342\\200\\256x\\n' >&2\nexit 1",
        "E_FETCH_FAILED",
    );
    f.finish("nl03 sftp stderr");
}

/// SF-02: a server that never answers is cut off by the job timeout.
#[test]
fn sf02_a_stalled_sftp_server_times_out() {
    let Some(f) = fleet("sf02_stall") else {
        return;
    };
    let took = served_by(&f, "sf02-stall", "g3", "exec sleep 30", "E_FETCH_TIMEOUT");
    assert!(took < Duration::from_secs(20), "the stall was cut off after {took:?}");
    f.finish("sf02");
}

/// SF-10: the node's pull key on the client is a read-only window on
/// the export directory and the exported repositories, nothing else.
#[test]
fn sf10_the_pull_key_is_a_read_only_window() {
    let Some(f) = fleet("sf10_pull_key") else {
        return;
    };
    let (node, a, b, td) = (&f.node, &f.a, &f.b, &f.td);
    let ex = a.base.join("export");
    let x = Ep::of(a).export;
    serve(&ex, &x);
    // SF-10: the node's pull key on the client is a read-only window on
    // the export directory and the exported repositories, nothing else.
    let akh = td.join("a_known_hosts");
    a.sshd.write_known_hosts(&akh);
    let pull = node.srv().join("keys/host-a/id_ed25519");
    let c = canary("sf10");
    for cmd in [
        format!("touch {}", c.display()),
        "id".to_owned(),
        format!("git-receive-pack '{}/x.git'", a.git_root.display()),
        format!("git-upload-pack '{}/secret.git'", b.git_root.display()),
        "git-upload-pack '/etc'".to_owned(),
        format!("git-upload-pack '{}/../../x.git'", a.git_root.display()),
        "git-upload-pack '--help'".to_owned(),
        "scp -t /tmp".to_owned(),
        format!("internal-sftp; touch {}", c.display()),
    ] {
        let out = run(ssh_cmd(&pull, &akh, &a.sshd).arg(&cmd));
        assert!(!out.status.success(), "sf10 {cmd:?}: allowed: {}", text(&out));
        assert!(text(&out).contains("ferry gate"), "sf10 {cmd:?}: {}", text(&out));
    }
    let export_before = hash_tree(&ex);
    for (what, batch) in [
        ("put", format!("put /etc/hostname {x}/files/planted\n")),
        ("rm", format!("rm {x}/files/good.bin\n")),
        ("rename", format!("rename {x}/files/good.bin {x}/files/moved\n")),
        ("mkdir", format!("mkdir {x}/newdir\n")),
        ("ls", format!("ls {x}/files\n")),
        ("symlink", format!("symlink /etc/passwd {x}/files/planted\n")),
    ] {
        let bf = td.join("sftp-batch");
        fs::write(&bf, batch).unwrap();
        let out =
            run(ferry_tests::sftp_cmd(&pull, &akh, &a.sshd).arg("-b").arg(&bf).arg(ferry_tests::sftp_dest(&a.sshd)));
        assert!(!out.status.success(), "sf10 sftp {what}: allowed: {}", text(&out));
    }
    assert_eq!(hash_tree(&ex), export_before, "sf10: the export directory is unchanged");
    f.finish("sf10");
}
