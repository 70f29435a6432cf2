//! Never panics: randomly mutated valid archives are either extracted or
//! refused with a reason code, and never leave anything behind.

use std::fs;

use ferry_archive::{ExtractPolicy, SymlinkPolicy, extract_tar_zst, list_tar_zst};

use crate::util::{RawTar, zst};

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn seed_archive() -> Vec<u8> {
    let mut t = RawTar::new();
    t.dir(b"d")
        .file(b"d/a.txt", b"hello world")
        .symlink(b"d/l", b"a.txt")
        .hardlink(b"d/h", b"d/a.txt")
        .long_name(&[b'n'; 150])
        .file(b"x", &[7u8; 700])
        .pax(&[(b"mtime", b"1.5"), (b"SCHILY.xattr.user.k", b"v")])
        .file(b"p", b"pax")
        .dir(b"e/");
    t.finish()
}

fn mutate(rng: &mut Rng, data: &[u8]) -> Vec<u8> {
    let mut v = data.to_vec();
    for _ in 0..=rng.below(2) {
        match rng.below(6) {
            0 | 1 => {
                let i = rng.below(v.len());
                v[i] = rng.next() as u8;
            }
            2 => {
                // Header-ish fields: names, modes, sizes, type flags.
                let block = rng.below(v.len() / 512) * 512;
                let off = [0, 100, 124, 135, 156, 157, 257, 345][rng.below(8)];
                if block + off < v.len() {
                    v[block + off] = b"0123456789/.\0xLK5 "[rng.below(18)];
                }
            }
            3 => {
                let n = rng.below(v.len());
                v.truncate(n);
            }
            4 => {
                let i = rng.below(v.len());
                let b = rng.next() as u8;
                v.insert(i, b);
            }
            _ => {
                let i = rng.below(v.len());
                let j = (i + rng.below(600)).min(v.len());
                v.drain(i..j);
            }
        }
        if v.is_empty() {
            v.push(0);
        }
    }
    // Half the time, repair header checksums so the mutation reaches the
    // parser instead of stopping at the checksum check.
    if rng.below(2) == 0 {
        for block in v.chunks_mut(512) {
            if block.len() == 512 && &block[257..262] == b"ustar" {
                block[148..156].fill(b' ');
                let sum: u32 = block.iter().map(|b| u32::from(*b)).sum();
                let s = format!("{sum:06o}\0 ");
                block[148..156].copy_from_slice(&s.as_bytes()[..8]);
            }
        }
    }
    v
}

#[test]
fn mutated_archives_never_panic_and_leave_nothing_behind() {
    let seed: u64 = std::env::var("FERRY_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_f00d);
    let iterations: usize = std::env::var("FERRY_FUZZ_ITERATIONS").ok().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let mut rng = Rng(seed | 1);
    let base = seed_archive();
    let tmp = tempfile::tempdir().unwrap();
    let policies = [
        ExtractPolicy::default(),
        ExtractPolicy::hostile(),
        ExtractPolicy { symlinks: SymlinkPolicy::Any, ..ExtractPolicy::faithful() },
    ];
    let mut accepted = 0;
    for i in 0..iterations {
        let tar = mutate(&mut rng, &base);
        // Mostly mutate the tar and compress; sometimes mutate the frame.
        let input = if i % 5 == 4 { mutate(&mut rng, &zst(&base)) } else { zst(&tar) };
        let policy = &policies[i % policies.len()];
        let listed = list_tar_zst(input.as_slice(), policy);
        let dest = tmp.path().join(format!("d{i}"));
        let extracted = extract_tar_zst(input.as_slice(), &dest, policy);
        match (&listed, &extracted) {
            (Ok(_), Ok(_)) => {
                accepted += 1;
                assert!(dest.is_dir());
            }
            (_, Err(e)) => {
                assert!(e.code().starts_with("E_"), "{e}");
                assert!(!dest.exists(), "iteration {i}: published after {e}");
            }
            (Err(l), Ok(_)) => panic!("iteration {i}: list refused ({l}) but extract accepted"),
        }
    }
    // Only dN dirs, no staging leftovers.
    for e in fs::read_dir(tmp.path()).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.starts_with(".ferry-staging"), "leftover {name}");
    }
    eprintln!("{accepted}/{iterations} mutated archives were accepted");
}

/// Random trees of directories and relative symlinks: whatever the InTree
/// policy accepts must really stay inside the tree when the kernel follows
/// the links. The oracle is coreutils `realpath -m`, an implementation
/// independent of ours.
#[test]
fn accepted_in_tree_symlinks_resolve_inside_the_tree() {
    if !crate::util::have_tool("realpath") {
        eprintln!("skipped: realpath missing");
        return;
    }
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    let names = [&b"a"[..], b"b", b"c"];
    let comps = [&b".."[..], b".", b"a", b"b", b"c", b"x"];
    let tmp = tempfile::tempdir().unwrap();
    let (mut accepted, mut refused) = (0, 0);
    for trial in 0..300 {
        let mut t = RawTar::new();
        let mut links = Vec::new();
        for _ in 0..rng.below(5) + 2 {
            // A path of 1-3 components; parents become implicit dirs.
            let depth = rng.below(3) + 1;
            let path: Vec<&[u8]> = (0..depth).map(|_| names[rng.below(names.len())]).collect();
            let path = path.join(&b'/');
            if rng.below(2) == 0 {
                t.dir(&path);
            } else {
                let n = rng.below(4) + 1;
                let target: Vec<&[u8]> = (0..n).map(|_| comps[rng.below(comps.len())]).collect();
                t.symlink(&path, &target.join(&b'/'));
                links.push(path);
            }
        }
        let dest = tmp.path().join(format!("t{trial}"));
        let in_tree = ExtractPolicy { symlinks: SymlinkPolicy::InTree, ..ExtractPolicy::default() };
        if extract_tar_zst(zst(&t.finish()).as_slice(), &dest, &in_tree).is_err() {
            refused += 1;
            continue;
        }
        accepted += 1;
        let root = fs::canonicalize(&dest).unwrap();
        let args: Vec<std::path::PathBuf> = links
            .iter()
            .map(|l| dest.join(std::str::from_utf8(l).unwrap()))
            .filter(|p| fs::symlink_metadata(p).map(|m| m.file_type().is_symlink()).unwrap_or(false))
            .collect();
        if args.is_empty() {
            continue;
        }
        let out = std::process::Command::new("realpath").arg("-m").args(&args).output().unwrap();
        assert!(out.status.success());
        // `realpath -m` also resolves `..` after a missing component, as the
        // kernel would once that component exists.
        for (p, r) in args.iter().zip(String::from_utf8(out.stdout).unwrap().lines()) {
            assert!(
                std::path::Path::new(r).starts_with(&root),
                "trial {trial}: {} resolves to {r}, outside {}",
                p.display(),
                root.display()
            );
        }
    }
    eprintln!("{accepted} accepted, {refused} refused");
    assert!(accepted > 20 && refused > 20, "both outcomes exercised");
}
