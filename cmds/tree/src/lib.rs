//! Snapshot trees (placeholder docs, filled in below).
pub mod manifest;
