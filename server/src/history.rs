//! What a git mirror's refs were at a given time, read back from the record
//! the node's `git` module keeps (`ferry_pull::git`): the reflog of every
//! head and tag (node time, one transaction per run, message `ferry: mirror
//! run <run>`, never expired) and the `refs/backup/<run>/…` copies of
//! rewritten and deleted refs, whose creation entry dates the deletion.
//!
//! Only the node's own files are read: reflogs are parsed here (an `lstat`
//! walk of `logs/refs/{heads,tags,backup}`, no link followed) rather than
//! through libgit2, whose reflog reader creates a missing log file.
//!
//! When the record cannot say what a ref was at a time — a ref without a
//! reflog, a reflog that starts with an older value (written before the
//! mirror logged every update), a copy without a creation entry — the time
//! is reported as not reconstructable, naming the ref, instead of guessed.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;

/// One change of one ref: its value after `time` (`None`: deleted).
#[derive(Debug, Clone)]
struct Event {
    time: i64,
    /// The run that made it, when the reflog message names one.
    run: Option<String>,
    /// Position in its reflog (file order breaks ties within a second).
    seq: usize,
    value: Option<String>,
}

/// One reflog line.
#[derive(Debug, Clone)]
struct Entry {
    old: String,
    new: String,
    time: i64,
    run: Option<String>,
}

fn is_zero(oid: &str) -> bool {
    oid.bytes().all(|b| b == b'0')
}

/// Parses `<old> <new> <name> <<email>> <time> <tz>\t<message>`; `None` for
/// a line that is not one.
fn parse_line(line: &str) -> Option<Entry> {
    let (head, msg) = line.split_once('\t').unwrap_or((line, ""));
    let mut it = head.splitn(3, ' ');
    let (old, new, rest) = (it.next()?, it.next()?, it.next()?);
    let hex = |s: &str| (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex(old) || !hex(new) {
        return None;
    }
    let mut tail = rest.rsplitn(3, ' ');
    let (_tz, time) = (tail.next()?, tail.next()?);
    let run = msg.trim().strip_prefix("ferry: mirror run ").map(|r| r.trim().to_owned());
    Some(Entry { old: old.to_owned(), new: new.to_owned(), time: time.parse().ok()?, run })
}

/// Reflogs by ref name.
type Logs = BTreeMap<String, Vec<Entry>>;

/// The reflogs below `logs/refs/<area>` of `mirror`: ref name → entries.
/// Names that are not UTF-8 are returned apart.
fn read_logs(mirror: &Path, area: &str) -> anyhow::Result<(Logs, Vec<String>)> {
    let base = mirror.join("logs/refs").join(area);
    let mut out = BTreeMap::new();
    let mut odd = Vec::new();
    let mut stack = vec![base.clone()];
    while let Some(d) = stack.pop() {
        let rd = match std::fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot list {}", d.display())),
        };
        for de in rd {
            let de = de?;
            let p = de.path();
            let ft = de.file_type()?;
            if ft.is_dir() {
                stack.push(p);
                continue;
            }
            if !ft.is_file() {
                continue;
            }
            let rel = p.strip_prefix(&base).expect("below base");
            let Some(rel) = rel.to_str() else {
                odd.push(format!("refs/{area}/{}", rel.display()));
                continue;
            };
            let text = std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?;
            let entries = String::from_utf8_lossy(&text).lines().filter_map(parse_line).collect();
            out.insert(format!("refs/{area}/{rel}"), entries);
        }
    }
    Ok((out, odd))
}

/// The kept history of one mirror.
#[derive(Debug, Default)]
pub struct History {
    /// Per head or tag: its changes, oldest first.
    events: BTreeMap<String, Vec<Event>>,
    /// Refs whose value before a time is unknown: name → from when on it
    /// is known (`i64::MAX`: at no time).
    unknown_before: BTreeMap<String, i64>,
    /// Copies without a creation entry: (copy, the run's start time).
    undated: Vec<(String, i64)>,
    /// Refs whose names are not UTF-8 (not reconstructed).
    odd: Vec<String>,
    /// The node time of the first recorded update (the first backup).
    pub first: Option<i64>,
    /// Runs that rewrote or deleted refs: run id → node time of the run.
    pub rewrites: BTreeMap<String, i64>,
    /// Refs kept under `refs/backup/`.
    pub kept_refs: usize,
    /// The branch HEAD names now.
    head: Option<String>,
}

