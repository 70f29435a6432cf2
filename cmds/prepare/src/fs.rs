//! The `fs` module: a directory tree as one streaming `<stamp>.tar.zst`.
//!
//! The archive is made by [`ferry_archive::create_tar_zst`] straight into
//! the export directory's hashing writer — one pass, bounded memory, never
//! the whole archive in memory or on disk twice. It records modes (setuid
//! too), owners, symlinks (verbatim), hard links, empty directories, FIFOs
//! and devices, mtimes, and extended attributes when `xattrs` is set; see
//! the archive crate for the include/exclude rules (uLFS's path sets, seed
//! 001).
//!
//! Paths, as an administrator writes them:
//!
//! * `root` is absolute; archive paths are relative to it;
//! * `include` entries are relative to `root`, or absolute paths under
//!   `root` (`root = "/"`, `include = ["/etc", "/home"]`), which are made
//!   relative here; empty means the whole root;
//! * `exclude` are the archive crate's patterns (`*.tmp`, `var/cache/*`).
//!
//! When the export directory lies inside the archived tree (backing up
//! `/`), it is excluded automatically: otherwise the archive would contain
//! the previous dumps and the very file it is being written to.

use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use ferry_archive::{ArchiveError, CreateOptions, CreateStats, create_tar_zst, current_account, escape_name};
use tracing::{info, warn};

use crate::PrepareError;
use crate::export::HashingWriter;

/// The archive options for a source, with includes made relative and the
/// export directory excluded when it is inside `root`. Errors are messages
/// for the administrator.
pub fn create_options(
    root: &Path,
    include: &[PathBuf],
    exclude: &[String],
    xattrs: bool,
    one_file_system: bool,
    export_dir: &Path,
) -> Result<CreateOptions, String> {
    if !root.is_absolute() {
        return Err(format!("root {} must be an absolute path", root.display()));
    }
    let mut inc = Vec::with_capacity(include.len());
    for p in include {
        let rel = if p.is_absolute() {
            p.strip_prefix(root)
                .map_err(|_| {
                    format!(
                        "include {} is not under root {}; write it relative to root or as an absolute path below it",
                        p.display(),
                        root.display()
                    )
                })?
                .to_path_buf()
        } else {
            p.clone()
        };
        if rel.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(format!("include {} must not contain '..'", p.display()));
        }
        if rel.as_os_str().is_empty() {
            // The root itself: the whole tree.
            inc.clear();
            break;
        }
        inc.push(rel);
    }
    let mut exclude = exclude.to_vec();
    if let Some(rel) = export_dir_below(root, export_dir)? {
        exclude.push(rel);
    }
    Ok(CreateOptions {
        root: root.to_owned(),
        include: inc,
        exclude,
        xattrs,
        one_file_system,
        ..CreateOptions::default()
    })
}

/// An anchored exclude pattern (`/srv/export` → `/srv/export` relative to
/// root, with a leading `/` so a single component is anchored too) when the
/// export directory is inside `root`, comparing canonical paths so symlinks
/// do not hide it.
fn export_dir_below(root: &Path, export_dir: &Path) -> Result<Option<String>, String> {
    let (Ok(root_c), Ok(export_c)) = (root.canonicalize(), export_dir.canonicalize()) else {
        return Ok(None);
    };
    if root_c.starts_with(&export_c) {
        // The artifact being written would be inside the tree being read.
        return Err(format!("root {} lies inside the export directory; archive something else", root.display()));
    }
    let Ok(rel) = export_c.strip_prefix(&root_c) else {
        return Ok(None);
    };
    if rel.as_os_str().is_empty() {
        return Err(format!("root {} is the export directory itself; archive something else", root.display()));
    }
    let rel = rel.to_str().ok_or("the export directory's path is not UTF-8")?;
    if rel.contains(['*', '?']) {
        return Err(format!(
            "the export directory lies inside root at {rel:?}, whose '*' or '?' cannot be excluded exactly; \
             move the export directory out of root"
        ));
    }
    Ok(Some(format!("/{rel}")))
}

