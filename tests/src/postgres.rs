//! A private PostgreSQL server (Debian's `postgresql-<N>`) on loopback.
//!
//! `initdb` and `postgres` refuse to run as root, so as root they run as the
//! `postgres` system user through `setpriv` (which execs, so the guard's pid
//! *is* the postmaster), in a data directory chowned to `postgres`. Not as
//! root, they run as the current user. Authentication is `trust`, or
//! passwords over TCP when a test asks for a stock Debian setup.

use std::fs;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::env::{SocketDir, free_port, is_root, next_loopback, user_ids};
use crate::process::{Daemon, READY_TIMEOUT, Signal, run_checked, tail};

/// The OS user the server runs as when the tests run as root.
const PG_USER: &str = "postgres";

/// The newest `/usr/lib/postgresql/<N>/bin` that has `postgres` and `initdb`.
pub fn pg_bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("postgres").is_file() && bin.join("initdb").is_file()).then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// Removes libpq's environment (PGHOST, PGPORT, PGUSER, …) so commands talk
/// to the instance the arguments name.
fn clear_pg_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PG") {
            cmd.env_remove(k);
        }
    }
}

/// A private PostgreSQL server: data in `<dir>/data`, log in
/// `<dir>/postgres.log`, listening on `127.0.0.x:port` (TCP) and on a unix
/// socket in [`Postgres::socket_dir`]. Superuser `postgres`, trust auth
/// (or passwords over TCP: [`Postgres::start_with_host_auth`]), fsync off. Stopped with an immediate shutdown (then the tree is killed)
/// on drop.
pub struct Postgres {
    dir: PathBuf,
    addr: Ipv4Addr,
    port: u16,
    bin: PathBuf,
    sock: SocketDir,
    daemon: Daemon,
}

impl Postgres {
    /// Runs `initdb` and starts the server with `dir` as its own directory
    /// (created if needed, mode 0755), on a fresh [`next_loopback`] address;
    /// waits until it accepts connections.
    pub fn start(dir: &Path) -> Postgres {
        Postgres::start_with_host_auth(dir, "trust")
    }

    /// [`Postgres::start`] with `auth` (e.g. `scram-sha-256`, as a stock
    /// Debian `pg_hba.conf` has it) for TCP connections; the socket stays
    /// `trust`.
    pub fn start_with_host_auth(dir: &Path, auth: &str) -> Postgres {
        Postgres::start_with_auth(dir, "trust", auth)
    }

    /// [`Postgres::start`] with peer authentication on the socket, as a
    /// stock Debian cluster has it: an OS account logs in only as the role
    /// of its own name (the helpers here connect as `postgres` from the
    /// `postgres` account, so this needs root). TCP stays `trust`.
    pub fn start_with_peer_socket(dir: &Path) -> Postgres {
        assert!(is_root(), "peer authentication for the postgres role needs the tests to run as root");
        Postgres::start_with_auth(dir, "peer", "trust")
    }

    fn start_with_auth(dir: &Path, local: &str, auth: &str) -> Postgres {
        let bin = pg_bin_dir().expect("no /usr/lib/postgresql/*/bin: install postgresql");
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).expect("chmod pg dir");
        let data = dir.join("data");
        fs::create_dir_all(&data).expect("mkdir pg data");
        fs::set_permissions(&data, fs::Permissions::from_mode(0o700)).expect("chmod pg data");
        let sock = SocketDir::new(&dir.join("sock"));
        if is_root() {
            let (uid, gid) =
                user_ids(PG_USER).unwrap_or_else(|| panic!("no `{PG_USER}` system user: install postgresql"));
            for p in [&data, &sock.path] {
                rustix::fs::chown(
                    p.as_path(),
                    Some(rustix::fs::Uid::from_raw(uid)),
                    Some(rustix::fs::Gid::from_raw(gid)),
                )
                .unwrap_or_else(|e| panic!("chown {} to {PG_USER}: {e}", p.display()));
            }
        }
        let addr = next_loopback();
        let port = free_port(addr);

