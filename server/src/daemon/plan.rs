//! When each scheduled job is due (pure; unit-tested in the daemon).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::config::Job;

/// What the scheduler needs to know of one job to decide whether it is due.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Plan {
    /// `None`: disabled (runs only when requested).
    pub every: Option<Duration>,
    pub last_start: Option<Instant>,
    pub running: bool,
    /// Asked for by SIGUSR1: due as soon as it is not running.
    pub requested: bool,
}

/// When `job` is next due, given the daemon's start: a requested job at
/// once; a job that never ran one interval after startup, except scan, which
/// runs at once (pending requests should not wait, and startup stays cheap
/// because verify and gc do not all start together); afterwards one interval
/// after its last start. `None`: never (disabled, not requested).
pub fn next_due(job: Job, plan: &Plan, started: Instant) -> Option<Instant> {
    if plan.requested {
        return Some(started);
    }
    let every = plan.every?;
    Some(match plan.last_start {
        Some(t) => t + every,
        None if job == Job::Scan => started,
        None => started + every,
    })
}

/// The jobs to start now: due, not already running, and at most one
/// [`Job::exclusive`] job at a time (the others wait for it).
pub fn due(plans: &BTreeMap<Job, Plan>, started: Instant, now: Instant) -> Vec<Job> {
    let mut exclusive_busy = plans.iter().any(|(job, p)| job.exclusive() && p.running);
    let mut out = Vec::new();
    for (job, p) in plans {
        if p.running || next_due(*job, p, started).is_none_or(|t| t > now) {
            continue;
        }
        if job.exclusive() {
            if exclusive_busy {
                continue;
            }
            exclusive_busy = true;
        }
        out.push(*job);
    }
    out
}
