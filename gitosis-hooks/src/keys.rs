//! Strict SSH public key parsing (SECURITY AC-07, AC-08; GITOSIS.md 3.4).
//!
//! gitosis copied every line of `keydir/<user>.pub` verbatim into
//! authorized_keys. A hostile or careless key file could then carry
//! options (`command=`, `environment=`, `cert-authority`), extra lines, CRs
//! or a key of another type. Ferry instead parses each line into
//! (type, blob), decodes and checks the blob, drops the comment and
//! re-emits a canonical `type base64` line, so only node-generated options
//! ever precede a key. Fingerprints (OpenSSH's `SHA256:` form) identify
//! keys for duplicate detection and logs.
//!
//! Accepted types: `ssh-ed25519`, `ecdsa-sha2-nistp256/384/521`, `ssh-rsa`
//! (modulus 2048..=16384 bits), `sk-ssh-ed25519@openssh.com`,
//! `sk-ecdsa-sha2-nistp256@openssh.com`. Refused: DSA, certificates,
//! anything else. Blob encodings must be canonical (strict mpints, exact
//! lengths, no trailing bytes) so one key has exactly one blob and hence
//! one fingerprint: an alternative encoding cannot dodge the duplicate
//! check. ECDSA points are checked for form and length, not for lying on
//! the curve (no curve arithmetic here; sshd rejects such keys itself).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use sha2::{Digest as _, Sha256};

use crate::escape;

/// Longest key line accepted (a 16384-bit RSA key is about 2.8 KiB).
pub const MAX_KEY_LINE: usize = 8192;
/// Largest key file accepted.
pub const MAX_KEYFILE_BYTES: usize = 64 * 1024;
/// Most keys one user may have in one key file.
pub const MAX_KEYS_PER_FILE: usize = 16;
/// Smallest RSA modulus accepted (OpenSSH itself still allows 1024).
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus accepted (OpenSSH's own limit).
pub const MAX_RSA_BITS: usize = 16384;

/// The key types Ferry accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyType {
    /// `ssh-ed25519`
    Ed25519,
    /// `ecdsa-sha2-nistp256`
    EcdsaP256,
    /// `ecdsa-sha2-nistp384`
    EcdsaP384,
    /// `ecdsa-sha2-nistp521`
    EcdsaP521,
    /// `ssh-rsa`
    Rsa,
    /// `sk-ssh-ed25519@openssh.com` (FIDO security key)
    SkEd25519,
    /// `sk-ecdsa-sha2-nistp256@openssh.com` (FIDO security key)
    SkEcdsaP256,
}

impl KeyType {
    /// Every accepted type.
    pub const ALL: [KeyType; 7] = [
        KeyType::Ed25519,
        KeyType::EcdsaP256,
        KeyType::EcdsaP384,
        KeyType::EcdsaP521,
        KeyType::Rsa,
        KeyType::SkEd25519,
        KeyType::SkEcdsaP256,
    ];

