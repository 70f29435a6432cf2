//! The files whose names openssh-sftp-client cannot send, fetched with
//! OpenSSH's `sftp` program in batch mode instead.
//!
//! Why: sftp v3 names are byte strings, but openssh-sftp-client 0.15 (and
//! its lowlevel crate 0.7, whose request writer takes `Cow<Path>` and
//! serialises it through serde, i.e. `Path::to_str`) cannot put a
//! non-UTF-8 name on the wire, and its session fails when asked to. Such
//! names are rare (old Latin-1 trees), so they take this slower path: one
//! `sftp -b -` run for all of them, with the same endpoint, key,
//! known_hosts and hardened options as the pipelined session
//! ([`super::ssh_args`]), through ferry-run, each file into a spool
//! directory the caller owns, then to the same sink (for the tree pull:
//! `Store::put`, which checks size and digest) exactly like a pipelined
//! file. The spool's total size is watched while `sftp` runs and the run
//! is stopped past what the files promised.
//!
//! The batch line: `sftp` splits a line into words (whitespace, quotes,
//! backslash escapes, `#` comments) and then expands the remote name as a
//! glob (`*`, `?`, `[`, `\`). Every name is written unquoted with each of those bytes
//! backslash-escaped at the level that reads it ([`batch_word`]); what
//! no escaping can carry (a line break ends the batch line) is reported
//! as not fetched, with that reason. The gate's allow-list stays as it
//! is: with nothing left to expand, `sftp` only uses `realpath`, `lstat`,
//! `stat`, `open`, `read`, `fstat` and `close`. Unlike the pipelined
//! fetch, `sftp get` follows a symlink the client put at the path; that
//! serves only what the gate's account may read anyway, and the bytes are
//! stored only if they have the manifest's size and digest. Local names
//! are the files' indices, never a remote name.

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_request::Reason;
use ferry_text::escape_bytes;

use super::many::{ManyJob, ManyReport, SinkError, Skipped};
use crate::PullError;

/// The longest batch line `sftp` reads (its buffer is 2048 bytes).
const MAX_LINE: usize = 2000;

/// `name` as one word of an `sftp` batch line that, after the line parser
/// and the remote glob, is exactly `name` again; `None` when no escaping
/// can carry it (a line break, NUL).
pub fn batch_word(name: &[u8]) -> Option<Vec<u8>> {
    let mut w = Vec::with_capacity(name.len() + 8);
    for &b in name {
        match b {
            b'\n' | b'\r' | 0 => return None,
            // The line parser keeps `\\`, `\*`, `\?`, `\[` escaped for the
            // glob, which then reads them literally.
            b'\\' | b'*' | b'?' | b'[' => w.extend_from_slice(&[b'\\', b]),
            // Word separators, quotes and the comment sign: escaped for the
            // line parser.
            b' ' | b'\t' | b'\'' | b'"' | b'#' => w.extend_from_slice(&[b'\\', b]),
            _ => w.push(b),
        }
    }
    Some(w)
}

/// The ssh options of [`super::ssh_args`] in the form `sftp` passes on to
/// ssh (`-p` and `-l` mean other things to `sftp`), without multiplexing.
fn sftp_args(job: &ManyJob<'_>) -> Result<Vec<OsString>, PullError> {
    let ssh = super::ssh_args(job.endpoint, false)?;
    let mut out = Vec::with_capacity(ssh.len() + 8);
    let mut it = ssh.into_iter();
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("-p") => out.extend(["-o".into(), format!("Port={}", job.endpoint.port).into()]),
            Some("-l") => out.extend(["-o".into(), format!("User={}", job.endpoint.user).into()]),
            // `-s -- host sftp`: sftp asks for the subsystem itself.
            Some("-s") => break,
            _ => {
                out.push(a);
                continue;
            }
        }
        it.next();
    }
    Ok(out)
}

/// `<spool>/.sftp-batch/`, made empty on creation (a killed run's files
/// are dropped: callers serialise pulls of one spool) and removed on drop.
struct Spool(PathBuf);

