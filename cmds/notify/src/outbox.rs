//! The durable outbox: one synced JSON file per raised alert, plus the sent
//! ledger.
//!
//! Layout of the outbox directory:
//!
//! ```text
//! pending/<ns>-<pid>-<seq>.json   one alert each, written by raise()
//! ledger.json                     what was mailed when (flush only)
//! flush.lock                      flock held by flush
//! ```
//!
//! `raise` takes no lock: the file name is unique (wall-clock nanoseconds,
//! process id, a per-process counter) and the file appears atomically
//! (`ferry_durable::write_synced_new`: synced temporary file, hard link,
//! synced directory), so a cron run of the client, the node's scan and a
//! hook can all raise at once while a flush is running. A flush sees an
//! alert completely or not at all; one it did not see waits for the next.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::alert::{Alert, Kind};
use crate::error::NotifyError;

/// Format version of alert files and the ledger.
const VERSION: u32 = 1;
/// Largest alert file read back (raise writes far less; anything bigger was
/// not written by us).
const MAX_ALERT_FILE: usize = 256 * 1024;
/// Largest ledger read back.
const MAX_LEDGER_FILE: usize = 16 * 1024 * 1024;
/// A temporary file older than this was left by a crashed writer.
const STALE_TMP: Duration = Duration::from_secs(3600);

static SEQ: AtomicU64 = AtomicU64::new(0);

/// An alert file as stored.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    v: u32,
    alert: Alert,
}

/// An outage that was mailed and has not been mailed as recovered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Open {
    pub kind: Kind,
    /// When the mailed outage alert was raised.
    pub since: Timestamp,
    /// When it was mailed.
    pub mailed_at: Timestamp,
}

/// Alerts of one kind for one key that were counted instead of mailed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Folded {
    pub count: u64,
    pub first: Timestamp,
    pub last: Timestamp,
}

impl Folded {
    pub(crate) fn add(this: &mut Option<Folded>, n: u64, first: Timestamp, last: Timestamp) {
        match this {
            Some(f) => {
                f.count += n;
                f.first = f.first.min(first);
                f.last = f.last.max(last);
            }
            None => *this = Some(Folded { count: n, first, last }),
        }
    }
}

/// What the ledger remembers about one key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KeyState {
    /// Last time a mail contained an alert with this key.
    #[serde(default)]
    pub last_mailed: Option<Timestamp>,
    /// The mailed, not yet recovered outages of this key, by kind.
    #[serde(default)]
    pub open: BTreeMap<Kind, Open>,
    /// Counted repeats per kind, reported with the next mail of that kind
    /// (or, for an outage, with its recovery).
    #[serde(default)]
    pub folded: BTreeMap<Kind, Folded>,
}

/// The sent ledger (see the crate docs for the rules it serves).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Ledger {
    #[serde(default)]
    pub v: u32,
    #[serde(default)]
    pub keys: BTreeMap<String, KeyState>,
    /// Send times of the mails of the last hour (for `max_per_hour`).
    #[serde(default)]
    pub mails: Vec<Timestamp>,
    /// Since when the hourly cap has been holding mail back.
    #[serde(default)]
    pub cap_held_since: Option<Timestamp>,
}

/// A pending alert read back, with its file name.
#[derive(Debug, Clone)]
pub(crate) struct Loaded {
    pub name: String,
    pub alert: Alert,
}

/// The outbox directory.
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    dir: PathBuf,
    pending: PathBuf,
}

/// Whether `name` is an alert file name we write: `<20 digits>-<pid>-<seq>.json`.
fn is_alert_name(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".json") else {
        return false;
    };
    let parts: Vec<&str> = stem.split('-').collect();
    parts.len() == 3
        && parts[0].len() == 20
        && (1..=10).contains(&parts[1].len())
        && (1..=20).contains(&parts[2].len())
        && parts.iter().all(|p| p.bytes().all(|b| b.is_ascii_digit()))
}

