//! Web passwords: the node's store of password hashes, and how a password
//! gets into it (`ferry-node web passwd USER`).
//!
//! Passwords never go into gitosis.conf: that is a reviewed repository
//! with history, readable by every administrator. The store is
//! `<state_dir>/web-passwords` (mode 0600), one `user:hash` line per web
//! user; only hashes are kept, in SHA-512-crypt (`$6$`) form, which nginx
//! verifies with the system's crypt(3). SHA-512-crypt rather than bcrypt
//! because nginx checks the password on *every* request in its event loop:
//! bcrypt's deliberately slow hash would stall every other connection of
//! the worker, while 5000 rounds of SHA-512 take about a millisecond.
//! `--random` passwords (24 letters and digits, 142 bits) make the rounds
//! irrelevant; a typed password must have at least [`MIN_LEN`] characters.

use std::collections::BTreeMap;
use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::Path;

use anyhow::{Context as _, bail};
use sha_crypt::{PasswordHasher as _, ShaCrypt};

/// Shortest password accepted from a person.
pub const MIN_LEN: usize = 12;
/// Longest password accepted (bytes).
pub const MAX_LEN: usize = 1024;
/// Length of a `--random` password.
pub const RANDOM_LEN: usize = 24;
/// Largest store read.
const STORE_MAX: usize = 1 << 20;

/// The password store: user → SHA-512-crypt hash.
#[derive(Debug, Default)]
pub struct Store {
    entries: BTreeMap<String, String>,
}

/// Whether `hash` is one line of SHA-512-crypt (`$6$[rounds=N$]salt$digest`)
/// that can be written into an htpasswd line unchanged.
fn is_sha512_crypt(hash: &str) -> bool {
    hash.starts_with("$6$")
        && hash.len() <= 200
        && hash.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'$' | b'.' | b'/' | b'='))
}

impl Store {
    /// Read the store at `path`; a missing file is an empty store. A line
    /// that is not `user:$6$…` with a safe gitosis user name is an error
    /// (the file is the node's own; a bad line means it was edited by hand).
    pub fn load(path: &Path) -> anyhow::Result<Store> {
        let bytes = match ferry_durable::read_capped(path, STORE_MAX) {
            Ok(Some(b)) => b,
            Ok(None) => bail!("{} is larger than 1 MiB", path.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Store::default()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let text = String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8", path.display()))?;
        let mut entries = BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_once(':') {
                Some((user, hash)) if ferry_gitosis::username::is_safe_username(user) && is_sha512_crypt(hash) => {
                    entries.insert(user.to_owned(), hash.to_owned());
                }
                _ => bail!(
                    "{} line {}: not `user:$6$…`; fix or remove the line, then run `ferry-node web sync`",
                    path.display(),
                    n + 1
                ),
            }
        }
        Ok(Store { entries })
    }

    /// Write the store atomically (temporary file, fsync, rename), mode 0600.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let dir = path.parent().context("the password store has no directory")?;
        let name = path.file_name().context("the password store has no file name")?.to_string_lossy();
        let mut text =
            String::from("# Ferry web passwords (SHA-512-crypt); change with `ferry-node web passwd USER`\n");
        for (user, hash) in &self.entries {
            text.push_str(&format!("{user}:{hash}\n"));
        }
        ferry_durable::write_synced_mode(dir, &name, text.as_bytes(), 0o600)
            .with_context(|| format!("cannot write {}", path.display()))?;
        super::restrict_mode(path, 0o600)?;
        super::adopt(path, dir)
    }

    /// The hash stored for `user`.
    pub fn get(&self, user: &str) -> Option<&str> {
        self.entries.get(user).map(String::as_str)
    }

    /// Store `hash` for `user` (replacing any previous one).
    pub fn set(&mut self, user: &str, hash: String) {
        self.entries.insert(user.to_owned(), hash);
    }

    /// Forget `user`'s password; whether there was one.
    pub fn remove(&mut self, user: &str) -> bool {
        self.entries.remove(user).is_some()
    }
}

/// SHA-512-crypt of `password` with a fresh random 16-character salt.
pub fn hash(password: &str) -> anyhow::Result<String> {
    let salt: [u8; 12] = rand::random();
    let h = ShaCrypt::SHA512
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))?;
    Ok(h.to_string())
}

/// Whether `hash` (from the store) is the hash of `password`.
#[cfg(test)]
pub fn verify(password: &str, hash: &str) -> bool {
    use sha_crypt::PasswordVerifier as _;
    ShaCrypt::SHA512.verify_password(password.as_bytes(), hash).is_ok()
}

