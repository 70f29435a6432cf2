//! Strict, confined extraction of tar+zstd archives from untrusted clients,
//! and the validate-only listing that shares its checks.
//!
//! The pipeline, outermost first:
//!
//! 1. The input must start with the zstd frame magic (SF-12: gzip, xz, zip
//!    or a script is `E_ARCHIVE_FORMAT`, never handed to another decoder).
//! 2. One zstd frame is decoded with the library's default window limit
//!    (2^27; `window_log_max` is never raised, AX-18). After the frame, the
//!    input must end.
//! 3. A counting reader caps the decompressed bytes (`max_total_bytes`) and
//!    their ratio to the compressed bytes read (`max_ratio`), while
//!    streaming, so a bomb stops as soon as it crosses the line.
//! 4. The tar crate splits the stream into raw records only
//!    (`Entries::raw(true)`, `set_ignore_zeros(false)`). GNU long names,
//!    long links and PAX records are read here, each checked against
//!    `max_ext_header_bytes` *before* it is read. After the end-of-archive
//!    block only zero padding may follow.
//! 5. The validator checks each entry's name, type, links, duplicates and
//!    limits before anything is written.
//! 6. The writer creates each entry through directory fds opened
//!    beneath the staging root with `openat2(RESOLVE_BENEATH |
//!    RESOLVE_NO_SYMLINKS)`, or component by component with `O_NOFOLLOW`
//!    (`openat`, `mkdirat`, `symlinkat`, `linkat`, files with
//!    `O_CREAT|O_EXCL|O_NOFOLLOW`), so even a validator bug could not write
//!    through a symlink or outside the staging directory. Directory modes
//!    and times are applied last, deepest first, so a `0000` or `0555`
//!    directory cannot block its own children.
//!
//! Modules, in that order: `stream` (steps 1 to 3 and the end of the
//! input), `validate` (4 and 5: what an entry may be), `write` (6: the
//! writer, staging and publish) and `list` (the same pass, writing
//! nothing); `policy` holds the [`ExtractPolicy`] they all read. This
//! module holds the pass that joins them ([`process`]) and the [`Sink`] it
//! feeds.

mod list;
mod policy;
mod stream;
mod validate;
mod write;

use std::io::Read;

pub use list::{ListEntry, list_tar_zst};
pub use policy::{ExtractPolicy, SymlinkPolicy};
pub use validate::EntryKind;
pub use write::{ExtractStats, extract_tar_zst};

use crate::error::ArchiveError;
use stream::{Shared, check_end, open_stream, read_err};
use validate::{Item, Pending, Validator, read_extension};

/// Where validated entries go: a list, or the filesystem.
trait Sink {
    /// A directory the archive implies but has not described (yet).
    fn implicit_dir(&mut self, path: &[u8]) -> Result<(), ArchiveError>;
    /// A validated entry; `data` yields exactly `item.size` bytes for files.
    fn entry(&mut self, item: &Item, data: &mut dyn Read, sh: &Shared) -> Result<(), ArchiveError>;
}

/// One pass over an archive: every entry is parsed and validated, then
/// handed to `sink`; the pass fails at the first refusal.
fn process<R: Read>(input: R, policy: &ExtractPolicy, sink: &mut dyn Sink) -> Result<(), ArchiveError> {
    let (stream, sh) = open_stream(input, policy)?;
    let mut archive = tar::Archive::new(stream);
    archive.set_ignore_zeros(false);
    let mut v = Validator::new(policy);
    {
        let entries = archive.entries().map_err(|e| read_err(&sh, e))?.raw(true);
        let mut pending = Pending::default();
        for entry in entries {
            let mut entry = entry.map_err(|e| read_err(&sh, e))?;
            let header = entry.header().clone();
            let size = header.entry_size().map_err(|e| ArchiveError::format(format!("bad size field: {e}")))?;
            let tflag = header.entry_type().as_byte();
            if matches!(tflag, b'L' | b'K' | b'x' | b'g') {
                read_extension(&mut entry, tflag, size, policy, &mut pending, &sh)?;
                continue;
            }
            let p = std::mem::take(&mut pending);
            let mut item = v.item(&header, size, p)?;
            for dir in v.admit(&mut item)? {
                sink.implicit_dir(&dir)?;
            }
            sink.entry(&item, &mut entry, &sh)?;
        }
        if pending.holds_records() {
            return Err(ArchiveError::format("extension record at the end of the archive without an entry"));
        }
    }
    v.finish()?;
    check_end(archive.into_inner(), &sh)
}
