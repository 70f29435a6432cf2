//! `ferry-node daemon`: the node's schedules in one long-running process,
//! with status and Prometheus metrics over HTTP.
//!
//! Why child processes: each job (`scan`, `check`, `purge`, `verify`, `gc`)
//! runs as `ferry-node --config <same file> --json <job>`, exactly what cron
//! or a systemd timer would start. A crash, a leak or a stuck fetch stays in
//! that child (killed with its process group at `job_deadline`), and the
//! jobs take their own locks (the pool's flock in `scan` and `gc`), so a
//! cron run or a hook-started scan overlapping the daemon's is as safe as
//! two cron runs overlapping. The daemon itself never starts a job that it
//! is still running, and runs purge, verify and gc one at a time.
//!
//! Threads: the scheduler (this module's loop) owns all job records and is
//! the only writer of the job part of the [`Status`] snapshot; one thread per
//! running job waits for its child; a collector thread refreshes what the
//! node knows per client (pool, catalog, client state: slow on a big node)
//! and of every scan (`state/scan.json`, written by each scan whoever
//! started it) after each job, when work the daemon did not start changed
//! the scan record or the event journal (a push's scan, an acknowledged
//! request; looked at every 2 s), and every minute; the HTTP thread only
//! reads the snapshot. A slow catalog or a slow HTTP client never delays a
//! schedule.
//!
//! Signals: SIGHUP re-reads the configuration (a bad one is logged and the
//! old one kept), SIGUSR1 runs scan and check now, SIGTERM/SIGINT stop:
//! running jobs get `stop_grace` to finish, then are killed (a second
//! SIGTERM kills at once); the exit code is 0.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use jiff::Timestamp;
use serde::Serialize;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};

use crate::config::NodeConfig;
use crate::exit;

mod child;
mod http;
mod plan;
pub use crate::config::{Job, Schedule, parse_interval};
pub use child::Outcome;
use child::{job_program, run_child};
pub use http::{Answer, metrics, route};
pub use plan::{Plan, due, next_due};

/// One job's record, as `/status` shows it and `/metrics` counts it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct JobRecord {
    /// The configured interval (`null`: disabled).
    pub every: Option<String>,
    pub every_seconds: Option<u64>,
    pub running: bool,
    /// Finished runs.
    pub runs: u64,
    /// Runs that did not complete: exit 1 or 2, killed, deadline, not started.
    pub failures: u64,
    /// Runs that completed but reported problems (exit 3: failed requests,
    /// verify mismatches, silent clients).
    pub problems: u64,
    pub last_start: Option<Timestamp>,
    pub last_end: Option<Timestamp>,
    pub last_duration_ms: Option<u64>,
    pub last_exit: Option<i32>,
    /// `exit 0`, `signal 9`, `deadline`, `stopped`, `not started`.
    pub last_status: Option<String>,
    /// The end of a failed run's stderr, escaped.
    pub last_error: Option<String>,
    /// End of the last run that completed (exit 0 or 3).
    pub last_success: Option<Timestamp>,
    pub next_due: Option<Timestamp>,
}

/// What the node knows of one client, refreshed by the collector.
#[derive(Debug, Clone, Serialize)]
pub struct ClientFacts {
    pub client: String,
    pub enrolled: bool,
    /// Requests waiting in the pool (`RQ`, `P`).
    pub pending: usize,
    /// `F` files kept (for `retention.finished_days`).
    pub finished: usize,
    /// Failed requests not acknowledged yet (`E`).
    pub failed: usize,
    /// Failed requests acknowledged with `ferry-node ack` (`A`).
    pub acknowledged: usize,
    pub mirrors: usize,
    pub artifacts: usize,
    pub stored_bytes: u64,
    pub last_request: Option<Timestamp>,
    pub last_success: Option<Timestamp>,
    pub last_failure: Option<Timestamp>,
    pub failures_in_a_row: u32,
    pub last_reason: Option<String>,
}

