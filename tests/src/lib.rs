//! `ferry-tests`: the shared end-to-end test harness.
//!
//! Ferry's end-to-end tests run the real things a user runs — OpenSSH
//! `sshd`, git, PostgreSQL, MariaDB, an SMTP server, cgit behind nginx, and
//! headless Chromium — as private processes on loopback. This crate holds
//! the pieces every test needs; the tests themselves live in the one
//! integration-test binary `tests/e2e/` (modules by feature).
//!
//! Rules the harness follows (and tests should too):
//!
//! - **Real processes, no mocks.** Each daemon is an RAII guard ([`Sshd`],
//!   [`Postgres`], [`MariaDb`], [`Smtp`], [`Garage`], [`CgitWeb`], [`GitDaemon`], or a
//!   raw [`Daemon`] for Ferry's own daemons) that polls readiness with a
//!   bound ([`READY_TIMEOUT`]; a timeout panics with the daemon's log tail)
//!   and kills and reaps its whole process tree on drop.
//! - **One host, one address.** Every guard binds its own 127.0.0.x
//!   ([`next_loopback`]) and a port found by binding `:0` ([`free_port`]).
//! - **Nothing outside the test changes**: no files under `/etc`, `~/.ssh` or
//!   other system configuration are written (sshd runs with `-f /dev/null`,
//!   nginx and MariaDB with private configs, git with a private HOME). The
//!   one exception is `/run/sshd`, sshd's privilege-separation directory,
//!   created if missing when running as root.
//! - **Each test owns a directory** ([`TestDir`]), removed on drop unless
//!   `FERRY_KEEP_TEST_DIRS=1`. Declare it first so it outlives the daemons.
//! - **Skip locally, fail in CI** when a tool is missing ([`require`]). The
//!   Debian packages the harness needs are listed in `tests/PACKAGES`.
//!
//! ```no_run
//! use ferry_tests::*;
//!
//! if !require("sshd") { return; }
//! let td = TestDir::new("example");
//! let key = td.join("id_ed25519");
//! let pubkey = ssh_keygen(&key, "client");
//! std::fs::write(td.join("authorized_keys"), format!("{pubkey}\n")).unwrap();
//! let sshd = Sshd::start(&td.join("sshd"), SshdOptions::new(td.join("authorized_keys")));
//! sshd.write_known_hosts(&td.join("known_hosts"));
//! let out = run_checked(ssh_cmd(&key, &td.join("known_hosts"), &sshd).arg("echo ok"));
//! assert_eq!(out.trim(), "ok");
//! ```

mod cgit;
mod chromium;
mod env;
mod files;
pub mod fleet;
mod garage;
mod git;
mod http;
mod mariadb;
mod postgres;
mod process;
mod smtp;
mod ssh;
pub mod torture;

pub use cgit::{CGIT_CGI, CGIT_STATIC, CgitWeb};
pub use chromium::{CHROMIUM, CHROMIUM_TIMEOUT, chromium_dump_dom, chromium_load, chromium_screenshot};
pub use env::{
    TestDir, accounts_lock, current_user, ferry_bin, free_port, in_ci, is_root, next_loopback, require, require_all,
    test_root, wait_until,
};
pub use files::{hash_tree, list_tree, pool_states, sha256_bytes, sha256_file};
pub use garage::{GARAGE_CACHED, Garage, GarageCluster, S3Access, garage_bin};
pub use git::{GitDaemon, for_each_ref, git, git_cmd, git_home, git_ok};
pub use http::{HttpResponse, http_get, http_get_auth, http_get_with};
pub use mariadb::MariaDb;
pub use postgres::{Postgres, pg_bin_dir};
pub use process::{Daemon, READY_TIMEOUT, Signal, processes_matching, run_checked, run_with_timeout};
pub use smtp::{Mail, Smtp, decode_rfc2047};
pub use ssh::{Sshd, SshdOptions, git_ssh_command, sftp_cmd, sftp_dest, ssh_cmd, ssh_keygen};
