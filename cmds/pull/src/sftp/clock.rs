//! The clocks of one download: the overall deadline, the idle timeout, and
//! the minimum transfer rate.
//!
//! Every await on the network goes through [`Clock::within`]. The idle
//! timeout alone does not stop a server that answers just often enough (one
//! byte every 20 s outlives a 60 s idle limit and would hold the request
//! until the deadline, hours later): the minimum rate does. From the first
//! read on, time is cut into consecutive windows of [`MinRate::window`];
//! a window that ends with fewer than `bytes_per_sec × window` bytes
//! received fails the download. The check runs when a window ends, even in
//! the middle of an await, so a drip is stopped about one window after it
//! starts whatever its pace.

use std::cell::Cell;
use std::time::{Duration, Instant};

use ferry_request::Reason;

use super::MinRate;
use crate::PullError;

pub(super) struct Clock {
    deadline: Instant,
    total: Duration,
    idle: Duration,
    rate: Option<MinRate>,
    /// Bytes received so far (handed to the sink).
    received: Cell<u64>,
    /// The current rate window: when it started and `received` then;
    /// `None` until the data transfer starts.
    window: Cell<Option<(Instant, u64)>>,
}

impl Clock {
    pub(super) fn new(start: Instant, total: Duration, idle: Duration, rate: Option<MinRate>) -> Clock {
        let rate = rate.filter(|r| r.bytes_per_sec > 0 && !r.window.is_zero());
        Clock { deadline: start + total, total, idle, rate, received: Cell::new(0), window: Cell::new(None) }
    }

    /// The data transfer begins: the rate is measured from now on.
    pub(super) fn start_rate(&self) {
        self.window.set(Some((Instant::now(), self.received.get())));
    }

    /// Every byte has arrived: what is left (the end-of-file probe, close)
    /// is bounded by the idle timeout, not by the rate.
    pub(super) fn stop_rate(&self) {
        self.window.set(None);
    }

    /// `n` more bytes arrived.
    pub(super) fn progress(&self, n: u64) {
        self.received.set(self.received.get() + n);
    }

    /// Bytes received so far.
    pub(super) fn received(&self) -> u64 {
        self.received.get()
    }

    /// End every rate window that has run out by `now`; fail if one of
    /// them saw too few bytes.
    fn check_rate(&self, what: &str, now: Instant) -> Result<(), PullError> {
        let (Some(rate), Some((mut since, mut at))) = (self.rate, self.window.get()) else { return Ok(()) };
        while now.duration_since(since) >= rate.window {
            let need =
                u64::try_from(u128::from(rate.bytes_per_sec) * rate.window.as_millis() / 1000).unwrap_or(u64::MAX);
            let got = self.received.get() - at;
            if got < need {
                return Err(PullError::new(
                    Reason::FetchTimeout,
                    format!(
                        "{what}: {got} bytes received in {} s, less than the minimum rate of {} bytes/s \
                         (limits.min_rate over limits.rate_window); {} bytes received in all",
                        rate.window.as_secs(),
                        rate.bytes_per_sec,
                        self.received.get()
                    ),
                ));
            }
            // Later windows start from here; the bytes counted so far all
            // belong to the windows already checked.
            since += rate.window;
            at = self.received.get();
        }
        self.window.set(Some((since, at)));
        Ok(())
    }

    /// When the current rate window ends, if one runs.
    fn window_end(&self) -> Option<Instant> {
        let rate = self.rate?;
        self.window.get().map(|(since, _)| since + rate.window)
    }

    pub(super) async fn within<F: Future>(&self, what: &str, f: F) -> Result<F::Output, PullError> {
        let idle_end = Instant::now() + self.idle;
        let mut f = std::pin::pin!(f);
        loop {
            let now = Instant::now();
            self.check_rate(what, now)?;
            let wake = [Some(self.deadline), Some(idle_end), self.window_end()].into_iter().flatten().min();
            let wake = wake.expect("the deadline is always set");
            match tokio::time::timeout_at(wake.into(), f.as_mut()).await {
                Ok(v) => return Ok(v),
                Err(_) => {
                    let now = Instant::now();
                    if now >= self.deadline {
                        return Err(PullError::new(
                            Reason::FetchTimeout,
                            format!("{what}: the download's deadline of {} s passed", self.total.as_secs()),
                        ));
                    }
                    if now >= idle_end {
                        return Err(PullError::new(
                            Reason::FetchTimeout,
                            format!("{what}: no progress for {} s (idle timeout)", self.idle.as_secs()),
                        ));
                    }
                    // A rate window ended: checked at the top of the loop,
                    // then the same await goes on.
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock(rate: u64, window_s: u64) -> Clock {
        Clock::new(
            Instant::now(),
            Duration::from_secs(3600),
            Duration::from_secs(600),
            Some(MinRate { bytes_per_sec: rate, window: Duration::from_secs(window_s) }),
        )
    }

    #[test]
    fn windows_are_checked_one_after_the_other() {
        let c = clock(100, 10);
        let t0 = Instant::now();
        c.window.set(Some((t0, 0)));
        c.progress(999);
        assert!(c.check_rate("read", t0 + Duration::from_secs(9)).is_ok(), "the first window is still open");
        let e = c.check_rate("read", t0 + Duration::from_secs(10)).unwrap_err();
        assert_eq!(e.reason, Reason::FetchTimeout);
        assert!(e.message.contains("999 bytes received in 10 s"), "{e}");
        assert!(e.message.contains("minimum rate of 100 bytes/s"), "{e}");

        let c = clock(100, 10);
        c.window.set(Some((t0, 0)));
        c.progress(1000);
        assert!(c.check_rate("read", t0 + Duration::from_secs(10)).is_ok());
        // The next window starts with nothing counted: 1000 old bytes do
        // not pay for it.
        c.progress(10);
        let e = c.check_rate("read", t0 + Duration::from_secs(20)).unwrap_err();
        assert!(e.message.contains("10 bytes received in 10 s"), "{e}");
        assert!(e.message.contains("1010 bytes received in all"), "{e}");
    }

    #[test]
    fn no_rate_before_the_transfer_or_when_off() {
        let c = clock(100, 10);
        let later = Instant::now() + Duration::from_secs(100);
        assert!(c.check_rate("open", later).is_ok(), "not started");
        let off = Clock::new(
            Instant::now(),
            Duration::from_secs(10),
            Duration::from_secs(10),
            Some(MinRate { bytes_per_sec: 0, window: Duration::from_secs(1) }),
        );
        off.start_rate();
        assert!(off.check_rate("read", later).is_ok());
        assert!(off.window_end().is_none());
    }
}
