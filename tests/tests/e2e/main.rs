//! Ferry's end-to-end tests: one test binary, modules by feature, all
//! against real sshd, git and friends started by the `ferry-tests` harness.
//!
//! Run `cargo build --workspace --bins` first (the README's test command
//! does): the tests run the built `ferry` and `ferry-node` binaries.

mod badinput;
mod cgit;
mod crash;
mod daemon;
mod data;
mod deploy;
mod git_limits;
mod harness;
mod hostile;
mod matrix;
mod ops;
mod spine;
