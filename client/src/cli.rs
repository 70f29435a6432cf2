//! Command-line interface.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{ClientConfig, DEFAULT_PATH};
use crate::exit;

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
        source: String,
        #[arg(long)]
        node: Option<String>,
        #[arg(long)]
        send: bool,
    },
    /// Queue every configured source (monthly cron in the seed).
    BackupAll {
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
    /// Show per node what is pending, since when, and how delivery goes.
    Status,
    /// Git hooks for client repositories.
    #[command(subcommand)]
    Hook(HookCommand),
    /// Forced command for a node's pull key (set by authorize-node).
    Gate,
    /// Install a node's pull key, restricted to `ferry gate`.
    AuthorizeNode {
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
        repo: PathBuf,
        #[arg(long)]
        force: bool,
    },
}

/// Run the parsed command; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    let cfg = ClientConfig::load(&cli.config).map_err(|e| exit::UsageError(format!("{e:#}")))?;
    match cli.command {
        Command::Init { host_key } => {
            let r = crate::init::init(&cfg, host_key.as_deref())?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                crate::init::print(&r);
            }
            Ok(exit::OK)
        }
        Command::Request { module, arg, node, send } => {
            let id = crate::request::request(&cfg, &module, &arg, node.as_deref())?;
            print_id(cli.json, &id);
            if send { send_now(&cfg, node.as_deref(), cli.json) } else { Ok(exit::OK) }
        }
        Command::Backup { source, node, send } => {
            let id = crate::request::backup(&cfg, &source, node.as_deref())?;
            print_id(cli.json, &id);
            if send { send_now(&cfg, node.as_deref(), cli.json) } else { Ok(exit::OK) }
        }
        Command::BackupAll { send } => {
            let ids = crate::request::backup_all(&cfg)?;
            if cli.json {
                println!("{}", serde_json::to_string(&ids)?);
            } else {
                for (s, id) in &ids {
                    println!("{s}: {id}");
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
        Command::Status => {
            let v = crate::status::collect(&cfg)?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                crate::status::print(&v);
            }
            Ok(if v.iter().any(|n| n.health.failing_since.is_some()) { exit::UNDELIVERED } else { exit::OK })
        }
        Command::Hook(HookCommand::PostUpdate) => {
            let id = crate::hook::post_update(&cfg, &cli.config)?;
            eprintln!("ferry: backup requested ({id})");
            Ok(exit::OK)
        }
        Command::Hook(HookCommand::Install { repo, force }) => {
            let p = crate::hook::install(&repo, &cli.config, force)?;
            println!("installed {}", p.display());
            Ok(exit::OK)
        }
        Command::Gate => {
            crate::gate::run(&cfg)?;
            Ok(exit::FAILURE)
        }
        Command::AuthorizeNode { node, key } => {
            let p = crate::authorize::authorize(&cfg, &cli.config, &node, key.as_deref())?;
            println!("node {node} may now pull from this host (key in {})", p.display());
            Ok(exit::OK)
        }
    }
}

fn print_id(json: bool, id: &str) {
    if json {
        println!("{}", serde_json::json!({ "id": id }));
    } else {
        println!("{id}");
    }
}

fn send_now(cfg: &ClientConfig, node: Option<&str>, json: bool) -> anyhow::Result<u8> {
    let reports = crate::send::send(cfg, node, &crate::send::SendOptions { force: true, wait: true })?;
    report(&reports, json)
}

fn report(reports: &[crate::send::NodeReport], json: bool) -> anyhow::Result<u8> {
    if json {
        println!("{}", serde_json::to_string_pretty(reports)?);
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
            println!("{line}");
            for (id, why) in &r.failed {
                println!("  E {id}: {why}");
            }
            for (id, warning) in &r.warned {
                for line in warning.lines() {
                    println!("  W {id}: {line}");
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
