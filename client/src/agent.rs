//! `ferry agent`: the client's long-running service (issue 11).
//!
//! One loop on one thread owns all the work: it runs `send` every
//! `agent.send_every`, queues each source's own schedule (`schedule` or
//! `every`, [`crate::agent_schedule`]), and turns the changes its watchers
//! report ([`watch`]) into backups: a watched source's changes
//! are coalesced until `agent.quiet` passes without a new one, but never
//! longer than `agent.max_delay` after the first; then they are appended to
//! the source's change journal and one backup is queued and sent.
//! Watcher threads hand over batches on a bounded channel: a loop busy
//! sending makes them wait, the kernel queue then overflows, and that is a
//! full rescan, not unbounded memory. A source with more than
//! [`MAX_PATHS`] pending paths also falls back to a full rescan. Every
//! `agent.rescan_every` a watched source is backed up with a full walk that
//! also counts how it differs from what the journal alone would have given
//! (the safety net; a change made while that walk runs counts too, so
//! expect 0 only on a quiet tree).
//!
//! Signals: SIGTERM/SIGINT stop after the current step (a send in progress
//! finishes; `send` is safe to kill anyway), SIGHUP reloads the
//! configuration (watchers restarted, each with a full-rescan record).
//! Status: a unix socket `<state_dir>/agent.sock` answers one JSON document
//! per connection (`ferry status --agent`).
//!
//! Running beside the cron lines is safe: the agent queues requests the
//! way `ferry backup` does and sends the way `ferry send` does, under the
//! same per-node pool locks; a second agent is refused by
//! `<state_dir>/agent.lock`. Time comes from [`crate::clock`], so
//! `FERRY_NOW` starts the agent at a chosen instant and schedules fire
//! without waiting for the real one.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod watch;

use anyhow::Context as _;
use jiff::Timestamp;
use serde::Serialize;
use tracing::{info, warn};

use self::watch::{Changed, WatchSpec, Watcher};
use crate::agent_schedule::Schedule;
use crate::config::ClientConfig;

/// Pending paths of one source above which a full rescan is cheaper than
/// remembering them (and memory stays bounded in an event storm).
pub const MAX_PATHS: usize = 10_000;

/// What the loop is told.
#[derive(Debug)]
pub enum Msg {
    Changed(Changed),
    Stop,
    Reload,
}

/// The agent's state as `ferry status --agent` shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AgentStatus {
    pub pid: u32,
    pub started: String,
    pub reloads: u64,
    pub sends: u64,
    pub next_send: Option<String>,
    pub last_send: Option<String>,
    pub last_send_error: Option<String>,
    pub sources: Vec<SourceStatus>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SourceStatus {
    pub name: String,
    pub watch: bool,
    pub watched_dirs: u64,
    pub events: u64,
    pub overflows: u64,
    pub watch_limit_hits: u64,
    /// Full rescans asked for by an overflow, the watch limit or a storm.
    pub full_rescans: u64,
    pub pending_paths: usize,
    /// The watched root is gone or a symlink (reported, not followed).
    pub root_missing: bool,
    pub next_run: Option<String>,
    pub last_run: Option<String>,
    pub last_request: Option<String>,
    pub backups: u64,
    pub next_rescan: Option<String>,
    /// The periodic safety-net rescans: runs, the differences they found
    /// (changes the watcher missed; expected 0) in all and in the last.
    pub rescans: ferry_prepare::changes::RescanCounts,
}

/// Coalesced changes of one watched source.
#[derive(Debug)]
struct Pending {
    paths: BTreeSet<Vec<u8>>,
    full: bool,
    first: Instant,
    last: Instant,
}

impl Pending {
    fn due(&self, quiet: Duration, max_delay: Duration) -> Instant {
        (self.last + quiet).min(self.first + max_delay)
    }
}

struct Agent {
    cfg: ClientConfig,
    config_path: PathBuf,
    tx: SyncSender<Msg>,
    watchers: Vec<Watcher>,
    schedules: BTreeMap<String, (Schedule, Option<Timestamp>)>,
    last_run: BTreeMap<String, Timestamp>,
    pending: BTreeMap<String, Pending>,
    next_send: Timestamp,
    status: Arc<Mutex<AgentStatus>>,
    counts: BTreeMap<String, (u64, u64)>,
    tz: jiff::tz::TimeZone,
    /// Next safety-net rescan of each watched source.
    rescans: BTreeMap<String, Timestamp>,
}

fn durations(cfg: &ClientConfig) -> (Duration, Duration, Duration) {
    (cfg.duration(&cfg.agent.send_every), cfg.duration(&cfg.agent.quiet), cfg.duration(&cfg.agent.max_delay))
}

