//! `[daemon]` in node.toml: which jobs run how often, where the HTTP
//! status listens, the jobs' deadline. Parsed here, with the rest of the
//! configuration, so a bad value is refused when the file is loaded (and by
//! a SIGHUP reload) rather than when the daemon first needs it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, anyhow};

use super::{DaemonConfig, parse_duration};

/// A job the daemon schedules; its name is the `ferry-node` subcommand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Job {
    Scan,
    Check,
    Purge,
    Verify,
    Gc,
    Drill,
}

impl Job {
    pub const ALL: [Job; 6] = [Job::Scan, Job::Check, Job::Purge, Job::Verify, Job::Gc, Job::Drill];

    pub fn name(self) -> &'static str {
        match self {
            Job::Scan => "scan",
            Job::Check => "check",
            Job::Purge => "purge",
            Job::Verify => "verify",
            Job::Gc => "gc",
            Job::Drill => "drill",
        }
    }
}

/// An interval of `[daemon]`: a duration (`30s`, `5m`, `2h`, `7d`), or
/// `"0"`/`"off"` for a disabled job (`None`).
pub fn parse_interval(s: &str) -> anyhow::Result<Option<Duration>> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let d = parse_duration(t)?;
    Ok((!d.is_zero()).then_some(d))
}

/// `[daemon]`, parsed and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// Where the HTTP server listens; `None`: no HTTP.
    pub listen: Option<SocketAddr>,
    /// Interval per job as configured (text for `/status`) and parsed.
    pub every: BTreeMap<Job, (String, Option<Duration>)>,
    /// `None`: no deadline.
    pub job_deadline: Option<Duration>,
    pub stop_grace: Duration,
}

impl Schedule {
    pub fn from_config(d: &DaemonConfig) -> anyhow::Result<Schedule> {
        let listen =
            match d.listen.trim() {
                "" => None,
                a => Some(a.parse::<SocketAddr>().map_err(|_| {
                    anyhow!("listen {a:?}: use address:port, e.g. \"127.0.0.1:9187\" (\"\" for no HTTP)")
                })?),
            };
        let mut every = BTreeMap::new();
        for (job, text) in [
            (Job::Scan, &d.scan_every),
            (Job::Check, &d.check_every),
            (Job::Purge, &d.purge_every),
            (Job::Verify, &d.verify_every),
            (Job::Gc, &d.gc_every),
            (Job::Drill, &d.drill_every),
        ] {
            let parsed = parse_interval(text).with_context(|| format!("{}_every", job.name()))?;
            every.insert(job, (text.trim().to_owned(), parsed));
        }
        Ok(Schedule {
            listen,
            every,
            job_deadline: parse_interval(&d.job_deadline).context("job_deadline")?,
            stop_grace: parse_duration(&d.stop_grace).context("stop_grace")?,
        })
    }

    pub fn every(&self, job: Job) -> Option<Duration> {
        self.every.get(&job).and_then(|e| e.1)
    }
}

impl Job {
    /// purge, verify and gc run one at a time: cron spreads them over the
    /// day, and a verify reading the catalog while purge deletes files
    /// would report artifacts as missing.
    pub fn exclusive(self) -> bool {
        matches!(self, Job::Purge | Job::Verify | Job::Gc | Job::Drill)
    }
}
