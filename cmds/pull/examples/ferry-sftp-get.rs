//! Download one file with Ferry's sftp module, for `bench/sftp.sh` and for
//! trying an enrolment by hand.
//!
//! ```text
//! ferry-sftp-get host=127.0.0.1 port=2201 user=ferry known_hosts=/n/kh alias=ferry-client-a \
//!     identity=/n/pull_key control_dir=/n/ctl remote=/export/x.tar.zst size=123 sha256=<hex> \
//!     dest_dir=/n/data dest_name=x.tar.zst [ssh=/usr/bin/ssh] [transport=child|mux] \
//!     [depth=32] [chunk=261120] [multiplex=1] [flush_us=0] [close=1] [timeout=7200] [idle=60]
//!     [min_rate=65536] [rate_window=60] [direct=1] [multiplex_max=268435456]
//! ```
//!
//! `close=1` (the default) stops the endpoint's ControlMaster before exiting,
//! so every run pays for its own connection, as `sftp` and `scp` do.
//! Prints `ok <bytes> <sha256> <ms>`; on failure the reason code and message
//! on stderr, exit status 1. `FERRY_LOG=debug` logs the phases' timings.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_pull::sftp::{self, DownloadJob, SftpEndpoint, Transport, Tuning};

fn main() {
    if std::env::var_os("FERRY_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_env("FERRY_LOG"))
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .init();
    }
    let args: HashMap<String, String> = std::env::args()
        .skip(1)
        .map(|a| match a.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => usage(&format!("not key=value: {a}")),
        })
        .collect();
    let get = |k: &str| args.get(k).cloned().unwrap_or_else(|| usage(&format!("missing {k}=")));
    let opt = |k: &str, d: &str| args.get(k).cloned().unwrap_or_else(|| d.to_owned());
    let num = |k: &str, d: &str| opt(k, d).parse::<u64>().unwrap_or_else(|_| usage(&format!("{k}= is not a number")));

    let ep = SftpEndpoint {
        ssh: PathBuf::from(opt("ssh", "/usr/bin/ssh")),
        host: get("host"),
        port: num("port", "22") as u16,
        user: get("user"),
        known_hosts: PathBuf::from(get("known_hosts")),
        host_key_alias: get("alias"),
        identity: PathBuf::from(get("identity")),
        control_dir: PathBuf::from(get("control_dir")),
        connect_timeout: Duration::from_secs(20),
    };
    let mut sha = [0u8; 32];
    hex::decode_to_slice(get("sha256"), &mut sha).unwrap_or_else(|_| usage("sha256= needs 64 hex digits"));
    let size = num("size", "0");
    let remote = get("remote");
    let dest_dir = PathBuf::from(get("dest_dir"));
    let dest_name = get("dest_name");
    let tuning = Tuning {
        transport: match opt("transport", "child").as_str() {
            "child" => Transport::OwnChild,
            "mux" => Transport::OpensshMux,
            t => usage(&format!("unknown transport {t}")),
        },
        depth: num("depth", &sftp::DEFAULT_DEPTH.to_string()) as usize,
        chunk: num("chunk", &sftp::MAX_READ.to_string()) as u32,
        multiplex: num("multiplex", "1") != 0,
        flush_interval: Duration::from_micros(num("flush_us", "0")),
        writer_thread: num("thread", "1") != 0,
        pipe_size: num("pipe", "1048576") as usize,
        direct_io: num("direct", "1") != 0,
        multiplex_max: num("multiplex_max", &sftp::MULTIPLEX_MAX.to_string()),
    };
    let job = DownloadJob {
        endpoint: &ep,
        remote_path: &remote,
        expected_size: size,
        expected_sha256: sha,
        max_bytes: size,
        dest_dir: Path::new(&dest_dir),
        dest_name: &dest_name,
        timeout: Duration::from_secs(num("timeout", "7200")),
        idle_timeout: Duration::from_secs(num("idle", "60")),
        min_rate: Some(sftp::MinRate {
            bytes_per_sec: num("min_rate", "65536"),
            window: Duration::from_secs(num("rate_window", "60")),
        }),
    };
    let result = sftp::download_tuned(&job, &tuning);
    if num("close", "1") != 0 {
        let _ = sftp::close_master(&ep);
    }
    match result {
        Ok(d) => println!("ok {} {} {}", d.size, hex::encode(d.sha256), d.elapsed.as_millis()),
        Err(e) => {
            eprintln!("{}: {}", e.reason.code(), e.message);
            std::process::exit(1);
        }
    }
}

fn usage(msg: &str) -> ! {
    eprintln!("ferry-sftp-get: {msg}\nusage: see the doc comment of cmds/pull/examples/ferry-sftp-get.rs");
    std::process::exit(2);
}