    /// The type name as written in key lines and inside the blob.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Ed25519 => "ssh-ed25519",
            KeyType::EcdsaP256 => "ecdsa-sha2-nistp256",
            KeyType::EcdsaP384 => "ecdsa-sha2-nistp384",
            KeyType::EcdsaP521 => "ecdsa-sha2-nistp521",
            KeyType::Rsa => "ssh-rsa",
            KeyType::SkEd25519 => "sk-ssh-ed25519@openssh.com",
            KeyType::SkEcdsaP256 => "sk-ecdsa-sha2-nistp256@openssh.com",
        }
    }

    /// Looks a type name up (exact, case-sensitive as in OpenSSH).
    pub fn from_name(name: &str) -> Option<KeyType> {
        KeyType::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

/// Why a key line or key file was refused. Quoted input is escaped, so the
/// `Display` text is safe for logs and `remote:` lines.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Nothing but whitespace.
    #[error("empty key line")]
    Empty,
    /// Line longer than [`MAX_KEY_LINE`].
    #[error("key line is {0} bytes, longer than {MAX_KEY_LINE}")]
    TooLong(usize),
    /// A NUL byte.
    #[error("NUL byte in key line")]
    Nul,
    /// A carriage return (e.g. a CRLF file, or an attempt to hide text).
    #[error("carriage return in key line (convert the file to LF line ends)")]
    CarriageReturn,
    /// A line feed inside what should be one line (a second key smuggled in).
    #[error("line feed inside a key line")]
    Newline,
    /// Another control character.
    #[error("control character 0x{0:02x} in key line")]
    ControlChar(u8),
    /// Non-ASCII text (key lines, comments included, are ASCII).
    #[error("non-ASCII byte in key line")]
    NonAscii,
    /// The line starts with authorized_keys options.
    #[error("key line starts with options ({0}); only 'type base64 [comment]' is accepted")]
    Options(String),
    /// DSA keys are obsolete (1024 bits, disabled by OpenSSH).
    #[error("ssh-dss (DSA) keys are not accepted")]
    Dss,
    /// Certificates are not plain keys.
    #[error("certificate type '{0}' is not accepted; use the plain public key")]
    Certificate(String),
    /// Not a known key type.
    #[error("unknown key type '{0}'")]
    UnknownType(String),
    /// The type is not followed by a base64 blob.
    #[error("key type without key data")]
    MissingBlob,
    /// The blob is not canonical padded base64.
    #[error("key data is not valid base64")]
    BadBase64,
    /// The type inside the blob differs from the type in the line.
    #[error("key data is of type '{inner}' but the line says '{outer}'")]
    TypeMismatch {
        /// type named in the line
        outer: String,
        /// type found inside the blob (escaped)
        inner: String,
    },
    /// The blob is truncated or its fields are invalid.
    #[error("malformed {key_type} key: {reason}")]
    Malformed {
        /// the key type
        key_type: &'static str,
        /// what is wrong
        reason: &'static str,
    },
    /// Bytes after the last field of the blob.
    #[error("{0} key data has trailing bytes")]
    TrailingBytes(&'static str),
    /// RSA modulus too small.
    #[error("RSA key has {0} bits, at least {MIN_RSA_BITS} are required")]
    RsaTooSmall(usize),
    /// RSA modulus too large.
    #[error("RSA key has {0} bits, at most {MAX_RSA_BITS} are accepted")]
    RsaTooLarge(usize),
    /// Key file larger than [`MAX_KEYFILE_BYTES`].
    #[error("key file is {0} bytes, larger than {MAX_KEYFILE_BYTES}")]
    FileTooLarge(usize),
    /// Key file is not UTF-8 (hence not ASCII).
    #[error("key file is not valid UTF-8")]
    NotUtf8,
    /// Key file holds more than [`MAX_KEYS_PER_FILE`] keys.
    #[error("key file holds more than {MAX_KEYS_PER_FILE} keys")]
    TooManyKeys,
    /// Key file holds no key.
    #[error("key file holds no key")]
    NoKeys,
    /// The same key twice in one file.
    #[error("line {line}: the same key as line {first}")]
    DuplicateInFile {
        /// 1-based line of the repeat
        line: usize,
        /// 1-based line of the first occurrence
        first: usize,
    },
    /// A bad line inside a key file.
    #[error("line {line}: {error}")]
    AtLine {
        /// 1-based line number
        line: usize,
        /// what is wrong with it
        error: Box<KeyError>,
    },
}

/// A validated SSH public key: its type and canonical wire blob. The
/// comment of the source line is not kept (it is client-chosen text).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PublicKey {
    key_type: KeyType,
    blob: Vec<u8>,
}

/// Option keywords of authorized_keys, to tell "options prefix" apart from
/// "unknown key type" in messages.
const OPTION_WORDS: &[&str] = &[
    "agent-forwarding",
    "cert-authority",
    "command",
    "environment",
    "expiry-time",
    "from",
    "no-agent-forwarding",
    "no-port-forwarding",
    "no-pty",
    "no-touch-required",
    "no-user-rc",
    "no-x11-forwarding",
    "permitlisten",
    "permitopen",
    "port-forwarding",
    "principals",
    "pty",
    "restrict",
    "tunnel",
    "user-rc",
    "verify-required",
    "x11-forwarding",
];

fn is_sep(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Splits off the first space/tab-separated word.
fn next_word(s: &str) -> (&str, &str) {
    let s = s.trim_start_matches([' ', '\t']);
    match s.bytes().position(is_sep) {
        Some(i) => (s.get(..i).unwrap_or(""), s.get(i..).unwrap_or("").trim_start_matches([' ', '\t'])),
        None => (s, ""),
    }
}

/// SSH wire-format reader (RFC 4251 `string`s) that never panics.
struct Reader<'a> {
    buf: &'a [u8],
    key_type: &'static str,
}

impl<'a> Reader<'a> {
    fn malformed(&self, reason: &'static str) -> KeyError {
        KeyError::Malformed { key_type: self.key_type, reason }
    }

    fn string(&mut self) -> Result<&'a [u8], KeyError> {
        let (len, rest) = self.buf.split_first_chunk::<4>().ok_or_else(|| self.malformed("truncated length field"))?;
        let len = u32::from_be_bytes(*len) as usize;
        if len > rest.len() {
            return Err(self.malformed("field longer than the key data"));
        }
        let (field, rest) = rest.split_at(len);
        self.buf = rest;
        Ok(field)
    }

    /// A positive, minimally encoded mpint; returns its magnitude.
    fn positive_mpint(&mut self, what: &'static str) -> Result<&'a [u8], KeyError> {
        let raw = self.string()?;
        let Some((&first, rest)) = raw.split_first() else {
            return Err(self.malformed(what));
        };
        if first & 0x80 != 0 {
            return Err(self.malformed(what)); // negative
        }
        if first == 0 {
            // A leading zero is only allowed to keep the sign bit clear.
            match rest.first() {
                Some(&b) if b & 0x80 != 0 => Ok(rest),
                _ => Err(self.malformed(what)), // zero or non-minimal
            }
        } else {
            Ok(raw)
        }
    }

    fn finish(self) -> Result<(), KeyError> {
        if self.buf.is_empty() { Ok(()) } else { Err(KeyError::TrailingBytes(self.key_type)) }
    }
}

