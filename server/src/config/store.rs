//! `[store]`: where verified artifacts are kept ([`crate::store`]).
//!
//! `kind = "local"` (the default) is the node's own `data/` directory, as
//! Ferry has always stored; `kind = "s3"` is a bucket of S3-compatible
//! object storage (AWS S3, Garage, MinIO…). Git mirrors and snapshot-tree
//! content stay on the node's disk either way.

use std::path::PathBuf;

use anyhow::bail;
use serde::Deserialize;

/// `[store]` (module docs).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `local` or `s3`.
    #[serde(default = "default_kind")]
    pub kind: String,
    /// The S3 endpoint URL (`https://s3.eu-west-1.amazonaws.com`,
    /// `http://127.0.0.1:3900` for a local Garage).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The region the endpoint signs for (`garage` for Garage's default).
    #[serde(default = "default_region")]
    pub region: String,
    /// The bucket; it must exist (the node never creates one).
    #[serde(default)]
    pub bucket: Option<String>,
    /// Key prefix inside the bucket, so several nodes can share one bucket
    /// (`backup1` stores under `backup1/<client>/…`). Empty: the bucket root.
    #[serde(default)]
    pub prefix: String,
    /// A TOML file with `access_key_id` and `secret_access_key`, readable
    /// only by the node's account. Absent: the standard AWS environment
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`).
    #[serde(default)]
    pub credentials: Option<PathBuf>,
    /// Part size of multipart uploads in MiB (5..=4096); artifacts up to
    /// one part are sent in one PUT.
    #[serde(default = "default_part")]
    pub part_size_mib: u64,
    /// Seconds one request to the store (a part's PUT, a ranged GET) may
    /// take before it is abandoned and retried (object_store retries these
    /// with backoff for five times this long). Why not object_store's
    /// 30 s: a 16 MiB part needs 0.5 MB/s then. Why not more: a request
    /// the server never answers (Garage once lost a part's PUT under a
    /// locked metadata database) waits this long before its retry.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: u64,
    /// Encrypt every object before it leaves the node (age, X25519), with
    /// the identities in `key`; the digest kept is the plaintext's.
    #[serde(default)]
    pub encrypt: bool,
    /// The age identity file (`ferry-node store keygen` writes it): owned
    /// by the node's account, mode 0600. Its first identity encrypts; all
    /// of them decrypt (older ones stay after `keygen --rotate`).
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// Refuse a bucket without S3 Object Lock and a default retention, so
    /// not even the node's own credentials can delete a backup early.
    #[serde(default)]
    pub object_lock: bool,
}

fn default_kind() -> String {
    "local".into()
}
fn default_region() -> String {
    "us-east-1".into()
}
fn default_part() -> u64 {
    16
}
fn default_request_timeout() -> u64 {
    120
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            kind: default_kind(),
            endpoint: None,
            region: default_region(),
            bucket: None,
            prefix: String::new(),
            credentials: None,
            part_size_mib: default_part(),
            request_timeout_secs: default_request_timeout(),
            encrypt: false,
            key: None,
            object_lock: false,
        }
    }
}

impl StoreConfig {
    /// Refuse a store the node could not use, before any job runs.
    pub fn validate(&self) -> anyhow::Result<()> {
        match self.kind.as_str() {
            "local" if self.encrypt || self.object_lock => {
                bail!(
                    "[store] encrypt and object_lock apply to kind = \"s3\" (the node's own disk is not encrypted by Ferry)"
                )
            }
            "local" => return Ok(()),
            "s3" => {}
            k => bail!("[store] kind = {k:?}: \"local\" or \"s3\""),
        }
        let Some(ep) = &self.endpoint else { bail!("[store] kind = \"s3\" needs endpoint = \"https://…\"") };
        if !(ep.starts_with("https://") || ep.starts_with("http://")) || ep.chars().any(|c| c.is_whitespace()) {
            bail!("[store] endpoint = {ep:?}: an http:// or https:// URL");
        }
        let Some(b) = &self.bucket else { bail!("[store] kind = \"s3\" needs bucket = \"…\"") };
        // S3's bucket naming rules (3..=63 of a-z 0-9 . -).
        if !(3..=63).contains(&b.len())
            || !b.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        {
            bail!("[store] bucket = {b:?}: 3 to 63 of a-z, 0-9, '.', '-'");
        }
        if !self.prefix.is_empty() && !self.prefix.split('/').all(ferry_text::is_safe_token) {
            bail!("[store] prefix = {:?}: '/'-separated names of letters, digits, '.', '_', '-'", self.prefix);
        }
        if !(5..=4096).contains(&self.part_size_mib) {
            bail!("[store] part_size_mib = {}: 5 to 4096 (S3's part limits)", self.part_size_mib);
        }
        if !(1..=86_400).contains(&self.request_timeout_secs) {
            bail!("[store] request_timeout_secs = {}: 1 to 86400", self.request_timeout_secs);
        }
        if self.encrypt && self.key.is_none() {
            bail!(
                "[store] encrypt = true needs key = \"/etc/ferry/store.key\" (make it with `ferry-node store keygen`)"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(extra: &str) -> StoreConfig {
        toml::from_str(&format!("kind = \"s3\"\nendpoint = \"http://127.0.0.1:3900\"\nbucket = \"ferry\"\n{extra}"))
            .unwrap()
    }

    #[test]
    fn local_is_the_default_and_s3_needs_its_keys() {
        let d: StoreConfig = toml::from_str("").unwrap();
        assert_eq!(d.kind, "local");
        d.validate().unwrap();
        s3("prefix = \"backup1/a\"").validate().unwrap();
        for bad in ["prefix = \"../x\"", "prefix = \"a%2F\"", "part_size_mib = 1", "request_timeout_secs = 0"] {
            assert!(s3(bad).validate().is_err(), "{bad}");
        }
        let no_bucket: StoreConfig = toml::from_str("kind = \"s3\"\nendpoint = \"http://h:1\"").unwrap();
        assert!(no_bucket.validate().unwrap_err().to_string().contains("bucket"));
        assert!(s3("encrypt = true").validate().unwrap_err().to_string().contains("key"));
        s3("encrypt = true\nkey = \"/etc/ferry/store.key\"\nobject_lock = true").validate().unwrap();
        let local_encrypt: StoreConfig = toml::from_str("encrypt = true\nkey = \"/k\"").unwrap();
        assert!(local_encrypt.validate().is_err());
        let bad_kind: StoreConfig = toml::from_str("kind = \"ftp\"").unwrap();
        assert!(bad_kind.validate().is_err());
    }

    /// Every `[store]` key appears in the commented example in deploy/.
    #[test]
    fn every_key_is_in_the_deploy_example() {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/node.toml");
        let text = std::fs::read_to_string(p).unwrap();
        let at = text.find("[store]").expect("a [store] section in deploy/node.toml");
        let section = &text[at..];
        for key in [
            "kind",
            "endpoint",
            "region",
            "bucket",
            "prefix",
            "credentials",
            "part_size_mib",
            "request_timeout_secs",
            "encrypt",
            "key",
            "object_lock",
        ] {
            assert!(section.contains(&format!("{key} =")), "deploy/node.toml [store] lacks {key}");
        }
    }
}
