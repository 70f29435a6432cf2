//! Ferry's end-to-end tests: one test binary, modules by feature, all
//! against real sshd, git and friends started by the `ferry-tests` harness.
//!
//! Run `cargo build --workspace --bins` first (the README's test command
//! does): the tests run the built `ferry` and `ferry-node` binaries.

mod agent;
mod agent_bench;
mod alerts_timing;
mod badinput;
mod catalog_bench;
mod catalog_pg;
mod cgit;
mod client_restore;
mod crash;
mod daemon;
mod data;
mod db_nosudo;
mod deploy;
mod drills;
mod enrolled_port;
mod enrolled_roots;
mod fleet_check;
mod git_limits;
mod gitdaemon;
mod harness;
mod hook_env;
mod hostile;
mod hostile_dumps;
mod limits;
mod maintenance;
mod matrix;
mod names_output;
mod ops;
mod restore_all;
mod restore_faithful;
mod retention;
mod s3_cluster;
mod s3_encrypt;
mod s3_outage;
mod s3_store;
mod spine;
mod tree_client;
mod tree_pull;
mod tree_rescue;
mod tree_share;
mod tripwire;
mod two_accounts;
mod web_access;
