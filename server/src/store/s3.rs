//! [`S3Store`]: artifacts in a bucket of S3-compatible object storage
//! (`[store] kind = "s3"`; AWS S3, Garage, MinIO).
//!
//! The client is the `object_store` crate (Apache Arrow's, with its `aws`
//! feature). Chosen over `aws-sdk-s3` because that SDK brings the whole
//! smithy runtime and its credential chain (hundreds of crates, minutes of
//! build) for the six calls the node makes, and over `opendal` because its
//! many-backend layer and service features add surface the node does not
//! use; `object_store` is small, maintained by the Arrow project, has a plain
//! async API, a streaming multipart writer ([`WriteMultipart`]) with bounded
//! buffering, streaming `get`, server-side `copy`, and works against Garage
//! with path-style requests.
//!
//! The node itself is synchronous (threads, no async runtime); the store
//! owns one small tokio runtime for the process and bridges each call with
//! `block_on` from the calling thread (never from inside the runtime).
//!
//! Keys: `<prefix>/<client>/<source>/<received>/<file>` and its
//! `<file>.sha256` sidecar object. Uploads go first to
//! `<prefix>/.tmp/<node>/<pid>-<random>`, hashed while they stream; only a
//! temporary whose sha256 matches is copied to its final key (sidecar first,
//! then the artifact), so a reader never sees a partial or unverified
//! object. The first open in a process removes temporaries left by this
//! node's processes that no longer run (a killed upload).
//!
//! With `[store] encrypt = true` the bytes that leave the node are an age
//! file ([`super::crypt`]), encrypted while they stream; the digest
//! checked before the copy, and kept in the sidecar, is the plaintext's.
//! Reads ([`super::reader`]) decrypt whatever object says it is encrypted.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjPath;
use object_store::{GetOptions, ObjectStore as _, PutMultipartOptions, PutOptions, PutPayload, WriteMultipart};
use sha2::Digest as _;

use super::bucket::{Bucket, Health, Lock};
use super::crypt::{self, KeyError, Keys};
use super::reader::ObjectReader;
use super::{ArtifactKey, ArtifactStore, LocalStore, Stored};
use crate::config::NodeConfig;

/// The longest object key S3 accepts, in bytes.
const MAX_KEY: usize = 1024;
/// Parts uploaded at once by one multipart upload (bounds memory to
/// `part size × (this + 1)`).
const PARTS_IN_FLIGHT: usize = 4;
/// Where upload temporaries live under the prefix.
const TMP_DIR: &str = ".tmp";

/// The process's runtime for every S3 call (module docs).
fn runtime() -> anyhow::Result<Arc<tokio::runtime::Runtime>> {
    static RT: OnceLock<Arc<tokio::runtime::Runtime>> = OnceLock::new();
    if let Some(rt) = RT.get() {
        return Ok(rt.clone());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("ferry-s3")
        .enable_all()
        .build()
        .context("cannot start the S3 client's runtime")?;
    Ok(RT.get_or_init(|| Arc::new(rt)).clone())
}

/// The credentials file's content (`[store] credentials`).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    access_key_id: String,
    secret_access_key: String,
}

/// Read the credentials file, refusing one another account could read:
/// the secret key is as good as every backup in the bucket. Mode 0600 and
/// this account's, or, in the two-account layout, 0640 in the node's
/// shared group, so that `git` (serving a client's restore) reads it as
/// well as the scan account ([`crate::layout::check_secret_file`]).
fn read_credentials(p: &Path, shared: Option<&crate::layout::SharedGroup>) -> anyhow::Result<Credentials> {
    let md = std::fs::metadata(p).with_context(|| format!("cannot read the S3 credentials file {}", p.display()))?;
    crate::layout::check_secret_file(p, "the S3 credentials file", &md, shared, false)
        .map_err(|e| anyhow::anyhow!(e))?;
    let text =
        std::fs::read_to_string(p).with_context(|| format!("cannot read the S3 credentials file {}", p.display()))?;
    // The parser's message may quote the line, which could hold the secret.
    toml::from_str(&text).map_err(|_| {
        anyhow::anyhow!(
            "the S3 credentials file {} is not `access_key_id = \"…\"` and `secret_access_key = \"…\"`",
            p.display()
        )
    })
}

