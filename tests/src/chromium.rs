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
    chromium_load(url).unwrap_or_else(|e| panic!("chromium --dump-dom {url} failed: {e}"))
}

/// Loads `url` like [`chromium_dump_dom`], but a page Chromium refuses to
/// show is an answer, not a failure: `Err` carries Chromium's reason, e.g.
/// `net::ERR_INVALID_AUTH_CREDENTIALS` for an HTTP 401 (headless Chromium
/// shows no login prompt; credentials go in the URL,
/// `http://user:password@host/…`, which it sends when challenged).
/// Panics only if Chromium itself fails or outlives [`CHROMIUM_TIMEOUT`].
pub fn chromium_load(url: &str) -> Result<String, String> {
    let tmp = tempfile::Builder::new().prefix("ferry-chromium-").tempdir().expect("chromium temp dir");
    let mut cmd = chromium(tmp.path());
    cmd.arg("--dump-dom").arg(url);
    let out = run_with_timeout(&mut cmd, CHROMIUM_TIMEOUT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() && !out.stdout.is_empty() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    if out.status.success()
        && let Some(i) = stderr.find("Page load failed: ")
    {
        let reason = stderr[i + "Page load failed: ".len()..].lines().next().unwrap_or("").trim();
        return Err(reason.to_owned());
    }
    panic!("chromium --dump-dom {url} failed ({}); stderr tail:\n{}", out.status, tail(&stderr, 30));
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
