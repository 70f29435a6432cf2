//! The node's clock for judging time: silence, cadence (late sources), the
//! published catalog's `generated` and the staleness of other nodes'
//! catalogs. `FERRY_NOW=<RFC 3339 time>` makes one run happen at that
//! instant, as on the client (`client/src/clock.rs`): tests walk days of
//! cadence in a few runs instead of waiting (STYLE: inject clocks). Storage
//! times (`received`) keep the real clock. Whoever can set the environment
//! of the node's jobs can edit its configuration too, so this widens
//! nothing.

use std::sync::OnceLock;

use jiff::Timestamp;

/// The variable that sets the clock.
pub const ENV: &str = "FERRY_NOW";

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

/// Now: `FERRY_NOW` if set, else the system clock.
pub fn now() -> Timestamp {
    match injected() {
        Ok(Some(t)) => *t,
        _ => Timestamp::now(),
    }
}
