//! `cargo fuzz run gitosis_conf`: see [`ferry_fuzz::gitosis_conf`] for what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry_fuzz::gitosis_conf(data));
