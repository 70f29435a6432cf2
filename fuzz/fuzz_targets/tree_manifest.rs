//! `cargo fuzz run tree_manifest`: see [`ferry_fuzz::tree_manifest`] for what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry_fuzz::tree_manifest(data));