impl Agent {
    /// (Re)starts watchers and schedules from `self.cfg`.
    fn arm(&mut self) -> anyhow::Result<()> {
        self.watchers.clear(); // stops them and releases their locks
        self.pending.clear();
        let now = crate::clock::now();
        self.schedules.clear();
        self.rescans.clear();
        for s in &self.cfg.sources {
            if let Some(sch) = Schedule::of(s.schedule.as_deref(), s.every.as_deref())? {
                if !self.last_run.contains_key(&s.name)
                    && let Some(t) = std::fs::read_to_string(self.last_run_file(&s.name))
                        .ok()
                        .and_then(|t| t.trim().parse::<Timestamp>().ok())
                {
                    self.last_run.insert(s.name.clone(), t);
                }
                let next = sch.next(now, self.last_run.get(&s.name).copied(), &self.tz);
                info!(source = %s.name, next = ?next, "scheduled");
                self.schedules.insert(s.name.clone(), (sch, next));
            }
            if s.watch {
                let root = s.path.clone().context("a watched source needs a path")?;
                let spec = WatchSpec {
                    source: s.name.clone(),
                    root,
                    exclude: s.exclude.clone(),
                    skip: vec![self.cfg.state_dir.clone(), self.cfg.export_dir()],
                    cache: ferry_prepare::tree::cache_path(&self.cfg.state_dir, &s.name),
                };
                self.watchers.push(watch::start(spec, self.tx.clone())?);
                let every = self.cfg.duration(&self.cfg.agent.rescan_every);
                let span = jiff::SignedDuration::try_from(every).unwrap_or(jiff::SignedDuration::from_hours(24));
                self.rescans.insert(s.name.clone(), now.checked_add(span).unwrap_or(now));
            }
        }
        Ok(())
    }

    /// When a scheduled source last ran (`<state_dir>/agent/<source>.last`).
    fn last_run_file(&self, source: &str) -> PathBuf {
        self.cfg.state_dir.join("agent").join(format!("{source}.last"))
    }

    fn changed(&mut self, c: Changed) {
        let now = Instant::now();
        let p = self.pending.entry(c.source.clone()).or_insert_with(|| Pending {
            paths: BTreeSet::new(),
            full: false,
            first: now,
            last: now,
        });
        p.last = now;
        if c.full {
            p.full = true;
            self.counts.entry(c.source.clone()).or_default().0 += 1;
        }
        if !p.full {
            p.paths.extend(c.paths);
            if p.paths.len() > MAX_PATHS {
                warn!(source = %c.source, "more than {MAX_PATHS} changed paths pending: one full rescan instead");
                p.full = true;
                self.counts.entry(c.source.clone()).or_default().0 += 1;
            }
        }
        if p.full {
            p.paths.clear();
        }
    }

    fn backup(&mut self, source: &str) {
        match crate::request::backup(&self.cfg, source, None) {
            Ok(id) => {
                self.counts.entry(source.into()).or_default().1 += 1;
                self.status_of(source, |s| s.last_request = Some(id));
            }
            Err(e) => warn!(source, "cannot queue a backup: {e:#}"),
        }
    }

    fn status_of(&self, source: &str, f: impl FnOnce(&mut SourceStatus)) {
        let mut st = self.status.lock().expect("status lock");
        if let Some(s) = st.sources.iter_mut().find(|s| s.name == source) {
            f(s);
        }
    }

