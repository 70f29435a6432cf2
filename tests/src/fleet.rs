//! A Ferry fleet on loopback: one backup node (its own sshd) and clients
//! (each with its own sshd for the node's pulls), enrolled the real way —
//! by pushing the node's `gitosis-admin` repository.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::{CgitWeb, Sshd, SshdOptions, TestDir, ferry_bin, git, git_cmd, next_loopback, ssh_keygen, wait_until};

/// Run a command, returning its output (never panics on failure).
pub fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Run and require success; returns stdout.
pub fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// `GIT_SSH_COMMAND` for a key and a known_hosts file.
pub fn ssh_command(key: &Path, known_hosts: &Path) -> String {
    format!(
        "ssh -F /dev/null -i {} -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile={} -o ConnectTimeout=20",
        key.display(),
        known_hosts.display()
    )
}

pub struct Node {
    pub name: String,
    pub base: PathBuf,
    pub config: PathBuf,
    pub sshd: Sshd,
    pub admin_key: PathBuf,
    pub known_hosts: PathBuf,
    pub admin_clone: PathBuf,
}

impl Node {
    /// Initialise a node (ferry-node init with a fresh admin key), start its
    /// sshd and clone gitosis-admin as the admin.
    pub fn start(td: &TestDir, name: &str) -> Node {
        Self::start_with(td, name, "")
    }

    pub fn start_with(td: &TestDir, name: &str, extra_toml: &str) -> Node {
        let base = td.mkdir(name);
        let config = base.join("node.toml");
        fs::write(
            &config,
            format!(
                "name = \"{name}\"\nbase_dir = \"{}\"\nprogram = \"{}\"\n{extra_toml}\n",
                base.join("srv").display(),
                ferry_bin("ferry-node").display()
            ),
        )
        .unwrap();
        let admin_key = base.join("admin/id_ed25519");
        ssh_keygen(&admin_key, "admin@workstation");
        let mut node_cmd = Command::new(ferry_bin("ferry-node"));
        node_cmd.arg("--config").arg(&config).arg("init").arg("--admin-key").arg(admin_key.with_extension("pub"));
        ok(&mut node_cmd);
        let sshd = Sshd::start(
            &base.join("sshd"),
            SshdOptions {
                addr: next_loopback(),
                authorized_keys: base.join("srv/.ssh/authorized_keys"),
                extra: vec![],
            },
        );
        let known_hosts = base.join("admin/known_hosts");
        sshd.write_known_hosts(&known_hosts);
        let mut node = Node {
            name: name.into(),
            base: base.clone(),
            config,
            sshd,
            admin_key,
            known_hosts,
            admin_clone: base.join("admin/gitosis-admin"),
        };
        let url = node.url("gitosis-admin.git");
        ok(git_cmd(&base.join("admin")).env("GIT_SSH_COMMAND", node.admin_ssh()).args([
            "clone",
            "--quiet",
            &url,
            "gitosis-admin",
        ]));
        node.name = name.into();
        node
    }

    pub fn admin_ssh(&self) -> String {
        ssh_command(&self.admin_key, &self.known_hosts)
    }

    /// `ssh://root@addr:port/<path>`
    pub fn url(&self, path: &str) -> String {
        format!("ssh://{}@{}:{}/{path}", self.sshd.user(), self.sshd.addr(), self.sshd.port())
    }

    pub fn srv(&self) -> PathBuf {
        self.base.join("srv")
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(ferry_bin("ferry-node"));
        c.arg("--config").arg(&self.config);
        c
    }

    /// Edit gitosis.conf in the admin clone, commit everything and push;
    /// returns the push output (success is not asserted).
    pub fn admin_push(&self, msg: &str, edit: impl FnOnce(&Path)) -> Output {
        edit(&self.admin_clone);
        git(&self.admin_clone, &["add", "-A"]);
        git(&self.admin_clone, &["commit", "--quiet", "--allow-empty", "-m", msg]);
        let out = run(git_cmd(&self.admin_clone).env("GIT_SSH_COMMAND", self.admin_ssh()).args([
            "push",
            "origin",
            "HEAD:master",
        ]));
        if !out.status.success() {
            // Leave the clone where the node is, for the next edit.
            git(&self.admin_clone, &["reset", "--quiet", "--hard", "HEAD~1"]);
        }
        out
    }

