//! Serving: the node's mirrors browsable in cgit behind a real web server,
//! checked in headless Chromium, with Ferry's shipped cgitrc (deploy/cgitrc)
//! — client-controlled content never becomes live HTML.

use std::fs;

use ferry_tests::fleet::{Client, Node, commit_and_push, eventually};
use ferry_tests::{CgitWeb, TestDir, chromium_dump_dom, for_each_ref, git, http_get, require_all};

#[test]
fn mirrors_are_browsable_in_cgit_and_client_html_stays_inert() {
    if !require_all(&["/usr/sbin/sshd", "ssh", "git", "ssh-keygen", "cgit", "chromium"]) {
        return;
    }
    let td = TestDir::new("cgit");
    let node = Node::start(&td, "backup1");
    let a = Client::new(&td, "host-a", &[&node]);
    node.enroll(&[&a]);
    let (bare, work) = a.repo("project");
    fs::write(work.join("evil.html"), "<script>document.title='pwned-by-client'</script><b>bold</b>\n").unwrap();
    git(&work, &["add", "evil.html"]);
    commit_and_push(&work, "README", "hello from host-a\n");
    let mirror = node.data("host-a").join("git/project.git");
    eventually("mirror", || mirror.join("HEAD").exists() && for_each_ref(&mirror) == for_each_ref(&bare));

    let rc = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/cgitrc"))
        .unwrap()
        .replace("@DATA_DIR@", node.srv().join("data").to_str().unwrap());
    let web = CgitWeb::start(&td.join("web"), &rc);

    let index = chromium_dump_dom(&web.url());
    assert!(index.contains("git/project"), "the mirror is listed: {index}");
    assert!(index.contains("host-a"), "grouped under its client: {index}");

    let log = chromium_dump_dom(&format!("{}host-a/git/project/log/", web.url()));
    assert!(log.contains("change README"), "{log}");

    // A client's HTML file is shown as text, never rendered.
    let blob = chromium_dump_dom(&format!("{}host-a/git/project/tree/evil.html", web.url()));
    assert!(!blob.contains("<title>pwned-by-client"), "client script ran: {blob}");
    assert!(blob.contains("&lt;script&gt;"), "shown escaped: {blob}");
    let plain = http_get(&format!("{}host-a/git/project/plain/evil.html", web.url()));
    let ctype = plain.header("content-type").unwrap_or("").to_ascii_lowercase();
    assert!(!ctype.contains("html"), "plain view must not serve HTML (enable-html-serving=0): {ctype}");
    // No snapshots of client data, no dumb-HTTP clone.
    assert_ne!(http_get(&format!("{}host-a/git/project/snapshot/project-master.tar.gz", web.url())).status, 200);
    assert_ne!(http_get(&format!("{}host-a/git/project/info/refs", web.url())).status, 200);
}
