//! Command-line interface.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{ClientConfig, DEFAULT_PATH};
use crate::exit;
use crate::out;

#[derive(Debug, Parser)]
#[command(
    name = "ferry",
    version,
    about = "Ferry client: queue backup requests and deliver them to backup nodes",
    long_about = "Ferry client. Hosts never push data: `ferry` queues small request files, prepares \
                  what the backup nodes should pull, and pushes the requests through a queue repo on \
                  each node, which then pulls the data itself.\n\nExit codes: 0 done, 1 failure, \
                  2 usage or configuration error (nothing changed), 3 queued but not delivered (retried later)."
)]
pub struct Cli {
    /// Configuration file.
    #[arg(short, long, global = true, env = "FERRY_CONFIG", default_value = DEFAULT_PATH)]
    pub config: PathBuf,
    /// Machine-readable output.
    #[arg(long, global = true)]
    pub json: bool,
    /// More log output (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create directories and the push key; print what to enroll on the node.
    Init {
        /// This host's SSH host public key (default /etc/ssh/ssh_host_ed25519_key.pub).
        #[arg(long)]
        host_key: Option<PathBuf>,
    },
    /// Queue a request: `ferry request git /srv/git/app.git [node]`.
    Request {
        /// Module: git, dummy, a configured source's module, or a script module.
        module: String,
        /// Repository path, source name, or the script's argument.
        arg: String,
        /// Only this node (default: every default node).
        node: Option<String>,
        /// Start a send right away (in the foreground).
        #[arg(long)]
        send: bool,
    },
    /// Queue a backup of one configured source.
    Backup {
        /// A source configured in client.toml.
        source: String,
        /// Only this node (default: the source's nodes, else every default node).
        #[arg(long)]
        node: Option<String>,
        /// Start a send right away (in the foreground).
        #[arg(long)]
        send: bool,
    },
    /// Queue every configured source (monthly cron in the seed).
    BackupAll {
        /// Start a send right away (in the foreground).
        #[arg(long)]
        send: bool,
    },
    /// Deliver queued requests to the nodes (cron every 5 minutes).
    Send {
        /// Only this node.
        #[arg(long)]
        node: Option<String>,
        /// Try failing nodes now, ignoring the retry backoff.
        #[arg(long)]
        force: bool,
        /// Wait for a running send to finish instead of leaving it the work.
        #[arg(long)]
        wait: bool,
    },
    /// Show per node what is pending, since when, how delivery goes, and
    /// the failed requests not acknowledged yet.
    Status {
        /// Ask the running `ferry agent` (over its socket) for its state instead.
        #[arg(long)]
        agent: bool,
    },
    /// Run the client's long-running service: send periodically, run each
    /// source's schedule, watch `watch = true` sources (SIGHUP reloads,
    /// SIGTERM stops).
    Agent,
    /// What changed in a `mode = "tree"` source since its last backup: a
    /// stat walk against the newest manifest (and the agent's journal),
    /// copying nothing.
    Changes {
        /// A configured fs source with mode = "tree".
        source: String,
    },
    /// Acknowledge failed requests once dealt with: `ferry ack ID...` or
    /// `ferry ack --all [--node N]`.
    ///
    /// They move from E to A with their reason (A<id>.why), by synced
    /// renames: the record stays, but `ferry status` no longer reports
    /// them. An id that is not a failed request changes nothing (exit 2).
    Ack {
        /// Ids of failed requests, as `ferry status` lists them.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<String>,
        /// Every failed request (of --node, or of every node).
        #[arg(long)]
        all: bool,
        /// Only this node's pool.
        #[arg(long)]
        node: Option<String>,
    },
    /// Restore one of this host's backups from a node: `ferry restore site /srv/restored`.
    Restore {
        /// A source name (fs, pipe, dump) or a mirrored git repository name; with --all, the directory.
        source: String,
        /// Where to restore: a directory (fs archive, a dump's or stream's file) or the new bare repository.
        target: Option<PathBuf>,
        /// Restore every source and repository of this host into DIR (`ferry restore --all DIR`).
        #[arg(long)]
        all: bool,
        /// The newest backup received at or before this time (2026-11-22T01:02:03Z or 20261122T010203Z).
        #[arg(long)]
        at: Option<String>,
        /// The node to restore from (default: the only node, else the first default node).
        #[arg(long)]
        node: Option<String>,
        /// Accept a non-empty target directory (a dump's or stream's file, or --all DIR); an fs tree is never merged into one.
        #[arg(long)]
        force: bool,
    },
    /// Git hooks for client repositories.
    #[command(subcommand)]
    Hook(HookCommand),
    /// Forced command for a node's pull key (set by authorize-node).
    Gate,
    /// Install a node's pull key, restricted to `ferry gate`.
    AuthorizeNode {
        /// A node configured in client.toml.
        node: String,
        /// Public key file ("-" or absent: standard input).
        #[arg(long)]
        key: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum HookCommand {
    /// Run from a repository's hooks/post-update: request a backup of it.
    PostUpdate,
    /// Install the post-update hook into a repository.
    Install {
        /// The (bare) repository to install the hook into.
        repo: PathBuf,
        /// Replace a post-update hook that is not Ferry's.
        #[arg(long)]
        force: bool,
    },
}

/// Run the parsed command; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    crate::clock::check()?;
    let cfg = ClientConfig::load(&cli.config).map_err(|e| exit::UsageError(format!("{e:#}")))?;
    match cli.command {
        Command::Init { host_key } => {
            let r = crate::init::init(&cfg, host_key.as_deref())?;
            if cli.json {
                out::json(&r)?;
            } else {
                crate::init::print(&r)?;
            }
            Ok(exit::OK)
        }
        Command::Request { module, arg, node, send } => {
            let id = crate::request::request(&cfg, &module, &arg, node.as_deref())?;
            print_id(cli.json, &id)?;
            if send { send_now(&cfg, node.as_deref(), cli.json) } else { Ok(exit::OK) }
        }
        Command::Backup { source, node, send } => {
            let id = crate::request::backup(&cfg, &source, node.as_deref())?;
            print_id(cli.json, &id)?;
            if send { send_now(&cfg, node.as_deref(), cli.json) } else { Ok(exit::OK) }
        }
        Command::BackupAll { send } => {
            let ids = crate::request::backup_all(&cfg)?;
            if cli.json {
                out::json_line(&ids)?;
            } else {
                for (s, id) in &ids {
                    out::line(&format!("{s}: {id}"))?;
                }
            }
            if send { send_now(&cfg, None, cli.json) } else { Ok(exit::OK) }
        }
        Command::Send { node, force, wait } => {
            if let Some(n) = &node
                && cfg.node(n).is_none()
            {
                return exit::usage(format!("unknown node {n:?}"));
            }
            let reports = crate::send::send(&cfg, node.as_deref(), &crate::send::SendOptions { force, wait })?;
            report(&reports, cli.json)
        }
        Command::Agent => {
            crate::agent::run(&cli.config)?;
            Ok(exit::OK)
        }
        Command::Changes { source } => crate::changes::run(&cfg, &source, cli.json),
        Command::Status { agent: true } => match crate::agent::query(&cfg) {
            Some(v) if cli.json => {
                out::json(&v)?;
                Ok(exit::OK)
            }
            Some(v) => {
                out::line(&serde_json::to_string_pretty(&v)?)?;
                Ok(exit::OK)
            }
            None => {
                out::err_line(&format!("ferry: no agent answers on {}", crate::agent::socket_path(&cfg).display()));
                Ok(exit::UNDELIVERED)
            }
        },
        Command::Status { agent: false } => {
            let v = crate::status::collect(&cfg)?;
            if cli.json {
                out::json(&v)?;
            } else {
                crate::status::print(&v)?;
            }
            Ok(if v.iter().any(|n| n.health.failing_since.is_some()) { exit::UNDELIVERED } else { exit::OK })
        }
        Command::Ack { ids, all, node } => {
            let r = crate::ack::ack(&cfg, &ids, all, node.as_deref())?;
            if cli.json {
                crate::out::json(&r)?;
            } else {
                for (n, id) in &r.acknowledged {
                    crate::out::line(&format!("acknowledged {id} (node {n})"))?;
                }
                for (n, id) in &r.already {
                    crate::out::line(&format!("already acknowledged {id} (node {n})"))?;
                }
                if r.acknowledged.is_empty() && r.already.is_empty() {
                    crate::out::line("no failed requests to acknowledge")?;
                }
            }
            Ok(exit::OK)
        }
        Command::Hook(HookCommand::PostUpdate) => {
            let id = crate::hook::post_update(&cfg, &cli.config)?;
            out::err_line(&format!("ferry: backup requested ({id})"));
            Ok(exit::OK)
        }
        Command::Hook(HookCommand::Install { repo, force }) => {
            let p = crate::hook::install(&repo, &cli.config, force)?;
            out::line(&format!("installed {}", p.display()))?;
            Ok(exit::OK)
        }
        Command::Restore { source, target: None, at, node, force, all: true } => {
            let s =
                crate::restore_all::restore_all(&cfg, node.as_deref(), &PathBuf::from(source), at.as_deref(), force)?;
            if cli.json {
                out::json(&s)?;
            } else {
                for l in crate::restore_all::table(&s) {
                    out::line(&l)?;
                }
            }
            Ok(if s.missing + s.failed == 0 { exit::OK } else { exit::UNDELIVERED })
        }
        Command::Restore { all: true, .. } => {
            exit::usage("with --all, give only the directory: ferry restore --all DIR")
        }
        Command::Restore { target: None, .. } => exit::usage("say where to restore: ferry restore SOURCE TARGET"),
        Command::Restore { source, target: Some(target), at, node, force, all: false } => {
            let args = crate::restore::Args { source, target, at, node, force };
            let done = crate::restore::restore(&cfg, &args)?;
            if cli.json {
                out::json_line(&done)?
            } else {
                out::line(&done.message)?
            }
            Ok(exit::OK)
        }
        Command::Gate => {
            crate::gate::run(&cfg)?;
            Ok(exit::FAILURE)
        }
        Command::AuthorizeNode { node, key } => {
            let p = crate::authorize::authorize(&cfg, &cli.config, &node, key.as_deref())?;
            out::line(&format!("node {node} may now pull from this host (key in {})", p.display()))?;
            Ok(exit::OK)
        }
    }
}

fn print_id(json: bool, id: &str) -> anyhow::Result<()> {
    if json { out::json_line(&serde_json::json!({ "id": id })) } else { Ok(out::line(id)?) }
}

fn send_now(cfg: &ClientConfig, node: Option<&str>, json: bool) -> anyhow::Result<u8> {
    let reports = crate::send::send(cfg, node, &crate::send::SendOptions { force: true, wait: true })?;
    report(&reports, json)
}

fn report(reports: &[crate::send::NodeReport], json: bool) -> anyhow::Result<u8> {
    if json {
        out::json(reports)?;
    } else {
        for r in reports {
            let mut line = format!("{}: delivered {}, pending {}", r.node, r.delivered.len(), r.pending);
            if r.busy {
                line.push_str(" (another send is delivering)");
            }
            if let Some(e) = &r.push_error {
                line.push_str(&format!("; push failed: {e}"));
            }
            if let Some(t) = &r.deferred_until {
                line.push_str(&format!("; node failing, next attempt after {t} (use --force)"));
            }
            out::line(&line)?;
            for (id, why) in &r.failed {
                out::line(&format!("  E {id}: {why}"))?;
            }
            for (id, warning) in &r.warned {
                for w in warning.lines() {
                    out::line(&format!("  W {id}: {w}"))?;
                }
            }
        }
    }
    Ok(if reports.iter().any(|r| !r.failed.is_empty()) {
        exit::FAILURE
    } else if reports.iter().any(|r| r.undelivered()) {
        exit::UNDELIVERED
    } else {
        exit::OK
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    /// Arguments without help text, as `command path: --arg`.
    fn missing_help(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
        if cmd.get_about().is_none() && cmd.get_long_about().is_none() {
            out.push(format!("{path}: (no about)"));
        }
        for a in cmd.get_arguments() {
            if a.get_help().is_none() && a.get_long_help().is_none() {
                out.push(format!("{path}: {}", a.get_id()));
            }
        }
        for sub in cmd.get_subcommands() {
            missing_help(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    /// Every subcommand and every argument, positionals included, says
    /// what it is in `--help` (issue 16, point 11).
    #[test]
    fn every_argument_has_help_text() {
        let mut cmd = super::Cli::command();
        cmd.build();
        let mut missing = Vec::new();
        missing_help(&cmd, cmd.get_name(), &mut missing);
        assert!(missing.is_empty(), "arguments without help text: {missing:#?}");
        cmd.debug_assert();
    }
}