/// The snapshot the HTTP server answers from.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub node: String,
    pub pid: u32,
    pub config: String,
    pub started: Timestamp,
    pub listen: Option<String>,
    pub stopping: bool,
    pub reloads: u64,
    pub reload_failures: u64,
    pub last_reload: Option<Timestamp>,
    pub last_reload_error: Option<String>,
    pub jobs: BTreeMap<&'static str, JobRecord>,
    pub clients_updated: Option<Timestamp>,
    pub clients_error: Option<String>,
    pub clients: Vec<ClientFacts>,
    /// Every scan on this node, whoever started it (`state/scan.json`,
    /// refreshed with the client facts): the hook's scans after pushes,
    /// cron's, an administrator's, and this daemon's own.
    pub scans: crate::scanrecord::ScanRecord,
    /// `(client, source, verdict)` of every source in the last published
    /// catalog (the scan publishes it; see [`crate::publish`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<(String, String, crate::cadence::Verdict)>,
}

/// The verdicts of the last published catalog (none when there is none yet).
fn published_verdicts(cfg: &NodeConfig) -> Vec<(String, String, crate::cadence::Verdict)> {
    let path = crate::publish::default_dir(cfg).join(crate::catalog_doc::FILE);
    let Ok(Some(bytes)) = ferry_durable::read_capped(&path, crate::remote::MAX_DOCUMENT) else { return Vec::new() };
    let Ok(doc) = serde_json::from_slice::<crate::catalog_doc::Document>(&bytes) else { return Vec::new() };
    doc.clients
        .into_iter()
        .flat_map(|c| {
            let client = c.client;
            c.sources.into_iter().filter_map(move |s| Some((client.clone(), s.source, s.verdict?)))
        })
        .collect()
}

