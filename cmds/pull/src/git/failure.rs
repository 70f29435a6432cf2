//! A failed git run as the administrator needs it: a reason code, and a
//! detail that starts with what git and the remote said.
//!
//! The runner's own error text starts with the node's command line — a
//! kilobyte of hardening options — and the detail is cut at a couple of
//! thousand characters downstream, so the remote's error came last or not
//! at all. Here the command line is dropped (it is the same for every
//! fetch; `ferry-node pull-ssh` shows the ssh part) and the captured
//! stderr leads, followed by which step failed and how.
//!
//! Classification looks at git's stderr only, never at the command line
//! (a path or URL there must not decide the code). A repository that git's
//! object checks refuse gets `E_FETCH_FSCK` with the fsck message ids
//! named; the remote can print look-alike lines on its ssh stderr, which
//! only mislabels its own failure, and the ids are checked to be plain
//! words before they are named.

use ferry_request::Reason;
use ferry_run::RunError;

use crate::PullError;

/// Characters of git's stderr kept in a detail (already escaped).
const STDERR_SHOWN: usize = 1200;

/// git's stderr as one printable line: each non-empty line escaped, the
/// lines joined with ` | `, at most `max` characters. (A detail is escaped
/// again at every sink; with no line breaks left, that second escape does
/// not turn each `\n` into `\\n`.)
pub fn one_line(raw: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::new();
    for line in text.split(['\n', '\r']).map(str::trim).filter(|l| !l.is_empty()) {
        if !out.is_empty() {
            out.push_str(" | ");
        }
        out.push_str(&ferry_text::escape(line, max));
        if out.len() >= max {
            out.truncate(max); // escaped text is ASCII
            out.push_str("...");
            break;
        }
    }
    out
}

/// The escaped stderr of a failed run, and a short note on how it ended.
fn parts(e: &RunError) -> (String, String) {
    match e {
        RunError::Failed { status, output, .. } => (one_line(&output.stderr, STDERR_SHOWN), status.clone()),
        RunError::TimedOut { after, stderr, .. } => {
            (stderr.clone(), format!("killed after {:.0} s at the job's deadline", after.as_secs_f64()))
        }
        RunError::Stopped { reason, stderr, .. } => (stderr.clone(), format!("stopped: {reason}")),
        RunError::Spawn { source, .. } => (String::new(), format!("cannot start git: {source}")),
        RunError::Sink { source, .. } => (String::new(), format!("writing its output failed: {source}")),
        RunError::Io { source, .. } => (String::new(), source.to_string()),
    }
}

/// fsck message ids in git's stderr (`error: object <oid>: <msgId>: …`),
/// in order of appearance, without repeats; empty unless git also said
/// that an fsck check failed the pack.
pub fn fsck_ids(stderr: &str) -> Vec<String> {
    if !stderr.contains("fsck error in pack") {
        return Vec::new();
    }
    let mut ids: Vec<String> = Vec::new();
    for line in stderr.split(['\n', '\r']).chain(stderr.split("\\n")).chain(stderr.split(" | ")) {
        let Some(rest) = line.trim_start().strip_prefix("error: object ") else { continue };
        let mut fields = rest.splitn(3, ": ");
        let (Some(oid), Some(id)) = (fields.next(), fields.next()) else { continue };
        if oid.bytes().all(|b| b.is_ascii_hexdigit())
            && (1..=40).contains(&id.len())
            && id.bytes().all(|b| b.is_ascii_alphabetic())
            && !ids.iter().any(|x| x == id)
        {
            ids.push(id.to_owned());
        }
    }
    if ids.is_empty() {
        ids.push("unnamed".to_owned());
    }
    ids
}

/// The reason code for a failed run, from its kind and git's stderr.
pub fn classify(e: &RunError, stderr: &str) -> Reason {
    if matches!(e, RunError::TimedOut { .. }) {
        return Reason::FetchTimeout;
    }
    let has = |s: &str| stderr.contains(s);
    if has("Host key verification failed") || has("REMOTE HOST IDENTIFICATION HAS CHANGED") {
        Reason::FetchHostKey
    } else if !fsck_ids(stderr).is_empty() {
        Reason::FetchFsck
    } else if has("Permission denied") || has("Authentication failed") {
        Reason::FetchAuth
    } else if has("not allowed") && has("transport") {
        Reason::UrlScheme
    } else if has("does not appear to be a git repository")
        || has("not found")
        || has("no such repository")
        || has("not exported")
    {
        Reason::FetchNotFound
    } else if has("No space left") || has("Disk quota exceeded") {
        Reason::DiskFull
    } else if has("File name too long") {
        // A ref name the node's file system cannot hold (see advert's
        // limits, which normally refuse it before the fetch).
        Reason::FetchLimit
    } else {
        Reason::FetchFailed
    }
}

