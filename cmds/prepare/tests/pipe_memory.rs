//! The pipe module streams: 200 MiB through it must not raise this
//! process's peak RSS anywhere near the stream's size.
//!
//! How it is measured: the pipe is read and hashed in *this* process (the
//! child is `head`), so the process's own high-water mark `VmHWM` from
//! `/proc/self/status` is the number that would grow if anything buffered
//! the stream. This file is its own test binary holding one test, so no
//! other test's allocations move the mark. `bench/pipe-memory.sh` does the
//! same for 4 GiB on the release build with `/usr/bin/time -v`.

use std::path::Path;

use ferry_prepare::{Context, ExportEndpoint, GitExportScheme, SourceKind, SourceSpec, prepare_source};
use ferry_request::Request;
use sha2::{Digest, Sha256};

const MIB: u64 = 1024 * 1024;

/// Peak resident set size of this process, in bytes.
fn vm_hwm() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM in /proc/self/status");
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

#[test]
fn a_200_mib_stream_keeps_memory_bounded() {
    if !ferry_tests::require("head") {
        return;
    }
    let td = ferry_tests::TestDir::new("pipe_memory");
    let endpoint = ExportEndpoint {
        address: "client.example".into(),
        port: 22,
        user: "ferry".into(),
        export_dir: td.join("export"),
        git_scheme: GitExportScheme::Ssh,
        git_port: 9418,
        git_roots: vec![],
        git_daemon_base: None,
    };
    let ctx = Context {
        client_name: "host-a",
        request_id: "20261122T010203Z-ab12cd34",
        endpoint: &endpoint,
        script_dir: None,
        git: Path::new("git"),
        timeout: std::time::Duration::from_secs(600),
    };
    let spec = SourceSpec::new(
        "zeros",
        SourceKind::Pipe { command: ["head", "-c", "200M", "/dev/zero"].map(String::from).to_vec() },
    );

    // The expected digest, computed before the mark is read.
    let mut h = Sha256::new();
    let chunk = vec![0u8; MIB as usize];
    for _ in 0..200 {
        h.update(&chunk);
    }
    let expected = hex::encode(h.finalize());
    drop(chunk);

    let before = vm_hwm();
    let reqs = prepare_source(&spec, &ctx, &|_: &Path| false).unwrap().requests;
    let after = vm_hwm();
    eprintln!("VmHWM before {} KiB, after {} KiB (200 MiB streamed)", before / 1024, after / 1024);

    let Request::Sftp(r) = &reqs[0] else { panic!("{reqs:?}") };
    assert_eq!(r.size, 200 * MIB);
    assert_eq!(r.sha256.as_str(), expected);
    assert_eq!(std::fs::metadata(r.url.path.as_str()).unwrap().len(), 200 * MIB);
    assert!(after < 64 * MIB, "peak RSS {} MiB is above the 64 MiB bound", after / MIB);
    assert!(after - before < 16 * MIB, "streaming raised the peak RSS by {} MiB", (after - before) / MIB);
}
