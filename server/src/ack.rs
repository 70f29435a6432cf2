//! `ferry-node ack CLIENT ID...|--all`: acknowledge failed requests.
//!
//! A request the node refused or could not complete ends in `E` with its
//! reason in `E<id>.why`; `ferry-node list`, the daemon's `/status` and the
//! `ferry_client_failed_requests` metric count it until retention removes it
//! (`retention.finished_days`). Once an administrator has dealt with it,
//! acknowledging moves it to `A` (and its reason to `A<id>.why`) with synced
//! renames and a journal entry: the record stays, nothing is deleted, but
//! nothing reports it as needing attention any more, so a monitoring rule
//! on the metric closes.
//!
//! No pool lock is taken: a scan writes an `E` file once and never touches
//! it again, and the queue hook's duplicate check looks for `E` before `A`
//! (see [`crate::pool::STATES`]), so the rename cannot let a re-pushed id
//! through. A scan holding the pool for an hour-long fetch therefore does
//! not hold an acknowledgement back.

use serde::Serialize;

use crate::config::NodeConfig;
use crate::exit::UsageError;

/// What `ferry-node ack` did.
#[derive(Debug, Default, Serialize)]
pub struct AckReport {
    pub client: String,
    /// Ids moved from `E` to `A` now.
    pub acknowledged: Vec<String>,
    /// Ids that were acknowledged already.
    pub already: Vec<String>,
}

/// Acknowledge `ids` (or, with `all`, every failed request) of `client`.
/// Everything is checked first: an unknown client or an id that is not a
/// failed request of that client changes nothing.
pub fn ack(cfg: &NodeConfig, client: &str, ids: &[String], all: bool) -> anyhow::Result<AckReport> {
    if !ferry_gitosis::username::is_valid_client_name(client) || !cfg.client_pool(client).is_dir() {
        return Err(UsageError(format!("no client {:?} on this node", ferry_text::escape(client, 100))).into());
    }
    if let Some(bad) = ids.iter().find(|id| !ferry_durable::is_valid_id(id)) {
        return Err(UsageError(format!(
            "{:?} is not a request id (ferry-node list shows the failed ones)",
            ferry_text::escape(bad, 130)
        ))
        .into());
    }
    let pool = crate::pool::open_pool(cfg, client)?;
    if let Some(missing) = ids.iter().find(|id| !matches!(pool.state_of(id), Some("E" | "A"))) {
        return Err(UsageError(format!(
            "{missing} is not a failed request of {client} (ferry-node list {client} shows them)"
        ))
        .into());
    }
    let targets = if all { pool.ids("E")? } else { ids.to_vec() };
    let mut report = AckReport { client: client.to_owned(), ..Default::default() };
    for id in targets {
        let was = pool.state_of(&id);
        let moved = pool.move_with_sidecars(&id, "E", "A", &["why"]);
        match (was, moved) {
            (Some("E"), Ok(())) => {
                crate::events::record(
                    &cfg.events_log(),
                    "info",
                    Some(client),
                    "request_acknowledged",
                    None,
                    Some(&id),
                    &format!("failed request acknowledged; kept with its reason as A{id}"),
                );
                report.acknowledged.push(id);
            }
            // Acknowledged before (or by a concurrent run); a sidecar a
            // crash left behind is moved now.
            (_, Ok(())) => report.already.push(id),
            (_, Err(_)) if pool.state_of(&id) == Some("A") => report.already.push(id),
            (_, Err(e)) => return Err(e.into()),
        }
    }
    Ok(report)
}
