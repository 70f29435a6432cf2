//! The pipe module, pre/post commands, retention and the export directory's
//! write discipline.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use ferry_prepare::{SourceKind, SourceSpec, prepare_source};
use ferry_request::Stamp;

use crate::util::{CLIENT, Env, REQUEST_ID, argv, artifact, dir_names};

fn pipe(name: &str, cmd: &[&str]) -> SourceSpec {
    SourceSpec::new(name, SourceKind::Pipe { command: argv(cmd) })
}

/// `KEY=VALUE` lines of a file written by `env`.
fn env_of(path: &Path) -> Vec<(String, String)> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect()
}

fn get<'a>(env: &'a [(String, String)], k: &str) -> Option<&'a str> {
    env.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str())
}

#[test]
fn pipe_stores_the_commands_bytes_verbatim() {
    let env = Env::new("pipe_bytes");
    let spec = pipe("stream", &["/bin/sh", "-c", "printf 'hello\\000world\\n\\377'"]);
    let r = env.prepare(&spec).unwrap();
    assert_eq!(fs::read(artifact(&r)).unwrap(), b"hello\0world\n\xff");
    assert_eq!(r.size, 13);
    // Directories are created 0750, the artifact is not world-readable.
    for d in [&env.endpoint.export_dir, &env.source_dir("stream")] {
        assert_eq!(fs::metadata(d).unwrap().permissions().mode() & 0o7777, 0o750, "{}", d.display());
    }
    assert_eq!(fs::metadata(artifact(&r)).unwrap().permissions().mode() & 0o007, 0);
    // The stamp is the current UTC second.
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((now - r.stamp.to_unix()).abs() < 60, "{}", r.stamp);
    assert_eq!(dir_names(&env.source_dir("stream")), [format!("{}.pipe", r.stamp)]);
}

#[test]
fn two_runs_in_one_second_get_distinct_stamps() {
    let env = Env::new("pipe_twice");
    let spec = pipe("twice", &["/bin/echo", "x"]);
    let a = env.prepare(&spec).unwrap();
    let b = env.prepare(&spec).unwrap();
    assert!(b.stamp > a.stamp, "{} then {}", a.stamp, b.stamp);
    assert!(artifact(&a).exists() && artifact(&b).exists());
}

#[test]
fn concurrent_runs_of_one_source_are_serialised() {
    let env = Env::new("pipe_concurrent");
    let spec = pipe("busy", &["/bin/sh", "-c", "sleep 0.3; echo $FERRY_SOURCE"]);
    let stamps: Vec<Stamp> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3).map(|_| s.spawn(|| env.prepare(&spec).unwrap().stamp)).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut uniq = stamps.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), 3, "{stamps:?}");
    assert_eq!(dir_names(&env.source_dir("busy")).len(), 3);
}

#[test]
fn a_failing_command_fails_the_request_and_leaves_nothing() {
    let env = Env::new("pipe_fail");
    let spec = pipe("broken", &["/bin/sh", "-c", "echo partial output; echo 'disk \u{1b}[2J on fire' >&2; exit 3"]);
    let e = env.prepare(&spec).unwrap_err();
    let msg = e.to_string();
    assert_eq!(e.code(), "E_PREPARE", "{msg}");
    assert!(msg.contains("exit 3"), "{msg}");
    assert!(msg.contains("disk \\x1B[2J on fire"), "{msg}");
    assert!(dir_names(&env.source_dir("broken")).is_empty());

    let e = env.prepare(&pipe("missing", &["/nonexistent/dumper"])).unwrap_err();
    assert!(e.to_string().contains("cannot start"), "{e}");
    assert!(dir_names(&env.source_dir("missing")).is_empty());
}

#[test]
fn the_timeout_kills_the_command_and_leaves_nothing() {
    let env = Env::new("pipe_timeout");
    let mut spec = pipe("slow", &["/bin/sh", "-c", "echo started; sleep 30"]);
    spec.timeout = Duration::from_millis(500);
    let t = Instant::now();
    let e = env.prepare(&spec).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(e.to_string().contains("deadline"), "{e}");
    assert!(dir_names(&env.source_dir("slow")).is_empty());
}

