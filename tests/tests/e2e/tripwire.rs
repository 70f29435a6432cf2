//! The tripwire (issue 11 point 4): `alert-on-change` in gitosis.conf's
//! `[ferry source CLIENT SOURCE]` makes the node mail the administrators
//! when a new tree snapshot changes a matching path. Real sshd, real SMTP
//! sink: a first snapshot raises nothing, a change of `etc/ssh/sshd_config`
//! (beside an unrelated change) is one mail naming that path and not the
//! other, and a later snapshot changing only unrelated files sends nothing.

use std::fs;

use ferry_tests::fleet::eventually;

use crate::hostile::kit::{Fleet, Plan, assert_done, rq, scan};
use crate::tree_pull::{manifest_request, stamp};

#[test]
fn a_watched_path_changed_in_a_new_snapshot_is_mailed_once() {
    let section = format!(
        "tree-roots = {}\n\n[ferry source host-a www]\nalert-on-change = etc/ssh/* usr/bin/**\n",
        ferry_tests::test_root().display()
    );
    let Some(f) = Fleet::start("tripwire", Plan { a_section: &section, mail: true, ..Plan::default() }) else {
        return;
    };
    let smtp = f.smtp.as_ref().expect("the plan starts an SMTP sink");
    let tripwire_mails =
        || smtp.messages().into_iter().filter(|m| m.body.contains("alert-on-change")).collect::<Vec<_>>();
    let root = f.a.base.join("tree");
    fs::create_dir_all(root.join("etc/ssh")).unwrap();
    fs::create_dir_all(root.join("srv")).unwrap();
    fs::write(root.join("etc/ssh/sshd_config"), "PermitRootLogin no\n").unwrap();
    fs::write(root.join("srv/index.html"), "hello\n").unwrap();

    // The first snapshot has nothing to compare with.
    f.q.send(&[rq("w1", manifest_request(&f.a, &root, "w1.ftree", &stamp(1), |b| b))]);
    scan(&f.node, "host-a");
    assert_done(&f.node, "host-a", "w1");

    // A watched file and an unrelated one change: one mail, the watched one.
    fs::write(root.join("etc/ssh/sshd_config"), "PermitRootLogin yes\n").unwrap();
    fs::write(root.join("srv/index.html"), "defaced\n").unwrap();
    f.q.send(&[rq("w2", manifest_request(&f.a, &root, "w2.ftree", &stamp(2), |b| b))]);
    scan(&f.node, "host-a");
    assert_done(&f.node, "host-a", "w2");
    eventually("the tripwire mail", || !tripwire_mails().is_empty());
    let mails = tripwire_mails();
    assert_eq!(mails.len(), 1, "one mail per snapshot: {mails:#?}");
    assert!(mails[0].body.contains("~ etc/ssh/sshd_config"), "{}", mails[0].body);
    assert!(!mails[0].body.contains("index.html"), "only matching paths are listed: {}", mails[0].body);

    // Only unrelated files change: no new tripwire mail. A later mail (the
    // w4 request's own marker) shows the notifier has flushed meanwhile.
    fs::write(root.join("srv/index.html"), "restored\n").unwrap();
    f.q.send(&[rq("w3", manifest_request(&f.a, &root, "w3.ftree", &stamp(3), |b| b))]);
    scan(&f.node, "host-a");
    assert_done(&f.node, "host-a", "w3");
    fs::create_dir_all(root.join("usr/bin/deep")).unwrap();
    fs::write(root.join("usr/bin/deep/sshd"), "trojan\n").unwrap();
    f.q.send(&[rq("w4", manifest_request(&f.a, &root, "w4.ftree", &stamp(4), |b| b))]);
    scan(&f.node, "host-a");
    assert_done(&f.node, "host-a", "w4");
    eventually("the second tripwire mail", || tripwire_mails().len() >= 2);
    let mails = tripwire_mails();
    assert_eq!(mails.len(), 2, "w3 changed nothing watched: {mails:#?}");
    assert!(mails[1].body.contains("+ usr/bin/deep/sshd"), "** matches across segments: {}", mails[1].body);
    f.guard.check("tripwire");
}
