//! Ferry's client (`ferry`): queue backup requests, prepare what the backup
//! nodes should pull, and deliver the requests through each node's queue
//! repo. See `ARCHITECTURE.md` for the state machine and trust model.

pub mod ack;
pub mod agent;
pub mod agent_schedule;
pub mod alerts;
pub mod authorize;
pub mod changes;
pub mod cli;
pub mod clock;
pub mod config;
pub mod duration;
pub mod exit;
pub mod gate;
pub mod hook;
pub mod init;
pub mod nodestatus;
pub mod out;
pub mod pool;
pub mod queue;
pub mod request;
pub mod restore;
pub mod restore_all;
pub mod send;
pub mod sources;
pub mod status;

pub use cli::{Cli, run};