/// Archives the source's tree into `out`. Returns a warning for the
/// administrator when entries the account may not read were left out
/// (`unreadable = "skip"`); without skip, the first one fails the run with
/// [`PrepareError::Unreadable`].
pub(crate) fn archive(
    source_name: &str,
    opts: &CreateOptions,
    out: &mut HashingWriter<File>,
) -> Result<Option<String>, PrepareError> {
    info!(source = source_name, root = %opts.root.display(), includes = opts.include.len(), excludes = opts.exclude.len(), "archiving");
    let stats = create_tar_zst(opts, &mut *out).map_err(|e| match e {
        ArchiveError::Unreadable { path, account, source } => {
            PrepareError::Unreadable { source_name: source_name.to_owned(), path, account, error: source }
        }
        e => PrepareError::Failed { module: "fs".into(), message: format!("source {source_name}: {e} ({})", e.code()) },
    })?;
    info!(
        source = source_name,
        files = stats.files,
        dirs = stats.dirs,
        symlinks = stats.symlinks,
        hardlinks = stats.hardlinks,
        bytes_in = stats.bytes_in,
        bytes_out = stats.bytes_out,
        excluded = stats.excluded,
        "archive complete"
    );
    if stats.changed > 0 {
        warn!(
            source = source_name,
            files = stats.changed,
            "files changed while being archived; their copies may be inconsistent"
        );
    }
    if stats.skipped > 0 {
        warn!(source = source_name, entries = stats.skipped, "entries skipped (sockets, or vanished while archiving)");
    }
    Ok(unreadable_warning(source_name, &opts.root, &stats))
}

/// Paths a warning names before it only counts.
const WARN_LISTED: usize = 20;

/// The warning for entries left out as unreadable: how many, which account,
/// and the first absolute paths, escaped (printable ASCII, one line).
fn unreadable_warning(source_name: &str, root: &Path, stats: &CreateStats) -> Option<String> {
    if stats.unreadable == 0 {
        return None;
    }
    let shown: Vec<String> = stats
        .unreadable_paths
        .iter()
        .take(WARN_LISTED)
        .map(|rel| escape_name(root.join(std::ffi::OsStr::from_bytes(rel)).as_os_str().as_bytes()))
        .collect();
    let more = stats.unreadable - shown.len() as u64;
    let msg = format!(
        "source {source_name}: {} unreadable {} left out of the archive (account {} may not read {}): {}{}",
        stats.unreadable,
        if stats.unreadable == 1 { "entry" } else { "entries" },
        current_account(),
        if stats.unreadable == 1 { "it" } else { "them" },
        shown.join(", "),
        if more > 0 { format!(" and {more} more") } else { String::new() }
    );
    warn!(source = source_name, entries = stats.unreadable, "{msg}");
    Some(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn includes_are_made_relative() {
        let o = create_options(
            Path::new("/"),
            &["/etc".into(), "home/a".into()],
            &["*.tmp".into()],
            true,
            true,
            Path::new("/nonexistent-export"),
        )
        .unwrap();
        assert_eq!(o.include, [PathBuf::from("etc"), PathBuf::from("home/a")]);
        assert_eq!(o.exclude, ["*.tmp"]);
        assert!(o.xattrs && o.one_file_system);
        let o = create_options(Path::new("/srv"), &["/srv".into()], &[], false, false, Path::new("/x")).unwrap();
        assert!(o.include.is_empty());
    }

    #[test]
    fn bad_paths_are_refused() {
        let e = create_options(Path::new("srv"), &[], &[], false, false, Path::new("/x")).unwrap_err();
        assert!(e.contains("absolute"), "{e}");
        let e = create_options(Path::new("/srv"), &["/etc".into()], &[], false, false, Path::new("/x")).unwrap_err();
        assert!(e.contains("not under root"), "{e}");
        let e = create_options(Path::new("/srv"), &["a/../b".into()], &[], false, false, Path::new("/x")).unwrap_err();
        assert!(e.contains(".."), "{e}");
    }

    #[test]
    fn export_dir_inside_root_is_excluded() {
        let d = std::env::temp_dir().join(format!("ferry-prepare-fsopt-{}", std::process::id()));
        std::fs::create_dir_all(d.join("data/export")).unwrap();
        let o = create_options(&d.join("data"), &[], &[], false, false, &d.join("data/export")).unwrap();
        assert_eq!(o.exclude, ["/export"]);
        for inside in ["data/export", "data/export/src"] {
            std::fs::create_dir_all(d.join(inside)).unwrap();
            let e = create_options(&d.join(inside), &[], &[], false, false, &d.join("data/export")).unwrap_err();
            assert!(e.contains("inside the export directory"), "{e}");
        }
        let o = create_options(&d.join("data/export"), &[], &[], false, false, &d.join("elsewhere")).unwrap();
        assert!(o.exclude.is_empty());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
