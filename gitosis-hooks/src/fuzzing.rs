//! Entry points for fuzz targets (the workspace's `fuzz/` directory).
//!
//! Each function feeds arbitrary bytes to one parser and exercises what a
//! caller would do with a successful result. They must never panic; a
//! panic is a bug. They return nothing so fuzz harnesses stay one-liners:
//! `fuzz_target!(|data: &[u8]| ferry_gitosis::fuzzing::conf(data));`

use std::collections::BTreeMap;

use crate::access::{Mode, groups_of, have_access};
use crate::authkeys;
use crate::conf::Config;
use crate::enroll::{Enrollment, parse_duration_secs, parse_size};
use crate::keys::{parse_keyfile, parse_line};
use crate::serve::{decide_original_command, parse_command_bytes};

/// gitosis.conf parsing, group resolution, access checks, enrollment.
pub fn conf(data: &[u8]) {
    let Ok(c) = Config::parse(data) else {
        return;
    };
    let users: Vec<String> = c
        .sections()
        .flat_map(|s| c.options(s))
        .flat_map(|(_, v)| crate::conf::split_list(v))
        .take(8)
        .map(str::to_string)
        .collect();
    for user in users.iter().map(String::as_str).chain(["jdoe", "@all"]) {
        let _ = groups_of(&c, user);
        for mode in [Mode::Writable, Mode::Writeable, Mode::Readonly] {
            let _ = have_access(&c, user, mode, "queue/jdoe.git");
        }
    }
    let _ = Enrollment::build(&c, &BTreeMap::new());
}

/// `SSH_ORIGINAL_COMMAND` parsing and the access decision against a fixed
/// configuration.
pub fn serve(data: &[u8]) {
    let _ = parse_command_bytes(data);
    let conf = Config::parse(
        b"[group g]\nmembers = jdoe @all\nwritable = foo\nreadonly = bar\nmap writable x = y/z\n[ferry client jdoe]\n",
    );
    if let Ok(conf) = conf {
        let _ = decide_original_command(&conf, "jdoe", Some(data));
    }
}

/// Key line and key file parsing, canonical round trip.
pub fn keys(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(k) = parse_line(text)
    {
        let _ = k.fingerprint();
        let _ = parse_line(&k.to_line());
    }
    let _ = parse_keyfile(data);
}

/// authorized_keys filtering and rendering over arbitrary existing text.
pub fn authkeys(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = authkeys::render(&text, &[], &|u| format!("ferry-node serve {u}"));
    let _ = authkeys::foreign_key_clashes(&text, &[]);
}

/// Size and duration syntax.
pub fn units(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = parse_size(&text);
    let _ = parse_duration_secs(&text);
}

#[cfg(test)]
mod tests {
    use crate::testutil::Rng;

    #[test]
    fn entry_points_never_panic() {
        let mut rng = Rng::new(0xf022);
        for _ in 0..2_000 {
            let data: Vec<u8> = (0..rng.below(300)).map(|_| rng.byte()).collect();
            super::conf(&data);
            super::serve(&data);
            super::keys(&data);
            super::authkeys(&data);
            super::units(&data);
        }
    }
}
