//! `[catalog]`: where the artifact catalog lives ([`crate::catalog`]).
//!
//! Absent (the default): SQLite on this node's disk. `url = "postgres://…"`:
//! one PostgreSQL database shared by several nodes, each writing rows under
//! its own `name`. The password never goes in the TOML (the file is often
//! readable by more than the node's account, and ends up in config
//! repositories): it comes from `password_file` or libpq's `PGPASSFILE` /
//! `~/.pgpass`.

use std::path::PathBuf;

use anyhow::bail;
use serde::Deserialize;

/// `[catalog]` (module docs).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogConfig {
    /// `postgres://user@host:port/db` (or `postgresql://`); a unix socket
    /// directory as a percent-encoded host (`postgres://ferry@%2Frun%2Fpostgresql/ferry`).
    #[serde(default)]
    pub url: Option<String>,
    /// A file holding only the password, readable only by the node's
    /// account. Absent: `PGPASSFILE`, else `~/.pgpass` (libpq's format).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Seconds to wait for a connection before the database counts as
    /// unreachable (rows are then queued, see the README).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// PEM certificates of the authority that signed the database
    /// server's certificate. Set: the connection is TLS, the server's
    /// certificate must chain to one of them and name the url's host
    /// (libpq's `verify-full`), and a server without TLS is refused rather
    /// than spoken to in the clear. Absent, `sslmode=require` in the url
    /// does the same against the system's authorities.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

fn default_connect_timeout() -> u64 {
    5
}

impl Default for CatalogConfig {
    fn default() -> Self {
        CatalogConfig { url: None, password_file: None, connect_timeout_secs: default_connect_timeout(), ca_file: None }
    }
}

impl CatalogConfig {
    /// Refuse a catalog setting the node could not use, before any job runs.
    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(u) = &self.url {
            if !(u.starts_with("postgres://") || u.starts_with("postgresql://")) {
                bail!("[catalog] url: a postgres:// URL");
            }
            if u.parse::<postgres::Config>().is_err() {
                bail!("[catalog] url: not a PostgreSQL connection URL");
            }
            // A password in the URL would sit in the TOML: refused (the
            // message does not repeat the URL, so it does not repeat the
            // password either).
            if let Ok(c) = u.parse::<postgres::Config>()
                && c.get_password().is_some()
            {
                bail!("[catalog] url carries a password: put it in password_file or PGPASSFILE instead");
            }
            if let (Some(_), Ok(c)) = (&self.ca_file, u.parse::<postgres::Config>()) {
                if c.get_ssl_mode() == postgres::config::SslMode::Disable {
                    bail!("[catalog] ca_file asks for TLS and the url says sslmode=disable: drop one");
                }
                if c.get_hosts().iter().any(|h| matches!(h, postgres::config::Host::Unix(_))) {
                    bail!("[catalog] ca_file with a unix socket: PostgreSQL speaks TLS over TCP only");
                }
            }
        } else if self.password_file.is_some() {
            bail!("[catalog] password_file without url");
        } else if self.ca_file.is_some() {
            bail!("[catalog] ca_file without url");
        }
        if !(1..=600).contains(&self.connect_timeout_secs) {
            bail!("[catalog] connect_timeout_secs = {}: 1 to 600", self.connect_timeout_secs);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_is_the_default_and_a_password_in_the_url_is_refused() {
        let d: CatalogConfig = toml::from_str("").unwrap();
        assert!(d.url.is_none());
        assert_eq!(d.connect_timeout_secs, 5);
        d.validate().unwrap();
        CatalogConfig::default().validate().unwrap();
        let ok: CatalogConfig = toml::from_str("url = \"postgres://ferry@db.example.org:5432/ferry\"").unwrap();
        ok.validate().unwrap();
        let pw: CatalogConfig = toml::from_str("url = \"postgres://ferry:s3cret@db/ferry\"").unwrap();
        let e = pw.validate().unwrap_err().to_string();
        assert!(e.contains("password_file") && !e.contains("s3cret"), "{e}");
        let mysql: CatalogConfig = toml::from_str("url = \"mysql://db/ferry\"").unwrap();
        assert!(mysql.validate().is_err());
    }

    #[test]
    fn a_ca_file_needs_a_tcp_url_that_does_not_disable_tls() {
        let tls: CatalogConfig =
            toml::from_str("url = \"postgres://ferry@db/ferry?sslmode=require\"\nca_file = \"/etc/ferry/ca.pem\"")
                .unwrap();
        tls.validate().unwrap();
        for (toml, why) in [
            ("url = \"postgres://ferry@db/ferry?sslmode=disable\"\nca_file = \"/ca.pem\"", "sslmode=disable"),
            ("url = \"postgres://ferry@%2Frun%2Fpostgresql/ferry\"\nca_file = \"/ca.pem\"", "unix socket"),
            ("ca_file = \"/ca.pem\"", "without url"),
        ] {
            let c: CatalogConfig = toml::from_str(toml).unwrap();
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(why), "{toml}: {e}");
        }
    }
}
