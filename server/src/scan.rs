//! `ferry-node scan`: process each client's request pool.
//!
//! Per client, holding that pool's scan lock: first pick up anything the
//! queue hook missed, then `P*` (crash recovery), then `RQ*` → `P*`; each
//! request is parsed with the strict grammar, checked against the client's
//! enrollment, dispatched to its node module, and ends as `F` or as `E`
//! with its reason (`E<id>.why`), logged and reported.
//!
//! Waking: the queue hook creates `.wake` in the pool and starts a scan. A
//! scanner that finds the lock taken leaves; the holder re-checks `.wake`
//! after each round *and after releasing the lock*, so a push that lands
//! while a long fetch runs is never left waiting for cron.

use std::time::Instant;

use anyhow::Context as _;
use ferry_durable::Pool;
use ferry_gitosis::enroll::{ClientEnrollment, Enrollment};
use ferry_request::{Reason, Request};

use crate::config::NodeConfig;
use crate::events;
use crate::validate::Refusal;

pub use crate::pool::{STATES, open_pool, request_wake};
pub use crate::scanrecord::ScanReport;

/// Scan every client, or only `only`, and record the outcome in
/// `state/scan.json` (what the daemon shows of scans it did not start).
pub fn scan(cfg: &NodeConfig, only: Option<&str>) -> anyhow::Result<ScanReport> {
    let (started, clock) = (jiff::Timestamp::now(), Instant::now());
    let res = scan_pools(cfg, only);
    crate::scanrecord::record(cfg, started, clock.elapsed(), only, &res);
    tracing::debug!("scan: recorded");
    // The published catalog follows what was just stored; failing to
    // publish is logged, never a failed scan (the next one retries).
    if res.is_ok()
        && let Err(e) = crate::publish::publish(cfg, &crate::publish::default_dir(cfg), crate::clock::now())
    {
        tracing::warn!("publishing the catalog: {e:#}");
    }
    // New mirrors get their git daemon export marker.
    if res.is_ok()
        && let Err(e) = crate::gitexport::sync(cfg)
    {
        tracing::warn!("git daemon export: {e:#}");
    }
    res
}

fn scan_pools(cfg: &NodeConfig, only: Option<&str>) -> anyhow::Result<ScanReport> {
    let start = Instant::now();
    let enrollment = crate::enrollment::load(cfg)?;
    tracing::debug!("scan: enrollment loaded");
    let mut report = ScanReport::default();
    let clients: Vec<String> = match only {
        Some(c) => vec![c.to_owned()],
        None => {
            let mut v: std::collections::BTreeSet<String> = enrollment.clients.keys().cloned().collect();
            if let Ok(rd) = std::fs::read_dir(cfg.pool_dir()) {
                for de in rd.flatten() {
                    if let Some(n) = de.file_name().to_str()
                        && ferry_gitosis::username::is_valid_client_name(n)
                    {
                        v.insert(n.to_owned());
                    }
                }
            }
            v.into_iter().collect()
        }
    };
    // State files half-written by a scan that was killed.
    let _ = ferry_durable::remove_dead_tmp(&cfg.state_dir().join("clients"));
    scan_clients(cfg, &enrollment, &clients, &mut report);
    report.busy.sort();
    if report.failed > 0 || cfg.mail.is_some() {
        crate::alerts::flush(cfg);
    }
    report.elapsed_ms = start.elapsed().as_millis();
    Ok(report)
}

/// Scan `clients`, up to `[scan] parallel_clients` of them at once. Each
/// client's pool is still worked strictly one request after the other
/// under its lock; what runs side by side is different clients, so one
/// that stalls (or drips, until `min_rate` stops it) holds one worker and
/// the others go on. Workers take the next client as they finish one.
fn scan_clients(cfg: &NodeConfig, enrollment: &Enrollment, clients: &[String], report: &mut ScanReport) {
    let workers = cfg.scan.parallel_clients.clamp(1, 64).min(clients.len());
    let one = |scanner: &mut Scanner<'_>, c: &str, report: &mut ScanReport| {
        report.clients += 1;
        if let Err(e) = scanner.scan_client(enrollment, c, report) {
            // One client's trouble never stops the others (I8).
            events::record(
                &cfg.events_log(),
                "error",
                Some(c),
                "scan_failed",
                Some(Reason::Internal.code()),
                None,
                &format!("{e:#}"),
            );
        }
    };
    if workers <= 1 {
        let mut scanner = Scanner::new(cfg);
        for c in clients {
            one(&mut scanner, c, report);
        }
        return;
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let merged = std::sync::Mutex::new(std::mem::take(report));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                // Its own catalog connection (SQLite, WAL): nothing shared
                // between workers but the files, which have their locks.
                let mut scanner = Scanner::new(cfg);
                let mut mine = ScanReport::default();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(c) = clients.get(i) else { break };
                    one(&mut scanner, c, &mut mine);
                }
                let mut all = merged.lock().unwrap_or_else(|p| p.into_inner());
                all.clients += mine.clients;
                all.finished += mine.finished;
                all.failed += mine.failed;
                all.deferred += mine.deferred;
                all.busy.append(&mut mine.busy);
            });
        }
    });
    *report = merged.into_inner().unwrap_or_else(|p| p.into_inner());
}