/// Artifacts in an S3 bucket (module docs).
pub struct S3Store {
    client: Arc<AmazonS3>,
    rt: Arc<tokio::runtime::Runtime>,
    /// `""` or `a/b/` (with its slash).
    prefix: String,
    bucket: String,
    endpoint: String,
    region: String,
    node: String,
    /// `[store] encrypt`: new objects are encrypted to `keys`.
    encrypt: bool,
    /// The key file's identities, or why they could not be read (an
    /// error only when an encrypted object is read, or when encrypting).
    keys: Result<Option<Arc<Keys>>, String>,
    part_size: usize,
    /// Downloads are written under data/ first, as for [`LocalStore`], and
    /// removed once uploaded.
    staging: LocalStore,
    data: PathBuf,
}

impl S3Store {
    /// Connect (no request yet), and once per process per bucket and
    /// prefix remove stale upload temporaries.
    pub fn open(cfg: &NodeConfig) -> anyhow::Result<S3Store> {
        let store = S3Store::connect(cfg)?;
        // Encrypting without the key is refused before anything is read
        // or written; a key set only for reading fails when it is needed.
        if let (true, Err(e)) = (store.encrypt, &store.keys) {
            return Err(KeyError(e.clone()).into());
        }
        static CLEANED: OnceLock<Mutex<std::collections::HashSet<String>>> = OnceLock::new();
        let first = CLEANED
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(format!("{}|{}|{}", store.endpoint, store.bucket, store.prefix));
        if first {
            store.remove_stale_temporaries()?;
        }
        Ok(store)
    }

    /// Connect without any request: for the probe and `store check`, which
    /// must answer in seconds when the store is down (the cleanup's listing
    /// would retry for minutes).
    pub fn connect(cfg: &NodeConfig) -> anyhow::Result<S3Store> {
        let s = &cfg.store;
        let endpoint = s.endpoint.clone().context("[store] kind = \"s3\" needs endpoint")?;
        let bucket = s.bucket.clone().context("[store] kind = \"s3\" needs bucket")?;
        let (options, retry) = request_tuning(s.request_timeout_secs);
        let mut b = AmazonS3Builder::from_env()
            .with_client_options(options)
            .with_retry(retry)
            .with_endpoint(&endpoint)
            // After the client options, which would reset it.
            .with_allow_http(endpoint.starts_with("http://"))
            .with_region(&s.region)
            .with_bucket_name(&bucket)
            .with_virtual_hosted_style_request(false);
        if s.object_lock {
            // AWS requires a checksum on writes into a bucket with a
            // default retention.
            b = b.with_checksum_algorithm(object_store::aws::Checksum::SHA256);
        }
        let shared = crate::layout::SharedGroup::of(cfg);
        if let Some(p) = &s.credentials {
            let c = read_credentials(p, shared.as_ref())?;
            b = b.with_access_key_id(c.access_key_id).with_secret_access_key(c.secret_access_key);
        }
        let client = b.build().with_context(|| format!("S3 bucket {bucket} at {endpoint}"))?;
        let prefix = if s.prefix.is_empty() { String::new() } else { format!("{}/", s.prefix.trim_end_matches('/')) };
        let keys = match &s.key {
            None => Ok(None),
            Some(p) => Keys::load(p, shared.as_ref()).map(|k| Some(Arc::new(k))).map_err(|e| e.0),
        };
        let store = S3Store {
            client: Arc::new(client),
            rt: runtime()?,
            prefix,
            bucket,
            endpoint,
            region: s.region.clone(),
            node: cfg.name.clone(),
            encrypt: s.encrypt,
            keys,
            part_size: (s.part_size_mib as usize) << 20,
            staging: LocalStore::new(cfg.data_dir()),
            data: cfg.data_dir(),
        };
        Ok(store)
    }

    /// A reader of the object version with `etag` (of `size` stored bytes), that
    /// decrypts it when it is encrypted: the key is checked before the
    /// first byte, so a wrong or missing key fails here.
    fn reader(
        &self,
        p: &ObjPath,
        size: u64,
        etag: Option<&str>,
        encrypted: bool,
        what: &str,
    ) -> anyhow::Result<Box<dyn Read + Send>> {
        let keys = if encrypted { Some(self.keys_for(what)?) } else { None };
        let reader = ObjectReader::start(
            &self.rt,
            self.client.clone(),
            p.clone(),
            size,
            etag.map(str::to_owned),
            what.to_owned(),
        );
        Ok(match keys {
            Some(k) => Box::new(k.decrypt(std::io::BufReader::with_capacity(1 << 20, reader), what)?),
            None => Box::new(reader),
        })
    }

