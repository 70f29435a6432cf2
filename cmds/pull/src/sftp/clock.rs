//! Deadlines of one download.

use std::time::{Duration, Instant};

use ferry_request::Reason;

use crate::PullError;
/// The job's two clocks: the overall deadline and the idle timeout. Every
/// await on the network goes through [`Clock::within`], so a stalled or
/// dripping server (SF-02) ends as `E_FETCH_TIMEOUT`.
pub(super) struct Clock {
    pub(super) deadline: Instant,
    pub(super) total: Duration,
    pub(super) idle: Duration,
}

impl Clock {
    pub(super) async fn within<F: Future>(&self, what: &str, f: F) -> Result<F::Output, PullError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        let limit = left.min(self.idle);
        match tokio::time::timeout(limit, f).await {
            Ok(v) => Ok(v),
            Err(_) if limit == left => Err(PullError::new(
                Reason::FetchTimeout,
                format!("{what}: the download's deadline of {} s passed", self.total.as_secs()),
            )),
            Err(_) => Err(PullError::new(
                Reason::FetchTimeout,
                format!("{what}: no progress for {} s (idle timeout)", self.idle.as_secs()),
            )),
        }
    }
}