/// Node time of a run id (`20261122T010203Z`, maybe with `-N`).
fn run_time(run: &str) -> Option<i64> {
    let stamp = run.split('-').next()?;
    stamp.parse::<ferry_request::Stamp>().ok().map(|s| s.to_unix())
}

impl History {
    /// Reads the record of `mirror`.
    pub fn load(mirror: &Path) -> anyhow::Result<History> {
        let repo = git2::Repository::open_bare(mirror).with_context(|| format!("cannot open {}", mirror.display()))?;
        let mut current = BTreeMap::new();
        let mut backups = BTreeMap::new();
        for r in repo.references()? {
            let r = r?;
            let (Ok(name), Some(oid)) = (r.name(), r.target()) else { continue };
            if name.starts_with("refs/heads/") || name.starts_with("refs/tags/") {
                current.insert(name.to_owned(), oid.to_string());
            } else if name.starts_with("refs/backup/") {
                backups.insert(name.to_owned(), oid.to_string());
            }
        }
        let mut h = History {
            head: std::fs::read_to_string(mirror.join("HEAD"))
                .ok()
                .and_then(|s| s.trim().strip_prefix("ref: ").map(str::to_owned)),
            kept_refs: backups.len(),
            ..History::default()
        };
        let mut logs = BTreeMap::new();
        for area in ["heads", "tags"] {
            let (l, odd) = read_logs(mirror, area)?;
            logs.extend(l);
            h.odd.extend(odd);
        }
        let (backup_logs, odd) = read_logs(mirror, "backup")?;
        h.odd.extend(odd);
        let mut times: Vec<i64> = Vec::new();
        for (name, entries) in &logs {
            times.extend(entries.iter().map(|e| e.time));
            match entries.first() {
                Some(e) if !is_zero(&e.old) => {
                    h.unknown_before.insert(name.clone(), e.time);
                }
                None => {
                    h.unknown_before.insert(name.clone(), i64::MAX);
                }
                _ => {}
            }
            let ev = entries
                .iter()
                .enumerate()
                .map(|(seq, e)| Event {
                    time: e.time,
                    run: e.run.clone(),
                    seq,
                    value: (!is_zero(&e.new)).then(|| e.new.clone()),
                })
                .collect();
            h.events.insert(name.clone(), ev);
        }
        for name in current.keys() {
            if !logs.contains_key(name) {
                h.unknown_before.insert(name.clone(), i64::MAX);
            }
        }
        for name in backups.keys() {
            let Some((run, rest)) = name["refs/backup/".len()..].split_once('/') else { continue };
            let original = format!("refs/{rest}");
            let created = backup_logs.get(name).and_then(|e| e.first().cloned());
            let Some(created) = created else {
                let t = run_time(run).unwrap_or(0);
                h.rewrites.entry(run.to_owned()).or_insert(t);
                h.undated.push((name.clone(), t));
                continue;
            };
            times.push(created.time);
            h.rewrites.entry(run.to_owned()).or_insert(created.time);
            let copy_run = created.run.clone().unwrap_or_else(|| run.to_owned());
            let events = h.events.entry(original).or_default();
            // Rewritten: the ref's own log has this run's update. Deleted:
            // it has not, and the copy's creation dates the deletion.
            let rewritten = events
                .iter()
                .any(|e| e.run.as_deref() == Some(copy_run.as_str()) || (e.run.is_none() && e.time == created.time));
            if !rewritten {
                events.push(Event { time: created.time, run: Some(copy_run), seq: usize::MAX, value: None });
            }
        }
        for ev in h.events.values_mut() {
            ev.sort_by(|a, b| {
                (a.time, a.run.as_deref().unwrap_or(""), a.seq).cmp(&(b.time, b.run.as_deref().unwrap_or(""), b.seq))
            });
        }
        h.first = times.into_iter().min();
        Ok(h)
    }

