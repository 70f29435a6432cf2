//! Integration tests of the data modules against real tools: PostgreSQL
//! and MariaDB from the shared harness, the archive crate's extractor, real
//! pipe and hook commands. Tools that are missing skip their tests locally
//! and fail them under CI (`ferry_tests::require`).

mod db;
mod fs;
mod pipe;
mod util;
