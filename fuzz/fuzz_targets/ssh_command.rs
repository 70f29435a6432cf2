//! `cargo fuzz run ssh_command`: see [`ferry_fuzz::ssh_command`] for what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry_fuzz::ssh_command(data));