    /// The heads and tags at node time `t` (every run at or before `t`
    /// applied), or why that cannot be said exactly.
    pub fn state_at(&self, t: i64) -> Result<BTreeMap<String, String>, Vec<String>> {
        let mut problems: Vec<String> =
            self.odd.iter().map(|n| format!("{n:?} has a name that is not UTF-8")).collect();
        let show = |n: &str| ferry_text::escape(n, 200);
        for (name, from) in &self.unknown_before {
            if t < *from {
                problems.push(match *from {
                    i64::MAX => format!("{} has no reflog, so its past values are unknown", show(name)),
                    f => format!("the reflog of {} starts at {} with an older value", show(name), iso(f)),
                });
            }
        }
        for (copy, started) in &self.undated {
            if t >= *started {
                problems.push(format!("{} has no creation entry, so when it was saved is unknown", show(copy)));
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut out = BTreeMap::new();
        for (name, events) in &self.events {
            if let Some(Some(v)) = events.iter().rev().find(|e| e.time <= t).map(|e| e.value.clone()) {
                out.insert(name.clone(), v);
            }
        }
        Ok(out)
    }

    /// The branch a restored repository's HEAD should name: the mirror's
    /// own HEAD if it existed then, else main, master or the first branch.
    pub fn head_for(&self, state: &BTreeMap<String, String>) -> Option<String> {
        self.head
            .iter()
            .map(String::as_str)
            .chain(["refs/heads/main", "refs/heads/master"])
            .find(|r| state.contains_key(*r))
            .map(str::to_owned)
            .or_else(|| state.keys().find(|r| r.starts_with("refs/heads/")).cloned())
    }

    /// Runs whose node time is known (for `list`): oldest and newest.
    pub fn rewrite_span(&self) -> Option<(i64, i64)> {
        let mut t: Vec<i64> = self.rewrites.values().copied().collect();
        t.sort_unstable();
        Some((*t.first()?, *t.last()?))
    }
}

/// A node time for people: `2026-11-22T01:02:03Z`.
pub fn iso(t: i64) -> String {
    jiff::Timestamp::from_second(t).map(|ts| ts.to_string()).unwrap_or_else(|_| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflog_lines() {
        let z = "0".repeat(40);
        let a = "a".repeat(40);
        let e =
            parse_line(&format!("{z} {a} ferry <ferry@node> 1700000000 +0000\tferry: mirror run 20261122T010203Z-2"))
                .unwrap();
        assert_eq!((e.time, e.run.as_deref()), (1_700_000_000, Some("20261122T010203Z-2")));
        assert!(is_zero(&e.old) && !is_zero(&e.new));
        let e = parse_line(&format!("{a} {z} A Name With Spaces <x@y> 1700000001 -0130\tferry: mirror")).unwrap();
        assert_eq!((e.time, e.run), (1_700_000_001, None));
        assert!(parse_line("garbage").is_none());
        assert!(parse_line(&format!("{a} zz n <e> 1 +0000\tm")).is_none());
        assert_eq!(run_time("19700101T000010Z-3"), Some(10));
    }

    const Z: &str = "0000000000000000000000000000000000000000";
    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const T: &str = "cccccccccccccccccccccccccccccccccccccccc";

    /// A bare repository with refs and reflogs written as the mirror module
    /// leaves them (`run`: `Some` for `ferry: mirror run <run>` messages,
    /// `None` for the older `ferry: mirror`).
    struct Fixture(tempfile::TempDir);

    impl Fixture {
        fn new() -> Fixture {
            let d = tempfile::tempdir().unwrap();
            git2::Repository::init_bare(d.path()).unwrap();
            Fixture(d)
        }
        fn path(&self) -> &Path {
            self.0.path()
        }
        fn set(&self, name: &str, oid: Option<&str>) {
            let p = self.path().join(name);
            match oid {
                Some(o) => {
                    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                    std::fs::write(p, format!("{o}\n")).unwrap();
                }
                None => std::fs::remove_file(p).unwrap(),
            }
        }
        fn log(&self, name: &str, old: &str, new: &str, time: i64, run: Option<&str>) {
            let p = self.path().join("logs").join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            let msg = run.map_or("ferry: mirror".to_owned(), |r| format!("ferry: mirror run {r}"));
            let line = format!("{old} {new} ferry <ferry@node> {time} +0000\t{msg}\n");
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(p).unwrap();
            std::io::Write::write_all(&mut f, line.as_bytes()).unwrap();
        }
        /// Run 1 at t=100 creates master=A and tag v1; run 2 at t=200
        /// force-moves master to B, deletes v1, creates feature=B.
        fn rewritten(runs: bool) -> Fixture {
            let f = Fixture::new();
            let (r1, r2) = ("19700101T000140Z", "19700101T000320Z");
            let run = |r: &'static str| runs.then_some(r);
            f.log("refs/heads/master", Z, A, 100, run(r1));
            f.log("refs/tags/v1", Z, T, 100, run(r1));
            f.set(&format!("refs/backup/{r2}/heads/master"), Some(A));
            f.log(&format!("refs/backup/{r2}/heads/master"), Z, A, 200, run(r2));
            f.set(&format!("refs/backup/{r2}/tags/v1"), Some(T));
            f.log(&format!("refs/backup/{r2}/tags/v1"), Z, T, 200, run(r2));
            f.log("refs/heads/master", A, B, 200, run(r2));
            f.log("refs/heads/feature", Z, B, 200, run(r2));
            f.set("refs/heads/master", Some(B));
            f.set("refs/heads/feature", Some(B));
            f
        }
    }

    fn state(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(r, o)| (r.to_string(), o.to_string())).collect()
    }

    #[test]
    fn refs_at_each_time_across_a_rewrite_and_a_deletion() {
        for runs in [true, false] {
            let f = Fixture::rewritten(runs);
            let h = History::load(f.path()).unwrap();
            assert_eq!(h.first, Some(100), "runs={runs}");
            assert_eq!(h.kept_refs, 2);
            assert_eq!(h.rewrites.len(), 1);
            let before = state(&[("refs/heads/master", A), ("refs/tags/v1", T)]);
            let after = state(&[("refs/heads/feature", B), ("refs/heads/master", B)]);
            for (t, want) in [(100, &before), (199, &before), (200, &after), (10_000, &after)] {
                assert_eq!(&h.state_at(t).unwrap(), want, "runs={runs} t={t}");
            }
            assert_eq!(h.head_for(&before).as_deref(), Some("refs/heads/master"));
        }
    }

    #[test]
    fn a_deleted_ref_created_again_and_two_runs_in_one_second() {
        let f = Fixture::rewritten(true);
        // v1 comes back at t=300 with another value.
        f.log("refs/tags/v1", Z, A, 300, Some("19700101T000500Z"));
        f.set("refs/tags/v1", Some(A));
        // Two runs in the second 400: the first moves feature to A, the
        // second deletes it (its copy is feature's value A).
        f.log("refs/heads/feature", B, A, 400, Some("19700101T000640Z"));
        f.set("refs/backup/19700101T000640Z-2/heads/feature", Some(A));
        f.log("refs/backup/19700101T000640Z-2/heads/feature", Z, A, 400, Some("19700101T000640Z-2"));
        f.set("refs/heads/feature", None);
        let h = History::load(f.path()).unwrap();
        assert_eq!(h.rewrites.len(), 2);
        assert_eq!(h.state_at(250).unwrap(), state(&[("refs/heads/feature", B), ("refs/heads/master", B)]));
        let at300 = state(&[("refs/heads/feature", B), ("refs/heads/master", B), ("refs/tags/v1", A)]);
        assert_eq!(h.state_at(300).unwrap(), at300);
        assert_eq!(h.state_at(400).unwrap(), state(&[("refs/heads/master", B), ("refs/tags/v1", A)]));
    }

    #[test]
    fn what_the_record_cannot_say_is_refused_not_guessed() {
        // A ref with no reflog: its past is unknown at any time.
        let f = Fixture::rewritten(true);
        f.set("refs/heads/manual", Some(A));
        let h = History::load(f.path()).unwrap();
        let e = h.state_at(150).unwrap_err();
        assert!(e.iter().any(|p| p.contains("refs/heads/manual has no reflog")), "{e:?}");
        // A reflog that starts with an older value: unknown before it.
        let f = Fixture::rewritten(true);
        f.log("refs/heads/old", A, B, 150, None);
        f.set("refs/heads/old", Some(B));
        let h = History::load(f.path()).unwrap();
        let e = h.state_at(120).unwrap_err();
        assert!(e.iter().any(|p| p.contains("reflog of refs/heads/old starts at")), "{e:?}");
        assert_eq!(h.state_at(150).unwrap()["refs/heads/old"], B);
        // A copy without a creation entry: when it was saved is unknown.
        let f = Fixture::rewritten(true);
        f.set("refs/backup/19700101T000500Z/heads/gone", Some(A));
        let h = History::load(f.path()).unwrap();
        assert!(h.state_at(250).is_ok(), "before its run started, it does not matter");
        let e = h.state_at(300).unwrap_err();
        assert!(e.iter().any(|p| p.contains("no creation entry")), "{e:?}");
    }
}