fn bit_length(magnitude: &[u8]) -> usize {
    match magnitude.first() {
        None => 0,
        Some(&b) => (magnitude.len() - 1) * 8 + (8 - b.leading_zeros() as usize),
    }
}

/// Checks a key blob against its outer type (module doc).
fn check_blob(key_type: KeyType, blob: &[u8]) -> Result<(), KeyError> {
    let name = key_type.as_str();
    let mut r = Reader { buf: blob, key_type: name };
    let inner = r.string()?;
    if inner != name.as_bytes() {
        return Err(KeyError::TypeMismatch { outer: name.to_string(), inner: escape::escape_bytes(inner, 60) });
    }
    let ecdsa = |r: &mut Reader<'_>, curve: &[u8], point_len: usize| -> Result<(), KeyError> {
        if r.string()? != curve {
            return Err(r.malformed("curve name does not match the key type"));
        }
        let q = r.string()?;
        if q.len() != point_len || q.first() != Some(&0x04) {
            return Err(r.malformed("public point is not an uncompressed point of the curve's size"));
        }
        Ok(())
    };
    let application = |r: &mut Reader<'_>| -> Result<(), KeyError> {
        let app = r.string()?;
        if app.is_empty() || app.len() > 256 || !app.iter().all(|b| (0x21..0x7f).contains(b)) {
            return Err(r.malformed("security key application must be 1..256 printable ASCII bytes"));
        }
        Ok(())
    };
    match key_type {
        KeyType::Ed25519 | KeyType::SkEd25519 => {
            if r.string()?.len() != 32 {
                return Err(r.malformed("ed25519 public key must be 32 bytes"));
            }
            if key_type == KeyType::SkEd25519 {
                application(&mut r)?;
            }
        }
        KeyType::EcdsaP256 => ecdsa(&mut r, b"nistp256", 65)?,
        KeyType::EcdsaP384 => ecdsa(&mut r, b"nistp384", 97)?,
        KeyType::EcdsaP521 => ecdsa(&mut r, b"nistp521", 133)?,
        KeyType::SkEcdsaP256 => {
            ecdsa(&mut r, b"nistp256", 65)?;
            application(&mut r)?;
        }
        KeyType::Rsa => {
            let e = r.positive_mpint("RSA exponent must be a positive minimal mpint")?;
            let n = r.positive_mpint("RSA modulus must be a positive minimal mpint")?;
            if e.last().is_none_or(|b| b & 1 == 0) || bit_length(e) < 2 || e.len() > n.len() {
                return Err(r.malformed("RSA exponent must be odd, at least 3 and smaller than the modulus"));
            }
            if n.last().is_none_or(|b| b & 1 == 0) {
                return Err(r.malformed("RSA modulus must be odd"));
            }
            let bits = bit_length(n);
            if bits < MIN_RSA_BITS {
                return Err(KeyError::RsaTooSmall(bits));
            }
            if bits > MAX_RSA_BITS {
                return Err(KeyError::RsaTooLarge(bits));
            }
        }
    }
    r.finish()
}

/// Classifies a first word that is not an accepted key type.
fn unknown_first_word(word: &str) -> KeyError {
    if word == "ssh-dss" {
        return KeyError::Dss;
    }
    if word.ends_with("-cert-v01@openssh.com") {
        return KeyError::Certificate(escape::escape_capped(word, 60));
    }
    let head = word.split(['=', ',']).next().unwrap_or("").to_ascii_lowercase();
    if word.contains(['=', '"', ',']) || OPTION_WORDS.contains(&head.as_str()) {
        return KeyError::Options(escape::escape_capped(word, 60));
    }
    KeyError::UnknownType(escape::escape_capped(word, 60))
}

impl PublicKey {
    /// Parses one key line: `<type> <base64> [comment]`, separated by
    /// spaces or tabs (surrounding spaces/tabs allowed), printable ASCII
    /// only. The comment is checked (printable ASCII) and dropped.
    pub fn parse_line(line: &str) -> Result<PublicKey, KeyError> {
        if line.len() > MAX_KEY_LINE {
            return Err(KeyError::TooLong(line.len()));
        }
        for b in line.bytes() {
            match b {
                b'\t' | 0x20..=0x7e => {}
                0 => return Err(KeyError::Nul),
                b'\r' => return Err(KeyError::CarriageReturn),
                b'\n' => return Err(KeyError::Newline),
                0x80..=0xff => return Err(KeyError::NonAscii),
                other => return Err(KeyError::ControlChar(other)),
            }
        }
        let (first, rest) = next_word(line);
        if first.is_empty() {
            return Err(KeyError::Empty);
        }
        let key_type = KeyType::from_name(first).ok_or_else(|| unknown_first_word(first))?;
        let (b64, _comment) = next_word(rest);
        if b64.is_empty() {
            return Err(KeyError::MissingBlob);
        }
        let blob = STANDARD.decode(b64).map_err(|_| KeyError::BadBase64)?;
        check_blob(key_type, &blob)?;
        Ok(PublicKey { key_type, blob })
    }

    /// The key type name (`ssh-ed25519`, …).
    pub fn key_type(&self) -> &str {
        self.key_type.as_str()
    }

    /// The key type as an enum.
    pub fn kind(&self) -> KeyType {
        self.key_type
    }