/// Client facts from the same functions `list` and `check` use.
pub fn collect_clients(cfg: &NodeConfig) -> anyhow::Result<Vec<ClientFacts>> {
    let list = crate::list::collect(cfg, None)?;
    Ok(list
        .into_iter()
        .map(|c| {
            let st = crate::clientstate::ClientState::load(cfg, &c.client);
            ClientFacts {
                enrolled: c.enrolled,
                pending: c.pending,
                finished: c.finished,
                failed: c.failed,
                acknowledged: c.acknowledged,
                mirrors: c.git.len(),
                artifacts: c.artifacts.len(),
                // Snapshot trees count what their store holds, not each
                // snapshot's full size (they share it).
                stored_bytes: c
                    .artifacts
                    .iter()
                    .filter(|a| a.module != crate::trees::MODULE)
                    .map(|a| a.size)
                    .sum::<u64>()
                    + c.tree_store.as_ref().map_or(0, |t| t.bytes),
                last_request: st.last_request,
                last_success: st.last_success,
                last_failure: st.last_failure,
                failures_in_a_row: st.failures_in_a_row,
                last_reason: st.last_reason,
                client: c.client,
            }
        })
        .collect())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

enum Event {
    Signal(i32),
    Done(Job, Outcome),
}

/// How often client facts are refreshed when nothing else asks for it.
const COLLECT_EVERY: Duration = Duration::from_secs(60);
/// How often the scheduler looks whether work it did not start changed
/// what the node knows (`state/scan.json`, `state/events.jsonl`): a scan
/// started by a push or by cron, an acknowledged request.
const WATCH_EVERY: Duration = Duration::from_secs(2);
/// Refreshes asked for by that watch are at least this far apart, so a busy
/// node does not keep the collector (git, catalog) running back to back.
const WATCH_MIN_GAP: Duration = Duration::from_secs(5);
/// After the kill at the end of `stop_grace`, how long to wait for the
/// children's threads to report before leaving anyway.
const KILL_WAIT: Duration = Duration::from_secs(10);

struct Scheduler {
    cfg: NodeConfig,
    config_path: PathBuf,
    schedule: Schedule,
    started: Instant,
    plans: BTreeMap<Job, Plan>,
    status: Arc<Mutex<Status>>,
    tx: mpsc::Sender<Event>,
    kill: Arc<AtomicBool>,
    collecting: Arc<AtomicBool>,
    last_collect: Option<Instant>,
    /// What [`Scheduler::watched`] said when the facts were last refreshed.
    seen: Watched,
}

/// Modification times of the files other processes write when they change
/// what the node knows: the scan record and the event journal.
type Watched = [Option<std::time::SystemTime>; 2];

impl Scheduler {
    fn watched(&self) -> Watched {
        let mtime = |p: PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        [mtime(self.cfg.state_dir().join("scan.json")), mtime(self.cfg.events_log())]
    }

    /// Facts changed by work this daemon did not start (checked every
    /// [`WATCH_EVERY`]).
    fn changed_elsewhere(&self, now: Instant) -> bool {
        self.last_collect.is_some_and(|t| now.duration_since(t) >= WATCH_MIN_GAP) && self.watched() != self.seen
    }

    fn set_intervals(&mut self) {
        for job in Job::ALL {
            self.plans.entry(job).or_default().every = self.schedule.every(job);
        }
        let mut st = lock(&self.status);
        for job in Job::ALL {
            let rec = st.jobs.entry(job.name()).or_default();
            let every = self.schedule.every(job);
            rec.every = every.map(|_| self.schedule.every[&job].0.clone());
            rec.every_seconds = every.map(|d| d.as_secs());
        }
    }

    /// Copy the scheduling state into the snapshot.
    fn publish(&self) {
        let (now, now_ts) = (Instant::now(), Timestamp::now());
        let mut st = lock(&self.status);
        for (job, plan) in &self.plans {
            let rec = st.jobs.entry(job.name()).or_default();
            rec.running = plan.running;
            rec.next_due = if plan.running {
                None
            } else {
                next_due(*job, plan, self.started).map(|t| {
                    let ahead = jiff::SignedDuration::try_from(t.saturating_duration_since(now)).unwrap_or_default();
                    now_ts.checked_add(ahead).unwrap_or(now_ts)
                })
            };
        }
    }

    fn start(&mut self, job: Job) {
        let plan = self.plans.entry(job).or_default();
        plan.running = true;
        plan.requested = false;
        plan.last_start = Some(Instant::now());
        lock(&self.status).jobs.entry(job.name()).or_default().last_start = Some(Timestamp::now());
        tracing::info!(job = job.name(), "starting");
        let (program, config_path) = (job_program(&self.cfg), self.config_path.clone());
        let (deadline, kill, tx) = (self.schedule.job_deadline, self.kill.clone(), self.tx.clone());
        let spawned = std::thread::Builder::new().name(format!("job-{}", job.name())).spawn(move || {
            let outcome = run_child(&program, &config_path, job, deadline, kill);
            let _ = tx.send(Event::Done(job, outcome));
        });
        if let Err(e) = spawned {
            let outcome = Outcome {
                exit: None,
                status: "not started".into(),
                error: Some(e.to_string()),
                elapsed: Duration::ZERO,
            };
            self.finish(job, outcome);
        }
    }

    fn finish(&mut self, job: Job, o: Outcome) {
        self.plans.entry(job).or_default().running = false;
        let completed = o.completed();
        if completed {
            tracing::info!(job = job.name(), status = %o.status, ms = o.elapsed.as_millis() as u64, "finished");
        } else {
            tracing::warn!(
                job = job.name(),
                status = %o.status,
                error = o.error.as_deref().unwrap_or(""),
                "failed"
            );
        }
        let now = Timestamp::now();
        let mut st = lock(&self.status);
        let rec = st.jobs.entry(job.name()).or_default();
        rec.running = false;
        rec.runs += 1;
        if !completed {
            rec.failures += 1;
        } else if o.exit == Some(i32::from(exit::PROBLEMS)) {
            rec.problems += 1;
        }
        rec.last_end = Some(now);
        rec.last_duration_ms = Some(o.elapsed.as_millis() as u64);
        rec.last_exit = o.exit;
        rec.last_status = Some(o.status);
        rec.last_error = o.error;
        if completed {
            rec.last_success = Some(now);
        }
    }

    /// Refresh client facts on a thread of their own, one refresh at a time.
    fn collect(&mut self) {
        if self.collecting.swap(true, Ordering::AcqRel) {
            return;
        }
        self.last_collect = Some(Instant::now());
        self.seen = self.watched();
        let (cfg, status, collecting) = (self.cfg.clone(), self.status.clone(), self.collecting.clone());
        let spawned = std::thread::Builder::new().name("collect".into()).spawn(move || {
            let res = collect_clients(&cfg);
            let scans = crate::scanrecord::load(&cfg);
            let sources = published_verdicts(&cfg);
            let mut st = lock(&status);
            st.sources = sources;
            st.clients_updated = Some(Timestamp::now());
            st.scans = scans;
            match res {
                Ok(c) => {
                    st.clients = c;
                    st.clients_error = None;
                }
                Err(e) => st.clients_error = Some(ferry_text::sanitize(&format!("{e:#}"), 600)),
            }
            drop(st);
            collecting.store(false, Ordering::Release);
        });
        if spawned.is_err() {
            self.collecting.store(false, Ordering::Release);
        }
    }

    fn reload(&mut self) {
        let res = NodeConfig::load(&self.config_path)
            .and_then(|cfg| Schedule::from_config(&cfg.daemon).map(|s| (cfg, s)).context("[daemon]"));
        match res {
            Ok((cfg, schedule)) => {
                if schedule.listen != self.schedule.listen {
                    tracing::warn!("[daemon] listen changed: restart the daemon to move the HTTP server");
                }
                self.cfg = cfg;
                self.schedule = schedule;
                self.set_intervals();
                let mut st = lock(&self.status);
                st.node = self.cfg.name.clone();
                st.reloads += 1;
                st.last_reload = Some(Timestamp::now());
                st.last_reload_error = None;
                drop(st);
                crate::events::record(&self.cfg.events_log(), "info", None, "daemon_reloaded", None, None, "");
            }
            Err(e) => {
                let msg = format!("{e:#}");
                tracing::error!(
                    "configuration not reloaded, the previous one stays in force: {}",
                    ferry_text::sanitize(&msg, 2000)
                );
                let mut st = lock(&self.status);
                st.reload_failures += 1;
                st.last_reload = Some(Timestamp::now());
                st.last_reload_error = Some(ferry_text::sanitize(&msg, 600));
                drop(st);
                crate::events::record(&self.cfg.events_log(), "error", None, "daemon_reload_failed", None, None, &msg);
            }
        }
    }

    fn running(&self) -> usize {
        self.plans.values().filter(|p| p.running).count()
    }

    /// How long the loop may sleep: until the next due job, at most until
    /// the next look at what others changed.
    fn wait(&self, now: Instant) -> Duration {
        let mut wait = WATCH_EVERY;
        for (job, plan) in &self.plans {
            if !plan.running
                && let Some(t) = next_due(*job, plan, self.started)
            {
                wait = wait.min(t.saturating_duration_since(now));
            }
        }
        wait.max(Duration::from_millis(10))
    }

    /// Stop: no new jobs; running ones get `stop_grace`, then are killed.
    fn shutdown(&mut self, rx: &mpsc::Receiver<Event>) {
        lock(&self.status).stopping = true;
        let grace_end = Instant::now() + self.schedule.stop_grace;
        let mut kill_end: Option<Instant> = None;
        if self.running() > 0 {
            tracing::info!(jobs = self.running(), "waiting for running jobs");
        }
        while self.running() > 0 {
            let now = Instant::now();
            if kill_end.is_none() && now >= grace_end {
                tracing::warn!("stop_grace over: killing the running jobs");
                self.kill.store(true, Ordering::Relaxed);
                kill_end = Some(now + ferry_run::KILL_GRACE + KILL_WAIT);
            }
            if kill_end.is_some_and(|t| now >= t) {
                tracing::warn!("jobs did not report after the kill; leaving anyway");
                break;
            }
            let until = kill_end.unwrap_or(grace_end);
            match rx.recv_timeout(until.saturating_duration_since(now).max(Duration::from_millis(10))) {
                Ok(Event::Done(job, o)) => self.finish(job, o),
                Ok(Event::Signal(s)) if (s == SIGTERM || s == SIGINT) && kill_end.is_none() => {
                    tracing::warn!("stopping again: killing the running jobs now");
                    self.kill.store(true, Ordering::Relaxed);
                    kill_end = Some(Instant::now() + ferry_run::KILL_GRACE + KILL_WAIT);
                }
                Ok(Event::Signal(_)) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        self.publish();
    }
}

/// Run the daemon until SIGTERM or SIGINT; the exit code is 0 then.
pub fn run(cfg: NodeConfig, config_path: &Path) -> anyhow::Result<u8> {
    let schedule = Schedule::from_config(&cfg.daemon)
        .map_err(|e| exit::UsageError(format!("invalid [daemon] in {}: {e:#}", config_path.display())))?;
    // Handlers first: a SIGTERM from here on is a clean stop.
    let mut signals = signal_hook::iterator::Signals::new([SIGHUP, SIGUSR1, SIGTERM, SIGINT])
        .context("cannot install the signal handlers")?;
    let signal_handle = signals.handle();
    let server = match schedule.listen {
        Some(addr) => Some(Arc::new(
            tiny_http::Server::http(addr).map_err(|e| anyhow!("cannot listen on {addr} ([daemon] listen): {e}"))?,
        )),
        None => None,
    };
    let (tx, rx) = mpsc::channel();
    let signal_tx = tx.clone();
    let signal_thread = std::thread::Builder::new().name("signals".into()).spawn(move || {
        for s in signals.forever() {
            if signal_tx.send(Event::Signal(s)).is_err() {
                break;
            }
        }
    })?;

    let status = Arc::new(Mutex::new(Status {
        node: cfg.name.clone(),
        pid: std::process::id(),
        config: config_path.display().to_string(),
        started: Timestamp::now(),
        listen: schedule.listen.map(|a| a.to_string()),
        stopping: false,
        reloads: 0,
        reload_failures: 0,
        last_reload: None,
        last_reload_error: None,
        jobs: BTreeMap::new(),
        clients_updated: None,
        sources: Vec::new(),
        clients_error: None,
        clients: Vec::new(),
        scans: Default::default(),
    }));
    let http_thread = match &server {
        Some(s) => {
            let (s, st) = (s.clone(), status.clone());
            Some(std::thread::Builder::new().name("http".into()).spawn(move || http::serve(&s, &st))?)
        }
        None => None,
    };
    let detail = format!(
        "pid {}, http {}",
        std::process::id(),
        schedule.listen.map(|a| a.to_string()).unwrap_or_else(|| "off".into())
    );
    crate::events::record(&cfg.events_log(), "info", None, "daemon_started", None, None, &detail);

    let mut d = Scheduler {
        cfg,
        config_path: config_path.to_owned(),
        schedule,
        started: Instant::now(),
        plans: BTreeMap::new(),
        status,
        tx,
        kill: Arc::new(AtomicBool::new(false)),
        collecting: Arc::new(AtomicBool::new(false)),
        last_collect: None,
        seen: [None, None],
    };
    d.set_intervals();
    d.collect();
    loop {
        let now = Instant::now();
        for job in due(&d.plans, d.started, now) {
            d.start(job);
        }
        d.publish();
        if d.last_collect.is_none_or(|t| now.duration_since(t) >= COLLECT_EVERY) || d.changed_elsewhere(now) {
            d.collect();
        }
        match rx.recv_timeout(d.wait(Instant::now())) {
            Ok(Event::Done(job, o)) => {
                d.finish(job, o);
                d.collect();
            }
            Ok(Event::Signal(SIGHUP)) => {
                tracing::info!("SIGHUP: re-reading {}", d.config_path.display());
                d.reload();
            }
            Ok(Event::Signal(SIGUSR1)) => {
                tracing::info!("SIGUSR1: scan and check now");
                for job in [Job::Scan, Job::Check] {
                    d.plans.entry(job).or_default().requested = true;
                }
            }
            Ok(Event::Signal(s)) => {
                tracing::info!(signal = s, "stopping");
                break;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!("internal: the event channel closed"),
        }
    }
    d.shutdown(&rx);
    signal_handle.close();
    let _ = signal_thread.join();
    if let Some(s) = &server {
        s.unblock();
    }
    if let Some(t) = http_thread {
        let _ = t.join();
    }
    crate::events::record(&d.cfg.events_log(), "info", None, "daemon_stopped", None, None, "");
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DaemonConfig;

    fn plans(f: impl Fn(Job, &mut Plan)) -> BTreeMap<Job, Plan> {
        Job::ALL
            .into_iter()
            .map(|j| {
                let mut p = Plan { every: Some(Duration::from_secs(60)), ..Default::default() };
                f(j, &mut p);
                (j, p)
            })
            .collect()
    }

    #[test]
    fn intervals_parse_and_zero_or_off_disable() {
        assert_eq!(parse_interval("5m").unwrap(), Some(Duration::from_secs(300)));
        assert_eq!(parse_interval("1s").unwrap(), Some(Duration::from_secs(1)));
        assert_eq!(parse_interval(" 7d ").unwrap(), Some(Duration::from_secs(7 * 86400)));
        assert_eq!(parse_interval("90").unwrap(), Some(Duration::from_secs(90)));
        assert_eq!(parse_interval("0").unwrap(), None);
        assert_eq!(parse_interval("0m").unwrap(), None);
        assert_eq!(parse_interval("off").unwrap(), None);
        assert_eq!(parse_interval("OFF").unwrap(), None);
        for bad in ["", "5x", "-1m", "1.5h", "m", "five minutes", "99999999999999999999d", "999999999999999999d"] {
            assert!(parse_interval(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn defaults_and_bad_values_of_the_section() {
        let s = Schedule::from_config(&DaemonConfig::default()).unwrap();
        assert_eq!(s.listen, Some("127.0.0.1:9187".parse().unwrap()));
        assert_eq!(s.every(Job::Scan), Some(Duration::from_secs(300)));
        assert_eq!(s.every(Job::Check), Some(Duration::from_secs(3600)));
        assert_eq!(s.every(Job::Purge), Some(Duration::from_secs(86400)));
        assert_eq!(s.every(Job::Verify), Some(Duration::from_secs(7 * 86400)));
        assert_eq!(s.every(Job::Gc), Some(Duration::from_secs(30 * 86400)));
        let d: DaemonConfig = toml::from_str("listen = \"\"\ngc_every = \"off\"").unwrap();
        let s = Schedule::from_config(&d).unwrap();
        assert_eq!((s.listen, s.every(Job::Gc)), (None, None));
        let d: DaemonConfig = toml::from_str("listen = \"localhost\"").unwrap();
        assert!(Schedule::from_config(&d).is_err());
        let d: DaemonConfig = toml::from_str("verify_every = \"weekly\"").unwrap();
        let e = format!("{:#}", Schedule::from_config(&d).unwrap_err());
        assert!(e.contains("verify_every"), "{e}");
        assert!(toml::from_str::<DaemonConfig>("scan_evry = \"1m\"").is_err());
    }

    #[test]
    fn scan_runs_at_once_the_others_one_interval_after_startup() {
        let t0 = Instant::now();
        let p = plans(|_, _| {});
        assert_eq!(due(&p, t0, t0), [Job::Scan]);
        assert_eq!(due(&p, t0, t0 + Duration::from_secs(59)), [Job::Scan]);
        // Purge, verify and gc one at a time.
        assert_eq!(due(&p, t0, t0 + Duration::from_secs(60)), [Job::Scan, Job::Check, Job::Purge]);
    }

    #[test]
    fn purge_verify_and_gc_never_run_together() {
        let t0 = Instant::now();
        let p = plans(|j, p| p.running = j == Job::Verify);
        assert_eq!(due(&p, t0, t0 + Duration::from_secs(3600)), [Job::Scan, Job::Check]);
        let p = plans(|j, p| p.running = j == Job::Scan || j == Job::Check);
        assert_eq!(due(&p, t0, t0 + Duration::from_secs(3600)), [Job::Purge]);
    }

    #[test]
    fn a_job_is_due_one_interval_after_its_last_start_and_never_twice() {
        let t0 = Instant::now();
        let started = t0 + Duration::from_secs(100);
        let p = plans(|j, p| {
            p.last_start = Some(started);
            p.running = j == Job::Check;
        });
        assert!(due(&p, t0, started + Duration::from_secs(59)).is_empty());
        // Check is overdue, but still running: not started a second time.
        assert_eq!(due(&p, t0, started + Duration::from_secs(60)), [Job::Scan, Job::Purge]);
        assert_eq!(next_due(Job::Scan, &p[&Job::Scan], t0), Some(started + Duration::from_secs(60)));
    }

    #[test]
    fn disabled_jobs_never_run_unless_requested_and_requests_wait_for_a_running_job() {
        let t0 = Instant::now();
        let p = plans(|j, p| {
            p.every = None;
            p.requested = j == Job::Check || j == Job::Scan;
            p.running = j == Job::Scan;
        });
        assert_eq!(due(&p, t0, t0), [Job::Check]);
        assert_eq!(due(&p, t0, t0 + Duration::from_secs(86400 * 365)), [Job::Check]);
        let p = plans(|_, p| p.every = None);
        assert!(due(&p, t0, t0 + Duration::from_secs(86400 * 365)).is_empty());
        assert_eq!(next_due(Job::Gc, &p[&Job::Gc], t0), None);
    }
}
