//! The test's environment: CI detection, the skip-or-fail rule for missing
//! tools, test directories, loopback addresses and ports, and the location of
//! Ferry's own binaries.

use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use std::{env, fs};

/// True when running under CI: env `CI` is `true` (any case) or `1`.
pub fn in_ci() -> bool {
    env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// The Debian package that provides a tool `require` knows about.
fn package_of(tool: &str) -> &'static str {
    match tool {
        "sshd" => "openssh-server",
        "ssh" | "sftp" | "scp" | "ssh-keygen" => "openssh-client",
        "git" => "git",
        "postgres" | "postgresql" | "initdb" | "pg_ctl" | "pg_dump" => "postgresql",
        "psql" => "postgresql-client",
        "mariadb" | "mariadbd" | "mysqld" | "mariadb-install-db" => "mariadb-server",
        "mariadb-dump" | "mysqldump" => "mariadb-client",
        "smtp" | "aiosmtpd" => "python3-aiosmtpd",
        "python3" => "python3",
        "cgit" => "cgit (+ nginx-light, fcgiwrap)",
        "nginx" => "nginx-light",
        "fcgiwrap" => "fcgiwrap",
        "chromium" => "chromium",
        "setpriv" => "util-linux",
        "pgrep" => "procps",
        "restic" => "restic",
        _ => "see tests/PACKAGES",
    }
}

fn is_executable(p: &Path) -> bool {
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Finds `name` on `PATH` (plus the sbin directories, which a non-root
/// `PATH` often lacks).
pub(crate) fn which(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return is_executable(&p).then_some(p);
    }
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

/// Python with aiosmtpd: Debian's interpreter, not whatever `python3` on
/// `PATH` is (pyenv, venvs).
pub(crate) const SYSTEM_PYTHON: &str = "/usr/bin/python3";

fn available(tool: &str) -> bool {
    let exe = |p: &str| is_executable(Path::new(p));
    match tool {
        "sshd" => exe("/usr/sbin/sshd") && which("ssh-keygen").is_some(),
        "postgres" | "postgresql" => {
            crate::postgres::pg_bin_dir().is_some()
                && exe("/usr/bin/psql")
                && (!crate::env::is_root()
                    || (which("setpriv").is_some() && crate::env::user_ids("postgres").is_some()))
        }
        "mariadb" | "mariadbd" | "mysqld" => {
            crate::mariadb::mariadbd().is_some() && which("mariadb-install-db").is_some() && which("mariadb").is_some()
        }
        "smtp" | "aiosmtpd" => Command::new(SYSTEM_PYTHON)
            .args(["-c", "import aiosmtpd"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success()),
        "cgit" => exe(crate::cgit::CGIT_CGI) && which("nginx").is_some() && which("fcgiwrap").is_some(),
        "chromium" => exe(crate::chromium::CHROMIUM),
        other => which(other).is_some(),
    }
}

/// The skip-or-fail rule for real-process tests. Returns true if `tool` is
/// available. If it is missing: locally prints a SKIPPED line and returns
/// false (the caller returns early: the test is skipped); under CI
/// ([`in_ci`]) panics, because a green CI must never hide a skipped
/// real-process test.
///
/// Besides program names (looked up on `PATH` + sbin, or an absolute path),
/// it knows the harness's services: `sshd`, `postgres`, `mariadb`,
/// `aiosmtpd` (alias `smtp`), `cgit` (cgit + nginx + fcgiwrap), `chromium`.
///
/// ```no_run
/// if !ferry_tests::require("sshd") { return; }
/// ```
pub fn require(tool: &str) -> bool {
    if available(tool) {
        return true;
    }
    let msg = format!(
        "required tool `{tool}` is missing (Debian package: {}; the CI installs tests/PACKAGES)",
        package_of(tool)
    );
    if in_ci() {
        panic!("{msg}; CI is set, so this is a failure, not a skip");
    }
    eprintln!("SKIPPED: {msg}");
    false
}

/// [`require`] for several tools; true only if all are available (checks
/// all, so every missing one is reported).
pub fn require_all(tools: &[&str]) -> bool {
    let missing = tools.iter().filter(|t| !require(t)).count();
    missing == 0
}

/// True when the test process runs as root.
pub fn is_root() -> bool {
    rustix::process::getuid().is_root()
}

/// `(uid, gid)` of a system user, via `id` (so NSS is honoured).
pub(crate) fn user_ids(user: &str) -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, user]).stdin(Stdio::null()).stderr(Stdio::null()).output().ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

/// The name of the user running the tests (e.g. `root`).
pub fn current_user() -> String {
    let out = Command::new("id").arg("-un").stdin(Stdio::null()).output().ok().filter(|o| o.status.success());
    match out {
        Some(o) => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        None => env::var("USER").unwrap_or_else(|_| "root".to_string()),
    }
}

/// The directory test directories live in: `$FERRY_TEST_ROOT`, else
/// `/tmp/ferry-tests`.
pub fn test_root() -> PathBuf {
    match env::var_os("FERRY_TEST_ROOT") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from("/tmp/ferry-tests"),
    }
}