    /// What every error names: the bucket and the endpoint, never a secret.
    fn at(&self) -> String {
        format!("S3 bucket {} at {}", self.bucket, self.endpoint)
    }

    /// The keys that decrypt `what`, or the `E_STORE_KEY` error why not.
    fn keys_for(&self, what: &str) -> Result<Arc<Keys>, KeyError> {
        match &self.keys {
            Ok(Some(k)) => Ok(k.clone()),
            Ok(None) => Err(KeyError(format!("{what} is encrypted and [store] key is not set"))),
            Err(e) => Err(KeyError(format!("{what} is encrypted: {e}"))),
        }
    }

    /// Signed bucket-level requests ([`super::bucket`]).
    fn bucket(&self) -> Bucket<'_> {
        Bucket { client: &self.client, endpoint: &self.endpoint, bucket: &self.bucket, region: &self.region }
    }

    /// Is the store there, and does it take the node's credentials? (A
    /// scan asks before it pulls; bounded by [`super::bucket::PROBE_TIMEOUT`].)
    pub fn probe(&self) -> Health {
        match self.rt.block_on(self.bucket().probe()) {
            Health::Up => Health::Up,
            Health::Down(why) => Health::Down(format!("{} does not answer: {why}", self.at())),
            Health::Refused(why) => Health::Refused(format!("{}: {why}", self.at())),
        }
    }

    /// The bucket's object lock state.
    pub fn lock(&self) -> Lock {
        self.rt.block_on(self.bucket().lock())
    }

    /// What every error names (bucket and endpoint).
    pub fn describe(&self) -> String {
        self.at()
    }

    /// Whether objects are encrypted, and to which recipient.
    pub fn encryption(&self) -> Result<Option<String>, String> {
        match (&self.keys, self.encrypt) {
            (_, false) => Ok(None),
            (Ok(Some(k)), true) => {
                k.self_test().map(|()| Some(k.recipient().to_string())).map_err(|e| format!("{e:#}"))
            }
            (Ok(None), true) => Err("[store] encrypt = true without key".into()),
            (Err(e), true) => Err(format!("E_STORE_KEY: {e}")),
        }
    }

    /// The object key of `rel` under the prefix.
    fn obj(&self, rel: &str) -> ObjPath {
        ObjPath::from(format!("{}{rel}", self.prefix))
    }

    /// The key of an artifact, refusing any part that would form a strange
    /// key (percent signs, `..`, slashes, control characters, a key longer
    /// than S3 allows). Names were validated as storage names before they
    /// get here; this is the store's own line.
    fn key_of(&self, key: &ArtifactKey) -> anyhow::Result<ObjPath> {
        object_key(&self.prefix, key).map_err(|e| anyhow::anyhow!("{e} in {}", self.at()))?;
        Ok(self.obj(&key.rel_path()))
    }

    fn sidecar_of(&self, key: &ArtifactKey) -> ObjPath {
        self.obj(&format!("{}/{}/{}/{}", key.client, key.source, key.received, key.sidecar_name()))
    }

    /// Delete `<prefix>/.tmp/<node>/<pid>-…` whose process is gone (the
    /// PID namespace is the node's own; a temporary older than a day goes
    /// whatever its PID, so a reused PID delays the cleanup, never stops it).
    fn remove_stale_temporaries(&self) -> anyhow::Result<()> {
        let dir = self.obj(&format!("{TMP_DIR}/{}", self.node));
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let stale: Vec<ObjPath> = self.rt.block_on(async {
            let metas: Vec<_> = self.client.list(Some(&dir)).collect().await;
            let mut out = Vec::new();
            for m in metas {
                let m = m.with_context(|| format!("cannot list upload temporaries in {}", self.at()))?;
                let name = m.location.filename().unwrap_or("");
                let pid = name.split('-').next().and_then(|p| p.parse::<u32>().ok());
                let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
                let old = now - m.last_modified.timestamp() > 86_400;
                if !alive || old {
                    out.push(m.location);
                }
            }
            anyhow::Ok(out)
        })?;
        for p in stale {
            tracing::warn!(key = %p, "removing the temporary of an interrupted upload");
            self.rt
                .block_on(self.client.delete(&p))
                .with_context(|| format!("cannot remove the upload temporary {p} in {}", self.at()))?;
        }
        Ok(())
    }

    /// Stream `file` to `tmp`, hashing the plaintext (and encrypting it
    /// when the store encrypts); returns the plaintext's sha256 (hex).
    async fn upload(&self, file: &Path, tmp: &ObjPath) -> anyhow::Result<String> {
        use std::io::Write as _;
        let mut f = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
        let size = f.metadata()?.len();
        let mut hasher = sha2::Sha256::new();
        let (attributes, mut enc, sealed) = if self.encrypt {
            let keys = self.keys_for("the upload").map_err(|e| anyhow::anyhow!(e))?;
            let sealed = Sealed::default();
            (crypt::attributes(size), Some(keys.encryptor()?.wrap_output(sealed.clone())?), sealed)
        } else {
            (object_store::Attributes::new(), None, Sealed::default())
        };
        if size <= self.part_size as u64 {
            let mut buf = Vec::with_capacity(size as usize);
            f.read_to_end(&mut buf)?;
            hasher.update(&buf);
            let body = match enc.take() {
                Some(mut w) => {
                    w.write_all(&buf)?;
                    w.finish()?;
                    // The plaintext is not kept beside its ciphertext.
                    drop(buf);
                    sealed.take()
                }
                None => buf,
            };
            let opts = PutOptions { attributes, ..Default::default() };
            self.client
                .put_opts(tmp, PutPayload::from(body), opts)
                .await
                .with_context(|| format!("upload to {}", self.at()))?;
        } else {
            let opts = PutMultipartOptions { attributes, ..Default::default() };
            let upload =
                self.client.put_multipart_opts(tmp, opts).await.with_context(|| format!("upload to {}", self.at()))?;
            let mut w = WriteMultipart::new_with_chunk_size(upload, self.part_size);
            let mut buf = vec![0u8; 1 << 20];
            let mut eof = false;
            while !eof {
                let n = match f.read(&mut buf) {
                    Ok(n) => n,
                    Err(e) => {
                        let _ = w.abort().await;
                        return Err(e).with_context(|| format!("cannot read {}", file.display()));
                    }
                };
                eof = n == 0;
                hasher.update(&buf[..n]);
                let sealed_now;
                let out: &[u8] = if enc.is_some() {
                    let res = if eof {
                        enc.take().expect("encrypting").finish().map(drop)
                    } else {
                        enc.as_mut().expect("encrypting").write_all(&buf[..n])
                    };
                    if let Err(err) = res {
                        let _ = w.abort().await;
                        return Err(err).context("cannot encrypt");
                    }
                    sealed_now = sealed.take();
                    &sealed_now
                } else {
                    &buf[..n]
                };
                if out.is_empty() {
                    continue;
                }
                if let Err(e) = w.wait_for_capacity(PARTS_IN_FLIGHT).await {
                    let _ = w.abort().await;
                    return Err(e).with_context(|| format!("upload to {}", self.at()));
                }
                w.write(out);
                ferry_durable::hold_point("s3:mid-upload");
            }
            ferry_durable::hold_point("s3:before-complete");
            if let Err(e) = w.finish().await {
                return Err(anyhow::Error::new(e).context(CompleteRefused).context(format!("upload to {}", self.at())));
            }
        }
        Ok(hex::encode(hasher.finalize()))
    }
}

