//! Integration tests of `ferry-notify` against real delivery paths: a real
//! SMTP server on loopback (aiosmtpd, via the `ferry-tests` harness) and a
//! stand-in local MTA for the sendmail path (a script that records its argv
//! and stdin).
//!
//! SMTP tests are skipped when aiosmtpd is missing, unless `CI=true` (then
//! they fail): see `ferry_tests::require`.

mod sendmail;
mod smtp;
mod util;
