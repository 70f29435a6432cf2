//! Which names may become storage path components, beyond their spelling.
//!
//! A source name becomes the directory `data/<client>/<source>/` on the
//! node (and, with object storage, a key prefix). Two rules keep one
//! source's data from mixing with anything else there:
//!
//! * **Reserved names.** The node keeps some names at that level for its
//!   own directories: [`RESERVED_SOURCE_NAMES`], compared ignoring ASCII
//!   case. `git` holds the client's mirrors today; `trees` and `store` are
//!   kept for snapshot trees and their content store, `tmp` and
//!   `incomplete` for staging, `lost+found` is what `mkfs` puts at the top
//!   of a file system mounted there. Names starting with `.` never pass the
//!   grammar at all.
//! * **Letter case.** On a case-insensitive file system or object store
//!   `Trac` and `trac` are one directory, so a client may not store a
//!   source whose name differs only in ASCII case from one it already
//!   stores ([`Reason::ReqNameCase`], decided by the node, which knows what
//!   is stored: see [`same_ignoring_case`]).

#[cfg(doc)]
use crate::Reason;

/// Source names the node keeps for its own directories below
/// `data/<client>/`, in any letter case ([`Reason::ReqNameReserved`]).
pub const RESERVED_SOURCE_NAMES: &[&str] = &["git", "trees", "store", "tmp", "incomplete", "lost+found"];

/// Whether `name` is a reserved source name, ignoring ASCII case.
pub fn is_reserved_source(name: &str) -> bool {
    RESERVED_SOURCE_NAMES.iter().any(|r| r.eq_ignore_ascii_case(name))
}

/// Whether `a` and `b` are different names that one case-insensitive
/// file system or object store would take for the same (names are ASCII,
/// so ASCII case folding is the whole comparison).
pub fn same_ignoring_case(a: &str, b: &str) -> bool {
    a != b && a.eq_ignore_ascii_case(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_names_in_any_case() {
        for r in ["git", "GIT", "Git", "trees", "Store", "TMP", "incomplete", "lost+found"] {
            assert!(is_reserved_source(r), "{r}");
        }
        for ok in ["trac", "gitlab", "git2", "storage", "temp", "www"] {
            assert!(!is_reserved_source(ok), "{ok}");
        }
    }

    #[test]
    fn case_twins() {
        assert!(same_ignoring_case("Trac", "trac"));
        assert!(same_ignoring_case("DB.main", "db.MAIN"));
        assert!(!same_ignoring_case("trac", "trac"), "the same name is not a twin");
        assert!(!same_ignoring_case("trac", "trac2"));
    }
}