/// Every part of a multipart upload was accepted, and then the store
/// refused to assemble them (or the request failed for good). Seen once
/// after a Garage frozen mid-upload came back: a part PUT that had timed
/// out and been sent again reached the server late as well, and the
/// completion was answered with a 4xx, which object_store does not retry.
/// The download is still on disk, so [`S3Store::put`] uploads it once
/// more under a new temporary key.
#[derive(Debug, thiserror::Error)]
#[error("the store did not complete the multipart upload")]
struct CompleteRefused;

/// Where the age writer puts ciphertext until the upload takes it (shared
/// because the writer owns its sink while the upload drains it).
#[derive(Clone, Default)]
struct Sealed(Arc<Mutex<Vec<u8>>>);

impl Sealed {
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl std::io::Write for Sealed {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn is_not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

impl ArtifactStore for S3Store {
    fn staging_dir(&self, key: &ArtifactKey) -> anyhow::Result<PathBuf> {
        self.key_of(key)?;
        self.staging.staging_dir(key)
    }

    fn put(&self, key: &ArtifactKey, file: &Path, sha256: &str) -> anyhow::Result<()> {
        let dest = self.key_of(key)?;
        let sidecar = self.sidecar_of(key);
        let sidecar_text = key.sidecar_text(sha256);
        if !file.exists() {
            // An artifact an interrupted run already stored (jobs'
            // `unrecorded_download`): it was verified before it became
            // visible; write its sidecar again.
            if self.stat(key)?.is_none() {
                bail!("{} is neither downloaded nor stored in {}", key.rel_path(), self.at());
            }
            self.rt
                .block_on(self.client.put(&sidecar, PutPayload::from(sidecar_text.into_bytes())))
                .with_context(|| format!("cannot write the digest sidecar of {} in {}", key.rel_path(), self.at()))?;
            return Ok(());
        }
        let tmp_key =
            || self.obj(&format!("{TMP_DIR}/{}/{}-{:016x}", self.node, std::process::id(), rand::random::<u64>()));
        let mut tmp = tmp_key();
        let result = self.rt.block_on(async {
            let got = match self.upload(file, &tmp).await {
                Err(e) if e.downcast_ref::<CompleteRefused>().is_some() => {
                    tracing::warn!(key = %tmp, error = %format!("{e:#}"), "the store refused to complete an upload; uploading once more");
                    let _ = self.client.delete(&tmp).await;
                    tmp = tmp_key();
                    self.upload(file, &tmp).await?
                }
                r => r?,
            };
            ferry_durable::crash_point("s3:after-upload");
            if got != sha256 {
                bail!("{} uploaded as sha256 {got}, not the verified {sha256}; nothing was stored", key.rel_path());
            }
            self.client
                .put(&sidecar, PutPayload::from(sidecar_text.into_bytes()))
                .await
                .with_context(|| format!("cannot write the digest sidecar in {}", self.at()))?;
            self.client.copy(&tmp, &dest).await.with_context(|| format!("cannot copy into place in {}", self.at()))?;
            anyhow::Ok(())
        });
        // The temporary goes whatever happened (a failure to remove it is
        // left to the next start's cleanup).
        let _ = self.rt.block_on(self.client.delete(&tmp));
        result?;
        // No second copy: the local download goes, with its run directory
        // and the source's directory when they are empty.
        std::fs::remove_file(file).with_context(|| format!("cannot remove {}", file.display()))?;
        if let Some(run) = file.parent() {
            let _ = std::fs::remove_dir(run);
            if let Some(src) = run.parent() {
                let _ = std::fs::remove_dir(src);
            }
        }
        Ok(())
    }

    fn open(&self, key: &ArtifactKey) -> anyhow::Result<Box<dyn Read + Send>> {
        let p = self.key_of(key)?;
        let what = format!("{} from {}", key.rel_path(), self.at());
        let head = self
            .rt
            .block_on(self.client.get_opts(&p, GetOptions { head: true, ..Default::default() }))
            .with_context(|| format!("cannot read {what}"))?;
        let encrypted = crypt::is_encrypted(&head.attributes);
        self.reader(&p, head.meta.size, head.meta.e_tag.as_deref(), encrypted, &what)
    }

    fn stat(&self, key: &ArtifactKey) -> anyhow::Result<Option<Stored>> {
        Ok(self.look(key)?.map(|(s, _)| s))
    }

    fn look(&self, key: &ArtifactKey) -> anyhow::Result<Option<(Stored, crate::store::Opener<'_>)>> {
        let p = self.key_of(key)?;
        let head = match self.rt.block_on(self.client.get_opts(&p, GetOptions { head: true, ..Default::default() })) {
            Ok(h) => h,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot stat {} in {}", key.rel_path(), self.at())),
        };
        // An encrypted object's size is its plaintext's (what the catalog
        // records); one whose metadata lost it shows its stored size,
        // which then disagrees with the catalog.
        let size = match crypt::is_encrypted(&head.attributes) {
            true => crypt::plain_size(&head.attributes).unwrap_or(head.meta.size),
            false => head.meta.size,
        };
        let sidecar = match self.rt.block_on(async { self.client.get(&self.sidecar_of(key)).await?.bytes().await }) {
            Ok(b) => String::from_utf8(b.to_vec()).ok(),
            Err(e) if is_not_found(&e) => None,
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot read the sidecar of {} in {}", key.rel_path(), self.at()));
            }
        };
        let what = format!("{} from {}", key.rel_path(), self.at());
        let (stored, etag, encrypted) = (head.meta.size, head.meta.e_tag, crypt::is_encrypted(&head.attributes));
        let open: crate::store::Opener<'_> =
            Box::new(move || self.reader(&p, stored, etag.as_deref(), encrypted, &what));
        Ok(Some((Stored { size, sidecar }, open)))
    }

    fn list(&self, client: Option<&str>) -> anyhow::Result<Vec<ArtifactKey>> {
        let under = match client {
            Some(c) => {
                if !ferry_text::is_safe_token(c) {
                    bail!("the client name {c:?} cannot form an object key in {}", self.at());
                }
                self.obj(c)
            }
            None if self.prefix.is_empty() => ObjPath::default(),
            None => ObjPath::from(self.prefix.trim_end_matches('/')),
        };
        let metas: Vec<_> = self.rt.block_on(self.client.list(Some(&under)).collect());
        let mut out = Vec::new();
        for m in metas {
            let m = m.with_context(|| format!("cannot list {}", self.at()))?;
            let full = m.location.to_string();
            match listed(&self.prefix, client, &full) {
                Listed::Artifact(k) => out.push(k),
                Listed::NotAnArtifact => {}
                // A server (or a proxy in front of it) that returns keys
                // outside what was asked is not trusted to name artifacts.
                Listed::Outside => {
                    tracing::warn!(key = %full, bucket = %self.bucket, "ignoring a listed key outside the store's prefix")
                }
                Listed::Odd => {
                    tracing::warn!(key = %full, bucket = %self.bucket, "ignoring an object that names no artifact")
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn remove(&self, key: &ArtifactKey) -> anyhow::Result<()> {
        let p = self.key_of(key)?;
        // The artifact first: a sidecar without its artifact is ignored by
        // every reader, an artifact without its sidecar is a problem.
        for o in [p, self.sidecar_of(key)] {
            match self.rt.block_on(self.client.delete(&o)) {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e).with_context(|| format!("cannot remove {o} from {}", self.at())),
            }
        }
        let _ = std::fs::remove_dir(self.data.join(&key.client).join(&key.source).join(&key.received));
        Ok(())
    }

    fn local_path(&self, _key: &ArtifactKey) -> Option<PathBuf> {
        None
    }

    fn remote_bytes(&self, client: &str) -> anyhow::Result<u64> {
        if !ferry_text::is_safe_token(client) {
            bail!("the client name {client:?} cannot form an object key in {}", self.at());
        }
        let metas: Vec<_> = self.rt.block_on(self.client.list(Some(&self.obj(client))).collect());
        let mut total = 0u64;
        for m in metas {
            let m = m.with_context(|| format!("cannot list {}", self.at()))?;
            if !matches!(listed(&self.prefix, Some(client), m.location.as_ref()), Listed::Outside) {
                total = total.saturating_add(m.size);
            }
        }
        Ok(total)
    }
}

/// The object key of `key` under `prefix` (`""` or ending in `/`), or why
/// it cannot be one: every part must be a plain storage name (no percent
/// sign, no `..` or `/`, no control character, at most 100 bytes) and the
/// sidecar's key must fit S3's 1024 bytes.
fn object_key(prefix: &str, key: &ArtifactKey) -> Result<String, String> {
    for (what, part) in [("client", &key.client), ("source", &key.source), ("run", &key.received), ("file", &key.file)]
    {
        if !ferry_text::is_safe_token(part) {
            return Err(format!("the {what} name {part:?} cannot form an object key"));
        }
    }
    let k = format!("{prefix}{}", key.rel_path());
    if k.len() + ".sha256".len() > MAX_KEY {
        return Err(format!("the object key of {} would be longer than {MAX_KEY} bytes", key.rel_path()));
    }
    Ok(k)
}

/// What a key a listing returned is.
#[derive(Debug, PartialEq, Eq)]
enum Listed {
    Artifact(ArtifactKey),
    /// A sidecar or an upload temporary.
    NotAnArtifact,
    /// Outside the prefix (or the client) that was listed.
    Outside,
    /// Inside, but not `client/source/received/file` of storage names.
    Odd,
}

fn listed(prefix: &str, client: Option<&str>, full: &str) -> Listed {
    let inside = full.strip_prefix(prefix).filter(|r| client.is_none_or(|c| r.starts_with(&format!("{c}/"))));
    let Some(rel) = inside else { return Listed::Outside };
    if rel.starts_with(&format!("{TMP_DIR}/")) || rel.ends_with(".sha256") {
        return Listed::NotAnArtifact;
    }
    match ArtifactKey::parse(rel) {
        Some(k) if object_key(prefix, &k).is_ok() => Listed::Artifact(k),
        _ => Listed::Odd,
    }
}

/// The client's timeouts and retries for `request_timeout_secs`: one
/// request ends after that long (see the key's doc) and is retried (parts
/// and reads are idempotent) while the retries stay within five times
/// that. object_store's default of 180 s for all retries, under the
/// 600 s request timeout used before, meant that a request the server
/// never answered was never retried: after ten minutes the pull failed
/// with E_STORE.
fn request_tuning(timeout_secs: u64) -> (object_store::ClientOptions, object_store::RetryConfig) {
    let timeout = std::time::Duration::from_secs(timeout_secs);
    let options = object_store::ClientOptions::new()
        .with_timeout(timeout)
        .with_connect_timeout(std::time::Duration::from_secs(20).min(timeout));
    let retry = object_store::RetryConfig {
        retry_timeout: timeout * 5,
        max_retries: 10,
        backoff: object_store::BackoffConfig::default(),
    };
    (options, retry)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request that timed out can always be retried: the retries' budget
    /// outlasts several requests' timeouts, whatever the timeout.
    #[test]
    fn a_timed_out_request_leaves_room_for_retries() {
        for secs in [1, 2, 120, 600, 86_400] {
            let (_, retry) = request_tuning(secs);
            assert!(retry.retry_timeout >= std::time::Duration::from_secs(secs) * 3, "{secs}");
            assert!(retry.max_retries >= 3, "{secs}");
        }
    }

    fn key(client: &str, source: &str) -> ArtifactKey {
        ArtifactKey {
            client: client.into(),
            source: source.into(),
            received: "20261122T010203Z".into(),
            file: "20261122T010200Z.tar.zst".into(),
        }
    }

    #[test]
    fn strange_names_form_no_key() {
        assert_eq!(
            object_key("b1/", &key("host-a", "site")).unwrap(),
            "b1/host-a/site/20261122T010203Z/20261122T010200Z.tar.zst"
        );
        let long = "a".repeat(101);
        for (c, s) in [
            ("host%2Fa", "site"),
            ("..", "site"),
            ("host-a", "a/b"),
            ("host-a", ".hidden"),
            ("host-a", &long),
            ("h\nx", "s"),
            ("", "s"),
        ] {
            let e = object_key("b1/", &key(c, s)).unwrap_err();
            assert!(e.contains("cannot form an object key"), "{c:?} {s:?}: {e}");
        }
        let deep = format!("{}/", vec!["p".repeat(99); 10].join("/"));
        assert!(object_key(&deep, &key("host-a", "site")).unwrap_err().contains("longer than 1024"));
    }

    #[test]
    fn listings_take_only_artifacts_under_the_prefix() {
        let k = key("host-a", "site");
        let full = format!("b1/{}", k.rel_path());
        assert_eq!(listed("b1/", None, &full), Listed::Artifact(k.clone()));
        assert_eq!(listed("b1/", Some("host-a"), &full), Listed::Artifact(k.clone()));
        assert_eq!(listed("b1/", Some("host-b"), &full), Listed::Outside);
        assert_eq!(listed("b1/", Some("host"), &full), Listed::Outside, "a client name's prefix is another client");
        assert_eq!(listed("b2/", None, &full), Listed::Outside);
        assert_eq!(listed("b1/", None, &format!("{full}.sha256")), Listed::NotAnArtifact);
        assert_eq!(listed("b1/", None, "b1/.tmp/backup1/12-00ff"), Listed::NotAnArtifact);
        for odd in ["b1/host-a/odd", "b1/host-a/site/r/f/g", "b1/host-a/site/r/.f", "b1/h%20a/s/r/f", "b1/host-a//r/f"]
        {
            assert_eq!(listed("b1/", None, odd), Listed::Odd, "{odd}");
        }
    }
}
