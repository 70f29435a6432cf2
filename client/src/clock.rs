//! The client's clock for delivery bookkeeping: when a push failed, when
//! the next attempt is due, whether `send.alert_after` has passed, and the
//! time alerts are raised and mailed at.
//!
//! `FERRY_NOW=<RFC 3339 time>` (e.g. `2026-11-22T10:00:00Z`) makes one run
//! happen at that instant, the way `FERRY_CRASH_AT` makes it crash at a
//! named point: tests walk an outage of hours in a few runs instead of
//! sleeping through it (STYLE: inject clocks, never wait). Request ids,
//! file times and the mail `Date` header keep the real clock. A one-shot
//! command lives in that one instant (its bookkeeping is exact: a failure
//! at 10:00:00 is due again at exactly 10:01:00); the long-running `ferry
//! agent` calls [`run_on`], and its clock then runs on from that instant at
//! real speed, so an agent started at 02:59:58 sees its 03:00 schedule two
//! seconds later. Anyone who can
//! set the environment of the client's cron job can edit its configuration
//! too, so this widens nothing.

use std::sync::OnceLock;
use std::time::Instant;

use jiff::Timestamp;

/// The variable that sets the clock.
pub const ENV: &str = "FERRY_NOW";

/// Set by [`run_on`]: the injected clock advances from this moment.
static RUNNING_SINCE: OnceLock<Instant> = OnceLock::new();

fn injected() -> &'static Result<Option<Timestamp>, String> {
    static NOW: OnceLock<Result<Option<Timestamp>, String>> = OnceLock::new();
    NOW.get_or_init(|| match std::env::var(ENV) {
        Err(_) => Ok(None),
        Ok(s) => s.trim().parse::<Timestamp>().map(Some).map_err(|e| {
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

/// From now on an injected clock runs at real speed (the agent).
pub fn run_on() {
    let _ = RUNNING_SINCE.set(Instant::now());
}

/// Now: `FERRY_NOW` if set (run on since [`run_on`]), else the system clock.
pub fn now() -> Timestamp {
    match injected() {
        Ok(Some(t)) => match RUNNING_SINCE.get() {
            Some(at) => t.checked_add(jiff::SignedDuration::try_from(at.elapsed()).unwrap_or_default()).unwrap_or(*t),
            None => *t,
        },
        _ => Timestamp::now(),
    }
}
