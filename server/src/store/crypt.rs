//! Encryption before upload (`[store] encrypt = true`): object storage is
//! often someone else's disk, so what leaves the node is an age file
//! (X25519 recipient, ChaCha20-Poly1305 in 64 KiB chunks), streamed: the
//! node never holds a whole artifact, in plaintext or ciphertext.
//!
//! The key is an age identity file (`ferry-node store keygen`): its first
//! identity is the one objects are encrypted to; every identity in it
//! decrypts, so after `keygen --rotate` the objects written under the old
//! key still restore. The digest the node keeps (sidecar, catalog) is the
//! plaintext's: `verify` and `restore` decrypt and re-hash, and a wrong
//! key is refused at the age header, before a byte is given back.
//!
//! Each encrypted object carries the user metadata
//! `x-amz-meta-ferry-encryption: age` (and its plaintext size), so a
//! reader knows what it holds whatever the node's current setting.

use std::io::{self, BufRead};
use std::path::{Path, PathBuf};
use std::str::FromStr as _;

use age::secrecy::ExposeSecret as _;
use anyhow::{Context as _, bail};

use crate::layout::SharedGroup;

/// User metadata naming the encryption of an object (`age`).
pub const ENCRYPTION_META: &str = "ferry-encryption";
/// User metadata holding an encrypted object's plaintext size.
pub const PLAIN_SIZE_META: &str = "ferry-plaintext-size";
/// The value of [`ENCRYPTION_META`] for an age file.
pub const AGE: &str = "age";

/// The store's key is missing, exposed, malformed or not the one an object
/// was encrypted for (`E_STORE_KEY`).
#[derive(Debug, thiserror::Error)]
#[error("E_STORE_KEY: {0}")]
pub struct KeyError(pub String);

/// The identities of the store's key file (module docs).
pub struct Keys {
    path: PathBuf,
    identities: Vec<age::x25519::Identity>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys").field("path", &self.path).field("identities", &self.identities.len()).finish()
    }
}

impl Keys {
    /// Read the key file, refusing one another account could read or that
    /// belongs to another account: the key opens every encrypted backup.
    /// Mode 0600 and this account's (root may use the node's), or, in the
    /// two-account layout, 0640 in the node's shared group `shared`
    /// ([`crate::layout::check_secret_file`]).
    pub fn load(path: &Path, shared: Option<&SharedGroup>) -> Result<Keys, KeyError> {
        let md = std::fs::metadata(path)
            .map_err(|e| KeyError(format!("cannot read the store key {}: {e}", path.display())))?;
        if !md.is_file() {
            return Err(KeyError(format!("the store key {} is not a regular file", path.display())));
        }
        // Root may use (and `keygen --rotate`) a key the node's account owns.
        crate::layout::check_secret_file(path, "the store key", &md, shared, true).map_err(KeyError)?;
        let text = std::fs::read_to_string(path)
            .map_err(|e| KeyError(format!("cannot read the store key {}: {e}", path.display())))?;
        let identities = parse(&text).map_err(|n| {
            // Never the line itself: it is the secret.
            KeyError(format!("line {n} of the store key {} is not an age X25519 identity", path.display()))
        })?;
        if identities.is_empty() {
            return Err(KeyError(format!("the store key {} holds no identity", path.display())));
        }
        Ok(Keys { path: path.to_owned(), identities })
    }

    /// The recipient new objects are encrypted to (the first identity's).
    pub fn recipient(&self) -> age::x25519::Recipient {
        self.identities[0].to_public()
    }

    /// How many identities the file holds (the current one and older ones).
    pub fn count(&self) -> usize {
        self.identities.len()
    }

    /// Start encrypting to [`Keys::recipient`].
    pub fn encryptor(&self) -> anyhow::Result<age::Encryptor> {
        let r = self.recipient();
        age::Encryptor::with_recipients(std::iter::once(&r as &dyn age::Recipient))
            .map_err(|e| anyhow::anyhow!("cannot start encrypting: {e}"))
    }

