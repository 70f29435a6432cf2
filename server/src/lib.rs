//! Ferry's backup node (`ferry-node`). See `ARCHITECTURE.md`.

pub mod ack;
pub mod alerts;
pub mod cadence;
pub mod catalog;
pub mod check;
pub mod cli;
pub mod clientstate;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod enrollment;
pub mod events;
pub mod exit;
pub mod history;
pub mod history_page;
pub mod hooks;
pub mod init;
pub mod jobs;
pub mod list;
pub mod maintain;
pub mod out;
pub mod pool;
pub mod publish;
pub mod pullkey;
pub mod remote;
pub mod repos;
pub mod restore;
pub mod scan;
pub mod scanrecord;
pub mod serve;
pub mod store;
pub mod trees;
pub mod validate;
pub mod verify;
pub mod web;

pub use cli::{Cli, run};
