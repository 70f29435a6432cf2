//! Headless Debian Chromium as a real browser oracle: the DOM after
//! scripts ran, and screenshots.
//!
//! Each call uses a fresh profile (`--user-data-dir`) and a private HOME/XDG
//! directories in a temp dir (Chromium otherwise writes `~/.config/chromium`
//! and `~/.cache`), runs with `--no-sandbox` (required as root) and is
//! bounded by [`CHROMIUM_TIMEOUT`]; the temp dir is removed afterwards.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::process::{run_with_timeout, tail};

/// Debian's Chromium launcher.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// Bound for one Chromium run.
pub const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(120);

fn chromium(profile: &Path) -> Command {
    let mut cmd = Command::new(CHROMIUM);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
    ])
    .arg(format!("--user-data-dir={}", profile.join("profile").display()))
    .env("HOME", profile)
    .env("XDG_CONFIG_HOME", profile.join(".config"))
    .env("XDG_CACHE_HOME", profile.join(".cache"))
    .env("XDG_DATA_HOME", profile.join(".local/share"))
    .env_remove("DBUS_SESSION_BUS_ADDRESS")
    .current_dir(profile);
    cmd
}

/// Loads `url` in headless Chromium and returns the serialized DOM after
/// scripts ran (`--dump-dom`). Panics with Chromium's stderr tail if it
/// fails or outlives [`CHROMIUM_TIMEOUT`].
pub fn chromium_dump_dom(url: &str) -> String {
    let tmp = tempfile::Builder::new().prefix("ferry-chromium-").tempdir().expect("chromium temp dir");
    let mut cmd = chromium(tmp.path());
    cmd.arg("--dump-dom").arg(url);
    let out = run_with_timeout(&mut cmd, CHROMIUM_TIMEOUT);
    if !out.status.success() || out.stdout.is_empty() {
        panic!(
            "chromium --dump-dom {url} failed ({}); stderr tail:\n{}",
            out.status,
            tail(&String::from_utf8_lossy(&out.stderr), 30)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Loads `url` in headless Chromium (window 1280×1024) and writes a PNG
/// screenshot to `png_path`. Panics if Chromium fails or no file appears.
pub fn chromium_screenshot(url: &str, png_path: &Path) {
    let tmp = tempfile::Builder::new().prefix("ferry-chromium-").tempdir().expect("chromium temp dir");
    let png_abs = if png_path.is_absolute() {
        png_path.to_path_buf()
    } else {
        std::env::current_dir().expect("cwd").join(png_path)
    };
    let _ = std::fs::remove_file(&png_abs);
    let mut cmd = chromium(tmp.path());
    cmd.arg(format!("--screenshot={}", png_abs.display()))
        .arg("--window-size=1280,1024")
        .arg("--hide-scrollbars")
        .arg(url);
    let out = run_with_timeout(&mut cmd, CHROMIUM_TIMEOUT);
    if !out.status.success() || !png_abs.is_file() {
        panic!(
            "chromium --screenshot {url} failed ({}), {} exists: {}; stderr tail:\n{}",
            out.status,
            png_abs.display(),
            png_abs.is_file(),
            tail(&String::from_utf8_lossy(&out.stderr), 30)
        );
    }
}
