//! The daemon's HTTP side: `/healthz`, `/status` (the snapshot as JSON)
//! and `/metrics` (the snapshot in the OpenMetrics text format, built with
//! `prometheus-client`). Answers come from the [`Status`] snapshot only,
//! never from the disk, so a slow client or catalog cannot slow a request.

use std::sync::Mutex;

use anyhow::anyhow;
use jiff::Timestamp;

use super::{Status, lock};

/// The OpenMetrics text exposition of a snapshot (`/metrics`). Label values
/// go through the crate's encoder, which escapes them.
pub fn metrics(st: &Status) -> anyhow::Result<String> {
    use prometheus_client::encoding::text::encode;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::registry::Registry;
    use std::sync::atomic::AtomicU64;

    type Labels = Vec<(String, String)>;
    type Time = Gauge<f64, AtomicU64>;
    let secs = |t: &Timestamp| t.as_millisecond() as f64 / 1000.0;
    let mut reg = Registry::default();

    let started = Time::default();
    started.set(secs(&st.started));
    reg.register("ferry_daemon_start_time_seconds", "When the daemon started (unix time)", started);
    let reloads = Counter::<u64>::default();
    reloads.inc_by(st.reloads);
    reg.register("ferry_daemon_reloads", "Configurations re-read on SIGHUP", reloads);
    let reload_failures = Counter::<u64>::default();
    reload_failures.inc_by(st.reload_failures);
    reg.register("ferry_daemon_reload_failures", "SIGHUPs whose configuration was refused", reload_failures);

    let runs = Family::<Labels, Counter>::default();
    let failures = Family::<Labels, Counter>::default();
    let problems = Family::<Labels, Counter>::default();
    let running = Family::<Labels, Gauge>::default();
    let last_success = Family::<Labels, Time>::default();
    let last_duration = Family::<Labels, Time>::default();
    for (name, j) in &st.jobs {
        let l = vec![("job".to_owned(), (*name).to_owned())];
        runs.get_or_create(&l).inc_by(j.runs);
        failures.get_or_create(&l).inc_by(j.failures);
        problems.get_or_create(&l).inc_by(j.problems);
        running.get_or_create(&l).set(i64::from(j.running));
        if let Some(t) = &j.last_success {
            last_success.get_or_create(&l).set(secs(t));
        }
        if let Some(ms) = j.last_duration_ms {
            last_duration.get_or_create(&l).set(ms as f64 / 1000.0);
        }
    }
    reg.register("ferry_job_runs", "Finished runs of each job the daemon started", runs);
    reg.register("ferry_job_failures", "Runs that did not complete (exit 1 or 2, killed, deadline)", failures);
    reg.register("ferry_job_problems", "Runs that completed with problems found (exit 3)", problems);
    reg.register("ferry_job_running", "1 while the job runs", running);
    reg.register("ferry_job_last_success_timestamp_seconds", "End of the last completed run", last_success);
    reg.register("ferry_job_last_duration_seconds", "Duration of the last run", last_duration);

    let pending = Family::<Labels, Gauge>::default();
    let failed = Family::<Labels, Gauge>::default();
    let acknowledged = Family::<Labels, Gauge>::default();
    let artifacts = Family::<Labels, Gauge>::default();
    let bytes = Family::<Labels, Gauge>::default();
    let mirrors = Family::<Labels, Gauge>::default();
    let in_a_row = Family::<Labels, Gauge>::default();
    let success = Family::<Labels, Time>::default();
    let request = Family::<Labels, Time>::default();
    let sat = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    for c in &st.clients {
        let l = vec![("client".to_owned(), c.client.clone())];
        pending.get_or_create(&l).set(sat(c.pending as u64));
        failed.get_or_create(&l).set(sat(c.failed as u64));
        acknowledged.get_or_create(&l).set(sat(c.acknowledged as u64));
        artifacts.get_or_create(&l).set(sat(c.artifacts as u64));
        bytes.get_or_create(&l).set(sat(c.stored_bytes));
        mirrors.get_or_create(&l).set(sat(c.mirrors as u64));
        in_a_row.get_or_create(&l).set(i64::from(c.failures_in_a_row));
        if let Some(t) = &c.last_success {
            success.get_or_create(&l).set(secs(t));
        }
        if let Some(t) = &c.last_request {
            request.get_or_create(&l).set(secs(t));
        }
    }
    reg.register("ferry_client_pending_requests", "Requests waiting in the client's pool", pending);
    reg.register("ferry_client_failed_requests", "Failed requests not acknowledged yet (E)", failed);
    reg.register(
        "ferry_client_acknowledged_requests",
        "Failed requests acknowledged with ferry-node ack (A, kept with their reason)",
        acknowledged,
    );
    reg.register("ferry_client_artifacts", "Stored artifacts (catalog)", artifacts);
    reg.register(
        "ferry_client_stored_bytes",
        "Bytes stored: artifacts (catalog) and snapshot-tree content stores",
        bytes,
    );
    reg.register("ferry_client_mirrors", "Mirrored git repositories", mirrors);
    reg.register("ferry_client_pull_failures_in_a_row", "Pulls failed in a row", in_a_row);
    reg.register("ferry_client_last_success_timestamp_seconds", "Last successful pull", success);
    reg.register("ferry_client_last_request_timestamp_seconds", "Last request received", request);

    // Declared sources by verdict (from the last published catalog).
    let verdict = Family::<Labels, Gauge>::default();
    let by_verdict = Family::<Labels, Gauge>::default();
    for (client, source, v) in &st.sources {
        let l = vec![
            ("client".to_owned(), client.clone()),
            ("source".to_owned(), source.clone()),
            ("verdict".to_owned(), v.word().to_owned()),
        ];
        verdict.get_or_create(&l).set(1);
        by_verdict.get_or_create(&vec![("verdict".to_owned(), v.word().to_owned())]).inc();
    }
    reg.register(
        "ferry_source_verdict",
        "1 for each source's current verdict (ok, late, small, missing, unexpected), from the published catalog",
        verdict,
    );
    reg.register("ferry_sources", "Sources by verdict, from the published catalog", by_verdict);

    // Every scan, whoever started it (the queue hook, cron, the daemon).
    let sc = &st.scans;
    for (name, help, n) in [
        ("ferry_scans", "Scans that ended on this node, whoever started them (queue hook, cron, daemon)", sc.runs),
        ("ferry_scan_problems", "Scans that ended with failed requests", sc.problems),
        ("ferry_scan_errors", "Scans that stopped with an error", sc.errors),
        ("ferry_scan_requests_finished", "Requests finished by scans", sc.requests_finished),
        ("ferry_scan_requests_failed", "Requests ended in error by scans", sc.requests_failed),
    ] {
        let c = Counter::<u64>::default();
        c.inc_by(n);
        reg.register(name, help, c);
    }
    for (name, help, t) in [
        ("ferry_scan_last_end_timestamp_seconds", "End of the last scan", sc.last_end),
        (
            "ferry_scan_last_success_timestamp_seconds",
            "End of the last scan that did not stop with an error",
            sc.last_success,
        ),
    ] {
        if let Some(t) = t {
            let g = Time::default();
            g.set(secs(&t));
            reg.register(name, help, g);
        }
    }
    if let Some(ms) = sc.last_duration_ms {
        let g = Time::default();
        g.set(ms as f64 / 1000.0);
        reg.register("ferry_scan_last_duration_seconds", "Duration of the last scan", g);
    }

    let mut out = String::new();
    encode(&mut out, &reg).map_err(|_| anyhow!("cannot encode the metrics"))?;
    Ok(out)
}

