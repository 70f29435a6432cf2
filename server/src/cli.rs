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
    /// Find stored artifacts by client, source and time.
    Find {
        #[arg(long)]
        client: Option<String>,
        #[arg(long)]
        source: Option<String>,
        /// Received at or after (2026-11-01, 2026-11-01T10:00:00Z or 20261101T100000Z).
        #[arg(long)]
        since: Option<String>,
        /// Received at or before.
        #[arg(long)]
        until: Option<String>,
    },
    /// Restore a stored repository or artifact, checked against its digest first.
    Restore {
        client: String,
        /// A repository (`app`, `git/app.git`) or a source name.
        what: String,
        /// Destination directory (for fs: must not exist or be empty).
        #[arg(long)]
        to: Option<PathBuf>,
        /// The newest artifact received at or before this time.
        #[arg(long)]
        at: Option<String>,
        /// For git: a normal clone with a work tree instead of a bare one.
        #[arg(long)]
        checkout: bool,
        /// For database dumps: restore into this (new) database.
        #[arg(long)]
        into_db: Option<String>,
        /// OS user to run the database tools as (e.g. postgres).
        #[arg(long)]
        db_user: Option<String>,
        /// Database host or socket directory.
        #[arg(long)]
        db_host: Option<String>,
        #[arg(long)]
        db_port: Option<u16>,
        /// Write the artifact to standard output (pipe sources).
        #[arg(long)]
        stdout: bool,
        /// fs: keep symlinks whose targets leave the tree (never followed).
        #[arg(long)]
        allow_absolute_symlinks: bool,
        /// fs: create device nodes and FIFOs (root only).
        #[arg(long)]
        devices: bool,
        /// fs: keep setuid/setgid bits.
        #[arg(long)]
        setuid: bool,
        /// fs: restore owners (root only).
        #[arg(long)]
        owners: bool,
        /// fs: restore user.* extended attributes.
        #[arg(long)]
        xattrs: bool,
        /// fs: refuse an archive that expands more than this many times its
        /// compressed size (a decompression bomb from a compromised client);
        /// 0 = no limit, for a trusted archive of large zero-filled files.
        #[arg(long, default_value_t = 200)]
        max_ratio: u64,
    },
    /// Re-hash stored artifacts against their sidecars and the catalog.
    Verify { client: Option<String> },
    /// Retention: remove artifacts beyond the configured policy (node time).
    Purge {
        #[arg(long)]
        dry_run: bool,
    },
    /// git gc on every mirror, keeping all history; the report is mailed.
    Gc,
    /// Report clients silent for longer than check.silent_after.
    Check,
    /// The public key this node pulls from CLIENT with.
    PullKey { client: String },
    /// The exact ssh command the node pulls from CLIENT with (to debug a
    /// pull by hand: `GIT_SSH_COMMAND="$(ferry-node pull-ssh c)" git ls-remote …`).
    PullSsh { client: String },
    /// Run the schedules in-process and serve status and metrics over HTTP.
    ///
    /// Runs scan, check, purge, verify and gc at the intervals of `[daemon]`
    /// in the configuration (scan at once, the others one interval after
    /// startup), each as a child process `ferry-node --config <this file>
    /// <job>`, never one job twice at a time and purge, verify and gc one
    /// after the other. The jobs take their own locks,
    /// so cron lines, timers or hook-started scans running as well are safe
    /// (use either them or the daemon; both is not needed).
    ///
    /// Signals: SIGHUP re-reads the configuration (a bad one is logged and
    /// the old one kept); SIGUSR1 runs scan and check now; SIGTERM or SIGINT
    /// stop: running jobs get `stop_grace` to finish, then are killed, and the
    /// exit code is 0.
    ///
    /// HTTP on `[daemon] listen` (default 127.0.0.1:9187, "" for none), GET
    /// or HEAD only: /healthz ("ok"), /status (JSON: jobs' last start, end,
    /// duration, exit, runs, failures; per client pending and failed
    /// requests, last request and pull, stored bytes), /metrics (Prometheus
    /// text, OpenMetrics format).
    Daemon,
    /// The `core.sshCommand` of the node's git fetches (set by the node
    /// itself): runs SSH and checks the remote's ref advertisement on its
    /// way to git.
    #[command(hide = true)]
    GitSshGuard {
        /// Most branches and tags the advertisement may hold.
        #[arg(long)]
        max_refs: Option<u64>,
        /// File for what was advertised (or why the connection was stopped).
        #[arg(long)]
        record: PathBuf,
        /// The ssh program and all its arguments.
        #[arg(last = true, required = true)]
        ssh: Vec<std::ffi::OsString>,
    },
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
    // Runs inside every git fetch: no configuration to load, nothing else.
    if let Command::GitSshGuard { max_refs, record, ssh } = cli.command {
        return Ok(ferry_pull::git::guard::main(&ferry_pull::git::guard::GuardArgs { max_refs, record, ssh }));
    }
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
        Command::Find { client, source, since, until } => {
            let q = crate::catalog::Query {
                client,
                source,
                since: since.as_deref().map(|s| crate::artifacts::parse_time(s, false)).transpose()?,
                until: until.as_deref().map(|s| crate::artifacts::parse_time(s, true)).transpose()?,
            };
            let found = match crate::catalog::Catalog::open_existing(&cfg)? {
                Some(c) => c.find(&q)?,
                None => Vec::new(),
            };
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&found)?);
            } else {
                for a in &found {
                    println!(
                        "{} {} {} {} {} bytes sha256:{} {}",
                        a.client, a.source, a.received, a.module, a.size, a.sha256, a.path
                    );
                }
            }
            Ok(exit::OK)
        }
        Command::Restore {
            client,
            what,
            to,
            at,
            checkout,
            into_db,
            db_user,
            db_host,
            db_port,
            stdout,
            allow_absolute_symlinks,
            devices,
            setuid,
            owners,
            xattrs,
            max_ratio,
        } => {
            let at = at.as_deref().map(|s| crate::artifacts::parse_time(s, true)).transpose()?;
            let artifact = match crate::catalog::Catalog::open_existing(&cfg)? {
                Some(c) => c.latest(&client, &what, at.as_deref())?,
                None => None,
            };
            let msg = match artifact {
                Some(a) => {
                    let mut policy = ferry_archive::ExtractPolicy::default();
                    if allow_absolute_symlinks {
                        policy.symlinks = ferry_archive::SymlinkPolicy::Any;
                    }
                    policy.devices = devices;
                    policy.setuid = setuid;
                    policy.preserve_owner = owners;
                    policy.xattrs = xattrs;
                    policy.max_ratio = (max_ratio > 0).then_some(max_ratio);
                    let args =
                        crate::artifacts::RestoreArgs { to, at, into_db, db_user, db_host, db_port, stdout, policy };
                    let show = !cli.json && !args.stdout;
                    crate::artifacts::restore(&cfg, &a, &args, show)?
                }
                None => {
                    let mirror = crate::restore::find_git(&cfg, &client, &what)?;
                    let to = to.ok_or_else(|| UsageError("say where to restore the repository: --to DIR".into()))?;
                    crate::restore::restore_git(&cfg, &mirror, &to, checkout)?;
                    format!("restored {} to {}", mirror.display(), to.display())
                }
            };
            if cli.json {
                println!("{}", serde_json::json!({ "restored": msg }));
            } else {
                eprintln!("{msg}");
            }
            Ok(exit::OK)
        }
        Command::Verify { client } => {
            let (n, problems) = crate::artifacts::verify(&cfg, client.as_deref(), !cli.json)?;
            if cli.json {
                println!("{}", serde_json::json!({ "checked": n, "problems": problems }));
            } else {
                println!("{n} artifacts checked, {} problems", problems.len());
                for p in &problems {
                    println!("  {} {} {}: {}", p.client, p.source, p.path, p.problem);
                }
            }
            Ok(if problems.is_empty() { exit::OK } else { exit::PROBLEMS })
        }
        Command::Purge { dry_run } => {
            let r = crate::maintain::purge(&cfg, dry_run)?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "{}{} artifacts ({} bytes), {} finished request files",
                    if dry_run { "would remove " } else { "removed " },
                    r.artifacts_removed.len(),
                    r.bytes_freed,
                    r.pool_files_removed
                );
            }
            Ok(exit::OK)
        }
        Command::Gc => {
            let r = crate::maintain::gc(&cfg)?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            }
            Ok(if r.iter().any(|e| e.error.is_some()) { exit::PROBLEMS } else { exit::OK })
        }
        Command::Check => {
            let r = crate::maintain::check(&cfg, cfg.duration(&cfg.check.silent_after))?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                for e in &r {
                    println!(
                        "{:<30} {} (last request {}, last pull {})",
                        e.client,
                        if e.silent { "SILENT" } else { "ok" },
                        e.last_request.as_deref().unwrap_or("-"),
                        e.last_success.as_deref().unwrap_or("-")
                    );
                }
            }
            Ok(if r.iter().any(|e| e.silent) { exit::PROBLEMS } else { exit::OK })
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
        Command::Daemon => crate::daemon::run(cfg, &config_path),
        Command::GitSshGuard { .. } => unreachable!("run before the configuration is loaded"),
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
