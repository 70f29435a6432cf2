//! What extraction accepts and preserves: the [`ExtractPolicy`] every
//! check of the validator and every choice of the writer reads, with its
//! three profiles (default, `hostile`, `faithful`).

/// What to do with symlink entries.
///
/// Whatever the policy, extraction never follows a link: every parent is
/// opened beneath the staging root with `RESOLVE_NO_SYMLINKS` (or
/// `O_NOFOLLOW` per component), files are created `O_EXCL|O_NOFOLLOW`, and
/// an entry below a symlink of the archive (`link -> /etc`, then
/// `link/passwd`) is refused with `E_ARCHIVE_LINK`. So a link's target only
/// matters to whoever reads the restored tree later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SymlinkPolicy {
    /// Only relative targets that stay inside the extracted tree, checked
    /// lexically per link and then once more at the end by resolving every
    /// link through the archive's other links (so `a -> x/..` where `x` is
    /// itself a link to `..` is caught too). Absolute targets are refused.
    /// For trees that later readers walk without `O_NOFOLLOW`.
    InTree,
    /// Targets are kept verbatim, whatever they point to: relative,
    /// dangling (`../nonexistent`), out of the tree, absolute. A restore
    /// gives back the links a host had, since a link is only a name for
    /// something; none is ever followed while extracting.
    #[default]
    Any,
    /// Every symlink entry is refused.
    Reject,
}

/// What extraction accepts and preserves. [`ExtractPolicy::default`] is
/// strict about structure but faithful to names, symlinks and permission
/// bits (minus setuid); [`ExtractPolicy::hostile`] is the profile for
/// archives from a client that may be compromised whose tree other programs
/// will walk; [`ExtractPolicy::faithful`] restores everything a host's own
/// tree can contain.
#[derive(Debug, Clone)]
pub struct ExtractPolicy {
    /// Symlink entries, see [`SymlinkPolicy`].
    pub symlinks: SymlinkPolicy,
    /// Allow hard links, and then only to a regular file this archive
    /// already wrote (the target name is validated like any entry name).
    pub hardlinks: bool,
    /// Allow FIFOs and character/block devices. Devices are created only
    /// when running as root (else `E_ARCHIVE_TYPE`); FIFOs need no
    /// privilege. Off: all three are `E_ARCHIVE_TYPE` (AX-09).
    pub devices: bool,
    /// Keep setuid, setgid and sticky bits. Off: they are stripped (AX-10).
    pub setuid: bool,
    /// Keep permission bits (minus setuid unless `setuid`). Off: files are
    /// 0644, or 0755 when any execute bit is set; directories 0755.
    pub preserve_modes: bool,
    /// Restore uid/gid. Only effective when running as root.
    pub preserve_owner: bool,
    /// Apply extended attributes, and then only the `user.` namespace
    /// (never `security.*`, `trusted.*` or `system.*` ACLs, AX-12).
    pub xattrs: bool,
    /// Restore modification times.
    pub mtimes: bool,
    /// Refuse names that are not valid UTF-8 or contain C0/C1 controls,
    /// DEL or bidi controls, and detect per-directory collisions after case
    /// folding and NFC normalisation (AX-14). Off by default so a host's own
    /// odd names restore faithfully.
    pub strict_names: bool,
    /// Most entries (of any type) in one archive (AX-19).
    pub max_entries: u64,
    /// Most decompressed tar stream bytes (headers and padding included,
    /// so at least the data size) (AX-18).
    pub max_total_bytes: u64,
    /// Largest single file.
    pub max_file_bytes: u64,
    /// Longest entry path, in bytes.
    pub max_path_bytes: usize,
    /// Longest path component, in bytes.
    pub max_component_bytes: usize,
    /// Deepest entry, in components.
    pub max_depth: usize,
    /// Largest GNU long-name/long-link or PAX record (and their sum for one
    /// entry); checked before the record is read (AX-16).
    pub max_ext_header_bytes: u64,
    /// Most decompressed bytes per compressed byte read (plus a 1 MiB
    /// allowance for the start of the stream), checked while streaming.
    /// `None` (the default): no ratio check.
    pub max_ratio: Option<u64>,
}

impl Default for ExtractPolicy {
    fn default() -> Self {
        ExtractPolicy {
            symlinks: SymlinkPolicy::Any,
            hardlinks: true,
            devices: false,
            setuid: false,
            preserve_modes: true,
            preserve_owner: false,
            xattrs: false,
            mtimes: true,
            strict_names: false,
            max_entries: 1_000_000,
            max_total_bytes: 1 << 40,
            max_file_bytes: 1 << 40,
            max_path_bytes: 1024,
            max_component_bytes: 255,
            max_depth: 64,
            max_ext_header_bytes: 64 << 10,
            // No ratio cap by default: real trees hold zero-filled files
            // (database WAL segments, VM images) that zstd shrinks 30000:1,
            // exactly like a bomb. The caller bounds the output with
            // max_total_bytes (from its quota or free space); `hostile()`
            // adds the ratio cap.
            max_ratio: None,
        }
    }
}

impl ExtractPolicy {
    /// The profile for archives from a client that may be compromised:
    /// strict names, in-tree symlinks only, no devices or FIFOs, no setuid,
    /// modes normalised to 0644/0755, no ownership, no xattrs, and a
    /// decompression ratio cap of 200:1 (SECURITY.md C12). The ratio cap
    /// also refuses honest archives with large zero-filled files; raise or
    /// clear `max_ratio` for those, and keep `max_total_bytes` at the quota.
    pub fn hostile() -> Self {
        ExtractPolicy {
            symlinks: SymlinkPolicy::InTree,
            devices: false,
            setuid: false,
            preserve_modes: false,
            preserve_owner: false,
            xattrs: false,
            strict_names: true,
            max_ratio: Some(200),
            ..ExtractPolicy::default()
        }
    }

    /// Everything a host's own tree can hold, for an administrator's
    /// restore of trusted data: symlinks verbatim, FIFOs and devices (as
    /// root), setuid bits, owners (as root), `user.*` xattrs. Structure
    /// checks and limits still apply, and nothing is written through links.
    pub fn faithful() -> Self {
        ExtractPolicy {
            symlinks: SymlinkPolicy::Any,
            devices: true,
            setuid: true,
            preserve_modes: true,
            preserve_owner: true,
            xattrs: true,
            max_ratio: None,
            ..ExtractPolicy::default()
        }
    }
}