    /// Enroll clients (keys + `[ferry client]` sections) in one admin push.
    pub fn enroll(&self, clients: &[&Client]) {
        let out = self.admin_push("enroll clients", |dir| {
            let mut conf = fs::read_to_string(dir.join("gitosis.conf")).unwrap();
            for c in clients {
                fs::write(dir.join(format!("keydir/{}.pub", c.name)), format!("{}\n", c.public_key)).unwrap();
                conf.push_str(&format!("\n{}", c.gitosis_section));
            }
            fs::write(dir.join("gitosis.conf"), conf).unwrap();
        });
        assert!(out.status.success(), "enrollment push failed: {}", text(&out));
        for c in clients {
            c.authorize(self);
        }
    }

    /// `ferry-node --json <args>`, parsed (success required).
    pub fn ferry_node_json(&self, args: &[&str]) -> serde_json::Value {
        let out = ok(self.cmd().arg("--json").args(args));
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    }

    pub fn pool(&self, client: &str) -> PathBuf {
        self.srv().join("pool").join(client)
    }

    pub fn data(&self, client: &str) -> PathBuf {
        self.srv().join("data").join(client)
    }

    /// Pool ids of `client` in `state` (e.g. "F"), sorted.
    pub fn pool_ids(&self, client: &str, state: &str) -> Vec<String> {
        crate::pool_states(self.pool(client), &[state]).into_keys().collect()
    }

    /// The admin user `init` enrolled (the admin key's comment).
    pub fn admin_user(&self) -> &'static str {
        "admin@workstation"
    }

    /// The node's `[web] dir` (the default, under `base_dir`).
    pub fn web_dir(&self) -> PathBuf {
        self.srv().join("web")
    }

    /// The web view as users deploy it: the shipped
    /// `deploy/nginx-cgit.conf` with this node's web directory, in `dir`.
    pub fn start_web(&self, dir: &Path) -> CgitWeb {
        let site = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nginx-cgit.conf"))
            .expect("deploy/nginx-cgit.conf")
            .replace("@WEB_DIR@", self.web_dir().to_str().expect("UTF-8 path"));
        CgitWeb::start_site(dir, &site)
    }

    /// `ferry-node web passwd USER --random`: sets a new password and
    /// returns it.
    pub fn web_password(&self, user: &str) -> String {
        let out = ok(self.cmd().args(["web", "passwd", user, "--random"]));
        let pw = out.trim().to_owned();
        assert!(pw.len() >= 20 && pw.bytes().all(|b| b.is_ascii_alphanumeric()), "not a password: {out:?}");
        pw
    }

    pub fn events(&self) -> String {
        fs::read_to_string(self.srv().join("state/events.jsonl")).unwrap_or_default()
    }

    /// `request_done` events per request id in the journal: "handled
    /// exactly once" means every value is 1.
    pub fn request_done_counts(&self) -> std::collections::BTreeMap<String, usize> {
        let mut out = std::collections::BTreeMap::new();
        for l in self.events().lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            if v["event"] == "request_done" {
                *out.entry(v["request"].as_str().unwrap().to_owned()).or_default() += 1;
            }
        }
        out
    }
}

pub struct Client {
    pub name: String,
    pub base: PathBuf,
    pub config: PathBuf,
    pub sshd: Sshd,
    pub git_root: PathBuf,
    pub public_key: String,
    pub gitosis_section: String,
}

impl Client {
    /// A client on its own loopback address with its own sshd, configured
    /// for `nodes` (the first is the default) and initialised.
    pub fn new(td: &TestDir, name: &str, nodes: &[&Node]) -> Client {
        Self::new_with(td, name, nodes, "")
    }

