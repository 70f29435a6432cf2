//! Replays the fuzzers' crash inputs as plain tests (STYLE.md 17): every
//! file under `fuzz/regressions/<target>/` goes through the same invariant
//! checks as the cargo-fuzz target of that name, without nightly or
//! libFuzzer. The checks are not copied here but compiled from the fuzz
//! crate's `src/lib.rs`, so the two can never drift apart.
//!
//! A file whose name ends in `.pending` is a known, not yet fixed crasher:
//! it is replayed and reported but does not fail the test, so keeping the
//! input does not block everyone's CI. Dropping the suffix once the bug is
//! fixed turns it into a regression test.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

#[path = "../../fuzz/src/lib.rs"]
mod invariants;

fn regressions_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions")
}

/// The inputs kept for `target`: every file but `README*` and dotfiles,
/// sorted so failures are reported in a stable order.
fn inputs(target: &str) -> Vec<PathBuf> {
    let dir = regressions_dir().join(target);
    let Ok(read) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = read
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !name.starts_with('.') && !name.starts_with("README")
        })
        .collect();
    files.sort();
    files
}

#[test]
fn every_target_has_a_regressions_dir() {
    for (target, _) in invariants::TARGETS {
        let dir = regressions_dir().join(target);
        assert!(dir.is_dir(), "missing {}", dir.display());
    }
}

#[test]
fn crash_inputs_no_longer_crash() {
    let mut failed = Vec::new();
    let mut replayed = 0;
    for (target, check) in invariants::TARGETS {
        for path in inputs(target) {
            let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let pending = path.extension().is_some_and(|e| e == "pending");
            let outcome = catch_unwind(AssertUnwindSafe(|| check(&data)));
            replayed += 1;
            match (outcome.is_ok(), pending) {
                (true, false) => {}
                (true, true) => eprintln!("fixed? {} passes now: drop the .pending suffix", path.display()),
                (false, true) => eprintln!("known crasher (pending): {}", path.display()),
                (false, false) => failed.push(path.display().to_string()),
            }
        }
    }
    eprintln!("replayed {replayed} fuzz regression inputs");
    assert!(failed.is_empty(), "fuzz regression inputs fail their checks again:\n{}", failed.join("\n"));
}
