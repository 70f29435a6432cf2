//! A private MariaDB server (Debian's `mariadb-server`) on loopback.
//!
//! `mariadb-install-db --no-defaults` creates the data directory; as root,
//! both it and `mariadbd` need `--user=root` (otherwise the server refuses to
//! run as root). `--auth-root-authentication-method=normal` gives
//! password-less `root@localhost` and `root@127.0.0.1`, so the client can
//! connect over the socket as any OS user and over TCP (a loopback client's
//! source address is 127.0.0.1). `--no-defaults` everywhere: nothing under
//! `/etc/mysql` is read.

use std::fs;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::env::{SocketDir, free_port, is_root, next_loopback, which};
use crate::process::{Daemon, READY_TIMEOUT, Signal, run_checked, tail};

/// The server binary: `mariadbd`, else `mysqld`.
pub(crate) fn mariadbd() -> Option<PathBuf> {
    which("mariadbd").or_else(|| which("mysqld"))
}

/// A private MariaDB server: data in `<dir>/data`, log in
/// `<dir>/mariadb.log`, listening on `127.0.0.x:port` and on the unix socket
/// [`MariaDb::socket`]; `root` without password. Killed on drop (it is a
/// throwaway database; a clean shutdown would only cost time).
pub struct MariaDb {
    dir: PathBuf,
    addr: Ipv4Addr,
    port: u16,
    sock: SocketDir,
    daemon: Daemon,
}

impl MariaDb {
    /// Creates the data directory and starts the server with `dir` as its
    /// own directory (created if needed), on a fresh [`next_loopback`]
    /// address; waits for "ready for connections".
    pub fn start(dir: &Path) -> MariaDb {
        let server = mariadbd().expect("no mariadbd: install mariadb-server");
        fs::create_dir_all(dir.join("tmp")).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let data = dir.join("data");
        let sock = SocketDir::new(&dir.join("sock"));
        let addr = next_loopback();
        let port = free_port(addr);
        let user_arg: &[&str] = if is_root() { &["--user=root"] } else { &[] };
        let common = ["--innodb-log-file-size=10M", "--innodb-buffer-pool-size=16M"];

        let mut install = Command::new(which("mariadb-install-db").expect("mariadb-install-db"));
        install
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args(user_arg)
            .args(["--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve"])
            .args(common)
            .current_dir(dir);
        run_checked(&mut install);

        let mut cmd = Command::new(server);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args(user_arg)
            .arg(format!("--socket={}", sock.path.join("mysql.sock").display()))
            .arg(format!("--port={port}"))
            .arg(format!("--bind-address={addr}"))
            .arg(format!("--pid-file={}", dir.join("mariadb.pid").display()))
            .arg(format!("--tmpdir={}", dir.join("tmp").display()))
            .args(["--skip-name-resolve", "--skip-log-bin", "--max-connections=50"])
            .args(common)
            .current_dir(dir);
        let mut daemon = Daemon::spawn(
            &format!("mariadbd {addr}:{port}"),
            cmd,
            &dir.join("mariadb.log"),
            Signal::KILL,
            Duration::ZERO,
        );
        daemon.wait_for_log("ready for connections", READY_TIMEOUT);
        MariaDb { dir: dir.to_path_buf(), addr, port, sock, daemon }
    }

    /// The unix socket path (for `--socket=` / `-S`).
    pub fn socket(&self) -> PathBuf {
        self.sock.path.join("mysql.sock")
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The TCP listen address as text, e.g. `127.0.0.8`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The TCP listen address.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// Its own directory (data, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        self.daemon.output()
    }

    /// Runs `sql` (statements fed on stdin) with `mariadb --no-defaults
    /// --socket=… -u root --batch --skip-column-names [db]`; returns stdout
    /// without trailing newlines (tab-separated rows); panics with stderr on
    /// failure.
    pub fn sql(&self, db: Option<&str>, sql: &str) -> String {
        let mut cmd = Command::new(which("mariadb").expect("mariadb client"));
        cmd.arg("--no-defaults")
            .arg(format!("--socket={}", self.socket().display()))
            .args(["-u", "root", "--batch", "--skip-column-names"])
            .args(db)
            .env_remove("MYSQL_PWD")
            .env_remove("MYSQL_HOST")
            .env_remove("MYSQL_TCP_PORT")
            .env_remove("MYSQL_UNIX_PORT")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start mariadb client");
        let mut stdin = child.stdin.take().expect("mariadb stdin");
        let sql_owned = sql.to_string();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(sql_owned.as_bytes());
        });
        let out = child.wait_with_output().expect("wait for mariadb client");
        let _ = writer.join();
        if !out.status.success() {
            panic!(
                "mariadb {db:?} failed ({}) for:\n{sql}\nstderr:\n{}\nserver log tail:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr),
                tail(&self.log(), 20)
            );
        }
        String::from_utf8_lossy(&out.stdout).trim_end_matches(['\n', '\r']).to_string()
    }

    /// ``CREATE DATABASE `<name>` ``.
    pub fn create_db(&self, name: &str) {
        self.sql(None, &format!("CREATE DATABASE `{}`;", name.replace('`', "``")));
    }
}