/// An HTTP answer: status code, content type, body.
pub type Answer = (u16, &'static str, String);

/// Answer one request from a snapshot. Only GET and HEAD; the query string
/// is ignored.
pub fn route(method: &str, url: &str, st: &Status) -> Answer {
    const TEXT: &str = "text/plain; charset=utf-8";
    if method != "GET" && method != "HEAD" {
        return (405, TEXT, "only GET and HEAD\n".into());
    }
    let path = url.split(['?', '#']).next().unwrap_or("");
    match path {
        "/healthz" => (200, TEXT, "ok\n".into()),
        "/status" => match serde_json::to_string_pretty(st) {
            Ok(s) => (200, "application/json", ferry_text::ascii_json(&s) + "\n"),
            Err(e) => (500, TEXT, format!("{e}\n")),
        },
        "/metrics" => match metrics(st) {
            Ok(s) => (200, "application/openmetrics-text; version=1.0.0; charset=utf-8", s),
            Err(e) => (500, TEXT, format!("{e}\n")),
        },
        _ => (404, TEXT, "not found: /healthz, /status, /metrics\n".into()),
    }
}

pub(super) fn serve(server: &tiny_http::Server, status: &Mutex<Status>) {
    for req in server.incoming_requests() {
        let answer = {
            let st = lock(status);
            route(req.method().as_str(), req.url(), &st)
        };
        let (code, ctype, body) = answer;
        let mut resp = tiny_http::Response::from_string(body).with_status_code(code);
        if let Ok(h) = tiny_http::Header::from_bytes(&b"Content-Type"[..], ctype.as_bytes()) {
            resp.add_header(h);
        }
        if code == 405
            && let Ok(h) = tiny_http::Header::from_bytes(&b"Allow"[..], &b"GET, HEAD"[..])
        {
            resp.add_header(h);
        }
        // tiny_http leaves the body out for HEAD itself.
        if let Err(e) = req.respond(resp) {
            tracing::debug!("http: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::daemon::{ClientFacts, JobRecord};

    fn sample() -> Status {
        let mut jobs = BTreeMap::new();
        jobs.insert(
            "scan",
            JobRecord { runs: 3, failures: 1, last_success: Some(Timestamp::UNIX_EPOCH), ..Default::default() },
        );
        Status {
            node: "backup1".into(),
            pid: 1,
            config: "/etc/ferry/node.toml".into(),
            started: Timestamp::UNIX_EPOCH,
            listen: None,
            stopping: false,
            reloads: 0,
            reload_failures: 0,
            last_reload: None,
            last_reload_error: None,
            jobs,
            clients_updated: None,
            sources: vec![("web1".into(), "www".into(), crate::cadence::Verdict::Late)],
            clients_error: None,
            scans: crate::scanrecord::ScanRecord {
                runs: 7,
                requests_finished: 12,
                last_end: Some(Timestamp::from_second(1_800_000_000).unwrap()),
                last_duration_ms: Some(2500),
                ..Default::default()
            },
            clients: vec![ClientFacts {
                client: "host\"a\\\nb".into(),
                enrolled: true,
                pending: 2,
                finished: 0,
                failed: 1,
                acknowledged: 0,
                mirrors: 0,
                artifacts: 4,
                stored_bytes: 1000,
                last_request: None,
                last_success: None,
                last_failure: None,
                failures_in_a_row: 0,
                last_reason: None,
            }],
        }
    }

    #[test]
    fn metrics_count_jobs_and_clients_with_escaped_labels() {
        let m = metrics(&sample()).unwrap();
        assert!(m.contains("ferry_job_runs_total{job=\"scan\"} 3\n"), "{m}");
        assert!(m.contains("ferry_job_failures_total{job=\"scan\"} 1\n"), "{m}");
        assert!(m.contains("ferry_job_last_success_timestamp_seconds{job=\"scan\"} 0"), "{m}");
        assert!(m.contains("ferry_client_pending_requests{client=\"host\\\"a\\\\\\nb\"} 2\n"), "{m}");
        assert!(m.contains("ferry_client_stored_bytes{client=\"host\\\"a\\\\\\nb\"} 1000\n"), "{m}");
        assert!(m.contains("ferry_scans_total 7\n"), "{m}");
        assert!(m.contains("ferry_source_verdict{client=\"web1\",source=\"www\",verdict=\"late\"} 1\n"), "{m}");
        assert!(m.contains("ferry_sources{verdict=\"late\"} 1\n"), "{m}");
        assert!(m.contains("ferry_scan_requests_finished_total 12\n"), "{m}");
        assert!(m.contains("ferry_scan_last_end_timestamp_seconds 1800000000"), "{m}");
        assert!(m.contains("ferry_scan_last_duration_seconds 2.5\n"), "{m}");
        assert!(!m.contains("ferry_scan_last_success_timestamp_seconds"), "no such scan yet: {m}");
        assert!(m.ends_with("# EOF\n"));
        // One sample per line: a label value cannot start a line of its own.
        assert!(m.lines().all(|l| l.starts_with("ferry_") || l.starts_with('#')), "{m}");
    }

    #[test]
    fn routes_answer_get_and_head_only() {
        let st = sample();
        assert_eq!(route("GET", "/healthz", &st).0, 200);
        assert_eq!(route("HEAD", "/metrics", &st).0, 200);
        let (code, ctype, body) = route("GET", "/status?x=1", &st);
        assert_eq!((code, ctype), (200, "application/json"));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["jobs"]["scan"]["runs"], 3);
        assert_eq!(route("GET", "/nope", &st).0, 404);
        assert_eq!(route("GET", "/status/", &st).0, 404);
        assert_eq!(route("POST", "/status", &st).0, 405);
    }
}
