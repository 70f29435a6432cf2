//! Command-line interface of `ferry-node`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{DEFAULT_PATH, NodeConfig};
use crate::exit::{self, UsageError};

#[derive(Debug, Parser)]
#[command(
    name = "ferry-node",
    version,
    about = "Ferry backup node: accept requests through queue repos, pull, store, serve, restore",
    long_about = "Ferry backup node. Clients push small request files to their queue repo on this \
                  node; the node, which trusts no client, pulls the data itself over SSH it \
                  controls, verifies and stores it, and gives it back with `restore`.\n\nExit codes: \
                  0 done, 1 failure, 2 usage or configuration error (nothing changed), 3 done but \
                  problems found (failed requests, verify mismatches)."
)]
pub struct Cli {
    /// Configuration file.
    #[arg(short, long, global = true, env = "FERRY_NODE_CONFIG", default_value = DEFAULT_PATH)]
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
    /// gitosis-init: directories, gitosis-admin with the admin's key, pull key.
    Init {
        /// The administrator's public key file ("-" or absent: stdin).
        #[arg(long)]
        admin_key: Option<PathBuf>,
        /// Admin user name (default: the key's comment, as gitosis-init).
        #[arg(long)]
        name: Option<String>,
    },
    /// SSH forced command of every enrolled key (set in authorized_keys).
    Serve { user: String },
    /// Hook entry point (set in the repositories' hook scripts).
    Hook { name: String },
    /// Process the request pools (cron every 5 minutes; hooks start it too).
    Scan {
        /// Only this client.
        #[arg(long)]
        client: Option<String>,
    },
    /// What is stored, per client.
    List { client: Option<String> },
    /// Restore a stored repository or artifact.
    Restore {
        client: String,
        /// A repository (`app`, `git/app.git`) or a source name.
        what: String,
        /// Destination directory (must not exist or be empty).
        #[arg(long)]
        to: PathBuf,
        /// For git: a normal clone with a work tree instead of a bare one.
        #[arg(long)]
        checkout: bool,
    },
    /// The public key this node pulls from CLIENT with.
    PullKey { client: String },
    /// The exact ssh command the node pulls from CLIENT with (to debug a
    /// pull by hand: `GIT_SSH_COMMAND="$(ferry-node pull-ssh c)" git ls-remote …`).
    PullSsh { client: String },
    /// Show the event journal (newest last).
    Events {
        #[arg(long)]
        client: Option<String>,
        #[arg(long, default_value_t = 50)]
        last: usize,
    },
}

/// Run the parsed command; returns the exit code.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    let cfg = NodeConfig::load(&cli.config).map_err(|e| UsageError(format!("{e:#}")))?;
    let config_path = cli.config.canonicalize().unwrap_or_else(|_| cli.config.clone());
    match cli.command {
        Command::Init { admin_key, name } => {
            let key = match admin_key {
                Some(p) if p != std::path::Path::new("-") => {
                    std::fs::read_to_string(&p).map_err(|e| UsageError(format!("cannot read {}: {e}", p.display())))?
                }
                _ => {
                    let mut s = String::new();
                    std::io::Read::read_to_string(&mut std::io::Read::take(std::io::stdin(), 64 * 1024), &mut s)?;
                    s
                }
            };
            let r = crate::init::init(&cfg, &config_path, &key, name.as_deref())?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!("{}", r.summary);
                println!("admin {} may now clone {} (as gitosis-admin.git over ssh)", r.admin, r.admin_repo);
                println!("node pull key (shared mode): {}", r.node_pull_key);
            }
            Ok(exit::OK)
        }
        Command::Serve { user } => Ok(crate::serve::serve(&cfg, &config_path, &user)),
        Command::Hook { name } => {
            crate::hooks::run(&cfg, &config_path, &name)?;
            Ok(exit::OK)
        }
        Command::Scan { client } => {
            let r = crate::scan::scan(&cfg, client.as_deref())?;
            if cli.json {
                println!("{}", serde_json::to_string(&r)?);
            } else if cli.verbose > 0 {
                println!("{} clients, {} finished, {} failed in {} ms", r.clients, r.finished, r.failed, r.elapsed_ms);
            }
            Ok(if r.failed > 0 { exit::PROBLEMS } else { exit::OK })
        }
        Command::List { client } => {
            let l = crate::list::collect(&cfg, client.as_deref())?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&l)?);
            } else {
                crate::list::print(&l);
            }
            Ok(exit::OK)
        }
        Command::Restore { client, what, to, checkout } => {
            let mirror = crate::restore::find_git(&cfg, &client, &what)?;
            crate::restore::restore_git(&cfg, &mirror, &to, checkout)?;
            if cli.json {
                println!("{}", serde_json::json!({ "restored": mirror, "to": to }));
            } else {
                println!("restored {} to {}", mirror.display(), to.display());
            }
            Ok(exit::OK)
        }
        Command::PullKey { client } => {
            println!("{}", crate::pullkey::pull_key(&cfg, &client)?);
            Ok(exit::OK)
        }
        Command::PullSsh { client } => {
            let enrollment = crate::enrollment::load(&cfg)?;
            let c =
                enrollment.client(&client).ok_or_else(|| UsageError(format!("client {client:?} is not enrolled")))?;
            println!("{}", crate::jobs::ssh_command(&cfg, c));
            Ok(exit::OK)
        }
        Command::Events { client, last } => {
            let all = crate::events::read_all(&cfg.events_log());
            let sel: Vec<_> = all
                .into_iter()
                .filter(|e| client.as_deref().is_none_or(|c| e.get("client").and_then(|v| v.as_str()) == Some(c)))
                .collect();
            let start = sel.len().saturating_sub(last);
            for e in &sel[start..] {
                println!("{e}");
            }
            Ok(exit::OK)
        }
    }
}

/// Map an error to an exit code.
pub fn code_of(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<UsageError>().is_some() { exit::USAGE } else { exit::FAILURE }
}
