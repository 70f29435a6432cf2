//! Integration tests for ferry-archive: round trips compared by manifest,
//! hostile archives (SECURITY.md AX-*, SF-12) and a never-panics run over
//! mutated archives. Fixtures are generated at test time.

mod fuzz;
mod hostile;
mod roundtrip;
mod symlinks;
mod unreadable;
mod util;