#[test]
fn stale_temporary_files_are_removed() {
    let env = Env::new("pipe_stale");
    let dir = env.source_dir("s");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(".tmp-20200101T000000Z-1-0"), b"crashed run").unwrap();
    let r = env.prepare(&pipe("s", &["/bin/echo", "ok"])).unwrap();
    assert_eq!(dir_names(&dir), [format!("{}.pipe", r.stamp)]);
}

#[test]
fn invalid_configuration_runs_nothing() {
    let env = Env::new("pipe_config");
    let marker = env.td.join("ran");
    let mut spec = pipe("bad name", &["/usr/bin/touch", marker.to_str().unwrap()]);
    spec.pre = Some(argv(&["/usr/bin/touch", marker.to_str().unwrap()]));
    let e = env.prepare(&spec).unwrap_err();
    assert_eq!(e.code(), "E_CONFIG");
    assert!(!marker.exists());
    assert!(!env.endpoint.export_dir.exists());

    let mut bad_export = Env::new("pipe_config2");
    bad_export.endpoint.export_dir = bad_export.td.join("my export");
    let e = bad_export.prepare(&pipe("ok", &["/bin/true"])).unwrap_err();
    assert!(e.to_string().contains("set export.dir"), "{e}");

    // The data modules are not ad-hoc modules.
    let e = ferry_prepare::prepare("pipe", "x", &env.ctx()).unwrap_err();
    assert!(e.to_string().contains("[[source]]"), "{e}");
}

#[test]
fn pre_failure_fails_with_its_stderr_and_skips_the_dump() {
    let env = Env::new("hook_pre_fail");
    let dumped = env.td.join("dumped");
    let post_env = env.td.join("post.env");
    let mut spec = pipe("app", &["/bin/sh", "-c", &format!("touch {}; echo data", dumped.display())]);
    spec.pre = Some(argv(&["/bin/sh", "-c", "echo 'cannot stop app: \u{7}busy' >&2; exit 2"]));
    spec.post = Some(argv(&["/bin/sh", "-c", "env > \"$0\"", post_env.to_str().unwrap()]));
    let e = env.prepare(&spec).unwrap_err();
    let msg = e.to_string();
    assert_eq!(e.code(), "E_HOOK", "{msg}");
    assert!(msg.contains("pre command failed"), "{msg}");
    assert!(msg.contains("cannot stop app: \\x07busy"), "{msg}");
    assert!(msg.contains("exit 2"), "{msg}");
    assert!(!dumped.exists(), "the dump must not run after a failed pre");
    assert!(dir_names(&env.source_dir("app")).is_empty());
    // post still ran, told that the run failed and why.
    let pe = env_of(&post_env);
    assert_eq!(get(&pe, "FERRY_STATUS"), Some("failed"));
    assert!(get(&pe, "FERRY_ERROR").unwrap().contains("cannot stop app"), "{pe:?}");
    assert_eq!(get(&pe, "FERRY_ARTIFACT"), None);
}

