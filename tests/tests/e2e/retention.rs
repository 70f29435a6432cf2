//! GFS retention: Ferry's rules against restic's `forget` on one generated
//! series of two years of times, and a real purge with rules removing the
//! right artifacts from disk and catalog.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::process::Command;

use ferry_gitosis::enroll::{KeepRules, Within};
use ferry_node::retention::{Item, Reason, decide};
use ferry_tests::fleet::{Client, Node, eventually, ok, text};
use ferry_tests::{TestDir, require};
use jiff::Timestamp;

/// Times from 2024-01-01 over two years (a leap day, two year ends with
/// ISO weeks across them), deterministic: bursts minutes to hours apart,
/// daily runs and gaps of up to three weeks, whole seconds (restic's
/// `--time` has second precision).
fn series() -> Vec<Timestamp> {
    let start: Timestamp = "2024-01-01T00:00:00Z".parse().unwrap();
    let end: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
    let mut x: u64 = 0x5eed_f0e7;
    let mut next = || {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        x >> 33
    };
    let mut t = start;
    let mut out = Vec::new();
    while t < end {
        out.push(t);
        let secs = match next() % 10 {
            0..=2 => 600 + next() % (5 * 3600),
            3..=6 => 86_400 + next() % (2 * 86_400),
            _ => 4 * 86_400 + next() % (17 * 86_400),
        };
        t += jiff::SignedDuration::from_secs(secs as i64);
    }
    out
}

/// restic's name of a kept snapshot's reason.
fn restic_reason(r: Reason, rules: &KeepRules) -> String {
    match r {
        Reason::Within => format!("within {}", rules.within),
        other => format!("{} snapshot", other.as_str()),
    }
}