impl Spool {
    fn create(spool: &Path) -> Result<Spool, PullError> {
        let dir = spool.join(".sftp-batch");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir)
            .and_then(|()| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)))
            .map_err(|e| PullError::new(Reason::Store, format!("create the sftp spool {}: {e}", dir.display())))?;
        Ok(Spool(dir))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The `sftp` program beside the configured ssh (`/usr/bin/ssh` →
/// `/usr/bin/sftp`).
fn sftp_program(ssh: &Path) -> PathBuf {
    ssh.with_file_name("sftp")
}

/// Fetch `indices` of `job.files` with the `sftp` program into `spool`,
/// then hand each to `sink`; results go into `report` as for pipelined
/// files. `Err` only when the sink aborts or `sftp` cannot start at all.
pub(super) fn fetch(
    job: &ManyJob<'_>,
    spool: &Path,
    indices: &[usize],
    timeout: Duration,
    sink: &mut dyn FnMut(usize, &mut dyn Read) -> Result<(), SinkError>,
    report: &mut ManyReport,
) -> Result<(), PullError> {
    let dir = Spool::create(spool)?;
    let mut script = Vec::new();
    let mut wanted = Vec::new();
    let mut cap = 0u64;
    for &i in indices {
        let f = &job.files[i];
        let shown = escape_bytes(&f.path, 200);
        // A local name of digits, relative to sftp's working directory
        // (the spool), so nothing in it needs escaping.
        let local = i.to_string();
        let line = batch_word(&f.path).map(|w| [b"-get ".as_slice(), &w, b" ", local.as_bytes(), b"\n"].concat());
        match line.filter(|l| l.len() <= MAX_LINE) {
            Some(l) => {
                script.extend_from_slice(&l);
                wanted.push((i, dir.path().join(local)));
                cap = cap.saturating_add(f.size).saturating_add(1);
            }
            None => report.skipped.push(Skipped {
                index: i,
                why: format!("{shown}: a name that is not UTF-8 and that no sftp batch line can carry"),
            }),
        }
    }
    if wanted.is_empty() {
        return Ok(());
    }
    let host = match job.endpoint.host.contains(':') {
        true => format!("[{}]", job.endpoint.host),
        false => job.endpoint.host.clone(),
    };
    let watched = dir.path().to_path_buf();
    let run = ferry_run::Cmd::new(sftp_program(&job.endpoint.ssh))
        .args(["-q", "-b", "-", "-S"])
        .arg(&job.endpoint.ssh)
        .args(sftp_args(job)?)
        .arg("--")
        .arg(host)
        .cwd(dir.path())
        .stdin_bytes(script)
        .timeout(timeout)
        .watch(Duration::from_millis(100), move || {
            let used: u64 = std::fs::read_dir(&watched)
                .map(|rd| rd.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
                .unwrap_or(0);
            (used > cap).then(|| format!("received {used} bytes, more than the {cap} promised"))
        })
        .run();
    let problem = match &run {
        Ok(out) if out.success() => None,
        Ok(out) => Some(format!("sftp: {}", out.stderr_excerpt())),
        Err(e) => Some(format!("sftp: {e}")),
    };
    for (i, local) in wanted {
        let shown = escape_bytes(&job.files[i].path, 200);
        let file = std::fs::set_permissions(&local, std::fs::Permissions::from_mode(0o600))
            .and_then(|()| std::fs::File::open(&local));
        let mut file = match file {
            Ok(f) => f,
            Err(e) => {
                let why = problem.clone().unwrap_or_else(|| format!("no local copy: {e}"));
                report.skipped.push(Skipped { index: i, why: format!("{shown}: {why}") });
                continue;
            }
        };
        report.bytes += file.metadata().map(|m| m.len()).unwrap_or(0);
        match sink(i, &mut file) {
            Ok(()) => report.fetched += 1,
            Err(SinkError::Reject(why)) => report.skipped.push(Skipped { index: i, why }),
            Err(SinkError::Abort(e)) => return Err(e),
        }
        let _ = std::fs::remove_file(&local);
    }
    Ok(())
}

/// For tests: the bytes a batch word stands for (what `sftp` reads).
#[cfg(test)]
fn unescape(word: &[u8]) -> Vec<u8> {
    // The line parser, unquoted: `\x` is `x`, except that `\\`, `\*`,
    // `\?`, `\[` stay escaped for the glob (as OpenSSH 9's sftp does).
    let mut line = Vec::new();
    let mut i = 0;
    while i < word.len() {
        if word[i] == b'\\' && i + 1 < word.len() {
            if matches!(word[i + 1], b'\\' | b'*' | b'?' | b'[') {
                line.push(b'\\');
            }
            line.push(word[i + 1]);
            i += 2;
        } else {
            line.push(word[i]);
            i += 1;
        }
    }
    // The glob: `\x` is `x`.
    let mut out = Vec::new();
    let mut i = 0;
    while i < line.len() {
        if line[i] == b'\\' && i + 1 < line.len() {
            i += 1;
        }
        out.push(line[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_words_stand_for_their_name() {
        for name in [
            b"/t/caf\xe9".as_slice(),
            b"/t/\xff sp\tace 'q' \"d\" [a-z]*?\\x\\*\\\\",
            b"/t/#not-a-comment !no-shell -dash",
        ] {
            let w = batch_word(name).unwrap();
            assert_eq!(unescape(&w), name, "{}", String::from_utf8_lossy(&w));
            // No unescaped separator or quote is left for the line parser.
            let mut esc = false;
            for &b in &w {
                assert!(esc || !matches!(b, b' ' | b'\t' | b'\'' | b'"' | b'#'), "{}", String::from_utf8_lossy(&w));
                esc = !esc && b == b'\\';
            }
        }
        assert_eq!(batch_word(b"/t/a\nb"), None);
        assert_eq!(batch_word(b"/t/a\rb"), None);
    }

    #[test]
    fn sftp_gets_the_ssh_options_in_its_own_form() {
        let ep = super::super::SftpEndpoint {
            ssh: "/usr/bin/ssh".into(),
            host: "client.example".into(),
            port: 2222,
            user: "ferry".into(),
            known_hosts: "/srv/kh".into(),
            host_key_alias: "ferry-client-a".into(),
            identity: "/srv/key".into(),
            control_dir: "/srv/ctl".into(),
            connect_timeout: Duration::from_secs(20),
        };
        let job = ManyJob {
            endpoint: &ep,
            files: &[],
            depth: 1,
            timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            min_rate: None,
            spool: None,
        };
        let a: Vec<String> = sftp_args(&job).unwrap().into_iter().map(|s| s.into_string().unwrap()).collect();
        let line = a.join(" ");
        assert!(line.contains("-o Port=2222") && line.contains("-o User=ferry"), "{line}");
        assert!(line.contains("-o BatchMode=yes") && line.contains("-o ControlMaster=no"), "{line}");
        assert!(!a.iter().any(|w| w == "-p" || w == "-l" || w == "-s" || w == "client.example"), "{line}");
        assert_eq!(sftp_program(Path::new("/usr/bin/ssh")), Path::new("/usr/bin/sftp"));
    }
}
