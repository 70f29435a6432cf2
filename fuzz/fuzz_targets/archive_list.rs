//! `cargo fuzz run archive_list`: see [`ferry_fuzz::archive_list`] for what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry_fuzz::archive_list(data));