/// Creates the test root if needed. The default root is shared by all users,
/// so it gets mode 1777 like `/tmp`.
pub(crate) fn ensure_test_root() -> PathBuf {
    let root = test_root();
    if !root.exists() {
        fs::create_dir_all(&root).unwrap_or_else(|e| panic!("cannot create test root {}: {e}", root.display()));
        if env::var_os("FERRY_TEST_ROOT").is_none() {
            let _ = fs::set_permissions(&root, fs::Permissions::from_mode(0o1777));
        }
    }
    root
}

static TEST_DIRS: AtomicU32 = AtomicU32::new(0);

/// A fresh directory owned by one test:
/// `$FERRY_TEST_ROOT/<name>-<pid>-<n>` (default root `/tmp/ferry-tests`).
/// Mode 0755 so daemons running as other users (PostgreSQL as `postgres`)
/// can traverse it. Removed on drop unless env `FERRY_KEEP_TEST_DIRS=1`, in
/// which case its path is printed.
///
/// Declare it *before* the daemons that use it, so it is dropped after them.
pub struct TestDir {
    /// The directory's absolute path.
    pub path: PathBuf,
}

impl TestDir {
    /// Creates a new, empty directory for test `test_name` (characters other
    /// than `[A-Za-z0-9._-]` become `_`; long names are shortened, because
    /// unix socket paths inside must stay short).
    pub fn new(test_name: &str) -> TestDir {
        let mut name: String =
            test_name.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect();
        if name.len() > 40 {
            name = name[name.len() - 40..].to_string();
        }
        let n = TEST_DIRS.fetch_add(1, Ordering::Relaxed);
        let path = ensure_test_root().join(format!("{name}-{}-{n}", std::process::id()));
        if path.exists() {
            // Left over by an earlier process with the same pid.
            let _ = fs::remove_dir_all(&path);
        }
        fs::create_dir(&path).unwrap_or_else(|e| panic!("cannot create test dir {}: {e}", path.display()));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("cannot chmod test dir {}: {e}", path.display()));
        TestDir { path }
    }

    /// `self.path.join(p)`.
    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.path.join(p)
    }

    /// Creates (if needed) and returns `<dir>/<p>`, with parents.
    pub fn mkdir(&self, p: impl AsRef<Path>) -> PathBuf {
        let d = self.path.join(p);
        fs::create_dir_all(&d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
        d
    }

    /// A HOME for programs this test runs: `<dir>/home`, created on first
    /// use.
    pub fn home(&self) -> PathBuf {
        self.mkdir("home")
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if env::var("FERRY_KEEP_TEST_DIRS").is_ok_and(|v| v == "1") {
            eprintln!("ferry-tests: kept test dir {}", self.path.display());
            return;
        }
        if std::thread::panicking() {
            eprintln!("ferry-tests: removing {} (set FERRY_KEEP_TEST_DIRS=1 to keep it)", self.path.display());
        }
        if let Err(e) = fs::remove_dir_all(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("ferry-tests: cannot remove {}: {e}", self.path.display());
        }
    }
}

static LOOPBACKS: AtomicU32 = AtomicU32::new(0);

/// A per-process offset so parallel test binaries rarely hand out the same
/// addresses (pid hashed over the 249 usable values).
fn loopback_offset() -> u32 {
    std::process::id().wrapping_mul(2_654_435_761) % 249
}

