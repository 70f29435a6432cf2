//! Administrator alerts raised by the node: requests that ended in `E`,
//! pulls failing repeatedly (and recovering), clients gone silent (and
//! back), refused enrollments, full disks; and the `git gc` report. Grouped
//! and rate-limited by `ferry-notify` (README, "Alerts"), with the node's
//! `name` in the subject unless `[mail] host_label` says otherwise; client
//! text only in quoted excerpts.

use ferry_notify::{Alert, Kind, Notifier};
use ferry_request::Reason;

use crate::clientstate::ClientState;
use crate::config::NodeConfig;

/// Pull failures in a row before `PULL_FAILING` is raised.
pub const PULL_FAILURES_ALERT: u32 = 3;

fn notifier(cfg: &NodeConfig) -> Option<Notifier> {
    Notifier::new(cfg.mail.clone(), cfg.state_dir().join("outbox"), &cfg.name)
        .map_err(|e| tracing::warn!("cannot open the alert outbox: {e}"))
        .ok()
}

pub fn raise(cfg: &NodeConfig, alert: Alert) {
    if let Some(n) = notifier(cfg)
        && let Err(e) = n.raise(alert)
    {
        tracing::warn!("cannot record an alert: {e}");
    }
}

/// Mail what is due.
pub fn flush(cfg: &NodeConfig) {
    if let Some(n) = notifier(cfg)
        && let Err(e) = n.flush(jiff::Timestamp::now())
    {
        tracing::warn!("alert mail not sent (kept for the next run): {e}");
    }
}

fn is_pull_failure(r: Reason) -> bool {
    r.code().starts_with("E_FETCH_") || matches!(r, Reason::DiskFull | Reason::Quota)
}

/// A request ended in `E`.
pub fn request_failed(cfg: &NodeConfig, client: &str, id: &str, reason: Reason, detail: &str) {
    let kind = if reason == Reason::DiskFull { Kind::DiskFull } else { Kind::RequestFailed };
    let body = format!(
        "Request {id} from client {client} ended in {} on node {}.\n{}\n\
         Once dealt with, acknowledge it: ferry-node ack {client} {id}",
        reason.code(),
        cfg.name,
        reason.describe()
    );
    raise(
        cfg,
        Alert::new(kind, format!("client:{client}:{}", reason.code()), client, body).with_excerpt(detail.to_owned()),
    );
    ClientState::update(cfg, client, |st| {
        if is_pull_failure(reason) {
            st.failures_in_a_row += 1;
            st.last_failure = Some(jiff::Timestamp::now());
            st.last_reason = Some(reason.code().to_owned());
            if st.failures_in_a_row >= PULL_FAILURES_ALERT && !st.pull_alert_open {
                st.pull_alert_open = true;
                let body = format!(
                    "The node {} failed to pull from client {client} {} times in a row (last: {}).",
                    cfg.name,
                    st.failures_in_a_row,
                    reason.code()
                );
                raise(
                    cfg,
                    Alert::new(Kind::PullFailing, format!("pull:{client}"), client, body)
                        .with_excerpt(detail.to_owned()),
                );
            }
        }
        st.last_request = Some(jiff::Timestamp::now());
    });
}

/// A request finished.
pub fn request_done(cfg: &NodeConfig, client: &str, pulled: bool) {
    ClientState::update(cfg, client, |st| {
        let now = jiff::Timestamp::now();
        st.last_request = Some(now);
        if pulled {
            st.last_success = Some(now);
            if st.pull_alert_open {
                let body = format!("Pulls from client {client} succeed again after {} failures.", st.failures_in_a_row);
                raise(cfg, Alert::new(Kind::PullRecovered, format!("pull:{client}"), client, body));
            }
            st.failures_in_a_row = 0;
            st.pull_alert_open = false;
        }
    });
}