/// `restic --repo <repo> --quiet ARGS` (success required).
fn restic(td: &TestDir, repo: &str, args: &[&str]) -> std::process::Output {
    let out = Command::new("restic")
        .args(["--repo", td.join(repo).to_str().unwrap(), "--no-cache", "--quiet"])
        .args(args)
        .env("RESTIC_PASSWORD", "test")
        .env("TZ", "UTC")
        .env("HOME", td.path.as_os_str())
        .output()
        .expect("restic runs");
    assert!(out.status.success(), "restic {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// The restic flags of a rule set.
fn flags(r: &KeepRules) -> Vec<String> {
    let mut f = Vec::new();
    for (n, name) in [
        (r.last, "last"),
        (r.hourly, "hourly"),
        (r.daily, "daily"),
        (r.weekly, "weekly"),
        (r.monthly, "monthly"),
        (r.yearly, "yearly"),
    ] {
        if n > 0 {
            f.push(format!("--keep-{name}"));
            f.push(n.to_string());
        }
    }
    if !r.within.is_zero() {
        f.push("--keep-within".into());
        f.push(r.within.to_string());
    }
    f
}

#[test]
fn retention_keeps_what_restic_forget_keeps() {
    if !require("restic") {
        return;
    }
    let td = TestDir::new("retention_restic");
    let times = series();
    assert!((120..=220).contains(&times.len()), "{} times", times.len());
    std::fs::create_dir(td.join("src")).unwrap();
    std::fs::write(td.join("src/f"), b"x").unwrap();
    fs::write(td.join("password"), "test").unwrap();
    // Each restic run spends most of its time deriving the key, and
    // parallel backups into one repository race on its lock files: four
    // repositories filled side by side, then copied into one (a copy keeps
    // each snapshot's time, host and paths: one group for `forget`).
    const LANES: usize = 4;
    std::thread::scope(|s| {
        for lane in 0..LANES {
            let (td, times) = (&td, &times);
            s.spawn(move || {
                let repo = format!("lane{lane}");
                restic(td, &repo, &["init"]);
                for t in times.iter().skip(lane).step_by(LANES) {
                    let when = t.strftime("%Y-%m-%d %H:%M:%S").to_string();
                    restic(td, &repo, &["backup", "--host", "h", "--time", &when, td.join("src").to_str().unwrap()]);
                }
            });
        }
    });
    restic(&td, "repo", &["init"]);
    for lane in 0..LANES {
        let from = td.join(format!("lane{lane}"));
        let pw = td.join("password");
        restic(
            &td,
            "repo",
            &["copy", "--from-repo", from.to_str().unwrap(), "--from-password-file", pw.to_str().unwrap()],
        );
    }
    let w = |years, months, days, hours| Within { years, months, days, hours };
    let sets = [
        KeepRules { last: 5, ..Default::default() },
        KeepRules { hourly: 10, daily: 7, weekly: 5, monthly: 12, yearly: 3, ..Default::default() },
        KeepRules { within: w(0, 3, 10, 0), ..Default::default() },
        KeepRules { daily: 30, within: w(0, 0, 14, 0), ..Default::default() },
        KeepRules { last: 2, weekly: 52, ..Default::default() },
        // More months than the series has: counts are left over (restic
        // >= 0.16 would keep the oldest snapshot too; 0.14 does not).
        KeepRules { monthly: 100, ..Default::default() },
        KeepRules { hourly: 3, yearly: 1, within: w(1, 0, 0, 12), ..Default::default() },
    ];
    let items: Vec<Item> =
        times.iter().enumerate().map(|(i, t)| Item { id: i as i64, at: *t, verified: true }).collect();
    for rules in &sets {
        let out = restic(
            &td,
            "repo",
            &[&["forget", "--dry-run", "--json"][..], &flags(rules).iter().map(String::as_str).collect::<Vec<_>>()]
                .concat(),
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("restic forget --json");
        let groups = v.as_array().expect("groups");
        assert_eq!(groups.len(), 1, "one host, one path: one group");
        let mut theirs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for r in groups[0]["reasons"].as_array().unwrap() {
            let t: Timestamp = r["snapshot"]["time"].as_str().unwrap().parse().unwrap();
            let m = r["matches"].as_array().unwrap().iter().map(|m| m.as_str().unwrap().to_owned()).collect();
            theirs.insert(t.to_string(), m);
        }
        let kept_by_restic: BTreeSet<String> = groups[0]["keep"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["time"].as_str().unwrap().parse::<Timestamp>().unwrap().to_string())
            .collect();
        assert_eq!(kept_by_restic, theirs.keys().cloned().collect(), "every kept snapshot has reasons");
        let ours: BTreeMap<String, BTreeSet<String>> = decide(&items, rules)
            .unwrap()
            .into_iter()
            .filter(|d| d.keep())
            .map(|d| (times[d.id as usize].to_string(), d.reasons.iter().map(|r| restic_reason(*r, rules)).collect()))
            .collect();
        assert_eq!(ours, theirs, "rules {rules}: Ferry and restic disagree");
        eprintln!("{rules}: {} of {} kept by both, same reasons", ours.len(), times.len());
    }
}

/// A process holding `lock` (flock) until killed.
fn hold_lock(lock: &std::path::Path) -> std::process::Child {
    Command::new("sh")
        .args(["-c", "exec 9>\"$1\" && flock 9 && exec sleep 1000", "sh"])
        .arg(lock)
        .spawn()
        .expect("flock holder starts")
}

fn artifacts(node: &Node, source: &str) -> Vec<String> {
    let v = node.ferry_node_json(&["find", "--client", "host-a"]);
    v.as_array()
        .unwrap()
        .iter()
        .filter(|a| a["source"] == source)
        .map(|a| a["path"].as_str().unwrap().to_owned())
        .collect()
}

/// A real purge with rules from node.toml and gitosis.conf: the dry run
/// lists every artifact with the rules that keep it and removes nothing;
/// purge leaves a client alone while its pool lock is held (a pull runs);
/// then it removes exactly what the dry run said from disk and catalog,
/// and keeps the only verified copy when the newest artifact is damaged.
#[test]
fn purge_with_rules_removes_the_right_artifacts() {
    if !crate::hostile::kit::tools() || !require("flock") {
        return;
    }
    let td = TestDir::new("retention_purge");
    let node = Node::start_with(&td, "backup1", "[retention]\nkeep_last = 1\nkeep_daily = 1\n");
    let a = Client::new_with(
        &td,
        "host-a",
        &[&node],
        "[[source]]\nname = \"one\"\nmodule = \"pipe\"\ncommand = [\"date\", \"+%s%N\"]\n\n\
         [[source]]\nname = \"two\"\nmodule = \"pipe\"\ncommand = [\"date\", \"+%s%N\"]\n",
    );
    node.enroll(&[&a]);
    // Rules that keep nothing are refused at enrollment, with the reason.
    let out = node.admin_push("empty rules", |dir| {
        let mut conf = fs::read_to_string(dir.join("gitosis.conf")).unwrap();
        conf.push_str("\n[ferry source host-a two]\nkeep-last = 0\nkeep-daily = 0\n");
        fs::write(dir.join("gitosis.conf"), conf).unwrap();
    });
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("keep nothing"), "{}", text(&out));
    let out = node.admin_push("source rules", |dir| {
        let mut conf = fs::read_to_string(dir.join("gitosis.conf")).unwrap();
        conf.push_str("\n[ferry source host-a two]\nkeep-last = 2\n");
        fs::write(dir.join("gitosis.conf"), conf).unwrap();
    });
    assert!(out.status.success(), "{}", text(&out));
    for n in 1..=4 {
        ok(a.cmd().args(["backup", "one", "--send"]));
        ok(a.cmd().args(["backup", "two", "--send"]));
        eventually("the node to store both", || {
            node.pool_ids("host-a", "F").len() + node.pool_ids("host-a", "E").len() >= 2 * n
        });
    }
    assert!(node.pool_ids("host-a", "E").is_empty(), "requests failed: {}", node.events());
    let one = artifacts(&node, "one");
    let two = artifacts(&node, "two");
    assert_eq!((one.len(), two.len()), (4, 4), "{one:?} {two:?}");

    let v = node.ferry_node_json(&["purge", "--dry-run"]);
    let fate = |path: &str| -> (bool, Vec<String>) {
        let i =
            v["items"].as_array().unwrap().iter().find(|i| i["path"] == path).unwrap_or_else(|| panic!("{path}: {v}"));
        (
            i["keep"].as_bool().unwrap(),
            i["reasons"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_owned()).collect(),
        )
    };
    // find lists oldest first; all were received today.
    assert_eq!(fate(&one[3]), (true, vec!["last".to_owned(), "daily".to_owned()]), "{v}");
    for p in &one[..3] {
        assert_eq!(fate(p), (false, vec![]), "{v}");
    }
    assert_eq!(fate(&two[3]), (true, vec!["last".to_owned()]), "source rules replace the node's: {v}");
    assert_eq!(fate(&two[2]), (true, vec!["last".to_owned()]), "{v}");
    assert_eq!(v["artifacts_removed"].as_array().unwrap().len(), 5, "{v}");
    let human = ok(node.cmd().args(["purge", "--dry-run"]));
    assert!(human.contains(&format!("keep   {}  last,daily", one[3])), "{human}");
    assert!(human.contains(&format!("remove {}", one[0])), "{human}");
    assert_eq!((artifacts(&node, "one").len(), artifacts(&node, "two").len()), (4, 4), "a dry run removes nothing");

    // While a pull of host-a runs (its pool lock), purge touches nothing.
    let lock = node.pool("host-a").join(".lock");
    let mut holder = hold_lock(&lock);
    eventually("flock holds the pool lock", || {
        !Command::new("flock").args(["-n"]).arg(&lock).arg("true").status().unwrap().success()
    });
    let v = node.ferry_node_json(&["purge"]);
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert_eq!(v["artifacts_removed"], serde_json::json!([]), "{v}");
    assert!(v["skipped"].to_string().contains("a pull of this client is running"), "{v}");
    assert_eq!((artifacts(&node, "one").len(), artifacts(&node, "two").len()), (4, 4));

    // The newest of `one` is damaged (its digest sidecar no longer
    // matches): the newest verified one is kept as well.
    let data = node.srv().join("data");
    let sidecar = data.join(format!("{}.sha256", one[3]));
    assert!(sidecar.is_file(), "{}", sidecar.display());
    fs::write(&sidecar, format!("{}  x\n", "0".repeat(64))).unwrap();
    let v = node.ferry_node_json(&["purge"]);
    assert_eq!(v["artifacts_removed"].as_array().unwrap().len(), 4, "{v}");
    assert_eq!(artifacts(&node, "one"), [one[2].clone(), one[3].clone()]);
    assert_eq!(artifacts(&node, "two"), [two[2].clone(), two[3].clone()]);
    for p in one[..2].iter().chain(&two[..2]) {
        assert!(!data.join(p).exists(), "{p} is still on disk");
    }
    for p in one[2..].iter().chain(&two[2..]) {
        assert!(data.join(p).is_file(), "{p} was removed");
    }
}
