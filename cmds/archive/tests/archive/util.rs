//! Shared helpers: hand-written tar records, sandboxes with a sentinel
//! `outside/` directory, tree snapshots.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use ferry_archive::{ArchiveError, ExtractPolicy, extract_tar_zst, list_tar_zst};

/// Builds a tar stream record by record, writing header bytes directly so
/// names the tar crate's setters would refuse or normalise (`../x`,
/// `/etc/passwd`, `a//b`) can be written.
#[derive(Default)]
pub struct RawTar {
    pub buf: Vec<u8>,
}

impl RawTar {
    pub fn new() -> Self {
        Self::default()
    }

    /// A record with the given type flag, name, link name, mode and data.
    pub fn record(&mut self, tflag: u8, name: &[u8], link: &[u8], mode: u32, data: &[u8]) -> &mut Self {
        let mut h = tar::Header::new_gnu();
        {
            let old = h.as_old_mut();
            let n = name.len().min(100);
            old.name[..n].copy_from_slice(&name[..n]);
            let l = link.len().min(100);
            old.linkname[..l].copy_from_slice(&link[..l]);
        }
        h.set_entry_type(tar::EntryType::new(tflag));
        h.set_mode(mode);
        h.set_uid(1000);
        h.set_gid(1000);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.buf.extend_from_slice(h.as_bytes());
        self.buf.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.buf.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    pub fn file(&mut self, name: &[u8], data: &[u8]) -> &mut Self {
        self.record(b'0', name, b"", 0o644, data)
    }

    pub fn file_mode(&mut self, name: &[u8], mode: u32, data: &[u8]) -> &mut Self {
        self.record(b'0', name, b"", mode, data)
    }

    pub fn dir(&mut self, name: &[u8]) -> &mut Self {
        self.record(b'5', name, b"", 0o755, b"")
    }

    pub fn symlink(&mut self, name: &[u8], target: &[u8]) -> &mut Self {
        self.record(b'2', name, target, 0o777, b"")
    }

    pub fn hardlink(&mut self, name: &[u8], target: &[u8]) -> &mut Self {
        self.record(b'1', name, target, 0o644, b"")
    }

    /// A GNU long-name record for the next entry.
    pub fn long_name(&mut self, name: &[u8]) -> &mut Self {
        let mut d = name.to_vec();
        d.push(0);
        self.record(b'L', b"././@LongLink", b"", 0o644, &d)
    }

    /// A PAX record set for the next entry.
    pub fn pax(&mut self, records: &[(&[u8], &[u8])]) -> &mut Self {
        let mut d = Vec::new();
        for (k, v) in records {
            let body = k.len() + v.len() + 3;
            let mut len = body + 1;
            while body + len.to_string().len() != len {
                len = body + len.to_string().len();
            }
            d.extend_from_slice(len.to_string().as_bytes());
            d.push(b' ');
            d.extend_from_slice(k);
            d.push(b'=');
            d.extend_from_slice(v);
            d.push(b'\n');
        }
        self.record(b'x', b"././@PaxHeader", b"", 0o644, &d)
    }

    /// The stream with its end-of-archive marker.
    pub fn finish(&self) -> Vec<u8> {
        let mut v = self.buf.clone();
        v.extend_from_slice(&[0u8; 1024]);
        v
    }

    /// Finished and zstd-compressed.
    pub fn zst(&self) -> Vec<u8> {
        zst(&self.finish())
    }
}

pub fn zst(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

/// A directory layout for extraction tests:
/// `base/work/outside/` (sentinel), `base/work/dest` (not created).
pub struct Sandbox {
    pub _tmp: tempfile::TempDir,
    pub base: PathBuf,
    pub work: PathBuf,
    pub dest: PathBuf,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().to_path_buf();
        let work = base.join("work");
        let outside = work.join("outside");
        fs::create_dir_all(outside.join("sub")).unwrap();
        fs::write(outside.join("a.txt"), b"sentinel a").unwrap();
        fs::write(outside.join("sub/b.txt"), b"sentinel b").unwrap();
        let dest = work.join("dest");
        Sandbox { _tmp: tmp, base, work, dest }
    }

    /// Everything under `base` except `dest`: names, types, modes, link
    /// counts, sizes, contents, link targets, xattrs.
    pub fn snapshot(&self) -> BTreeMap<Vec<u8>, String> {
        let mut out = BTreeMap::new();
        let mut stack = vec![self.base.clone()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let e = e.unwrap();
                let p = e.path();
                if p == self.dest {
                    continue;
                }
                let md = fs::symlink_metadata(&p).unwrap();
                let content = if md.is_file() {
                    format!("{:?}", fs::read(&p).unwrap())
                } else if md.file_type().is_symlink() {
                    format!("-> {:?}", fs::read_link(&p).unwrap())
                } else {
                    String::new()
                };
                if md.is_dir() {
                    stack.push(p.clone());
                }
                let rel = p.strip_prefix(&self.base).unwrap();
                out.insert(
                    rel.as_os_str().as_encoded_bytes().to_vec(),
                    format!(
                        "{:o} {} {} {} {content}",
                        md.mode(),
                        // A directory's link count follows its subdirectories,
                        // which are listed anyway (and `work` gains `dest`).
                        if md.is_dir() { 0 } else { md.nlink() },
                        md.size(),
                        // The parent of dest sees the staging dir come and go.
                        if md.is_dir() { 0 } else { md.mtime() }
                    ),
                );
            }
        }
        out
    }

    /// Names in `work` (to find leftover staging directories).
    pub fn work_names(&self) -> Vec<String> {
        let mut v: Vec<String> =
            fs::read_dir(&self.work).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }
}

/// Extracts `archive` under `policy` and asserts it is refused with `code`,
/// that nothing outside the staging directory changed, that nothing was
/// published and no staging directory is left. The validate-only listing
/// must refuse it with the same code.
pub fn expect_refused(archive: &[u8], policy: &ExtractPolicy, code: &str) -> ArchiveError {
    let sb = Sandbox::new();
    let before = sb.snapshot();
    let err = extract_tar_zst(archive, &sb.dest, policy).expect_err("archive must be refused");
    assert_eq!(err.code(), code, "wrong code: {err}");
    assert!(err.to_string().starts_with(code), "message starts with code: {err}");
    assert!(!sb.dest.exists(), "nothing published");
    assert_eq!(sb.work_names(), vec!["outside".to_string()], "no staging left");
    assert_eq!(sb.snapshot(), before, "nothing outside changed");
    let lerr = list_tar_zst(archive, policy).expect_err("list must refuse too");
    assert_eq!(lerr.code(), code, "list: wrong code: {lerr}");
    err
}

/// Extracts and expects success; returns the sandbox for inspection.
pub fn expect_ok(archive: &[u8], policy: &ExtractPolicy) -> Sandbox {
    let sb = Sandbox::new();
    let before = sb.snapshot();
    extract_tar_zst(archive, &sb.dest, policy).unwrap_or_else(|e| panic!("extract failed: {e}"));
    assert_eq!(sb.snapshot(), before, "nothing outside changed");
    let mut names = sb.work_names();
    names.retain(|n| n != "dest");
    assert_eq!(names, vec!["outside".to_string()], "no staging left");
    sb
}

pub fn mode_of(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

/// Whether a command-line tool exists; under CI=true a missing tool fails.
pub fn have_tool(name: &str) -> bool {
    let ok = std::process::Command::new(name)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok();
    if !ok && std::env::var("CI").as_deref() == Ok("true") {
        panic!("{name} is required under CI");
    }
    ok
}