#[test]
fn hooks_get_their_environment() {
    let env = Env::new("hook_env");
    let pre_env = env.td.join("pre.env");
    let post_env = env.td.join("post.env");
    let mut spec = pipe("app", &["/bin/echo", "payload"]);
    spec.pre = Some(argv(&["/bin/sh", "-c", "env > \"$0\"; pwd >> \"$0\"", pre_env.to_str().unwrap()]));
    spec.post = Some(argv(&["/bin/sh", "-c", "env > \"$0\"; test -f \"$FERRY_ARTIFACT\"", post_env.to_str().unwrap()]));
    let r = env.prepare(&spec).unwrap();

    let pre = env_of(&pre_env);
    let export = env.endpoint.export_dir.to_str().unwrap();
    for (k, v) in [
        ("FERRY_SOURCE", "app"),
        ("FERRY_MODULE", "pipe"),
        ("FERRY_REQUEST_ID", REQUEST_ID),
        ("FERRY_CLIENT", CLIENT),
        ("FERRY_EXPORT_DIR", export),
    ] {
        assert_eq!(get(&pre, k), Some(v), "{k} in {pre:?}");
    }
    assert_eq!(get(&pre, "FERRY_ARTIFACT"), None);
    assert_eq!(get(&pre, "CARGO_PKG_NAME"), None, "the environment is cleared");
    assert!(fs::read_to_string(&pre_env).unwrap().trim_end().ends_with("\n/"), "cwd is /");

    let post = env_of(&post_env);
    assert_eq!(get(&post, "FERRY_STATUS"), Some("ok"));
    assert_eq!(get(&post, "FERRY_ARTIFACT"), Some(r.url.path.as_str()));
    assert_eq!(get(&post, "FERRY_SHA256"), Some(r.sha256.as_str()));
    assert_eq!(get(&post, "FERRY_SIZE"), Some("8"));
    assert_eq!(get(&post, "FERRY_STAMP"), Some(r.stamp.as_str()));
    assert_eq!(get(&post, "FERRY_SOURCE"), Some("app"));
}

#[test]
fn post_failure_fails_the_request_and_removes_the_artifact() {
    let env = Env::new("hook_post_fail");
    let mut spec = pipe("app", &["/bin/echo", "payload"]);
    spec.post = Some(argv(&["/bin/sh", "-c", "echo 'could not restart app' >&2; exit 1"]));
    let e = env.prepare(&spec).unwrap_err();
    assert_eq!(e.code(), "E_HOOK");
    assert!(e.to_string().contains("post command failed"), "{e}");
    assert!(e.to_string().contains("could not restart app"), "{e}");
    assert!(dir_names(&env.source_dir("app")).is_empty());

    // A failed dump and a failed post: both reasons are reported.
    let mut spec = pipe("both", &["/bin/sh", "-c", "echo dump broke >&2; exit 4"]);
    spec.post = Some(argv(&["/bin/sh", "-c", "echo post broke too >&2; exit 5"]));
    let e = env.prepare(&spec).unwrap_err();
    let msg = e.to_string();
    assert_eq!(e.code(), "E_PREPARE", "{msg}");
    assert!(msg.contains("dump broke") && msg.contains("post broke too"), "{msg}");
}

#[test]
fn retention_keeps_guarded_artifacts() {
    let env = Env::new("retention");
    let dir = env.source_dir("db");
    fs::create_dir_all(&dir).unwrap();
    let old = SystemTime::now() - Duration::from_secs(24 * 3600);
    let mk = |secs: i64, ext: &str| {
        let p = dir.join(format!("{}.{ext}", Stamp::from_unix(secs)));
        fs::write(&p, b"old dump").unwrap();
        fs::File::options().write(true).open(&p).unwrap().set_modified(old).unwrap();
        p
    };
    let oldest = mk(1_600_000_000, "pipe");
    let guarded = mk(1_600_001_000, "pipe");
    let older = mk(1_600_002_000, "pgdump"); // another module once: still this source's
    let newer = mk(1_600_003_000, "pipe");
    let notes = dir.join("README");
    fs::write(&notes, b"admin's notes").unwrap();

    let mut spec = pipe("db", &["/bin/echo", "new"]);
    spec.keep = 2;
    let guard_path = guarded.clone();
    let reqs = prepare_source(&spec, &env.ctx(), &|p: &Path| p == guard_path).unwrap().requests;
    let r = env.check(&spec, reqs);
    // keep = 2: the new one and the newest old one; the guarded one stays
    // on top; the rest is gone.
    assert!(artifact(&r).exists());
    assert!(newer.exists());
    assert!(guarded.exists(), "a guarded artifact must never be deleted");
    assert!(!older.exists() && !oldest.exists());
    assert!(notes.exists(), "files that are not artifacts are never touched");

    // Once acknowledged (guard false), the next run deletes it.
    let r2 = env.prepare(&spec).unwrap();
    assert!(!guarded.exists());
    // The previous artifact is younger than the grace period: kept.
    assert!(artifact(&r).exists() && artifact(&r2).exists());
}
