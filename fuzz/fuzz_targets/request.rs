//! `cargo fuzz run request`: see [`ferry_fuzz::request`] for what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry_fuzz::request(data));