impl Outbox {
    /// Opens (creating if needed) the outbox at `dir`.
    pub(crate) fn open(dir: &Path) -> Result<Outbox, NotifyError> {
        let pending = dir.join("pending");
        fs::create_dir_all(&pending).map_err(|e| NotifyError::io(&pending, e))?;
        Ok(Outbox { dir: dir.to_path_buf(), pending })
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn lock_path(&self) -> PathBuf {
        self.dir.join("flush.lock")
    }

    fn ledger_path(&self) -> PathBuf {
        self.dir.join("ledger.json")
    }

    /// Writes one alert durably under a new unique name; lock-free.
    pub(crate) fn write(&self, alert: &Alert) -> Result<String, NotifyError> {
        let data = serde_json::to_vec(&Stored { v: VERSION, alert: alert.clone() })
            .map_err(|e| NotifyError::io(&self.pending, io::Error::other(e)))?;
        loop {
            let ns = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
            let ns = u64::try_from(ns).unwrap_or(u64::MAX);
            let name = format!("{ns:020}-{}-{}.json", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
            match ferry_durable::write_synced_new(&self.pending, &name, &data) {
                Ok(()) => return Ok(name),
                // Same nanosecond, same pid (a recycled pid of a process
                // that raced us): take the next sequence number.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(NotifyError::io(self.pending.join(&name), e)),
            }
        }
    }

    /// Names of pending alert files, oldest first, at most `max` of them,
    /// and how many there are in all. Removes temporary files that a
    /// crashed writer left (older than an hour; younger ones may be in use).
    pub(crate) fn list(&self, max: usize) -> Result<(Vec<String>, usize), NotifyError> {
        let rd = fs::read_dir(&self.pending).map_err(|e| NotifyError::io(&self.pending, e))?;
        let mut names = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| NotifyError::io(&self.pending, e))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if is_alert_name(&name) {
                names.push(name);
            } else if name.starts_with(ferry_durable::TMP_PREFIX) {
                let old = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > STALE_TMP);
                if old {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        names.sort();
        let total = names.len();
        names.truncate(max);
        Ok((names, total))
    }

    /// Reads one alert back. `Ok(None)` when the file is gone, unreadable as
    /// an alert, or fails validation — the caller drops it with a log line.
    pub(crate) fn load(&self, name: &str) -> Result<Option<Alert>, NotifyError> {
        let path = self.pending.join(name);
        let data = match ferry_durable::read_capped(&path, MAX_ALERT_FILE) {
            Ok(Some(d)) => d,
            Ok(None) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => return Ok(None),
            Err(e) => return Err(NotifyError::io(path, e)),
        };
        let Ok(stored) = serde_json::from_slice::<Stored>(&data) else {
            return Ok(None);
        };
        if stored.v != VERSION {
            return Ok(None);
        }
        Ok(stored.alert.sanitized().ok())
    }

    /// Removes alert files (missing ones are fine), then syncs the
    /// directory once.
    pub(crate) fn remove(&self, names: &[&str]) -> Result<(), NotifyError> {
        if names.is_empty() {
            return Ok(());
        }
        for name in names {
            match fs::remove_file(self.pending.join(name)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(NotifyError::io(self.pending.join(name), e)),
            }
        }
        ferry_durable::fsync_dir(&self.pending).map_err(|e| NotifyError::io(&self.pending, e))
    }

    /// Reads the ledger; a missing one is empty. A damaged one is set aside
    /// as `ledger.json.bad` and replaced by an empty one: the worst outcome
    /// is one mail that rate limiting would have held back, which beats
    /// never mailing again.
    pub(crate) fn load_ledger(&self) -> Result<Ledger, NotifyError> {
        let path = self.ledger_path();
        let data = match ferry_durable::read_capped(&path, MAX_LEDGER_FILE) {
            Ok(Some(d)) => d,
            Ok(None) => Vec::new(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Ledger { v: VERSION, ..Ledger::default() }),
            Err(e) => return Err(NotifyError::io(path, e)),
        };
        match serde_json::from_slice::<Ledger>(&data) {
            Ok(l) if l.v == VERSION => Ok(l),
            _ => {
                tracing::warn!(path = %path.display(), "notify ledger unreadable; set aside, starting afresh");
                let _ = ferry_durable::rename_synced(&self.dir, "ledger.json", "ledger.json.bad", true);
                Ok(Ledger { v: VERSION, ..Ledger::default() })
            }
        }
    }

    pub(crate) fn save_ledger(&self, ledger: &Ledger) -> Result<(), NotifyError> {
        let data = serde_json::to_vec(ledger).map_err(|e| NotifyError::io(self.ledger_path(), io::Error::other(e)))?;
        ferry_durable::write_synced(&self.dir, "ledger.json", &data).map_err(|e| NotifyError::io(self.ledger_path(), e))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashSet;

    pub(crate) struct TempDir(pub PathBuf);
    impl TempDir {
        pub(crate) fn new(tag: &str) -> TempDir {
            let p = std::env::temp_dir().join(format!(
                "ferry-notify-{tag}-{}-{}",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn names() {
        assert!(is_alert_name("00000000000000000001-42-0.json"));
        for bad in ["1-42-0.json", "00000000000000000001-42-0.json.tmp", ".tmp-x", "../x.json", "a-b-c.json"] {
            assert!(!is_alert_name(bad), "{bad}");
        }
    }

    #[test]
    fn write_list_load_remove() {
        let d = TempDir::new("outbox");
        let ob = Outbox::open(&d.0).unwrap();
        let a = Alert::new(Kind::DiskFull, "disk:/srv", "node1", "full").sanitized().unwrap();
        let n1 = ob.write(&a).unwrap();
        let n2 = ob.write(&a).unwrap();
        assert_ne!(n1, n2);
        fs::write(d.0.join("pending").join("junk.txt"), "x").unwrap();
        fs::write(d.0.join("pending").join(".tmp-fresh"), "x").unwrap();
        let (names, total) = ob.list(10).unwrap();
        assert_eq!(names, vec![n1.clone(), n2.clone()]);
        assert_eq!(total, 2);
        assert!(d.0.join("pending/.tmp-fresh").exists(), "a young temporary file may be in use");
        assert_eq!(ob.load(&n1).unwrap().unwrap(), a);
        let (one, total) = ob.list(1).unwrap();
        assert_eq!((one.len(), total), (1, 2));
        ob.remove(&[&n1, "00000000000000000000-1-1.json"]).unwrap();
        assert_eq!(ob.list(10).unwrap().0, vec![n2]);
    }

    #[test]
    fn damaged_or_foreign_files_load_as_none() {
        let d = TempDir::new("damaged");
        let ob = Outbox::open(&d.0).unwrap();
        let p = d.0.join("pending");
        fs::write(p.join("00000000000000000001-1-1.json"), "{not json").unwrap();
        let bad_key = r#"{"v":1,"alert":{"kind":"OTHER","key":"a\nb","subject_token":"t","body":"b","raised_at":"2026-01-01T00:00:00Z"}}"#;
        fs::write(p.join("00000000000000000001-1-2.json"), bad_key).unwrap();
        let future = r#"{"v":2,"alert":{"kind":"OTHER","key":"k","subject_token":"t","body":"b","raised_at":"2026-01-01T00:00:00Z"}}"#;
        fs::write(p.join("00000000000000000001-1-3.json"), future).unwrap();
        let bad_token = r#"{"v":1,"alert":{"kind":"OTHER","key":"k","subject_token":"a\r\nBcc: x@evil","body":"b\u001b[2J","raised_at":"2026-01-01T00:00:00Z"}}"#;
        fs::write(p.join("00000000000000000001-1-4.json"), bad_token).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", p.join("00000000000000000001-1-5.json")).unwrap();
        for n in 1..=3 {
            assert!(ob.load(&format!("00000000000000000001-1-{n}.json")).unwrap().is_none(), "{n}");
        }
        let a = ob.load("00000000000000000001-1-4.json").unwrap().unwrap();
        assert_eq!(a.subject_token, "-");
        assert_eq!(a.body, r"b\x1B[2J");
        assert!(ob.load("00000000000000000001-1-5.json").unwrap().is_none(), "symlinks are not followed");
    }

    #[test]
    fn concurrent_writers_never_collide() {
        let d = TempDir::new("concurrent");
        let ob = Outbox::open(&d.0).unwrap();
        let a = Alert::new(Kind::Other, "k", "t", "b");
        let names: Vec<String> = std::thread::scope(|s| {
            let hs: Vec<_> =
                (0..8).map(|_| s.spawn(|| (0..50).map(|_| ob.write(&a).unwrap()).collect::<Vec<_>>())).collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        let set: HashSet<_> = names.iter().collect();
        assert_eq!(set.len(), 400);
        assert_eq!(ob.list(usize::MAX).unwrap().1, 400);
    }

    #[test]
    fn ledger_round_trip_and_damage() {
        let d = TempDir::new("ledger");
        let ob = Outbox::open(&d.0).unwrap();
        let empty = ob.load_ledger().unwrap();
        assert!(empty.keys.is_empty());
        let mut l = empty.clone();
        let t: Timestamp = "2026-11-22T10:00:00Z".parse().unwrap();
        let mut ks = KeyState { last_mailed: Some(t), ..KeyState::default() };
        ks.open.insert(Kind::NodeUnreachable, Open { kind: Kind::NodeUnreachable, since: t, mailed_at: t });
        ks.folded.insert(Kind::NodeUnreachable, Folded { count: 3, first: t, last: t });
        l.keys.insert("node:b1".into(), ks);
        l.mails.push(t);
        ob.save_ledger(&l).unwrap();
        assert_eq!(ob.load_ledger().unwrap(), l);
        fs::write(d.0.join("ledger.json"), "garbage").unwrap();
        assert!(ob.load_ledger().unwrap().keys.is_empty());
        assert!(d.0.join("ledger.json.bad").exists());
    }
}
