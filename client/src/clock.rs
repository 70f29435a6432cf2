//! The client's clock for delivery bookkeeping: when a push failed, when
//! the next attempt is due, whether `send.alert_after` has passed, and the
//! time alerts are raised and mailed at.
//!
//! `FERRY_NOW=<RFC 3339 time>` (e.g. `2026-11-22T10:00:00Z`) makes one run
//! happen at that instant, the way `FERRY_CRASH_AT` makes it crash at a
//! named point: tests walk an outage of hours in a few runs instead of
//! sleeping through it (STYLE: inject clocks, never wait). Request ids,
//! file times and the mail `Date` header keep the real clock. The injected
//! clock runs on from that instant at real speed, so a long-running
//! `ferry agent` started at 02:59:58 sees its 03:00 schedule two seconds
//! later (a one-shot command ends within the same instant, as before). Anyone who can
//! set the environment of the client's cron job can edit its configuration
//! too, so this widens nothing.

use std::sync::OnceLock;

use jiff::Timestamp;

/// The variable that sets the clock.
pub const ENV: &str = "FERRY_NOW";

type Start = (Timestamp, std::time::Instant);

fn injected() -> &'static Result<Option<Start>, String> {
    static NOW: OnceLock<Result<Option<Start>, String>> = OnceLock::new();
    NOW.get_or_init(|| match std::env::var(ENV) {
        Err(_) => Ok(None),
        Ok(s) => s.trim().parse::<Timestamp>().map(|t| Some((t, std::time::Instant::now()))).map_err(|e| {
            format!("{ENV}={:?} is not an RFC 3339 time such as 2026-11-22T10:00:00Z: {e}", ferry_text::escape(&s, 60))
        }),
    })
}

/// Refuses an unreadable `FERRY_NOW` (checked once, before any work).
pub fn check() -> anyhow::Result<()> {
    match injected() {
        Ok(_) => Ok(()),
        Err(e) => Err(crate::exit::UsageError(e.clone()).into()),
    }
}

/// Now: `FERRY_NOW` if set, else the system clock.
pub fn now() -> Timestamp {
    match injected() {
        Ok(Some((t, at))) => {
            let run = jiff::SignedDuration::try_from(at.elapsed()).unwrap_or_default();
            t.checked_add(run).unwrap_or(*t)
        }
        _ => Timestamp::now(),
    }
}