/// A random password of [`RANDOM_LEN`] ASCII letters and digits (safe in
/// a URL's user-info and on any keyboard), from the operating system's
/// CSPRNG-seeded generator.
pub fn random_password() -> String {
    use rand::distr::{Alphanumeric, SampleString as _};
    Alphanumeric.sample_string(&mut rand::rng(), RANDOM_LEN)
}

/// A password typed or piped in must be [`MIN_LEN`]..[`MAX_LEN`] long and
/// hold no control characters.
pub fn check(password: &str) -> Result<(), String> {
    if password.chars().count() < MIN_LEN {
        return Err(format!("the password is shorter than {MIN_LEN} characters (or use --random)"));
    }
    if password.len() > MAX_LEN {
        return Err(format!("the password is longer than {MAX_LEN} bytes"));
    }
    if password.chars().any(char::is_control) {
        return Err("the password holds control characters".into());
    }
    Ok(())
}

/// Read a password: from the terminal without echo (asked twice), or the
/// first line of standard input when it is not a terminal.
pub fn read(user: &str) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        let first = prompt(&format!("New web password for {user}: "))?;
        let again = prompt("Again: ")?;
        if first != again {
            return Err(crate::exit::UsageError("the two passwords differ; nothing changed".into()).into());
        }
        return Ok(first);
    }
    let mut line = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(stdin.lock(), MAX_LEN as u64 + 2), &mut line)?;
    let line = line.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    String::from_utf8(line.to_vec()).context("the password is not UTF-8")
}

/// Ask on stderr, read one line from the terminal with echo off.
fn prompt(question: &str) -> anyhow::Result<String> {
    use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin).context("cannot read the terminal settings")?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    quiet.local_modes.insert(LocalModes::ECHONL);
    eprint!("{question}");
    std::io::stderr().flush()?;
    tcsetattr(&stdin, OptionalActions::Now, &quiet).context("cannot turn off the terminal echo")?;
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    let restored = tcsetattr(&stdin, OptionalActions::Now, &saved);
    read?;
    restored.context("cannot restore the terminal settings")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_salted_sha512_crypt_and_verify() {
        let a = hash("correct horse battery").unwrap();
        let b = hash("correct horse battery").unwrap();
        assert!(a.starts_with("$6$") && is_sha512_crypt(&a), "{a}");
        assert_ne!(a, b, "every hash has its own salt");
        assert!(verify("correct horse battery", &a));
        assert!(!verify("correct horse batterY", &a));
        // The reference vector of the SHA-crypt specification (Drepper),
        // the form glibc's crypt(3) writes: the same algorithm nginx runs.
        let spec =
            "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1";
        assert!(verify("Hello world!", spec));
    }

    #[test]
    fn random_passwords_are_long_alphanumeric_and_differ() {
        let a = random_password();
        assert_eq!(a.len(), RANDOM_LEN);
        assert!(a.bytes().all(|b| b.is_ascii_alphanumeric()), "{a}");
        assert_ne!(a, random_password());
        assert!(check(&a).is_ok());
    }

    #[test]
    fn typed_passwords_are_checked() {
        assert!(check("short").is_err());
        assert!(check("twelve chars").is_ok());
        assert!(check("twelve chars\n").is_err());
        assert!(check(&"x".repeat(MAX_LEN + 1)).is_err());
    }

    #[test]
    fn the_store_round_trips_and_refuses_hand_edited_lines() {
        let td = tempfile::tempdir().unwrap();
        let p = td.path().join("web-passwords");
        assert!(Store::load(&p).unwrap().get("alice").is_none(), "missing = empty");
        let mut s = Store::default();
        let h = hash("a long password").unwrap();
        s.set("admin@ws", h.clone());
        s.set("host-a", hash("another password").unwrap());
        s.save(&p).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        let mut back = Store::load(&p).unwrap();
        assert_eq!(back.get("admin@ws"), Some(h.as_str()));
        assert!(back.remove("host-a"));
        assert!(!back.remove("host-a"));
        for bad in ["eve:plain", "a:b:$6$x$y", "bad user:$6$x$y", "x:$6$x$y z", "x:$1$md5$x"] {
            std::fs::write(&p, format!("{bad}\n")).unwrap();
            assert!(Store::load(&p).is_err(), "{bad}");
        }
    }
}