/// A loopback address for one more "host": 127.0.0.x with x in 2..=250,
/// distinct for each call within the process (until 249 calls wrap around),
/// starting at a pid-derived offset so parallel test binaries rarely collide.
pub fn next_loopback() -> Ipv4Addr {
    let n = LOOPBACKS.fetch_add(1, Ordering::Relaxed);
    let x = 2 + (loopback_offset() + n) % 249;
    Ipv4Addr::new(127, 0, 0, x as u8)
}

/// A TCP port that is free on `addr` right now (the kernel's choice for
/// `bind(addr:0)`).
pub fn free_port(addr: Ipv4Addr) -> u16 {
    TcpListener::bind((addr, 0))
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("cannot bind {addr}:0: {e}"))
        .port()
}

/// Polls `f` every 50 ms until it returns true; panics with `what` after
/// `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    loop {
        if f() {
            return;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Resolves a built binary from an override dir or the test executable's
/// location (`target/<profile>/deps/e2e-…` → `target/<profile>/<name>`).
fn locate_bin(name: &str, override_dir: Option<PathBuf>, exe: Option<PathBuf>) -> PathBuf {
    let dir = override_dir.or_else(|| {
        let exe = exe?;
        let parent = exe.parent()?;
        Some(if parent.file_name().is_some_and(|n| n == "deps") {
            parent.parent()?.to_path_buf()
        } else {
            parent.to_path_buf()
        })
    });
    let Some(dir) = dir else {
        panic!("cannot locate `{name}`: run `cargo build --workspace --bins` first");
    };
    let path = dir.join(name);
    if !is_executable(&path) {
        panic!(
            "Ferry binary `{name}` not found at {}: run `cargo build --workspace --bins` first \
             (or point FERRY_BIN_DIR at the directory holding it)",
            path.display()
        );
    }
    path
}

/// Path of the workspace's built binary `name` (`ferry`, `ferry-node`): in
/// `$FERRY_BIN_DIR` if set, else next to the test executable's
/// `target/<profile>/`. Panics with "run `cargo build --workspace --bins`
/// first" if it is missing.
pub fn ferry_bin(name: &str) -> PathBuf {
    let override_dir = env::var_os("FERRY_BIN_DIR").filter(|d| !d.is_empty()).map(PathBuf::from);
    locate_bin(name, override_dir, env::current_exe().ok())
}

/// A directory for unix sockets: `preferred` if paths inside it stay well
/// under the 107-byte `sun_path` limit, else a short private dir in `/tmp`
/// removed with this value.
pub(crate) struct SocketDir {
    pub(crate) path: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl SocketDir {
    pub(crate) fn new(preferred: &Path) -> SocketDir {
        if preferred.as_os_str().len() <= 80 {
            fs::create_dir_all(preferred).unwrap_or_else(|e| panic!("mkdir {}: {e}", preferred.display()));
            return SocketDir { path: preferred.to_path_buf(), _tmp: None };
        }
        let tmp = tempfile::Builder::new().prefix("ferry-sock-").tempdir_in("/tmp").expect("short socket dir in /tmp");
        let _ = fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755));
        SocketDir { path: tmp.path().to_path_buf(), _tmp: Some(tmp) }
    }
}

/// The lock on the machine's account database (`/etc/passwd`) between test
/// processes: tests that add system accounts (`two_accounts`) hold it
/// exclusively while their accounts exist; the hostile suite's guard,
/// which takes any change of `/etc/passwd` for a hostile input's doing,
/// holds it shared while it watches. nextest runs each test in its own
/// process, so an in-process mutex would not do.
pub fn accounts_lock(exclusive: bool) -> std::fs::File {
    let path = std::env::temp_dir().join("ferry-tests-accounts.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if exclusive { f.lock() } else { f.lock_shared() }.unwrap_or_else(|e| panic!("locking {}: {e}", path.display()));
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn harness_locate_bin_strips_deps() {
        let tmp = tempfile::tempdir().unwrap();
        let deps = tmp.path().join("debug/deps");
        fs::create_dir_all(&deps).unwrap();
        let bin = tmp.path().join("debug/ferry");
        fs::write(&bin, "").unwrap();
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(locate_bin("ferry", None, Some(deps.join("e2e-123abc"))), bin);
        assert_eq!(locate_bin("ferry", Some(tmp.path().join("debug")), None), bin);
    }
}
