//! The `tree` verb: a snapshot tree the node pulls as a manifest plus the
//! contents it does not hold yet (issue 10).
//!
//! ```text
//! tree <stamp> <manifest-url> <root-url> sha256=<digest> size=<bytes> source=<name>
//! ```
//!
//! The manifest is one file in the client's export directory, exactly like
//! an `sftp` request's file, and `sha256=`/`size=` describe it. The root
//! URL names the directory the manifest describes: the content of manifest
//! path `p` is read at `<root path>/<p>` through the same read-only sftp
//! gate. Both URLs must name the same account on the same host and port
//! (written the same way: a port in both or in neither), so one request
//! can only ever point the node at one sftp endpoint. That is checked
//! here, as part of the grammar; whether the endpoint, the export
//! directory and the root are the ones enrolled for the client is the
//! node's check against the enrollment (`tree-roots`).

use crate::reason::{Reason, Rejection};
use crate::url::SftpUrl;
use crate::value::{Digest, Name, Stamp};
use crate::{Field, parse_size, parse_source};

/// `tree <stamp> <manifest-url> <root-url> sha256=<digest> size=<size> source=<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TreeRequest {
    /// When the client scanned the tree (client's claim; metadata only).
    pub stamp: Stamp,
    /// The manifest file (`<stamp>.ftree` in the client's export dir).
    pub manifest: SftpUrl,
    /// The tree's root directory on the client; same user, host and port
    /// as `manifest`.
    pub root: SftpUrl,
    /// SHA-256 the downloaded manifest must have.
    pub sha256: Digest,
    /// Size the downloaded manifest must have, in bytes (at most 2^63-1).
    pub size: u64,
    /// The client's source the tree belongs to (becomes a storage name).
    pub source: Name,
}

impl TreeRequest {
    /// Whether two sftp URLs name the same endpoint as a tree request
    /// requires: user, host and port, the port spelled the same way.
    pub fn same_endpoint(a: &SftpUrl, b: &SftpUrl) -> bool {
        a.user == b.user && a.host == b.host && a.port == b.port
    }
}

/// Field values of a `tree` line, left to right (precedence step 12):
/// stamp, manifest URL, root URL, the endpoint check, then the keys.
pub(crate) fn parse_fields(pos: [Field<'_>; 3], kv: [Field<'_>; 3]) -> Result<TreeRequest, Rejection> {
    let [stamp, manifest, root] = pos;
    let [sha, size, source] = kv;
    let stamp = Stamp::parse(stamp.text).map_err(|e| e.shifted(stamp.at))?;
    let manifest_url = SftpUrl::parse(manifest.text).map_err(|e| e.shifted(manifest.at))?;
    let root_url = SftpUrl::parse(root.text).map_err(|e| e.shifted(root.at))?;
    if !TreeRequest::same_endpoint(&manifest_url, &root_url) {
        let what = if root_url.user != manifest_url.user {
            "root URL names another user than the manifest URL"
        } else if root_url.host != manifest_url.host {
            "root URL names another host than the manifest URL"
        } else {
            "root URL names another port than the manifest URL (write the port in both or in neither)"
        };
        return Err(root.err(Reason::ReqTreeRoot, what));
    }
    let v = sha.value();
    let sha256 = Digest::parse(v.text).map_err(|e| e.shifted(v.at))?;
    let size = parse_size(size.value())?;
    let source = parse_source(source.value())?;
    Ok(TreeRequest { stamp, manifest: manifest_url, root: root_url, sha256, size, source })
}