    pub fn new_with(td: &TestDir, name: &str, nodes: &[&Node], extra_toml: &str) -> Client {
        let base = td.mkdir(name);
        let git_root = base.join("srv/git");
        fs::create_dir_all(&git_root).unwrap();
        let ak = base.join("authorized_keys");
        fs::write(&ak, "").unwrap();
        let sshd = Sshd::start(
            &base.join("sshd"),
            SshdOptions { addr: next_loopback(), authorized_keys: ak.clone(), extra: vec![] },
        );
        let config = base.join("client.toml");
        let mut toml = format!(
            "name = \"{name}\"\nstate_dir = \"{}\"\n{extra_toml}\n\n[export]\naddress = \"{}\"\nport = {}\nuser = \"{}\"\ndir = \"{}\"\ngit_roots = [\"{}\"]\n\n[gate]\nauthorized_keys = \"{}\"\n",
            base.join("state").display(),
            sshd.addr(),
            sshd.port(),
            sshd.user(),
            base.join("export").display(),
            git_root.display(),
            ak.display()
        );
        for (i, n) in nodes.iter().enumerate() {
            toml.push_str(&format!(
                "\n[[node]]\nname = \"{}\"\nurl = \"{}\"\nhost_key = \"{}\"\ndefault = {}\n",
                n.name,
                n.url(&format!("queue/{name}.git")),
                n.sshd.host_key_pub(),
                i == 0
            ));
        }
        fs::write(&config, toml).unwrap();
        let mut c = Client {
            name: name.into(),
            base,
            config,
            sshd,
            git_root,
            public_key: String::new(),
            gitosis_section: String::new(),
        };
        let host_key = c.sshd.dir().join("ssh_host_ed25519_key.pub");
        let out = c.ferry_ok(&["--json", "init", "--host-key", host_key.to_str().unwrap()]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        c.public_key = v["public_key"].as_str().unwrap().to_owned();
        c.gitosis_section = v["gitosis_section"].as_str().unwrap().to_owned();
        c
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(ferry_bin("ferry"));
        c.arg("--config").arg(&self.config);
        c
    }

    pub fn ferry(&self, args: &[&str]) -> Output {
        run(self.cmd().args(args))
    }

    pub fn ferry_ok(&self, args: &[&str]) -> String {
        ok(self.cmd().args(args))
    }

    /// Install `node`'s pull key for this client, bound to `ferry gate`.
    pub fn authorize(&self, node: &Node) {
        let key = ok(node.cmd().args(["pull-key", &self.name]));
        let kf = self.base.join(format!("pull-{}.pub", node.name));
        fs::write(&kf, key).unwrap();
        self.ferry_ok(&["authorize-node", &node.name, "--key", kf.to_str().unwrap()]);
    }

    /// `ferry backup SOURCE --send`, then wait until `node`'s pool has
    /// nothing committed or pending: the request is in the node's queue.
    pub fn deliver(&self, source: &str, node: &str) {
        self.ferry_ok(&["backup", source, "--send"]);
        eventually("the client to deliver", || {
            self.pool_ids(node, "C").is_empty() && self.pool_ids(node, "P").is_empty()
        });
    }

    /// A bare repository under the exported git root, with Ferry's hook,
    /// and a work clone to push from.
    pub fn repo(&self, name: &str) -> (PathBuf, PathBuf) {
        let bare = self.git_root.join(format!("{name}.git"));
        git(&self.base, &["init", "--quiet", "--bare", bare.to_str().unwrap()]);
        self.ferry_ok(&["hook", "install", bare.to_str().unwrap()]);
        let work = self.base.join(format!("work-{name}"));
        git(&self.base, &["clone", "--quiet", bare.to_str().unwrap(), work.to_str().unwrap()]);
        (bare, work)
    }

    /// Pool ids of `node`'s client pool in `state` (e.g. "P"), sorted.
    pub fn pool_ids(&self, node: &str, state: &str) -> Vec<String> {
        crate::pool_states(self.base.join("state/pools").join(node), &[state]).into_keys().collect()
    }
}

/// Commit a file in a work clone and push it (to its origin, the client's
/// bare repository, which runs Ferry's post-update hook).
pub fn commit_and_push(work: &Path, file: &str, content: &str) -> String {
    fs::write(work.join(file), content).unwrap();
    git(work, &["add", file]);
    git(work, &["commit", "--quiet", "-m", &format!("change {file}")]);
    let out = run(git_cmd(work).args(["push", "--quiet", "origin", "HEAD:master"]));
    assert!(out.status.success(), "push failed: {}", text(&out));
    git(work, &["rev-parse", "HEAD"])
}

/// Wait until `f` holds, with a generous bound for a shared 2-core machine.
pub fn eventually(what: &str, f: impl FnMut() -> bool) {
    wait_until(Duration::from_secs(60), what, f);
}

/// Make one commit in a fresh local repository (something to push).
pub fn commit_and_push_local(repo: &Path) {
    fs::write(repo.join("RQx"), "dummy x\n").unwrap();
    git(repo, &["add", "RQx"]);
    git(repo, &["commit", "--quiet", "-m", "x"]);
}
