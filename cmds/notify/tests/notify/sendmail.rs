//! The sendmail path, with a script standing in for the local MTA that
//! records its argv and stdin (the SMTP path is tested against a real
//! server in `smtp.rs`).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ferry_notify::{Kind, Notifier, NotifyError};
use ferry_tests::{Mail, TestDir};

use crate::util::{HOSTILE, alert, assert_clean, config, t};

/// Writes an executable fake sendmail into `dir` that stores each argument
/// on its own line in `argv`, the count in `argc`, stdin in `stdin`, and
/// exits with `status`. Paths are baked in: the notifier clears the
/// environment of the programs it runs.
fn fake_sendmail(dir: &Path, status: u8) -> PathBuf {
    let path = dir.join("sendmail");
    let d = dir.display();
    let script = format!(
        "#!/bin/sh\necho $# > '{d}/argc'\n: > '{d}/argv'\nfor a in \"$@\"; do printf '%s\\n' \"$a\" >> '{d}/argv'; done\n\
         cat > '{d}/stdin'\necho 'sendmail: stand-in exits {status}' >&2\nexit {status}\n"
    );
    fs::write(&path, script).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Recipients and sender come from the config and travel only in headers:
/// the argv is exactly `-i -t`, even for an address that looks like an
/// option (PHPMailer CVE-2016-10033 class, SECURITY NL-06).
#[test]
fn sendmail_gets_exactly_dash_i_dash_t() {
    let td = TestDir::new("notify-sendmail");
    let bin = td.mkdir("bin");
    let mut c = config();
    c.sendmail = Some(fake_sendmail(&bin, 0));
    let n = Notifier::new(Some(c.clone()), td.join("outbox"), "node1").unwrap();
    for (i, h) in HOSTILE.iter().enumerate() {
        n.raise(
            alert(Kind::RequestFailed, &format!("client:c{i}:E_REJECTED"), h, &format!("line: {h}"), 0)
                .with_excerpt(*h),
        )
        .unwrap();
    }
    let r = n.flush(t(1)).unwrap();
    assert_eq!((r.mails_sent, r.alerts_sent, r.pending), (1, HOSTILE.len(), 0));
    assert_eq!(fs::read_to_string(bin.join("argc")).unwrap().trim(), "2");
    assert_eq!(fs::read_to_string(bin.join("argv")).unwrap(), "-i\n-t\n");
    let raw = fs::read(bin.join("stdin")).unwrap();
    assert!(!raw.contains(&b'\r'), "local submission uses LF line ends");
    let m = Mail::parse("", Vec::new(), raw);
    assert_clean(&m);
    assert_eq!(m.subject, format!("[ferry node1] {} alerts: REQUEST_FAILED ({})", HOSTILE.len(), HOSTILE.len()));

    // An option-looking address (valid mail syntax) stays out of argv too.
    let mut c2 = c;
    c2.to = vec![
        "-X/var/www/x.php@example.org".into(),
        "admins@example.org".into(),
        "Night Shift <oncall@example.org>".into(),
    ];
    let n = Notifier::new(Some(c2), td.join("outbox2"), "node1").unwrap();
    n.raise(alert(Kind::DiskFull, "disk:/srv", "node1", "full", 0)).unwrap();
    assert_eq!(n.flush(t(1)).unwrap().mails_sent, 1);
    assert_eq!(fs::read_to_string(bin.join("argv")).unwrap(), "-i\n-t\n");
    let m = Mail::parse("", Vec::new(), fs::read(bin.join("stdin")).unwrap());
    assert!(m.header("To").unwrap().contains("-X/var/www/x.php@example.org"));
}

/// A failing local MTA keeps the alerts; the next flush delivers them.
#[test]
fn sendmail_failure_keeps_alerts() {
    let td = TestDir::new("notify-sendmail-fail");
    let bin = td.mkdir("bin");
    let mut c = config();
    c.sendmail = Some(fake_sendmail(&bin, 75));
    let n = Notifier::new(Some(c), td.join("outbox"), "node1").unwrap();
    n.raise(alert(Kind::PullFailing, "pull:a", "a", "timeout", 0)).unwrap();
    match n.flush(t(1)) {
        Err(NotifyError::Transport { pending: 1, reason }) => {
            assert!(reason.contains("exit 75") && reason.contains("stand-in exits 75"), "{reason}")
        }
        other => panic!("expected a transport error, got {other:?}"),
    }
    assert_eq!(n.pending().unwrap(), 1);
    fake_sendmail(&bin, 0);
    let r = n.flush(t(2)).unwrap();
    assert_eq!((r.mails_sent, r.pending), (1, 0));
    let m = Mail::parse("", Vec::new(), fs::read(bin.join("stdin")).unwrap());
    assert_eq!(m.subject, "[ferry node1] PULL_FAILING: a");
}

/// A missing sendmail binary is a transport error, not a panic or a loss.
#[test]
fn missing_sendmail_is_a_transport_error() {
    let td = TestDir::new("notify-sendmail-missing");
    let mut c = config();
    c.sendmail = Some(td.join("no-such-sendmail"));
    let n = Notifier::new(Some(c), td.join("outbox"), "node1").unwrap();
    n.raise(alert(Kind::Other, "other:x", "x", "x", 0)).unwrap();
    assert!(matches!(n.flush(t(1)), Err(NotifyError::Transport { pending: 1, .. })));
}