/// Reused state across clients of one scan.
pub struct Scanner<'a> {
    cfg: &'a NodeConfig,
    catalog: Option<Box<dyn crate::catalog::Catalog>>,
    /// The store gate, probed before the first request of this scan that
    /// stores an artifact ([`crate::store::health`]).
    store: Option<crate::store::health::Gate>,
}

impl<'a> Scanner<'a> {
    pub fn new(cfg: &'a NodeConfig) -> Scanner<'a> {
        Scanner { cfg, catalog: None, store: None }
    }

    /// The catalog, opened on first use (a scan of git and dummy requests
    /// never touches it).
    pub fn catalog(&mut self) -> anyhow::Result<&dyn crate::catalog::Catalog> {
        if self.catalog.is_none() {
            self.catalog = Some(crate::catalog::open(self.cfg)?);
        }
        Ok(self.catalog.as_deref().expect("just opened"))
    }

    fn scan_client(&mut self, enrollment: &Enrollment, client: &str, report: &mut ScanReport) -> anyhow::Result<()> {
        let cfg = self.cfg;
        let pool = crate::pool::open_pool(cfg, client)?;
        let wake = pool.dir().join(crate::pool::WAKE);
        loop {
            let Some(lock) = pool.try_lock()? else {
                report.busy.push(client.to_owned());
                return Ok(());
            };
            pool.clean_tmp()?;
            // Requests left in P: a scan died in their job. Remove what its
            // job left half-written before running them again.
            if !pool.ids("P")?.is_empty() {
                crate::jobs::sweep_leftovers(cfg, client);
            }
            loop {
                let _ = std::fs::remove_file(&wake);
                if enrollment.clients.contains_key(client) {
                    crate::hooks::queue::catch_up(cfg, client)
                        .with_context(|| format!("extracting missed pushes of {client}"))?;
                }
                self.process(enrollment.client(client), client, &pool, report)?;
                if !wake.exists() {
                    break;
                }
            }
            drop(lock);
            if !wake.exists() {
                return Ok(());
            }
        }
    }

    fn process(
        &mut self,
        enrolled: Option<&ClientEnrollment>,
        client: &str,
        pool: &Pool,
        report: &mut ScanReport,
    ) -> anyhow::Result<()> {
        let mut work = Vec::new();
        let mut moved = false;
        for e in pool.list()? {
            match e.state {
                "P" => work.push(e.id),
                "RQ" => {
                    pool.move_to(&e.id, "RQ", "P", false)?;
                    moved = true;
                    work.push(e.id);
                }
                _ => {}
            }
        }
        if work.is_empty() {
            return Ok(());
        }
        if moved {
            pool.sync()?;
            ferry_durable::crash_point("scan:after-rq-to-p");
        }
        tracing::debug!(client, requests = work.len(), "scan: requests taken");
        work.sort();
        // Client state is saved once per pass, not per request (a scan of
        // thousands of small requests must not pay an fsync each).
        let (mut any_done, mut any_pulled) = (false, false);
        // Tree sources published in this pass, for their rescue layers.
        let mut trees: Vec<String> = Vec::new();
        for id in &work {
            let outcome = match enrolled {
                None => Err(Refusal::new(Reason::NotEnrolled, "the client is no longer enrolled on this node")),
                Some(c) => self.handle(c, pool, id),
            };
            match outcome {
                Ok((detail, pulled, tree)) => {
                    ferry_durable::crash_point("scan:after-job");
                    pool.move_to(id, "P", "F", false)?;
                    ferry_durable::crash_point("scan:after-f");
                    report.finished += 1;
                    events::record(
                        &self.cfg.events_log(),
                        "info",
                        Some(client),
                        "request_done",
                        None,
                        Some(id),
                        &detail,
                    );
                    any_done = true;
                    any_pulled |= pulled;
                    if let Some(source) = tree
                        && !trees.contains(&source)
                    {
                        trees.push(source);
                    }
                }
                Err(r) if r.reason == Reason::StoreDown => {
                    // Deferred, not failed: back to RQ for the next scan.
                    // A store that went down during an upload stays down
                    // for the rest of this scan: no more pulls for nothing.
                    self.store = Some(crate::store::health::Gate::Down(r.detail.clone()));
                    pool.move_to(id, "P", "RQ", false)?;
                    report.deferred += 1;
                    events::record(
                        &self.cfg.events_log(),
                        "warn",
                        Some(client),
                        "request_deferred",
                        Some(r.reason.code()),
                        Some(id),
                        &r.detail,
                    );
                }
                Err(r) => {
                    fail(self.cfg, pool, client, id, &r)?;
                    report.failed += 1;
                }
            }
        }
        pool.sync()?;
        tracing::debug!(client, "scan: requests ended");
        if any_done {
            crate::alerts::request_done(self.cfg, client, any_pulled);
        }
        // The rescue layers of what was published (`[tree] prepare_rescue`),
        // after the requests are finished and the client told: a backup is
        // done when it is stored and in the catalog, and a first snapshot's
        // layer costs about as much as its pull (one inode per file). Built
        // under the pool's lock, so this client's next request waits, not
        // another client's.
        if self.cfg.tree.prepare_rescue && !trees.is_empty() {
            let cfg = self.cfg;
            let catalog = self.catalog()?;
            for source in &trees {
                crate::rescue::after_pull(cfg, catalog, client, source);
            }
        }
        tracing::debug!(client, "scan: client state saved");
        Ok(())
    }

    /// Parse, validate and run one request: `(what was done, whether data
    /// was pulled, the source if a snapshot tree was published)`.
    fn handle(
        &mut self,
        client: &ClientEnrollment,
        pool: &Pool,
        id: &str,
    ) -> Result<(String, bool, Option<String>), Refusal> {
        let cfg = self.cfg;
        let bytes = pool
            .read("P", id, cfg.limits.request_bytes)
            .map_err(|e| Refusal::new(Reason::Store, e.to_string()))?
            .ok_or_else(|| {
                Refusal::new(Reason::ReqTooLong, format!("request file larger than {} bytes", cfg.limits.request_bytes))
            })?;
        let limits = ferry_request::Limits { max_file_bytes: cfg.limits.request_bytes, ..Default::default() };
        let req = ferry_request::parse_with(&bytes, &limits).map_err(|r| Refusal::new(r.reason, r.to_string()))?;
        match &req {
            Request::Dummy(d) => Ok((format!("dummy {}", d.word), false, None)),
            Request::Git(g) => crate::jobs::git(cfg, client, id, g).map(|d| (d, true, None)),
            Request::Sftp(s) => {
                use crate::store::health::Gate;
                let gate = self.store.get_or_insert_with(|| crate::store::health::gate(cfg));
                match gate {
                    Gate::Open => {}
                    Gate::Down(why) => return Err(Refusal::new(Reason::StoreDown, why.clone())),
                    Gate::Refused(why) => return Err(Refusal::new(Reason::Store, why.clone())),
                }
                let catalog = self.catalog().map_err(|e| Refusal::new(Reason::Store, format!("catalog: {e:#}")))?;
                crate::jobs::sftp(cfg, catalog, client, id, s).map(|d| (d, true, None))
            }
            Request::Tree(t) => {
                let catalog = self.catalog().map_err(|e| Refusal::new(Reason::Store, format!("catalog: {e:#}")))?;
                crate::treepull::tree(cfg, catalog, client, id, t).map(|d| (d, true, Some(t.source.to_string())))
            }
        }
    }
}

/// End a request in `E` with its reason: `E<id>.why` first (synced), then
/// the rename; then the journal (and, through it, the administrators).
pub fn fail(cfg: &NodeConfig, pool: &Pool, client: &str, id: &str, r: &Refusal) -> anyhow::Result<()> {
    let why = serde_json::json!({
        "reason": r.reason.code(),
        // Client text in the detail was escaped when it was built (once).
        "detail": ferry_text::sanitize(&r.detail, 2000),
        "at": jiff::Timestamp::now().to_string(),
    });
    let name = format!("E{id}.why");
    ferry_durable::write_synced(pool.dir(), &name, format!("{why}\n").as_bytes())?;
    ferry_durable::crash_point("scan:after-why");
    pool.move_to(id, "P", "E", true)?;
    events::record(
        &cfg.events_log(),
        "warn",
        Some(client),
        "request_failed",
        Some(r.reason.code()),
        Some(id),
        &r.detail,
    );
    crate::alerts::request_failed(cfg, client, id, r.reason, &r.detail);
    Ok(())
}
