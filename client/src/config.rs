//! The client's TOML configuration (`/etc/ferry/client.toml`).
//!
//! One struct, `deny_unknown_fields` everywhere: a typo in a key is an error
//! at start-up, not a silently ignored setting. Paths default to places under
//! `state_dir`, so a minimal file names only the client, its export endpoint
//! and its backup nodes. `deploy/client.toml` is the commented example; a
//! test parses it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Deserialize;

/// Default location of the configuration file.
pub const DEFAULT_PATH: &str = "/etc/ferry/client.toml";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// The name this client is enrolled under on every node (its queue repo
    /// is `queue/<name>` there).
    pub name: String,
    /// Pools, queue clones, node status, logs.
    pub state_dir: PathBuf,
    /// The client's SSH key for pushing to queue repos.
    #[serde(default)]
    pub ssh_key: Option<PathBuf>,
    #[serde(default = "default_git")]
    pub git: PathBuf,
    #[serde(default = "default_ssh")]
    pub ssh: PathBuf,
    /// Directory of script modules (the seed's `scripts/cmds`).
    #[serde(default)]
    pub script_dir: Option<PathBuf>,
    /// How nodes reach this host to pull.
    pub export: ExportConfig,
    #[serde(default, rename = "node")]
    pub nodes: Vec<NodeConfig>,
    #[serde(default, rename = "source")]
    pub sources: Vec<SourceConfig>,
    #[serde(default)]
    pub send: SendConfig,
    #[serde(default)]
    pub gate: GateConfig,
    #[serde(default)]
    pub mail: Option<ferry_notify::MailConfig>,
    /// `ferry agent` (issue 11).
    #[serde(default)]
    pub agent: AgentConfig,
}

/// `[agent]`: timings of `ferry agent`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Run `send` this often (what the cron line did every five minutes).
    #[serde(default = "default_send_every")]
    pub send_every: String,
    /// A watched source is backed up once no change came for this long...
    #[serde(default = "default_quiet")]
    pub quiet: String,
    /// ...or at the latest this long after its first pending change.
    #[serde(default = "default_max_delay")]
    pub max_delay: String,
    /// The safety net of watched sources: a full rescan this often that
    /// counts what the watcher missed (expected 0; `ferry status --agent`).
    #[serde(default = "default_rescan_every")]
    pub rescan_every: String,
}

impl Default for AgentConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults parse")
    }
}

fn default_send_every() -> String {
    "5m".into()
}
fn default_quiet() -> String {
    "10s".into()
}
fn default_max_delay() -> String {
    "60s".into()
}
fn default_rescan_every() -> String {
    "1d".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportConfig {
    /// Host name or IPv4 address as the nodes know it (must equal the
    /// `address` enrolled in `gitosis.conf`).
    pub address: String,
    #[serde(default = "default_ssh_port")]
    pub port: u16,
    /// Account the nodes log in as (enrolled `user`).
    pub user: String,
    /// Artifacts for sftp pulls are prepared here (enrolled `export`).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// `ssh` (default) or `git` (git daemon, only if the node enrolled it).
    #[serde(default = "default_scheme")]
    pub git_scheme: String,
    #[serde(default = "default_git_port")]
    pub git_port: u16,
    /// Repositories under these directories may be mirrored (enrolled
    /// `git-roots`).
    #[serde(default)]
    pub git_roots: Vec<PathBuf>,
    #[serde(default)]
    pub git_daemon_base: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Local name of the node (directory names, `ferry request … <node>`).
    pub name: String,
    /// The client's queue repo on that node,
    /// e.g. `ssh://git@backup1.example/queue/host-a.git`.
    pub url: String,
    /// The node's SSH host key, pinned (`ssh-ed25519 AAAA…`).
    pub host_key: String,
    /// Requests without an explicit node go to every default node.
    #[serde(default = "yes")]
    pub default: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub name: String,
    pub module: String,
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Nodes this source goes to (default: the default nodes).
    #[serde(default)]
    pub nodes: Option<Vec<String>>,
    /// Include `ferry backup-all` (default true).
    #[serde(default = "yes")]
    pub all: bool,
    #[serde(default)]
    pub include: Vec<PathBuf>,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub xattrs: bool,
    #[serde(default)]
    pub one_file_system: bool,
    /// fs only: an entry the client's account may not read fails the
    /// backup (`fail`, the default) or is left out with a warning (`skip`).
    #[serde(default)]
    pub unreadable: Option<UnreadableMode>,
    /// fs only: `tar` (the default) stores one `tar.zst` per run; `tree`
    /// writes a manifest and lets the node pull a deduplicated snapshot
    /// tree (issue 10; the node must enroll the root in `tree-roots`).
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub database: Option<String>,
    #[serde(default)]
    pub os_user: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub socket: Option<PathBuf>,
    #[serde(default)]
    pub command: Option<Vec<String>>,
    #[serde(default)]
    pub keep: Option<usize>,
    #[serde(default)]
    pub pre: Option<Vec<String>>,
    #[serde(default)]
    pub post: Option<Vec<String>>,
    /// `ferry restore` of this source: run before the verified artifact is
    /// put in place (stop the application); a failure stops the restore.
    #[serde(default)]
    pub pre_restore: Option<Vec<String>>,
    /// `ferry restore` of this source: run after every attempt that ran
    /// `pre_restore` (start the application again), with `FERRY_STATUS`.
    #[serde(default)]
    pub post_restore: Option<Vec<String>>,
    #[serde(default)]
    pub timeout: Option<String>,
    /// `ferry agent`: queue this source on a calendar (`"0 3 * * *"`,
    /// five cron fields, host time zone).
    #[serde(default)]
    pub schedule: Option<String>,
    /// `ferry agent`: queue this source this often (`"6h"`).
    #[serde(default)]
    pub every: Option<String>,
    /// `ferry agent`: watch the tree with inotify and back up changes
    /// within seconds (fs sources with `mode = "tree"` only).
    #[serde(default)]
    pub watch: bool,
}

/// `unreadable = "fail" | "skip"` of an fs source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnreadableMode {
    #[default]
    Fail,
    Skip,
}