    /// The decoded wire blob.
    pub fn blob(&self) -> &[u8] {
        &self.blob
    }

    /// The canonical base64 of the blob (padded, as OpenSSH writes it).
    pub fn base64(&self) -> String {
        STANDARD.encode(&self.blob)
    }

    /// The canonical key line: `type base64`, no options, no comment.
    pub fn to_line(&self) -> String {
        format!("{} {}", self.key_type.as_str(), self.base64())
    }

    /// OpenSSH's default fingerprint (`ssh-keygen -l`):
    /// `SHA256:` + unpadded base64 of SHA-256 over the blob.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(&self.blob);
        format!("SHA256:{}", STANDARD_NO_PAD.encode(digest.as_slice()))
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_line())
    }
}

/// Free-function form of [`PublicKey::parse_line`].
pub fn parse_line(line: &str) -> Result<PublicKey, KeyError> {
    PublicKey::parse_line(line)
}

/// Parses a `keydir/<user>.pub` file: one key per non-blank line (several
/// keys per user are allowed, as in gitosis), blank lines (empty or only
/// spaces/tabs) ignored, every other line must parse. At most
/// [`MAX_KEYS_PER_FILE`] keys, at most [`MAX_KEYFILE_BYTES`] bytes, at
/// least one key, no key twice.
pub fn parse_keyfile(bytes: &[u8]) -> Result<Vec<PublicKey>, KeyError> {
    if bytes.len() > MAX_KEYFILE_BYTES {
        return Err(KeyError::FileTooLarge(bytes.len()));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| KeyError::NotUtf8)?;
    let mut keys: Vec<(usize, PublicKey)> = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        let lineno = i + 1;
        if line.bytes().all(is_sep) {
            continue;
        }
        let key = PublicKey::parse_line(line).map_err(|e| KeyError::AtLine { line: lineno, error: Box::new(e) })?;
        if let Some((first, _)) = keys.iter().find(|(_, k)| *k == key) {
            return Err(KeyError::DuplicateInFile { line: lineno, first: *first });
        }
        if keys.len() == MAX_KEYS_PER_FILE {
            return Err(KeyError::TooManyKeys);
        }
        keys.push((lineno, key));
    }
    if keys.is_empty() {
        return Err(KeyError::NoKeys);
    }
    Ok(keys.into_iter().map(|(_, k)| k).collect())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::testutil::Rng;

    // Generated with OpenSSH 9.2p1 `ssh-keygen`; fingerprints from
    // `ssh-keygen -lf`.
    pub(crate) const ED25519: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIV5UaGBbTZHFIf4sV84kqUcLq1JXuPKNnh4DKAQLoBD user@host";
    const ED25519_FP: &str = "SHA256:usJa9S1PXux5BB8RH6GyBhKmWUG6lcbK4X/xPaPkT+k";
    pub(crate) const RSA2048: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDKd6vtQ6DDT6ATINljoayBk8yIejQDA6Fd6dx7UbDyB8LltsYip7uyF91b85F6XBF+D1ih/nHJHmtSjES3uHJf7J+2ZTQ3aEOy5Fj41YoSVi4LGXK6nBoeeF/zRlNOuV9ja4WMZkE9dyxnwKHV+9w+1JPcVLUSVYoZ59bqOwEMgKu+YhkYXv9Om22PTGLJ3ya7i6MS/vJVYEe2zr2lJ88O89K1yNaef3QvdbneM9orh83y6s2GVpCi1clg4zJh1Z3fwbvwI+I41nde/J2uerIJVuwbPZq7N+5Bkc8RooS4iRP5mjpJ4wZAjDaA0n9wjvJu9DTanxnOefPHNEQe/wqT rsa2048";
    const RSA2048_FP: &str = "SHA256:ud2RpYkg78eOkuxpkSH+H57lBYq04pTuBZ0Hol0wX1Y";
    const RSA1024: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQC2NmHqb0Qu0kGd+LNALuhoR1yzaWVnJi4PLXIlcp3s2yq0ffXmtJxwpkVEayfl5TsoV5RecioAsXgKvNiSHgZnc+xPyECTOmbk7NYMedC7gtS9NYuf7LUo5x1KIC6g5X9iLhfFA7GES16qRpzdF45DUra59bnTfMdXRhZ7bX8/iw== r1024";
    pub(crate) const EC256: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBCGPxTmiKlr16B2eSOod5LGlfbxad1BmVAXJ4U6JN5db9MkdmF/Hllcx6kEI72EzA0e4C9UVzbC+eu4SG3ua2a0= root@vm";
    const EC256_FP: &str = "SHA256:jrCDBJZUkwStry3Bd4C8PtH8sSUMWx8MfNvlJGJ4PtY";
    const EC384: &str = "ecdsa-sha2-nistp384 AAAAE2VjZHNhLXNoYTItbmlzdHAzODQAAAAIbmlzdHAzODQAAABhBBAwSahhNE/VOHfogIvXTaT6BM/zidcErV5qiA3mK6HLEPcNEIaksZuGmVfiSpLMtllq1AEnahSlmo73rF4U+6wYpFqbmRq1BIKGzdsrgmZcXnktJoVfM6rXL+GqtdHxEQ== root@vm";
    const EC384_FP: &str = "SHA256:Sq112/GqDX6jgXjR9vO3QBgkqXV3ncTxJ22ZzyleskA";
    const EC521: &str = "ecdsa-sha2-nistp521 AAAAE2VjZHNhLXNoYTItbmlzdHA1MjEAAAAIbmlzdHA1MjEAAACFBAGEmCDfeT6NMafK51NU/e22kQF5TfOm+mOxB6AmmsxTS05kOwcwHQ8XpYnQ18od2PKwemeMact/6BSN62j5nE4VGQHsJ1vRp6/EHTI5HXT1UyH8TjTtkQGdcCraoQd2ixDpgFYvvc9bvzQqHFC84v3PxpgH08+Y+6fxCu/ZzA8QlzpQEw== root@vm";
    const EC521_FP: &str = "SHA256:2ly4NyiNj9ajXIc/q7FbEwJX7cfjoWGMyvbLhUoNKho";
    const DSA: &str = "ssh-dss AAAAB3NzaC1kc3MAAACBAJNF1CpI6usHRZWaFnn7MIHze1fP2AWMUgYJYc7CjgwqQaN5gKGWfm8algp1yOV4JPW8sVEpnDn8NafH/iToVk/CMqeUeDi1SsHNqa6hfxILbsl02gLgrikyQQCegwWOIl3/h/NYXwD0c01yGHbykjI9E+uclHCKetMohCQtEi+bAAAAFQDyVHXSv//P+DGaJ/xrNocuzLMrUwAAAIBO2MilvoO8vfEotmmcH/HaT/Ef+bgZv+OQTUruNJfDIcAyUMMLRijvobzDu9OP8ZX45Ow6FkuIRM6qjtVAXoWy5eE8x+zNJS8U+sUobHZsO/I9EW7r3iwwL+ZJqyTx1G250sXg1dPeN1nTnKWrB5hEz2B5grj0Ua7VK/rleq27mAAAAIBVnZVamFuDjOzvKhDLYl0zCd6aGubIT5OO1GcQqw3g1Tt55pGH8zfp3WdI9fLL2pnGKb6ap9gi8qf8Jgb3JixuYwVgRDA+3lw/ePe5QQOAuyxmwOglx9gfxWQ0NdQYbKjEO4r1mnt1A9LUjlncNC6IzqcyGGVNQBbnp5m0i/TAOA== root@vm";
    const CERT: &str = "ecdsa-sha2-nistp256-cert-v01@openssh.com AAAAKGVjZHNhLXNoYTItbmlzdHAyNTYtY2VydC12MDFAb3BlbnNzaC5jb20AAAAgqHm6aIsZP3YU19Sv1EnTwuvgIIS6leqkkKrRFOEwt1UAAAAIbmlzdHAyNTYAAABBBCGPxTmiKlr16B2eSOod5LGlfbxad1BmVAXJ4U6JN5db9MkdmF/Hllcx6kEI72EzA0e4C9UVzbC+eu4SG3ua2a0AAAAAAAAAAAAAAAEAAAACaWQAAAAIAAAABHVzZXIAAAAAAAAAAP//////////AAAAAAAAAIIAAAAVcGVybWl0LVgxMS1mb3J3YXJkaW5nAAAAAAAAABdwZXJtaXQtYWdlbnQtZm9yd2FyZGluZwAAAAAAAAAWcGVybWl0LXBvcnQtZm9yd2FyZGluZwAAAAAAAAAKcGVybWl0LXB0eQAAAAAAAAAOcGVybWl0LXVzZXItcmMAAAAAAAAAAAAAADMAAAALc3NoLWVkMjU1MTkAAAAghXlRoYFtNkcUh/ixXziSpRwurUle48o2eHgMoBAugEMAAABTAAAAC3NzaC1lZDI1NTE5AAAAQB9hDRx3McRQP8nxPu4zjEl3CtLLafwy0+PezQTa8HwOx2yutCJfbVmx82M6xekfMCVNN1XG9JGa/p3YnPNHXAY= root@vm";

    fn key(line: &str) -> PublicKey {
        match PublicKey::parse_line(line) {
            Ok(k) => k,
            Err(e) => panic!("{line}: {e}"),
        }
    }

    fn err(line: &str) -> KeyError {
        match PublicKey::parse_line(line) {
            Ok(k) => panic!("accepted {line:?} as {k}"),
            Err(e) => e,
        }
    }

    fn b64_of(line: &str) -> &str {
        line.split(' ').nth(1).unwrap_or("")
    }

    /// Wire-encodes fields as SSH strings.
    fn wire(fields: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for f in fields {
            out.extend_from_slice(&(f.len() as u32).to_be_bytes());
            out.extend_from_slice(f);
        }
        out
    }

    fn line_of(t: &str, blob: &[u8]) -> String {
        format!("{t} {}", STANDARD.encode(blob))
    }

    #[test]
    fn accepts_known_types_with_openssh_fingerprints() {
        let cases = [
            (ED25519, "ssh-ed25519", ED25519_FP),
            (RSA2048, "ssh-rsa", RSA2048_FP),
            (EC256, "ecdsa-sha2-nistp256", EC256_FP),
            (EC384, "ecdsa-sha2-nistp384", EC384_FP),
            (EC521, "ecdsa-sha2-nistp521", EC521_FP),
        ];
        for (line, t, fp) in cases {
            let k = key(line);
            assert_eq!(k.key_type(), t);
            assert_eq!(k.fingerprint(), fp);
            assert_eq!(k.to_line(), format!("{t} {}", b64_of(line)));
            assert_eq!(key(&k.to_line()), k);
        }
    }

    #[test]
    fn whitespace_and_comments() {
        let base = key(ED25519);
        let b64 = b64_of(ED25519);
        for line in [
            format!("ssh-ed25519 {b64}"),
            format!("ssh-ed25519\t{b64}\tcomment"),
            format!("  ssh-ed25519  {b64}  a comment with spaces  "),
            format!("ssh-ed25519 {b64} ~!@#$%^&*()\"'`"),
        ] {
            assert_eq!(key(&line), base, "{line}");
        }
    }

    #[test]
    fn security_keys() {
        let pk = [7u8; 32];
        let blob = wire(&[b"sk-ssh-ed25519@openssh.com", &pk, b"ssh:"]);
        let k = key(&line_of("sk-ssh-ed25519@openssh.com", &blob));
        assert_eq!(k.kind(), KeyType::SkEd25519);
        let mut q = vec![4u8];
        q.extend_from_slice(&[9u8; 64]);
        let blob = wire(&[b"sk-ecdsa-sha2-nistp256@openssh.com", b"nistp256", &q, b"ssh:x"]);
        let k = key(&line_of("sk-ecdsa-sha2-nistp256@openssh.com", &blob));
        assert_eq!(k.kind(), KeyType::SkEcdsaP256);
        // missing or empty application
        let blob = wire(&[b"sk-ssh-ed25519@openssh.com", &pk]);
        assert!(matches!(err(&line_of("sk-ssh-ed25519@openssh.com", &blob)), KeyError::Malformed { .. }));
        let blob = wire(&[b"sk-ssh-ed25519@openssh.com", &pk, b""]);
        assert!(matches!(err(&line_of("sk-ssh-ed25519@openssh.com", &blob)), KeyError::Malformed { .. }));
    }

    /// SECURITY AC-07 inputs and the other refusals.
    #[test]
    fn refusals() {
        let b64 = b64_of(ED25519);
        type Check = fn(&KeyError) -> bool;
        let cases: Vec<(String, Check)> = vec![
            (format!("ssh-ed25519 {b64} a\ncommand=\"/bin/sh\" ssh-ed25519 {b64} evil"), |e| *e == KeyError::Newline),
            (format!("command=\"/bin/sh\",no-pty ssh-ed25519 {b64}"), |e| matches!(e, KeyError::Options(_))),
            (format!("environment=\"LD_PRELOAD=/tmp/x.so\" ssh-ed25519 {b64}"), |e| matches!(e, KeyError::Options(_))),
            (format!("ssh-ed25519 {b64}\r"), |e| *e == KeyError::CarriageReturn),
            (format!("ssh-ed25519\r{b64}"), |e| *e == KeyError::CarriageReturn),
            (format!("cert-authority ssh-ed25519 {b64}"), |e| matches!(e, KeyError::Options(_))),
            (format!("restrict ssh-ed25519 {b64}"), |e| matches!(e, KeyError::Options(_))),
            (format!("no-pty ssh-ed25519 {b64}"), |e| matches!(e, KeyError::Options(_))),
            (format!("from=\"10.0.0.1\" ssh-ed25519 {b64}"), |e| matches!(e, KeyError::Options(_))),
            (RSA1024.to_string(), |e| *e == KeyError::RsaTooSmall(1024)),
            (DSA.to_string(), |e| *e == KeyError::Dss),
            (CERT.to_string(), |e| matches!(e, KeyError::Certificate(_))),
            // inner type differs from outer type
            (format!("ssh-rsa {b64}"), |e| matches!(e, KeyError::TypeMismatch { .. })),
            (format!("ecdsa-sha2-nistp256 {}", b64_of(EC384)), |e| matches!(e, KeyError::TypeMismatch { .. })),
            (format!("ecdsa-sha2-nistp384 {}", b64_of(EC256)), |e| matches!(e, KeyError::TypeMismatch { .. })),
            (format!("ssh-ed25519 {b64}\0"), |e| *e == KeyError::Nul),
            (format!("ssh-ed25519 {b64} \x1b[2J"), |e| *e == KeyError::ControlChar(0x1b)),
            (format!("ssh-ed25519 {b64} j\u{fc}rgen"), |e| *e == KeyError::NonAscii),
            ("".to_string(), |e| *e == KeyError::Empty),
            ("   ".to_string(), |e| *e == KeyError::Empty),
            ("ssh-ed25519".to_string(), |e| *e == KeyError::MissingBlob),
            ("ssh-ed25519   ".to_string(), |e| *e == KeyError::MissingBlob),
            ("SSH-ED25519 AAAA".to_string(), |e| matches!(e, KeyError::UnknownType(_))),
            ("ssh-ed448 AAAA".to_string(), |e| matches!(e, KeyError::UnknownType(_))),
            ("ssh-ed25519 not*base64".to_string(), |e| *e == KeyError::BadBase64),
            // unpadded / non-canonical base64
            (format!("ecdsa-sha2-nistp256 {}", b64_of(EC256).trim_end_matches('=')), |e| *e == KeyError::BadBase64),
            (format!("ssh-ed25519 {}", &b64[..b64.len() - 4]), |e| matches!(e, KeyError::Malformed { .. })),
            ("x".repeat(MAX_KEY_LINE + 1), |e| matches!(e, KeyError::TooLong(_))),
        ];
        for (line, check) in cases {
            let e = err(&line);
            assert!(check(&e), "{line:.80?} gave {e:?}");
            let shown = e.to_string();
            assert!(shown.bytes().all(|b| (0x20..0x7f).contains(&b)), "{shown}");
        }
    }

    #[test]
    fn blob_structure_checks() {
        let pk = [1u8; 32];
        let ed = |blob: Vec<u8>| err(&line_of("ssh-ed25519", &blob));
        assert!(matches!(ed(wire(&[b"ssh-ed25519", &pk[..31]])), KeyError::Malformed { .. }));
        assert!(matches!(ed(wire(&[b"ssh-ed25519", &[1u8; 33]])), KeyError::Malformed { .. }));
        let mut trailing = wire(&[b"ssh-ed25519", &pk]);
        trailing.push(0);
        assert_eq!(ed(trailing), KeyError::TrailingBytes("ssh-ed25519"));
        let mut huge_len = wire(&[b"ssh-ed25519"]);
        huge_len.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(ed(huge_len), KeyError::Malformed { .. }));
        assert!(matches!(ed(vec![0, 0]), KeyError::Malformed { .. }));
        assert_eq!(ed(vec![]), KeyError::MissingBlob);
        // ECDSA: wrong curve, compressed point, wrong length
        let mut q = vec![4u8];
        q.extend_from_slice(&[9u8; 64]);
        let ec = |blob: Vec<u8>| err(&line_of("ecdsa-sha2-nistp256", &blob));
        assert!(matches!(ec(wire(&[b"ecdsa-sha2-nistp256", b"nistp384", &q])), KeyError::Malformed { .. }));
        let mut compressed = q.clone();
        compressed[0] = 2;
        assert!(matches!(ec(wire(&[b"ecdsa-sha2-nistp256", b"nistp256", &compressed])), KeyError::Malformed { .. }));
        assert!(matches!(ec(wire(&[b"ecdsa-sha2-nistp256", b"nistp256", &q[..64]])), KeyError::Malformed { .. }));
        assert!(
            key(&line_of("ecdsa-sha2-nistp256", &wire(&[b"ecdsa-sha2-nistp256", b"nistp256", &q]))).blob().len() > 65
        );
    }

    #[test]
    fn rsa_mpint_rules() {
        let mut n = vec![0u8];
        n.push(0xc1);
        n.extend_from_slice(&[0x55; 255]); // 2048 bits, odd
        let e: &[u8] = &[1, 0, 1];
        let rsa = |e: &[u8], n: &[u8]| PublicKey::parse_line(&line_of("ssh-rsa", &wire(&[b"ssh-rsa", e, n])));
        assert!(rsa(e, &n).is_ok());
        // non-minimal leading zero (an alternative encoding of the same key)
        let mut padded = vec![0u8];
        padded.extend_from_slice(&n);
        assert!(matches!(rsa(e, &padded), Err(KeyError::Malformed { .. })));
        let e_padded: &[u8] = &[0, 1, 0, 1];
        assert!(matches!(rsa(e_padded, &n), Err(KeyError::Malformed { .. })));
        // negative modulus
        assert!(matches!(rsa(e, &n[1..]), Err(KeyError::Malformed { .. })));
        // even exponent / exponent 1 / even modulus / empty
        assert!(matches!(rsa(&[1, 0, 0], &n), Err(KeyError::Malformed { .. })));
        assert!(matches!(rsa(&[1], &n), Err(KeyError::Malformed { .. })));
        let mut even = n.clone();
        if let Some(last) = even.last_mut() {
            *last = 0x54;
        }
        assert!(matches!(rsa(e, &even), Err(KeyError::Malformed { .. })));
        assert!(matches!(rsa(&[], &n), Err(KeyError::Malformed { .. })));
        // 2047 bits
        let mut small = vec![0x41u8];
        small.extend_from_slice(&[0x55; 255]);
        assert_eq!(rsa(e, &small), Err(KeyError::RsaTooSmall(2047)));
        // 16392 bits
        let mut big = vec![0x41u8];
        big.extend_from_slice(&[0x55; 2049]);
        assert!(matches!(rsa(e, &big), Err(KeyError::RsaTooLarge(_)) | Err(KeyError::TooLong(_))));
    }

    #[test]
    fn keyfiles() {
        let two = format!("{ED25519}\n\n  \n{EC256}\n");
        let keys = match parse_keyfile(two.as_bytes()) {
            Ok(k) => k,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[1].key_type(), "ecdsa-sha2-nistp256");
        assert_eq!(parse_keyfile(b""), Err(KeyError::NoKeys));
        assert_eq!(parse_keyfile(b"\n \n"), Err(KeyError::NoKeys));
        let e = parse_keyfile(format!("{ED25519}\n# comment\n").as_bytes());
        assert!(matches!(e, Err(KeyError::AtLine { line: 2, .. })), "{e:?}");
        let e = parse_keyfile(format!("{ED25519}\r\n").as_bytes());
        assert!(matches!(e, Err(KeyError::AtLine { line: 1, .. })), "{e:?}");
        let e = parse_keyfile(format!("{ED25519}\n{EC256}\n{ED25519} again\n").as_bytes());
        assert_eq!(e, Err(KeyError::DuplicateInFile { line: 3, first: 1 }));
        assert_eq!(parse_keyfile(b"\xff"), Err(KeyError::NotUtf8));
        assert!(matches!(parse_keyfile(&vec![b'\n'; MAX_KEYFILE_BYTES + 1]), Err(KeyError::FileTooLarge(_))));
        // 16 distinct keys are fine, 17 are not
        let many: Vec<String> = (0..17u8).map(|i| line_of("ssh-ed25519", &wire(&[b"ssh-ed25519", &[i; 32]]))).collect();
        assert_eq!(parse_keyfile(many[..16].join("\n").as_bytes()).map(|k| k.len()), Ok(16));
        assert_eq!(parse_keyfile(many.join("\n").as_bytes()), Err(KeyError::TooManyKeys));
        // error display names the line and stays printable
        let e = parse_keyfile(b"ssh-ed25519 AAAA\x1b]0;owned\x07").unwrap_err();
        assert_eq!(e.to_string(), "line 1: control character 0x1b in key line");
    }

    fn ssh_keygen_available() -> bool {
        std::process::Command::new("ssh-keygen").arg("-?").output().is_ok()
    }

    /// Fingerprints and canonical lines agree with `ssh-keygen -lf` for
    /// freshly generated keys of every locally generatable type.
    #[test]
    fn fingerprints_match_ssh_keygen() {
        if !ssh_keygen_available() {
            eprintln!("ssh-keygen not found; skipping (static vectors still checked)");
            return;
        }
        let dir = std::env::temp_dir().join(format!(
            "ferry-gitosis-keys-{}-{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let specs: &[(&str, &[&str])] = &[
            ("ed", &["-t", "ed25519"]),
            ("rsa", &["-t", "rsa", "-b", "3072"]),
            ("ec256", &["-t", "ecdsa", "-b", "256"]),
            ("ec384", &["-t", "ecdsa", "-b", "384"]),
            ("ec521", &["-t", "ecdsa", "-b", "521"]),
        ];
        for (name, args) in specs {
            let path = dir.join(name);
            let status = std::process::Command::new("ssh-keygen")
                .args(*args)
                .args(["-q", "-N", "", "-C", "test comment", "-f"])
                .arg(&path)
                .status()
                .expect("run ssh-keygen");
            assert!(status.success(), "ssh-keygen {args:?}");
            let pub_path = path.with_extension("pub");
            let line = std::fs::read_to_string(&pub_path).expect("read .pub");
            let keys = parse_keyfile(line.as_bytes()).expect("parse generated key");
            assert_eq!(keys.len(), 1);
            let out =
                std::process::Command::new("ssh-keygen").arg("-lf").arg(&pub_path).output().expect("ssh-keygen -l");
            let listing = String::from_utf8_lossy(&out.stdout);
            let fp = listing.split_whitespace().nth(1).unwrap_or("");
            assert_eq!(keys[0].fingerprint(), fp, "{name}");
            let mut words = line.split_whitespace();
            let canonical = format!("{} {}", words.next().unwrap_or(""), words.next().unwrap_or(""));
            assert_eq!(keys[0].to_line(), canonical);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn never_panics_on_random_input() {
        let mut rng = Rng::new(0x6b657973);
        let seeds = [ED25519, RSA2048, EC256, EC521, CERT];
        for round in 0..20_000 {
            let input = if round % 3 == 0 {
                (0..rng.below(120)).map(|_| rng.byte()).collect()
            } else {
                let seed = seeds[rng.below(seeds.len())];
                rng.mutate(seed.as_bytes())
            };
            let text = String::from_utf8_lossy(&input);
            match PublicKey::parse_line(&text) {
                Ok(k) => {
                    assert_eq!(PublicKey::parse_line(&k.to_line()).as_ref(), Ok(&k));
                }
                Err(e) => {
                    let shown = e.to_string();
                    assert!(shown.bytes().all(|b| (0x20..0x7f).contains(&b)), "{shown}");
                }
            }
            let _ = parse_keyfile(&input);
        }
        // mutate inside the decoded blob too, to reach the structure checks
        for _ in 0..20_000 {
            let seed = seeds[rng.below(4)];
            let mut parts = seed.split(' ');
            let t = parts.next().unwrap_or("");
            let blob = STANDARD.decode(parts.next().unwrap_or("")).unwrap_or_default();
            let mutated = rng.mutate(&blob);
            let _ = PublicKey::parse_line(&line_of(t, &mutated));
        }
    }
}