    /// Decrypt the age file `input` (`what` names it in errors); the
    /// header is read and its key unwrapped here, so a wrong key fails now,
    /// before any plaintext is read.
    pub fn decrypt<R: BufRead>(&self, input: R, what: &str) -> Result<age::stream::StreamReader<R>, KeyError> {
        let d = age::Decryptor::new_buffered(input)
            .map_err(|e| KeyError(format!("{what} is not a readable age file: {e}")))?;
        d.decrypt(self.identities.iter().map(|i| i as &dyn age::Identity)).map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => KeyError(format!(
                "no identity in {} decrypts {what}: it was encrypted for another key (restore the key file, \
                 or the older key it replaced, from its offline copy)",
                self.path.display()
            )),
            e => KeyError(format!("cannot decrypt {what} with {}: {e}", self.path.display())),
        })
    }

    /// A self-test: encrypt a few bytes to the current recipient and
    /// decrypt them with the file's identities.
    pub fn self_test(&self) -> anyhow::Result<()> {
        let mut out = Vec::new();
        let mut w = self.encryptor()?.wrap_output(&mut out)?;
        io::Write::write_all(&mut w, b"ferry")?;
        w.finish()?;
        let mut back = Vec::new();
        io::Read::read_to_end(&mut self.decrypt(&out[..], "the self-test")?, &mut back)?;
        if back != b"ferry" {
            bail!("the store key does not decrypt what it encrypts");
        }
        Ok(())
    }
}

/// The identities of an identity file (comments and blank lines skipped);
/// the error is the 1-based number of the first line that is none.
fn parse(text: &str) -> Result<Vec<age::x25519::Identity>, usize> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        out.push(age::x25519::Identity::from_str(l).map_err(|_| i + 1)?);
    }
    Ok(out)
}