impl UnreadableMode {
    pub fn archive(self) -> ferry_prepare::Unreadable {
        match self {
            UnreadableMode::Fail => ferry_prepare::Unreadable::Fail,
            UnreadableMode::Skip => ferry_prepare::Unreadable::Skip,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendConfig {
    /// At most this many request commits per push (the node refuses more
    /// than its own limit; keep this below it).
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Wall-clock limit of one push.
    #[serde(default = "default_push_timeout")]
    pub push_timeout: String,
    /// Wall-clock limit of one module run.
    #[serde(default = "default_module_timeout")]
    pub module_timeout: String,
    /// First retry delay after a failed push; doubles per failure.
    #[serde(default = "default_backoff_min")]
    pub backoff_min: String,
    /// Longest delay between retries.
    #[serde(default = "default_backoff_max")]
    pub backoff_max: String,
    /// Mail the administrators once a node has been unreachable this long.
    #[serde(default = "default_alert_after")]
    pub alert_after: String,
    /// Keep finished request files this many days (`ferry purge`).
    #[serde(default = "default_keep_days")]
    pub keep_finished_days: u64,
}

impl Default for SendConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults parse")
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateConfig {
    /// authorized_keys file of the export account (for `authorize-node`).
    #[serde(default)]
    pub authorized_keys: Option<PathBuf>,
    /// sftp-server binary run read-only by the gate.
    #[serde(default)]
    pub sftp_server: Option<PathBuf>,
}

fn default_git() -> PathBuf {
    "git".into()
}
fn default_ssh() -> PathBuf {
    "ssh".into()
}
fn default_ssh_port() -> u16 {
    22
}
fn default_git_port() -> u16 {
    9418
}
fn default_scheme() -> String {
    "ssh".into()
}
fn yes() -> bool {
    true
}
fn default_batch() -> usize {
    100
}
fn default_push_timeout() -> String {
    "5m".into()
}
fn default_module_timeout() -> String {
    "6h".into()
}
fn default_backoff_min() -> String {
    "1m".into()
}
fn default_backoff_max() -> String {
    "1h".into()
}
fn default_alert_after() -> String {
    "1h".into()
}
fn default_keep_days() -> u64 {
    30
}

pub use crate::duration::parse_duration;

fn valid_local_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
        && !s.contains("..")
}

impl ClientConfig {
    /// Read and validate the configuration file.
    pub fn load(path: &Path) -> anyhow::Result<ClientConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the client configuration {}", path.display()))?;
        let cfg: ClientConfig =
            toml::from_str(&text).with_context(|| format!("invalid client configuration {}", path.display()))?;
        cfg.validate().with_context(|| format!("invalid client configuration {}", path.display()))?;
        Ok(cfg)
    }

    /// Checks serde cannot express.
    pub fn validate(&self) -> anyhow::Result<()> {
        if !valid_local_name(&self.name) {
            bail!("name {:?}: use letters, digits, '.', '_' and '-'", self.name);
        }
        if let Some(m) = &self.mail {
            m.validate(&self.name).map_err(|e| anyhow::anyhow!("[mail]: {e}"))?;
        }
        if !self.state_dir.is_absolute() {
            bail!("state_dir must be an absolute path");
        }
        let mut seen = std::collections::BTreeSet::new();
        for n in &self.nodes {
            if !valid_local_name(&n.name) {
                bail!("node name {:?}: use letters, digits, '.', '_' and '-'", n.name);
            }
            if !seen.insert(&n.name) {
                bail!("node {:?} is configured twice", n.name);
            }
            if !n.url.starts_with("ssh://") {
                bail!("node {}: url must be ssh://user@host[:port]/queue/<name>.git", n.name);
            }
            if n.host_key.split_whitespace().count() < 2 {
                bail!("node {}: host_key must be a public key line (\"ssh-ed25519 AAAA...\")", n.name);
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for s in &self.sources {
            if !valid_local_name(&s.name) {
                bail!("source name {:?}: use letters, digits, '.', '_' and '-'", s.name);
            }
            if !seen.insert(&s.name) {
                bail!("source {:?} is configured twice", s.name);
            }
            // A source name becomes a directory on each node; `Trac` and
            // `trac` would be one on a case-insensitive store (issue 16).
            if let Some(other) = self.sources.iter().find(|o| ferry_request::same_ignoring_case(&o.name, &s.name)) {
                bail!(
                    "sources {:?} and {:?} differ only in letter case; a node would store them in one directory, so rename one",
                    other.name,
                    s.name
                );
            }
            for n in s.nodes.iter().flatten() {
                if self.node(n).is_none() {
                    bail!("source {}: unknown node {:?}", s.name, n);
                }
            }
            for (key, argv) in [("pre_restore", &s.pre_restore), ("post_restore", &s.post_restore)] {
                if argv.as_ref().is_some_and(|a| a.first().is_none_or(|p| !Path::new(p).is_absolute())) {
                    bail!(
                        "source {}: {key} must be a command with an absolute program path: [\"/usr/bin/systemctl\", \"stop\", \"app\"]",
                        s.name
                    );
                }
            }
            if s.unreadable.is_some() && s.module != "fs" {
                bail!("source {}: unreadable applies to module fs only", s.name);
            }
            match s.mode.as_deref() {
                None | Some("tar") => {}
                Some("tree") if s.module == "fs" => {}
                Some("tree") => bail!("source {}: mode = \"tree\" applies to module fs only", s.name),
                Some(other) => bail!("source {}: mode {other:?}: use \"tar\" or \"tree\"", s.name),
            }
        }
        for s in &self.sources {
            crate::agent_schedule::Schedule::of(s.schedule.as_deref(), s.every.as_deref())
                .with_context(|| format!("source {}", s.name))?;
            if s.watch && (s.module != "fs" || s.mode.as_deref() != Some("tree")) {
                bail!("source {}: watch = true needs module = \"fs\" and mode = \"tree\"", s.name);
            }
        }
        match self.export.git_scheme.as_str() {
            "ssh" | "git" => {}
            other => bail!("export.git_scheme {other:?}: use \"ssh\" or \"git\""),
        }
        for d in [
            &self.send.push_timeout,
            &self.send.module_timeout,
            &self.send.backoff_min,
            &self.send.backoff_max,
            &self.send.alert_after,
            &self.agent.send_every,
            &self.agent.quiet,
            &self.agent.max_delay,
            &self.agent.rescan_every,
        ] {
            parse_duration(d)?;
        }
        if self.send.batch == 0 {
            bail!("send.batch must be at least 1");
        }
        Ok(())
    }

    pub fn node(&self, name: &str) -> Option<&NodeConfig> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub fn source(&self, name: &str) -> Option<&SourceConfig> {
        self.sources.iter().find(|s| s.name == name)
    }

    pub fn default_nodes(&self) -> Vec<&NodeConfig> {
        self.nodes.iter().filter(|n| n.default).collect()
    }

    pub fn export_dir(&self) -> PathBuf {
        self.export.dir.clone().unwrap_or_else(|| self.state_dir.join("export"))
    }

    pub fn ssh_key(&self) -> PathBuf {
        self.ssh_key.clone().unwrap_or_else(|| self.state_dir.join("ssh/id_ed25519"))
    }

    pub fn pool_dir(&self, node: &str) -> PathBuf {
        self.state_dir.join("pools").join(node)
    }

    pub fn queue_dir(&self, node: &str) -> PathBuf {
        self.state_dir.join("queues").join(format!("{node}.git"))
    }

    pub fn node_status_dir(&self) -> PathBuf {
        self.state_dir.join("nodes")
    }

    pub fn known_hosts(&self, node: &str) -> PathBuf {
        self.state_dir.join("known_hosts").join(node)
    }

    pub fn control_dir(&self) -> PathBuf {
        self.state_dir.join("ssh/ctl")
    }

    pub fn endpoint(&self) -> ferry_prepare::ExportEndpoint {
        ferry_prepare::ExportEndpoint {
            address: self.export.address.clone(),
            port: self.export.port,
            user: self.export.user.clone(),
            export_dir: self.export_dir(),
            git_scheme: if self.export.git_scheme == "git" {
                ferry_prepare::GitExportScheme::Git
            } else {
                ferry_prepare::GitExportScheme::Ssh
            },
            git_port: self.export.git_port,
            git_roots: self.export.git_roots.clone(),
            git_daemon_base: self.export.git_daemon_base.clone(),
        }
    }

    pub fn duration(&self, s: &str) -> Duration {
        parse_duration(s).expect("validated at load")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_duration("5 minutes").is_err());
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = toml::from_str::<ClientConfig>(
            "name='a'\nstate_dir='/x'\nstate_dri='/y'\n[export]\naddress='h'\nuser='u'\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("state_dri"), "{e}");
    }

    #[test]
    fn mode_is_tar_or_tree_for_fs_sources() {
        let cfg = |src: &str| -> anyhow::Result<ClientConfig> {
            let c: ClientConfig = toml::from_str(&format!(
                "name='a'\nstate_dir='/x'\n[export]\naddress='h'\nuser='u'\n[[source]]\nname='s'\n{src}\n"
            ))?;
            c.validate()?;
            Ok(c)
        };
        let c = cfg("module='fs'\npath='/srv'\nmode='tree'").unwrap();
        let spec = crate::sources::spec_of(&c, &c.sources[0]).unwrap().unwrap();
        let ferry_prepare::SourceKind::Fs { tree_cache, .. } = &spec.kind else { panic!("{spec:?}") };
        assert_eq!(tree_cache.as_deref(), Some(Path::new("/x/tree-cache/s")));
        for tar in ["module='fs'\npath='/srv'", "module='fs'\npath='/srv'\nmode='tar'"] {
            let c = cfg(tar).unwrap();
            let spec = crate::sources::spec_of(&c, &c.sources[0]).unwrap().unwrap();
            assert_eq!(spec.kind.extension(), "tar.zst");
        }
        let e = cfg("module='fs'\npath='/srv'\nmode='trees'").unwrap_err();
        assert!(format!("{e:#}").contains("use \"tar\" or \"tree\""), "{e:#}");
        let e = cfg("module='pipe'\ncommand=['/bin/true']\nmode='tree'").unwrap_err();
        assert!(format!("{e:#}").contains("module fs only"), "{e:#}");
    }

    #[test]
    fn unreadable_is_fail_or_skip_for_fs_sources() {
        let cfg = |src: &str| -> anyhow::Result<ClientConfig> {
            let c: ClientConfig = toml::from_str(&format!(
                "name='a'\nstate_dir='/x'\n[export]\naddress='h'\nuser='u'\n[[source]]\nname='s'\n{src}\n"
            ))?;
            c.validate()?;
            Ok(c)
        };
        assert_eq!(cfg("module='fs'\npath='/srv'").unwrap().sources[0].unreadable, None);
        for (v, want) in [("fail", UnreadableMode::Fail), ("skip", UnreadableMode::Skip)] {
            let c = cfg(&format!("module='fs'\npath='/srv'\nunreadable='{v}'")).unwrap();
            assert_eq!(c.sources[0].unreadable, Some(want));
        }
        let e = cfg("module='fs'\npath='/srv'\nunreadable='ignore'").unwrap_err();
        assert!(format!("{e:#}").contains("unknown variant"), "{e:#}");
        let e = cfg("module='pipe'\ncommand=['true']\nunreadable='skip'").unwrap_err();
        assert!(e.to_string().contains("fs only"), "{e}");
    }
}

#[cfg(test)]
mod names {
    use super::*;

    /// Issue 16, point 4: two sources whose names differ only in case.
    #[test]
    fn sources_differing_only_in_case_are_refused() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/client.toml");
        let mut cfg = ClientConfig::load(&p).unwrap();
        let mut twin = cfg.sources[0].clone();
        twin.name = twin.name.to_ascii_uppercase();
        cfg.sources.push(twin);
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("differ only in letter case"), "{e}");
    }
}

#[cfg(test)]
mod shipped {
    use super::*;

    #[test]
    fn the_example_in_deploy_parses_and_validates() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/client.toml");
        let cfg = ClientConfig::load(&p).unwrap();
        assert_eq!(cfg.name, "host-a");
        assert!(cfg.sources.iter().any(|s| s.module == "fs"));
        for s in &cfg.sources {
            crate::sources::spec_of(&cfg, s).unwrap();
        }
    }
}
