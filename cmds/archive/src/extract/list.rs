//! The validate-only listing: [`list_tar_zst`] runs the whole pipeline
//! with a sink that records entries instead of writing them (`verify`,
//! `find`).

use std::io::Read;

use super::policy::ExtractPolicy;
use super::stream::Shared;
use super::validate::{EntryKind, Item};
use super::{Sink, process};
use crate::error::ArchiveError;

/// One validated entry, as [`list_tar_zst`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    /// Normalised relative path (no `./`, no trailing `/`); empty for an
    /// entry describing the root directory itself.
    pub path: Vec<u8>,
    /// Entry type.
    pub kind: EntryKind,
    /// Data size (0 for everything but files).
    pub size: u64,
    /// Permission bits as stored, including setuid/setgid/sticky.
    pub mode: u32,
    /// Owner ids as stored.
    pub uid: u64,
    /// Group id as stored.
    pub gid: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Sub-second part of the modification time (from PAX), nanoseconds.
    pub mtime_nanos: u32,
    /// Symlink target (verbatim) or hard-link target (normalised path).
    pub link_target: Option<Vec<u8>>,
    /// Extended attributes recorded in the archive (all namespaces; which
    /// are applied is the policy's business).
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Device numbers for character/block devices.
    pub device: Option<(u32, u32)>,
}

/// Reads and validates the whole archive without writing anything: the
/// same checks and limits as [`extract_tar_zst`](crate::extract_tar_zst)
/// (except that devices are not refused for want of root), for `verify`
/// and `find`.
pub fn list_tar_zst<R: Read>(input: R, policy: &ExtractPolicy) -> Result<Vec<ListEntry>, ArchiveError> {
    let mut sink = ListSink(Vec::new());
    process(input, policy, &mut sink)?;
    Ok(sink.0)
}

struct ListSink(Vec<ListEntry>);

impl Sink for ListSink {
    fn implicit_dir(&mut self, _path: &[u8]) -> Result<(), ArchiveError> {
        Ok(())
    }

    fn entry(&mut self, item: &Item, _data: &mut dyn Read, _sh: &Shared) -> Result<(), ArchiveError> {
        self.0.push(ListEntry {
            path: item.path.clone(),
            kind: item.kind,
            size: item.size,
            mode: item.mode,
            uid: item.uid,
            gid: item.gid,
            mtime: item.mtime.0,
            mtime_nanos: item.mtime.1,
            link_target: item.link.clone(),
            xattrs: item.xattrs.clone(),
            device: item.device,
        });
        // The data is skipped (and still counted against the limits) by
        // the tar crate when the next entry is read.
        Ok(())
    }
}
