//! Snapshot trees (placeholder docs, filled in below).
pub mod diff;
mod fsutil;
pub mod manifest;
mod names;
pub mod restore;
pub mod scan;
pub mod snapshot;
pub mod store;
#[cfg(test)]
mod testutil;
