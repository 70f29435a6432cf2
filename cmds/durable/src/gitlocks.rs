//! Lock files a killed git or libgit2 writer leaves in a repository.
//!
//! git never removes another process's `*.lock`, so one left by a process
//! killed mid-update fails every later ref update or config write. Ferry
//! serialises every writer of its repositories with its own flock lock;
//! whoever holds that lock knows no git writer is alive, and may delete
//! these files.

use std::path::{Path, PathBuf};

/// Top-level lock files git may create in a repository directory.
const TOP_LEVEL: [&str; 5] = ["HEAD.lock", "config.lock", "packed-refs.lock", "index.lock", "shallow.lock"];

/// Every candidate lock path of the git directory `git_dir`: the top-level
/// ones (which may not exist) and each existing `*.lock` under `refs/` and
/// `logs/`. Never follows symlinks. Only call while holding the lock that
/// excludes every other writer of the repository.
pub fn git_lock_files(git_dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = TOP_LEVEL.iter().map(|n| git_dir.join(n)).collect();
    let mut stack = vec![git_dir.join("refs"), git_dir.join("logs")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "lock") {
                out.push(p);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_ref_and_reflog_locks_but_not_refs() {
        let td = std::env::temp_dir().join(format!("ferry-gitlocks-{}", std::process::id()));
        std::fs::create_dir_all(td.join("refs/heads/feature")).unwrap();
        std::fs::create_dir_all(td.join("logs/refs/heads")).unwrap();
        std::fs::write(td.join("refs/heads/master"), "x").unwrap();
        std::fs::write(td.join("refs/heads/feature/a.lock"), "x").unwrap();
        std::fs::write(td.join("logs/refs/heads/master.lock"), "x").unwrap();
        let found = git_lock_files(&td);
        assert!(found.contains(&td.join("refs/heads/feature/a.lock")));
        assert!(found.contains(&td.join("logs/refs/heads/master.lock")));
        assert!(found.contains(&td.join("config.lock")));
        assert!(!found.contains(&td.join("refs/heads/master")));
        assert_eq!(found.len(), TOP_LEVEL.len() + 2);
        std::fs::remove_dir_all(&td).unwrap();
    }
}