        let mut initdb = as_pg_user(dir, &bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args([
                &format!("--auth-local={local}"),
                &format!("--auth-host={auth}"),
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .args(["--no-sync", "--no-instructions"]);
        run_checked(&mut initdb);

        let daemon = spawn_server(dir, &bin, addr, port, &sock.path);
        Postgres { dir: dir.to_path_buf(), addr, port, bin, sock, daemon }
    }

    /// Stops the server with a fast shutdown (clients are disconnected,
    /// committed work is kept: the suite runs with `synchronous_commit=off`,
    /// which an immediate shutdown could lose), as an administrator's
    /// restart would; the data stays.
    pub fn stop(&mut self) {
        if let Some(pid) = self.daemon.pid().and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
            let _ = rustix::process::kill_process(pid, Signal::INT);
            let deadline = std::time::Instant::now() + READY_TIMEOUT;
            while !self.daemon.output().contains("database system is shut down") {
                assert!(std::time::Instant::now() < deadline, "postgres did not shut down:\n{}", tail(&self.log(), 20));
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.daemon.stop();
    }

    /// Restarts the server with TLS: `ssl = on` with this certificate (PEM;
    /// it names [`Postgres::host`], which is only known once started) and
    /// key, and `hostnossl … reject` first in `pg_hba.conf`, so a TCP
    /// client that does not speak TLS is turned away. Called again, the
    /// newer certificate replaces the older.
    pub fn use_tls(&mut self, cert_pem: &str, key_pem: &str) {
        self.stop();
        enable_tls(&self.dir.join("data"), cert_pem, key_pem);
        self.daemon = spawn_server(&self.dir, &self.bin, self.addr, self.port, &self.sock.path);
    }

    /// Starts the stopped server again on the same address, port and
    /// data; waits until it accepts connections.
    pub fn restart(&mut self) {
        self.stop();
        self.daemon = spawn_server(&self.dir, &self.bin, self.addr, self.port, &self.sock.path);
    }

    /// The TCP listen address as text, e.g. `127.0.0.7`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The TCP listen address.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The TCP port (also the number in the socket's name).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the unix socket `.s.PGSQL.<port>` (pass it as
    /// `-h`/`host=`); inside [`Postgres::dir`] unless that path is too long
    /// for a socket.
    pub fn socket_dir(&self) -> PathBuf {
        self.sock.path.clone()
    }

    /// Its own directory (data, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server's bin directory (`pg_dump`, `pg_restore`, … of the same
    /// major version).
    pub fn bin_dir(&self) -> PathBuf {
        self.bin.clone()
    }

    /// The OS user the server runs as: `postgres` (when the tests run as
    /// root; otherwise the server runs as the current user).
    pub fn os_user(&self) -> &'static str {
        PG_USER
    }

    /// The database superuser name: `postgres`.
    pub fn superuser(&self) -> &'static str {
        "postgres"
    }

    /// A libpq URL over TCP: `postgresql://postgres@127.0.0.x:port/<db>`.
    pub fn url(&self, db: &str) -> String {
        format!("postgresql://postgres@{}:{}/{db}", self.addr, self.port)
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        self.daemon.output()
    }

    /// Runs `sql` (any number of statements, fed on stdin) in database `db`
    /// with `/usr/bin/psql -X -A -t -q -v ON_ERROR_STOP=1` over the unix
    /// socket as superuser `postgres` (as the `postgres` OS user when root).
    /// Returns stdout without trailing newlines (rows `|`-separated, no
    /// headers, no command tags); panics with stderr on failure.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let mut cmd = as_pg_user(&self.dir, Path::new("/usr/bin/psql"));
        cmd.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"])
            .arg("-h")
            .arg(&self.sock.path)
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", db])
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start psql");
        let mut stdin = child.stdin.take().expect("psql stdin");
        let sql_owned = sql.to_string();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(sql_owned.as_bytes());
        });
        let out = child.wait_with_output().expect("wait for psql");
        let _ = writer.join();
        if !out.status.success() {
            panic!(
                "psql -d {db} failed ({}) for:\n{sql}\nstderr:\n{}\nserver log tail:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr),
                tail(&self.log(), 20)
            );
        }
        String::from_utf8_lossy(&out.stdout).trim_end_matches(['\n', '\r']).to_string()
    }

    /// `CREATE DATABASE "<name>"`.
    pub fn create_db(&self, name: &str) {
        self.psql("postgres", &format!("CREATE DATABASE \"{}\";", name.replace('"', "\"\"")));
    }
}

