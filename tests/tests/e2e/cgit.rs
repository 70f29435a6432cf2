//! Serving: the node's mirrors browsable in cgit behind the shipped nginx
//! site (deploy/nginx-cgit.conf, with its access control) and the cgitrc
//! the node generates from deploy/cgitrc, checked in headless Chromium —
//! client-controlled content never becomes live HTML. Who may see what is
//! tested in `web_access.rs`.

use std::fs;

use ferry_tests::fleet::{Client, Node, commit_and_push, eventually};
use ferry_tests::{TestDir, chromium_dump_dom, for_each_ref, git, http_get_auth, require_all};

#[test]
fn mirrors_are_browsable_in_cgit_and_client_html_stays_inert() {
    if !require_all(&["/usr/sbin/sshd", "ssh", "git", "ssh-keygen", "cgit", "chromium"]) {
        return;
    }
    let td = TestDir::new("cgit");
    let node = Node::start_with(&td, "backup1", "[web]\ngit_url = \"git://backup1.example.test/\"\n");
    let a = Client::new(&td, "host-a", &[&node]);
    node.enroll(&[&a]);
    let (bare, work) = a.repo("project");
    fs::write(work.join("evil.html"), "<script>document.title='pwned-by-client'</script><b>bold</b>\n").unwrap();
    git(&work, &["add", "evil.html"]);
    commit_and_push(&work, "README", "hello from host-a\n");
    let mirror = node.data("host-a").join("git/project.git");
    eventually("mirror", || mirror.join("HEAD").exists() && for_each_ref(&mirror) == for_each_ref(&bare));

    let admin = node.admin_user();
    let pw = node.web_password(admin);
    let web = node.start_web(&td.join("web"));
    // An administrator, as a browser sends it (user-info in the URL).
    let browse = |path: &str| {
        chromium_dump_dom(&format!("http://{}:{pw}@{}:{}{path}", admin.replace('@', "%40"), web.addr(), web.port()))
    };
    let get = |path: &str| http_get_auth(&format!("{}{path}", web.base_url()), admin, &pw);

    let index = browse("/cgit/");
    assert!(index.contains("git/project"), "the mirror is listed: {index}\n{}", web.logs());
    assert!(index.contains("host-a"), "grouped under its client: {index}");

    let log = browse("/cgit/host-a/git/project/log/");
    assert!(log.contains("change README"), "{log}");

    // A client's HTML file is shown as text, never rendered.
    let blob = browse("/cgit/host-a/git/project/tree/evil.html");
    assert!(!blob.contains("<title>pwned-by-client"), "client script ran: {blob}");
    assert!(blob.contains("&lt;script&gt;"), "shown escaped: {blob}");
    let plain = get("/cgit/host-a/git/project/plain/evil.html");
    assert_eq!(plain.status, 200, "{}", web.logs());
    let ctype = plain.header("content-type").unwrap_or("").to_ascii_lowercase();
    assert!(!ctype.contains("html"), "plain view must not serve HTML (enable-html-serving=0): {ctype}");
    for h in ["content-security-policy", "x-content-type-options"] {
        assert!(plain.header(h).is_some(), "{h} missing: {:?}", plain.headers);
    }
    // The git:// clone URL of the git daemon export, in both views.
    for (path, url) in [
        ("/cgit/host-a/git/project/", "git://backup1.example.test/host-a/git/project.git"),
        ("/c/host-a/git/project/", "git://backup1.example.test/host-a/git/project.git"),
    ] {
        let page = get(path);
        assert_eq!(page.status, 200, "{path}: {}", web.logs());
        assert!(
            String::from_utf8_lossy(&page.body).contains(url),
            "{path} lacks {url}: {}",
            String::from_utf8_lossy(&page.body)
        );
    }
    // No snapshots of client data, no dumb-HTTP clone.
    assert_ne!(get("/cgit/host-a/git/project/snapshot/project-master.tar.gz").status, 200);
    assert_ne!(get("/cgit/host-a/git/project/info/refs").status, 200);
}