    /// One pass: whatever is due now. Returns when to look again.
    fn step(&mut self) -> Instant {
        let (send_every, quiet, max_delay) = durations(&self.cfg);
        let now_i = Instant::now();
        let now = crate::clock::now();
        let mut send = false;
        let due: Vec<String> =
            self.pending.iter().filter(|(_, p)| p.due(quiet, max_delay) <= now_i).map(|(k, _)| k.clone()).collect();
        for name in due {
            let p = self.pending.remove(&name).expect("listed");
            let cache = ferry_prepare::tree::cache_path(&self.cfg.state_dir, &name);
            let paths: Vec<Vec<u8>> = p.paths.into_iter().collect();
            if let Err(e) = ferry_prepare::changes::append(&cache, &paths, p.full) {
                warn!(source = %name, "cannot journal the changes ({e}); the backup walks the whole tree");
            }
            info!(source = %name, paths = paths.len(), full = p.full, "changes settled: backing up");
            self.backup(&name);
            send = true;
        }
        let names: Vec<String> = self.schedules.keys().cloned().collect();
        for name in names {
            let (sch, next) = self.schedules.get(&name).cloned().expect("listed");
            if next.is_some_and(|t| t <= now) {
                info!(source = %name, "schedule due: backing up");
                self.backup(&name);
                self.last_run.insert(name.clone(), now);
                // Kept across restarts, so `every = "6h"` does not run again
                // at each start.
                let f = self.last_run_file(&name);
                let written = std::fs::create_dir_all(f.parent().expect("has a parent")).and_then(|()| {
                    ferry_durable::write_synced(
                        f.parent().expect("has a parent"),
                        &format!("{name}.last"),
                        format!("{now}\n").as_bytes(),
                    )
                });
                if let Err(e) = written {
                    warn!(source = %name, "cannot record the run time in {}: {e}", f.display());
                }
                let after = sch.next(now, Some(now), &self.tz);
                self.schedules.insert(name.clone(), (sch, after));
                self.status_of(&name, |s| s.last_run = Some(now.to_string()));
                send = true;
            }
        }
        let rescan: Vec<String> = self.rescans.iter().filter(|(_, t)| **t <= now).map(|(k, _)| k.clone()).collect();
        for name in rescan {
            let cache = ferry_prepare::tree::cache_path(&self.cfg.state_dir, &name);
            info!(source = %name, "periodic rescan: backing up with a full walk that counts what the watcher missed");
            if let Err(e) = ferry_prepare::changes::append_verify(&cache) {
                warn!(source = %name, "cannot journal the rescan: {e}");
            }
            self.backup(&name);
            let every = self.cfg.duration(&self.cfg.agent.rescan_every);
            let span = jiff::SignedDuration::try_from(every).unwrap_or(jiff::SignedDuration::from_hours(24));
            self.rescans.insert(name, now.checked_add(span).unwrap_or(now));
            send = true;
        }
        if send || self.next_send <= now {
            self.send();
            let span = jiff::SignedDuration::try_from(send_every).unwrap_or(jiff::SignedDuration::from_secs(300));
            self.next_send = crate::clock::now().checked_add(span).unwrap_or(now);
        }
        self.publish();
        // When to wake: the earliest deadline, in real time.
        let until = |t: Timestamp| {
            let d = t.duration_since(crate::clock::now());
            Instant::now() + Duration::try_from(d).unwrap_or(Duration::ZERO)
        };
        let mut wake = until(self.next_send);
        for (_, next) in self.schedules.values() {
            if let Some(t) = next {
                wake = wake.min(until(*t));
            }
        }
        for p in self.pending.values() {
            wake = wake.min(p.due(quiet, max_delay));
        }
        for t in self.rescans.values() {
            wake = wake.min(until(*t));
        }
        wake
    }

    fn send(&mut self) {
        let r = crate::send::send(&self.cfg, None, &crate::send::SendOptions { force: false, wait: false });
        let mut st = self.status.lock().expect("status lock");
        st.sends += 1;
        st.last_send = Some(crate::clock::now().to_string());
        st.last_send_error = match r {
            Ok(reports) => {
                let errs: Vec<String> =
                    reports.iter().filter_map(|r| r.push_error.as_ref().map(|e| format!("{}: {e}", r.node))).collect();
                (!errs.is_empty()).then(|| errs.join("; "))
            }
            Err(e) => {
                warn!("send: {e:#}");
                Some(format!("{e:#}"))
            }
        };
    }

    fn publish(&self) {
        let mut st = self.status.lock().expect("status lock");
        st.next_send = Some(self.next_send.to_string());
        let old = std::mem::take(&mut st.sources);
        st.sources = self
            .cfg
            .sources
            .iter()
            .filter(|s| s.watch || self.schedules.contains_key(&s.name))
            .map(|s| {
                let prev = old.iter().find(|o| o.name == s.name).cloned().unwrap_or_default();
                let w = self.watchers.iter().find(|w| w.spec.source == s.name);
                let load = |f: fn(&watch::WatchStats) -> &std::sync::atomic::AtomicU64| {
                    w.map(|w| f(&w.stats).load(Ordering::Relaxed)).unwrap_or(0)
                };
                let (full, backups) = self.counts.get(&s.name).copied().unwrap_or_default();
                SourceStatus {
                    name: s.name.clone(),
                    watch: w.is_some(),
                    watched_dirs: load(|s| &s.dirs),
                    events: load(|s| &s.events),
                    overflows: load(|s| &s.overflows),
                    watch_limit_hits: load(|s| &s.limit_hits),
                    full_rescans: full,
                    root_missing: w.is_some_and(|w| w.stats.root_missing.load(Ordering::Relaxed)),
                    pending_paths: self.pending.get(&s.name).map(|p| p.paths.len()).unwrap_or(0),
                    next_run: self.schedules.get(&s.name).and_then(|(_, n)| n.map(|t| t.to_string())),
                    last_run: self.last_run.get(&s.name).map(|t| t.to_string()),
                    last_request: prev.last_request,
                    backups,
                    next_rescan: self.rescans.get(&s.name).map(|t| t.to_string()),
                    rescans: ferry_prepare::changes::rescan_counts(&ferry_prepare::tree::cache_path(
                        &self.cfg.state_dir,
                        &s.name,
                    )),
                }
            })
            .collect();
    }
}