/// Writes `server.crt` and `server.key` into `data` (the key 0600 and the
/// server's, as PostgreSQL demands), turns `ssl` on and rejects TCP
/// connections without TLS.
fn enable_tls(data: &Path, cert: &str, key: &str) {
    let (crt, k) = (data.join("server.crt"), data.join("server.key"));
    fs::write(&crt, cert).expect("write server.crt");
    fs::write(&k, key).expect("write server.key");
    fs::set_permissions(&k, fs::Permissions::from_mode(0o600)).expect("chmod server.key");
    if is_root() {
        let (uid, gid) = user_ids(PG_USER).expect("postgres user");
        for p in [&crt, &k] {
            rustix::fs::chown(p.as_path(), Some(rustix::fs::Uid::from_raw(uid)), Some(rustix::fs::Gid::from_raw(gid)))
                .unwrap_or_else(|e| panic!("chown {}: {e}", p.display()));
        }
    }
    let (conf, hba) = (data.join("postgresql.conf"), data.join("pg_hba.conf"));
    let text = fs::read_to_string(&conf).expect("read postgresql.conf");
    if !text.contains("\nssl = on\n") {
        let text = format!("{text}\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        fs::write(&conf, text).expect("write postgresql.conf");
        let text = fs::read_to_string(&hba).expect("read pg_hba.conf");
        fs::write(&hba, format!("hostnossl all all all reject\n{text}")).expect("write pg_hba.conf");
    }
}

/// Starts `postgres` on the data in `dir/data` and waits until it accepts
/// connections.
fn spawn_server(dir: &Path, bin: &Path, addr: Ipv4Addr, port: u16, sock: &Path) -> Daemon {
    let mut cmd = as_pg_user(dir, &bin.join("postgres"));
    cmd.arg("-D")
        .arg(dir.join("data"))
        .args(["-p", &port.to_string()])
        .args(["-c", &format!("listen_addresses={addr}")])
        .arg("-c")
        .arg(format!("unix_socket_directories={}", sock.display()))
        .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
        .args(["-c", "full_page_writes=off", "-c", "logging_collector=off"])
        .args(["-c", "max_connections=50", "-c", "shared_buffers=32MB"]);
    let mut daemon = Daemon::spawn(
        &format!("postgres {addr}:{port}"),
        cmd,
        &dir.join("postgres.log"),
        // Immediate shutdown: fast, and the postmaster still removes its
        // SysV shared memory segment (a SIGKILL would leak it).
        Signal::QUIT,
        Duration::from_secs(15),
    );
    daemon.wait_for_log("database system is ready to accept connections", READY_TIMEOUT);
    daemon
}

/// A command for `program` run as the `postgres` OS user when root (via
/// `setpriv`, which execs), with a neutral working directory and HOME and no
/// libpq environment.
fn as_pg_user(dir: &Path, program: &Path) -> Command {
    let mut cmd = if is_root() {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={PG_USER}"))
            .arg(format!("--regid={PG_USER}"))
            .args(["--init-groups", "--"])
            .arg(program);
        c
    } else {
        Command::new(program)
    };
    clear_pg_env(&mut cmd);
    cmd.current_dir(dir).env("HOME", dir).env("LC_ALL", "C");
    cmd
}
