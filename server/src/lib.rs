//! Ferry's backup node (`ferry-node`). See `ARCHITECTURE.md`.

pub mod catalog;
pub mod cli;
pub mod config;
pub mod enrollment;
pub mod events;
pub mod exit;
pub mod hooks;
pub mod init;
pub mod jobs;
pub mod list;
pub mod pullkey;
pub mod repos;
pub mod restore;
pub mod scan;
pub mod serve;
pub mod validate;

pub use cli::{Cli, run};