/// `ferry-node store keygen [--rotate]`: write a new identity to `path`
/// (atomically: temporary file, fsync, rename); with `rotate` it goes
/// first and the file's older identities stay after it, so objects
/// encrypted to them still decrypt. A new file is mode 0600, or, when the
/// node has a [`SharedGroup`] (the two-account layout), 0640 in that group,
/// so both accounts read it without a `chmod`; a rotated file keeps its
/// owner, group and mode. Returns the new recipient (`age1…`), which is
/// public.
pub fn keygen(path: &Path, rotate: bool, shared: Option<&SharedGroup>) -> anyhow::Result<String> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().and_then(|n| n.to_str()).context("the key path needs a file name")?;
    let old = match std::fs::symlink_metadata(path) {
        Ok(_) if !rotate => bail!(
            "{} exists: `ferry-node store keygen --rotate` adds a new key and keeps the old ones (objects \
             encrypted to them must stay readable)",
            path.display()
        ),
        Ok(md) => {
            let keys = Keys::load(path, shared)?;
            use std::os::unix::fs::MetadataExt as _;
            Some((std::fs::read_to_string(path)?, keys.count(), (md.uid(), md.gid(), md.mode() & 0o640)))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let id = age::x25519::Identity::generate();
    let public = id.to_public().to_string();
    let created = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ");
    let mut text = format!(
        "# ferry store key; the first identity encrypts, every one decrypts\n\
         # created: {created}\n# public key: {public}\n{}\n",
        id.to_string().expose_secret()
    );
    if let Some((old, _, _)) = &old {
        text.push_str(&format!(
            "\n# older keys, kept so objects encrypted to them still decrypt (rotated {created})\n"
        ));
        text.push_str(old);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // Same owner, group and mode as before; else private, or readable
    // by the node's shared group.
    let (owner, group, mode) = match (&old, shared) {
        (Some((_, _, (uid, gid, mode))), _) => (Some(*uid), Some(*gid), *mode),
        (None, Some(g)) => (None, Some(g.gid), 0o640),
        (None, None) => (None, None, 0o600),
    };
    ferry_durable::write_synced_mode(&dir, name, text.as_bytes(), 0o600)
        .with_context(|| format!("cannot write {}", path.display()))?;
    if owner.is_some() || group.is_some() {
        std::os::unix::fs::chown(path, owner, group)
            .with_context(|| format!("cannot give {} to uid {owner:?}, gid {group:?}", path.display()))?;
    }
    // Only after the group is right: the key is never readable by another.
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot chmod {}", path.display()))?;
    }
    // Read back through the same checks as the node.
    let keys = Keys::load(path, shared)?;
    keys.self_test()?;
    if keys.recipient().to_string() != public {
        bail!("{} does not start with the new key", path.display());
    }
    Ok(public)
}

/// Whether object metadata says the object is an age file.
pub fn is_encrypted(attributes: &object_store::Attributes) -> bool {
    attributes.get(&object_store::Attribute::Metadata(ENCRYPTION_META.into())).is_some_and(|v| v.as_ref() == AGE)
}

/// The plaintext size an encrypted object's metadata names.
pub fn plain_size(attributes: &object_store::Attributes) -> Option<u64> {
    attributes.get(&object_store::Attribute::Metadata(PLAIN_SIZE_META.into())).and_then(|v| v.as_ref().parse().ok())
}

/// The metadata an encrypted object of `size` plaintext bytes carries.
pub fn attributes(size: u64) -> object_store::Attributes {
    let mut a = object_store::Attributes::new();
    a.insert(object_store::Attribute::Metadata(ENCRYPTION_META.into()), AGE.into());
    a.insert(object_store::Attribute::Metadata(PLAIN_SIZE_META.into()), size.to_string().into());
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read as _, Write as _};
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn keygen_rotate_and_decrypt_old_objects() {
        let td = tempfile::tempdir().unwrap();
        let p = td.path().join("store.key");
        let first = keygen(&p, false, None).unwrap();
        assert!(first.starts_with("age1"), "{first}");
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(keygen(&p, false, None).unwrap_err().to_string().contains("--rotate"));
        let k1 = Keys::load(&p, None).unwrap();
        let mut old = Vec::new();
        let mut w = k1.encryptor().unwrap().wrap_output(&mut old).unwrap();
        w.write_all(&vec![7u8; 200_000]).unwrap();
        w.finish().unwrap();
        assert!(!old.windows(1000).any(|w| w.iter().all(|&b| b == 7)), "ciphertext, not plaintext");

        let second = keygen(&p, true, None).unwrap();
        assert_ne!(first, second);
        let k2 = Keys::load(&p, None).unwrap();
        assert_eq!(k2.count(), 2);
        assert_eq!(k2.recipient().to_string(), second);
        let mut back = Vec::new();
        k2.decrypt(&old[..], "the old object").unwrap().read_to_end(&mut back).unwrap();
        assert_eq!(back, vec![7u8; 200_000]);

        // Another key: a clear E_STORE_KEY, no plaintext.
        let other = td.path().join("other.key");
        keygen(&other, false, None).unwrap();
        let e = Keys::load(&other, None).unwrap().decrypt(&old[..], "the old object").err().unwrap();
        assert!(e.to_string().starts_with("E_STORE_KEY: no identity in"), "{e}");
    }

    #[test]
    fn exposed_or_malformed_keys_are_refused_without_showing_them() {
        let td = tempfile::tempdir().unwrap();
        let p = td.path().join("store.key");
        keygen(&p, false, None).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(Keys::load(&p, None).unwrap_err().to_string().contains("readable by group or others"));
        std::fs::write(&p, "AGE-SECRET-KEY-1NOTAKEY\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = Keys::load(&p, None).unwrap_err().to_string();
        assert!(e.contains("line 1") && !e.contains("NOTAKEY"), "{e}");
        let e = Keys::load(&td.path().join("absent"), None).unwrap_err().to_string();
        assert!(e.starts_with("E_STORE_KEY: cannot read the store key"), "{e}");
    }
}
