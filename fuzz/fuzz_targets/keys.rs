//! `cargo fuzz run keys`: see [`ferry_fuzz::keys`] for what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry_fuzz::keys(data));