/// The agent's status socket.
pub fn socket_path(cfg: &ClientConfig) -> PathBuf {
    cfg.state_dir.join("agent.sock")
}

fn serve(listener: UnixListener, status: Arc<Mutex<AgentStatus>>) {
    for conn in listener.incoming() {
        let Ok(mut c) = conn else { continue };
        let doc = serde_json::to_vec(&*status.lock().expect("status lock")).unwrap_or_default();
        let _ = c.write_all(&doc);
        let _ = c.write_all(b"\n");
    }
}

/// Asks a running agent for its status; `None` when none answers.
pub fn query(cfg: &ClientConfig) -> Option<serde_json::Value> {
    let mut c = UnixStream::connect(socket_path(cfg)).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut buf = Vec::new();
    c.read_to_end(&mut buf).ok()?;
    serde_json::from_slice(&buf).ok()
}

/// Runs the agent until SIGTERM or SIGINT.
pub fn run(config_path: &Path) -> anyhow::Result<()> {
    crate::clock::run_on();
    let cfg = ClientConfig::load(config_path)?;
    std::fs::create_dir_all(&cfg.state_dir)?;
    let _lock = ferry_durable::Lock::try_acquire(&cfg.state_dir.join("agent.lock"))?
        .ok_or_else(|| anyhow::anyhow!("another ferry agent runs for {}", cfg.state_dir.display()))?;
    let (tx, rx) = sync_channel::<Msg>(64);
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ])?;
    let stx = tx.clone();
    std::thread::spawn(move || {
        for s in signals.forever() {
            let m = if s == signal_hook::consts::SIGHUP { Msg::Reload } else { Msg::Stop };
            if stx.send(m).is_err() {
                return;
            }
        }
    });
    let sock = socket_path(&cfg);
    let _ = std::fs::remove_file(&sock); // ours: we hold the agent lock
    let listener = UnixListener::bind(&sock).with_context(|| format!("binding {}", sock.display()))?;
    let status = Arc::new(Mutex::new(AgentStatus {
        pid: std::process::id(),
        started: crate::clock::now().to_string(),
        ..Default::default()
    }));
    let st2 = status.clone();
    std::thread::spawn(move || serve(listener, st2));
    let now = crate::clock::now();
    let mut agent = Agent {
        cfg,
        config_path: config_path.to_owned(),
        tx,
        watchers: Vec::new(),
        schedules: BTreeMap::new(),
        last_run: BTreeMap::new(),
        pending: BTreeMap::new(),
        next_send: now,
        status,
        counts: BTreeMap::new(),
        tz: jiff::tz::TimeZone::system(),
        rescans: BTreeMap::new(),
    };
    agent.arm()?;
    info!(pid = std::process::id(), "agent started");
    loop {
        let wake = agent.step();
        let timeout = wake.saturating_duration_since(Instant::now()).max(Duration::from_millis(10));
        match rx.recv_timeout(timeout) {
            Ok(Msg::Changed(c)) => agent.changed(c),
            Ok(Msg::Stop) => break,
            Ok(Msg::Reload) => match ClientConfig::load(&agent.config_path) {
                Ok(cfg) => {
                    info!("configuration reloaded");
                    agent.cfg = cfg;
                    agent.status.lock().expect("status lock").reloads += 1;
                    if let Err(e) = agent.arm() {
                        warn!("reload: {e:#}");
                    }
                }
                Err(e) => warn!("reload refused, keeping the running configuration: {e:#}"),
            },
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    info!("agent stopping");
    drop(agent);
    let _ = std::fs::remove_file(&sock);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_settle_after_quiet_but_never_later_than_max_delay() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut p = Pending { paths: BTreeSet::new(), full: false, first: t0, last: t0 };
        assert_eq!(p.due(s(10), s(60)), t0 + s(10));
        // A tree that never goes quiet.
        p.last = t0 + s(55);
        assert_eq!(p.due(s(10), s(60)), t0 + s(60));
    }
}