/// `what` (e.g. `git fetch`) failed: the classified error, with git's and
/// the remote's words first and the node's command line left out.
pub fn from_run(e: &RunError, what: &str) -> PullError {
    let (stderr, how) = parts(e);
    let reason = classify(e, &stderr);
    let lead = match reason {
        Reason::FetchFsck => {
            format!("git's object checks refused the repository (fsck {}): ", fsck_ids(&stderr).join(", "))
        }
        _ => String::new(),
    };
    let message =
        if stderr.is_empty() { format!("{lead}{what}: {how}") } else { format!("{lead}{stderr} ({what}: {how})") };
    PullError::new(reason, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn failed(stderr: &str) -> RunError {
        let output = ferry_run::Output {
            status: std::process::ExitStatus::from_raw(128 << 8),
            stdout: Vec::new(),
            stdout_truncated: false,
            stderr: stderr.as_bytes().to_vec(),
            stderr_truncated: false,
            elapsed: std::time::Duration::ZERO,
            stdout_bytes: 0,
        };
        RunError::Failed {
            cmd: "/usr/bin/git -c protocol.allow=never -c core.sshCommand='ssh -o x' fetch -- ssh://h/not found".into(),
            status: "exit 128".into(),
            stderr: ferry_text::escape(stderr, 600),
            output: Box::new(output),
        }
    }

    #[test]
    fn details_lead_with_git_and_leave_the_command_line_out() {
        let e = from_run(&failed("fatal: the remote end hung up unexpectedly\n"), "git fetch");
        assert_eq!(e.reason, Reason::FetchFailed, "the command line's 'not found' decides nothing");
        assert_eq!(e.message, "fatal: the remote end hung up unexpectedly (git fetch: exit 128)");
        let e = from_run(&failed("remote: \x1b[2Jx\nfatal: early EOF\n\n"), "git fetch");
        assert_eq!(e.message, "remote: \\x1B[2Jx | fatal: early EOF (git fetch: exit 128)");
        let e = from_run(
            &failed("error: object 0657aa: badTimezone: bad time zone\nfatal: fsck error in packed object\n"),
            "git fetch",
        );
        assert_eq!(e.reason, Reason::FetchFsck);
        assert!(
            e.message
                .starts_with("git's object checks refused the repository (fsck badTimezone): error: object 0657aa")
        );
        let e =
            from_run(&failed("error: cannot lock ref 'refs/x': Unable to create 'x.lock': File name too long"), "f");
        assert_eq!(e.reason, Reason::FetchLimit);
        for (stderr, reason) in [
            ("Host key verification failed.", Reason::FetchHostKey),
            ("git@h: Permission denied (publickey).", Reason::FetchAuth),
            ("ferry gate: no such repository", Reason::FetchNotFound),
            ("fatal: transport 'file' not allowed", Reason::UrlScheme),
            ("error: No space left on device", Reason::DiskFull),
        ] {
            assert_eq!(classify(&failed(stderr), stderr), reason, "{stderr}");
        }
    }

    #[test]
    fn fsck_ids_are_named_once_and_only_when_fsck_failed() {
        let err = "error: object 065711d85424699c9e6115ca6c39628b054bbb8d: badTimezone: invalid author/committer line - bad time zone\n\
                   error: object 165711d85424699c9e6115ca6c39628b054bbb8d: badTimezone: again\n\
                   error: object 265711d85424699c9e6115ca6c39628b054bbb8d: missingEmail: x\n\
                   fatal: fsck error in packed object\nfatal: fetch-pack: invalid index-pack output";
        assert_eq!(fsck_ids(err), ["badTimezone", "missingEmail"]);
        // The same text escaped (as the runner keeps it for timeouts).
        assert_eq!(fsck_ids(&ferry_text::escape(err, 2000)), ["badTimezone", "missingEmail"]);
        assert_eq!(fsck_ids(&one_line(err.as_bytes(), 2000)), ["badTimezone", "missingEmail"]);
        // Without git's verdict, a look-alike line decides nothing.
        assert!(fsck_ids("error: object 0657: badTimezone: x\nfatal: early EOF").is_empty());
        // Ids that are not plain words are not named.
        assert_eq!(fsck_ids("error: object 0657: bad\x1b[2Jid: x\nfatal: fsck error in pack objects"), ["unnamed"]);
        // Remote sideband lines are not git's own errors.
        assert_eq!(fsck_ids("remote: error: object 0657: fake: x\nfatal: fsck error in pack objects"), ["unnamed"]);
    }
}
