//! The files in deploy/ are versioned code: every command they schedule
//! exists, and the example configurations load (see the unit tests of the
//! client and node config modules).

use std::fs;
use std::path::Path;

use ferry_tests::ferry_bin;
use ferry_tests::fleet::run;

fn deploy() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Check that `ferry`/`ferry-node` accept the subcommand of a command line.
fn check_command(line: &str, origin: &str) -> usize {
    let words: Vec<&str> = line.split_whitespace().collect();
    let Some(i) = words.iter().position(|w| w.ends_with("/ferry") || w.ends_with("/ferry-node")) else { return 0 };
    let bin = if words[i].ends_with("/ferry-node") { "ferry-node" } else { "ferry" };
    let mut rest: Vec<&str> =
        words[i + 1..].iter().copied().take_while(|w| !w.starts_with(">>") && !w.starts_with("2>")).collect();
    if rest.first() == Some(&"--config") {
        rest.drain(..2);
    }
    let mut args = rest;
    args.push("--help");
    let out = run(std::process::Command::new(ferry_bin(bin)).args(&args));
    assert!(
        out.status.success(),
        "{origin}: `{bin} {}` is not a valid command: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    1
}

#[test]
fn cron_lines_and_systemd_units_run_existing_commands() {
    let mut n = 0;
    for line in fs::read_to_string(deploy().join("crontab")).unwrap().lines() {
        if !line.trim_start().starts_with('#') {
            n += check_command(line, "deploy/crontab");
        }
    }
    for e in fs::read_dir(deploy().join("systemd")).unwrap().flatten() {
        let text = fs::read_to_string(e.path()).unwrap();
        for line in text.lines().filter_map(|l| l.strip_prefix("ExecStart=")) {
            n += check_command(line, &e.file_name().to_string_lossy());
        }
        // Every timer and path unit starts a service that exists.
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(base) = name.strip_suffix(".timer").or_else(|| name.strip_suffix(".path")) {
            let unit = text
                .lines()
                .find_map(|l| l.strip_prefix("Unit="))
                .map(str::to_owned)
                .unwrap_or(format!("{base}.service"));
            assert!(deploy().join("systemd").join(&unit).exists(), "{name} starts missing {unit}");
        }
    }
    assert!(n >= 10, "only {n} commands found");
}

#[test]
fn shipped_cgitrc_turns_off_what_serves_client_content() {
    let rc = fs::read_to_string(deploy().join("cgitrc")).unwrap();
    for must in [
        "enable-html-serving=0",
        "enable-filter-overrides=0",
        "enable-git-config=0",
        "enable-http-clone=0",
        "snapshots=",
    ] {
        assert!(rc.lines().any(|l| l.trim() == must), "cgitrc lacks {must}");
    }
    let scan = rc.lines().position(|l| l.starts_with("scan-path=")).unwrap();
    let html = rc.lines().position(|l| l.starts_with("enable-git-config=")).unwrap();
    assert!(html < scan, "settings must come before scan-path");
}
