//! Command-line interface of `ferry-node`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{DEFAULT_PATH, NodeConfig};
use crate::exit::{self, UsageError};
use crate::out;

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

/// `restore --symlinks`: the names administrators see for
/// [`ferry_archive::SymlinkPolicy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SymlinkMode {
    /// Every link as it was, whatever it points to; never followed.
    Verbatim,
    /// Only links that resolve inside the restored tree.
    InTree,
    /// No links at all.
    Refuse,
}

impl SymlinkMode {
    fn policy(self) -> ferry_archive::SymlinkPolicy {
        match self {
            SymlinkMode::Verbatim => ferry_archive::SymlinkPolicy::Any,
            SymlinkMode::InTree => ferry_archive::SymlinkPolicy::InTree,
            SymlinkMode::Refuse => ferry_archive::SymlinkPolicy::Reject,
        }
    }
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
        /// As root: create base_dir and every directory for ACCOUNT (the one sshd and the hooks run
        /// as); a GROUP other than its primary group is the two-account layout (the scan account's
        /// group: shared directories 2770 setgid, keys/ 2750).
        #[arg(long, value_name = "ACCOUNT[:GROUP]")]
        owner: Option<String>,
    },
    /// SSH forced command of every enrolled key (set in authorized_keys).
    Serve {
        /// The enrolled user the key belongs to (written by the node into authorized_keys).
        user: String,
    },
    /// Hook entry point (set in the repositories' hook scripts).
    Hook {
        /// Which hook: pre-receive or post-update (of a queue repo or gitosis-admin).
        name: String,
    },
    /// Process the request pools (cron every 5 minutes; hooks start it too).
    Scan {
        /// Only this client.
        #[arg(long)]
        client: Option<String>,
    },
    /// What is stored, per client.
    List {
        /// Only this client.
        client: Option<String>,
        /// The datasets of gitosis.conf (`[ferry dataset NAME]`) instead:
        /// each member and its newest backup.
        #[arg(long, conflicts_with = "client")]
        datasets: bool,
    },
    /// Find stored artifacts by client, source and time.
    Find {
        /// Only this client's artifacts.
        #[arg(long)]
        client: Option<String>,
        /// Only this source's artifacts.
        #[arg(long)]
        source: Option<String>,
        /// Received at or after (2026-11-01, 2026-11-01T10:00:00Z or 20261101T100000Z).
        #[arg(long)]
        since: Option<String>,
        /// Received at or before.
        #[arg(long)]
        until: Option<String>,
        /// Only the members of this gitosis.conf dataset (`[ferry dataset
        /// NAME]`).
        #[arg(long, conflicts_with_all = ["client", "source"])]
        dataset: Option<String>,
    },
    /// Restore a stored repository or artifact, checked against its digest first.
    ///
    /// `restore CLIENT --all DIR` restores every source and mirror of
    /// CLIENT (and names each declared source with nothing stored) into
    /// DIR/<source>/ and DIR/git/<repo>.git; `restore --dataset NAME DIR`
    /// every member of a gitosis.conf dataset into DIR/<client>/<source>/.
    /// Both go on past a failing source, print a summary and exit 3 when
    /// something could not be restored.
    Restore {
        /// The client the data belongs to (with --dataset: the target DIR).
        client: String,
        /// A repository (`app`, `git/app.git`) or a source name (with
        /// --all: DIR).
        what: Option<String>,
        /// Every source and mirror of CLIENT, into DIR (the second
        /// argument or --to).
        #[arg(long, conflicts_with_all = ["dataset", "into_db", "stdout", "checkout"])]
        all: bool,
        /// Every member of this gitosis.conf dataset (`[ferry dataset
        /// NAME]`), as of one moment, into DIR (the one argument).
        #[arg(long, conflicts_with_all = ["into_db", "stdout", "checkout"])]
        dataset: Option<String>,
        /// With --all or --dataset: restore into a non-empty DIR (nothing is
        /// overwritten: each source's own directory must be absent or empty).
        #[arg(long)]
        force: bool,
        /// Destination directory (for fs: must not exist or be empty).
        #[arg(long)]
        to: Option<PathBuf>,
        /// As it was at this time (2026-11-01, 2026-11-01T10:00:00Z or
        /// 20261101T100000Z; a date means its end): for a source the newest
        /// artifact received then, for a repository its refs then.
        #[arg(long)]
        at: Option<String>,
        /// For git: a normal clone with a work tree instead of a bare one.
        #[arg(long)]
        checkout: bool,
        /// For database dumps: restore into this new database. The dump is
        /// replayed as a one-time role that owns only this database, with
        /// client-side commands refused (see the README, "Restore").
        #[arg(long)]
        into_db: Option<String>,
        /// OS account for the administrative step (create the database and
        /// the one-time role), e.g. postgres; default: the current account.
        #[arg(long)]
        db_user: Option<String>,
        /// Database server: socket directory (PostgreSQL), socket file
        /// (MariaDB) or host name, for the administrative step.
        #[arg(long)]
        db_host: Option<String>,
        /// Database server port.
        #[arg(long)]
        db_port: Option<u16>,
        /// PostgreSQL: host where the one-time role logs in with its password
        /// (default: --db-host when it is a host name, else 127.0.0.1).
        #[arg(long)]
        restore_host: Option<String>,
        /// Write the artifact to standard output (pipe sources).
        #[arg(long)]
        stdout: bool,
        /// fs: what to do with symlinks. `verbatim` (the default) restores
        /// every link as it was, whatever it points to (dangling, `..`,
        /// absolute); `in-tree` refuses links that leave the restored tree
        /// (for a tree other programs will walk following links); `refuse`
        /// refuses every link. No mode ever writes through a link.
        #[arg(long, value_enum, default_value_t = SymlinkMode::Verbatim)]
        symlinks: SymlinkMode,
        /// Accepted for old scripts and ignored: links are restored verbatim
        /// by default now (see --symlinks).
        #[arg(long, hide = true)]
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
    Verify {
        /// Only this client's artifacts.
        client: Option<String>,
        /// Record again in the catalog every stored artifact it lacks whose
        /// content still matches its digest sidecar (a catalog lost or
        /// restored from an older copy). Artifacts whose sidecar is missing
        /// or disagrees stay problems and are not recorded.
        #[arg(long)]
        rebuild: bool,
    },
    /// Retention: remove artifacts beyond the configured policy (node time).
    Purge {
        /// Remove nothing: list every artifact with what would happen to it
        /// and, for each kept one, the rules that keep it (with --json: the
        /// same as JSON).
        #[arg(long)]
        dry_run: bool,
    },
    /// git gc on every mirror, keeping all history; the report is mailed.
    Gc,
    /// Mark the mirrors gitosis.conf exports (`daemon = yes`) for git
    /// daemon and unmark the others (enrollment and scans do this too).
    GitExport,
    /// Report clients silent for longer than check.silent_after and
    /// declared sources (gitosis.conf `sources`) that are late, small or
    /// missing; mail each new problem once and its end once. Exit 0 when
    /// all is well, 1 when something is reported.
    Check {
        /// Check other nodes instead, from their published catalogs
        /// (http:// or https:// URL of a `catalog.json`; repeat for several
        /// nodes). A catalog that is stale, unreachable or unreadable is a
        /// problem too: a node that died silently is noticed here.
        #[arg(long = "from", value_name = "URL")]
        from: Vec<String>,
    },
    /// Restore drills: restore the newest backup of each source (of CLIENT,
    /// of SOURCE) into a scratch area and check it — dumps replayed into a
    /// throw-away database on the [drill] server as a one-time role and
    /// dropped, archives extracted, other artifacts re-hashed, mirrors
    /// cloned and fsck'ed. Results go to the catalog; a failure is mailed.
    /// Exit 3 when a drill failed.
    Drill {
        /// Only this client.
        client: Option<String>,
        /// Only this source (or repository name) of CLIENT.
        source: Option<String>,
    },
    /// Write the published catalog (catalog.json: every client's sources,
    /// last artifacts and verdicts) into DIR, atomically. The node also
    /// publishes after each scan into <web dir>/catalog.
    Publish {
        /// Directory to write catalog.json into (default: <web dir>/catalog).
        dir: Option<std::path::PathBuf>,
    },
    /// Acknowledge failed requests of CLIENT once dealt with: they move
    /// from E to A with their reason (A<id>.why) and a journal entry, and
    /// `list`, the daemon's /status and the failed-requests metric no longer
    /// count them. Nothing is deleted; an id that is not a failed request of
    /// CLIENT changes nothing (exit 2).
    Ack {
        /// The client whose requests failed.
        client: String,
        /// Ids of failed requests, as `ferry-node list CLIENT` shows them.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<String>,
        /// Every failed request of CLIENT.
        #[arg(long)]
        all: bool,
    },
    /// The public key this node pulls from CLIENT with.
    PullKey {
        /// An enrolled client.
        client: String,
    },
    /// The exact ssh command the node pulls from CLIENT with (to debug a
    /// pull by hand: `GIT_SSH_COMMAND="$(ferry-node pull-ssh c)" git ls-remote …`).
    PullSsh {
        /// An enrolled client.
        client: String,
    },
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
    /// The web view (cgit behind nginx): who may browse what.
    ///
    /// Administrators (users who may push gitosis-admin) see every client
    /// at /cgit/; each client enrolled with `web = yes` sees its own
    /// mirrors at /c/<client>/ (web user = the client's name). Passwords
    /// live on the node only (state dir, SHA-512-crypt hashes), never in
    /// gitosis.conf; nginx reads the files this writes on every request.
    Web {
        #[command(subcommand)]
        command: WebCommand,
    },
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
    /// Show the event journal (newest last), one line per event; with
    /// `--json`, one JSON object per line.
    Events {
        /// Only this client's events.
        #[arg(long)]
        client: Option<String>,
        /// How many of the newest events to show.
        #[arg(long, default_value_t = 50)]
        last: usize,
    },
    #[command(flatten)]
    Trees(crate::treecli::TreeCommand),
    /// The artifact store: its encryption key and its state.
    Store {
        #[command(subcommand)]
        command: crate::storecli::StoreCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum WebCommand {
    /// Set USER's web password (read from the terminal, or the first line
    /// of standard input) and rewrite the access files at once.
    ///
    /// USER is an administrator or a client's name. Only the password's
    /// SHA-512-crypt hash is stored. A client's password opens its view
    /// only while its [ferry client] section says `web = yes`.
    Passwd {
        /// The web user: an administrator's or a client's name.
        user: String,
        /// Make up a random password (24 letters and digits) and print it
        /// on standard output, once.
        #[arg(long, conflicts_with = "delete")]
        random: bool,
        /// Remove USER's password: USER can no longer log in.
        #[arg(long)]
        delete: bool,
    },
    /// Rewrite the access files from the live enrollment and the stored
    /// passwords (the gitosis-admin hook does this after every change), and
    /// show who may open which view.
    Sync,
}

/// Run the parsed command; returns the exit code.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    // Runs inside every git fetch: no configuration to load, nothing else.
    if let Command::GitSshGuard { max_refs, record, ssh } = cli.command {
        return Ok(ferry_pull::git::guard::main(&ferry_pull::git::guard::GuardArgs { max_refs, record, ssh }));
    }
    crate::clock::check()?;
    let cfg = NodeConfig::load(&cli.config).map_err(|e| UsageError(format!("{e:#}")))?;
    let config_path = cli.config.canonicalize().unwrap_or_else(|_| cli.config.clone());
    match cli.command {
        Command::Init { admin_key, name, owner } => {
            let owner =
                owner.map(|o| crate::layout::Owner::parse(&o)).transpose().map_err(|e| UsageError(format!("{e:#}")))?;
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
            let r = crate::init::init(&cfg, &config_path, &key, name.as_deref(), owner.as_ref())?;
            if cli.json {
                out::json(&r)?;
            } else {
                out::line(&r.summary)?;
                out::line(&format!(
                    "admin {} may now clone {} (as gitosis-admin.git over ssh)",
                    r.admin, r.admin_repo
                ))?;
                out::line(&format!("node pull key (shared mode): {}", r.node_pull_key))?;
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
                out::json_line(&r)?;
            } else if cli.verbose > 0 {
                out::line(&format!(
                    "{} clients, {} finished, {} failed, {} deferred in {} ms",
                    r.clients, r.finished, r.failed, r.deferred, r.elapsed_ms
                ))?;
            }
            Ok(if r.failed > 0 || r.deferred > 0 { exit::PROBLEMS } else { exit::OK })
        }
        Command::List { datasets: true, .. } => {
            let d = crate::restore::all::datasets(&cfg)?;
            if cli.json {
                out::json(&d)?;
            } else {
                for l in crate::restore::all::dataset_lines(&d) {
                    out::line(&l)?;
                }
            }
            Ok(exit::OK)
        }
        Command::List { client, .. } => {
            let mut l = crate::list::collect(&cfg, client.as_deref())?;
            crate::list::add_history(&mut l);
            if cli.json {
                out::json(&l)?;
            } else {
                crate::list::print(&l, crate::catalog::is_shared(&cfg))?;
            }
            Ok(exit::OK)
        }
        Command::Find { client, source, since, until, dataset } => {
            let members = match &dataset {
                Some(d) => Some(crate::restore::all::dataset_pairs(&cfg, d)?),
                None => None,
            };
            let q = crate::catalog::Query {
                client,
                source,
                since: since.as_deref().map(|s| crate::catalog::parse_time(s, false)).transpose()?,
                until: until.as_deref().map(|s| crate::catalog::parse_time(s, true)).transpose()?,
                all_nodes: true,
            };
            let found = match crate::catalog::open_existing(&cfg)? {
                Some(c) => c.find(&q)?,
                None => Vec::new(),
            };
            let found: Vec<_> = match &members {
                Some(m) => {
                    found.into_iter().filter(|a| m.iter().any(|(c, s)| *c == a.client && *s == a.source)).collect()
                }
                None => found,
            };
            if cli.json {
                out::json(&found)?;
            } else {
                let shared = crate::catalog::is_shared(&cfg);
                for a in &found {
                    // A shared catalog names each row's node (its file is
                    // on that node).
                    let node = if shared { format!(" node:{}", a.node) } else { String::new() };
                    out::line(&format!(
                        "{} {} {} {} {} bytes sha256:{} {}{node}",
                        a.client, a.source, a.received, a.module, a.size, a.sha256, a.path
                    ))?;
                }
            }
            Ok(exit::OK)
        }
        Command::Restore {
            client,
            what,
            all,
            dataset,
            force,
            to,
            at,
            checkout,
            into_db,
            db_user,
            db_host,
            db_port,
            restore_host,
            stdout,
            symlinks,
            allow_absolute_symlinks,
            devices,
            setuid,
            owners,
            xattrs,
            max_ratio,
        } => {
            let at = at.as_deref().map(|s| crate::catalog::parse_time(s, true)).transpose()?;
            if allow_absolute_symlinks {
                out::err_line(
                    "ferry-node: note: --allow-absolute-symlinks is ignored: symlinks are restored verbatim by default",
                );
            }
            let policy = ferry_archive::ExtractPolicy {
                symlinks: symlinks.policy(),
                devices,
                setuid,
                preserve_owner: owners,
                xattrs,
                max_ratio: (max_ratio > 0).then_some(max_ratio),
                ..ferry_archive::ExtractPolicy::default()
            };
            let into_db = into_db.map(|db| crate::restore::db::DbTarget {
                db,
                admin_os_user: db_user,
                host: db_host,
                port: db_port,
                restore_host,
            });
            if all || dataset.is_some() {
                let (dir, members) = if let Some(ds) = &dataset {
                    // `client` is the one positional argument here: DIR.
                    let dir = match (what, to) {
                        (None, None) => PathBuf::from(&client),
                        _ => return Err(UsageError("restore --dataset NAME DIR: one DIR, no --to".into()).into()),
                    };
                    let m = crate::restore::all::dataset_members(&cfg, ds, &dir)?;
                    (dir, m)
                } else {
                    let Some(dir) = what.map(PathBuf::from).or(to) else {
                        return Err(UsageError("restore CLIENT --all DIR: say where".into()).into());
                    };
                    let m = crate::restore::all::host_members(&cfg, &client, &dir)?;
                    (dir, m)
                };
                let args = crate::restore::RestoreArgs { at, policy, ..Default::default() };
                let s = crate::restore::all::restore_members(&cfg, &dir, &members, &args, force, !cli.json)?;
                if cli.json {
                    out::json(&s)?;
                } else {
                    for l in s.lines(dataset.is_some()) {
                        out::line(&l)?;
                    }
                }
                return Ok(s.code());
            }
            let Some(what) = what else {
                return Err(UsageError("say what to restore: a source or repository, --all or --dataset".into()).into());
            };
            let args = crate::restore::RestoreArgs { to, at, into_db, stdout, policy };
            let show = !cli.json && !args.stdout;
            let msg = crate::restore::restore(&cfg, &client, &what, &args, checkout, show)?;
            if cli.json {
                out::json_line(&serde_json::json!({ "restored": msg }))?;
            } else {
                out::err_line(&msg);
            }
            Ok(exit::OK)
        }
        Command::Verify { client, rebuild } => {
            let r = crate::verify::verify(&cfg, client.as_deref(), !cli.json, rebuild)?;
            if cli.json {
                out::json_line(&r)?;
            } else {
                out::line(&format!("{} artifacts and mirrors checked, {} problems", r.checked, r.problems.len()))?;
                for p in &r.recorded {
                    out::line(&format!("  recorded again: {p}"))?;
                }
                for p in &r.problems {
                    out::line(&format!("  {} {} {}: {}", p.client, p.source, p.path, p.problem))?;
                }
            }
            Ok(if r.problems.is_empty() { exit::OK } else { exit::PROBLEMS })
        }
        Command::Purge { dry_run } => {
            let r = crate::maintain::purge(&cfg, dry_run)?;
            if cli.json {
                out::json(&r)?;
            } else {
                if dry_run {
                    for i in &r.items {
                        let why: Vec<&str> = i.reasons.iter().map(|r| r.as_str()).collect();
                        out::line(&format!(
                            "{:<6} {}{}  {}",
                            if i.keep { "keep" } else { "remove" },
                            i.path,
                            if i.verified { "" } else { " (unverified)" },
                            why.join(",")
                        ))?;
                    }
                }
                // Sources without rules are only worth a line when asked
                // what would happen; a client left alone always is.
                for s in r.skipped.iter().filter(|s| dry_run || s.source.is_none()) {
                    out::line(&format!(
                        "skipped {}{}: {}",
                        s.client,
                        s.source.as_deref().map(|s| format!(" {s}")).unwrap_or_default(),
                        s.why
                    ))?;
                }
                out::line(&format!(
                    "{}{} artifacts ({} bytes), {} finished request files",
                    if dry_run { "would remove " } else { "removed " },
                    r.artifacts_removed.len(),
                    r.bytes_freed,
                    r.pool_files_removed
                ))?;
            }
            Ok(exit::OK)
        }
        Command::GitExport => {
            let r = crate::gitexport::sync(&cfg)?;
            if cli.json {
                out::json(&r)?;
            } else {
                for e in &r.exported {
                    out::line(&format!("exported {e}"))?;
                }
                out::line(&format!("{} exported, {} marked, {} unmarked", r.exported.len(), r.added, r.removed))?;
            }
            Ok(exit::OK)
        }
        Command::Gc => {
            let r = crate::maintain::gc(&cfg)?;
            if cli.json {
                out::json(&r)?;
            }
            Ok(if r.iter().any(|e| e.error.is_some()) { exit::PROBLEMS } else { exit::OK })
        }
        Command::Check { from } if !from.is_empty() => {
            let r = crate::remote::check_from(&cfg, &from)?;
            if cli.json {
                out::json(&r)?;
            } else {
                for e in &r {
                    let state = e.catalog_problem.as_deref().unwrap_or("ok");
                    out::line(&format!("{} {}", e.url, state))?;
                    for (c, s, v, d) in &e.problems {
                        out::line(&format!("  {c:<20} {s:<20} {:<8} {d}", v.to_uppercase()))?;
                    }
                }
            }
            let bad = r.iter().any(|e| e.catalog_problem.is_some() || !e.problems.is_empty());
            Ok(if bad { exit::PROBLEMS } else { exit::OK })
        }
        Command::Check { .. } => {
            let r = crate::check::check(&cfg, cfg.duration(&cfg.check.silent_after))?;
            if cli.json {
                out::json(&r)?;
            } else {
                // A late or missing member names its datasets: what else
                // a restore of that application would lack.
                let datasets = crate::enrollment::load(&cfg).map(|e| e.datasets).unwrap_or_default();
                let in_sets = |c: &str, src: &str| -> String {
                    let names: Vec<&str> = datasets
                        .iter()
                        .filter(|(_, m)| m.iter().any(|(mc, ms)| mc == c && ms == src))
                        .map(|(n, _)| n.as_str())
                        .collect();
                    if names.is_empty() { String::new() } else { format!(" (dataset {})", names.join(", ")) }
                };
                for e in &r {
                    out::line(&format!(
                        "{:<30} {} (last request {}, last pull {})",
                        e.client,
                        if e.silent { "SILENT" } else { "ok" },
                        e.last_request.as_deref().unwrap_or("-"),
                        e.last_success.as_deref().unwrap_or("-")
                    ))?;
                    for s in e.sources.iter().filter(|s| s.verdict.is_some()) {
                        let sets = match s.verdict {
                            Some(v) if v.is_problem() => in_sets(&e.client, &s.source),
                            _ => String::new(),
                        };
                        out::line(&format!(
                            "  {:<28} {:<10} {}{sets}",
                            s.source,
                            s.verdict.map(|v| v.word().to_uppercase()).unwrap_or_default(),
                            s.detail.as_deref().unwrap_or("")
                        ))?;
                    }
                }
            }
            let bad = r.iter().any(|e| e.silent || e.problems().next().is_some());
            Ok(if bad { exit::PROBLEMS } else { exit::OK })
        }
        Command::Drill { client, source } => {
            let r = crate::drill::drill(&cfg, client.as_deref(), source.as_deref())?;
            if cli.json {
                out::json(&r)?;
            } else {
                for o in &r {
                    out::line(&format!(
                        "{:<20} {:<20} {:<8} {} ms  {}",
                        o.client, o.source, o.result, o.duration_ms, o.reason
                    ))?;
                }
            }
            Ok(if r.iter().any(|o| o.result == "failed") { exit::PROBLEMS } else { exit::OK })
        }
        Command::Publish { dir } => {
            let dir = dir.unwrap_or_else(|| crate::publish::default_dir(&cfg));
            let doc = crate::publish::publish(&cfg, &dir, crate::clock::now())?;
            if cli.json {
                out::json(&doc)?;
            } else {
                out::line(&format!(
                    "published {} clients to {}",
                    doc.clients.len(),
                    dir.join(crate::catalog_doc::FILE).display()
                ))?;
            }
            Ok(exit::OK)
        }
        Command::Ack { client, ids, all } => {
            let r = crate::ack::ack(&cfg, &client, &ids, all)?;
            if cli.json {
                crate::out::json(&r)?;
            } else {
                for id in &r.acknowledged {
                    crate::out::line(&format!("acknowledged {id} ({client})"))?;
                }
                for id in &r.already {
                    crate::out::line(&format!("already acknowledged {id} ({client})"))?;
                }
                if r.acknowledged.is_empty() && r.already.is_empty() {
                    crate::out::line(&format!("no failed requests of {client} to acknowledge"))?;
                }
            }
            Ok(exit::OK)
        }
        Command::PullKey { client } => {
            out::line(&crate::pullkey::pull_key(&cfg, &client)?)?;
            Ok(exit::OK)
        }
        Command::PullSsh { client } => {
            let enrollment = crate::enrollment::load(&cfg)?;
            let c =
                enrollment.client(&client).ok_or_else(|| UsageError(format!("client {client:?} is not enrolled")))?;
            out::line(&crate::jobs::ssh_command(&cfg, c))?;
            Ok(exit::OK)
        }
        Command::Daemon => crate::daemon::run(cfg, &config_path),
        Command::Web { command } => web(&cfg, command, cli.json),
        Command::Trees(command) => crate::treecli::run(&cfg, command, cli.json),
        Command::Store { command } => crate::storecli::run(&cfg, command, cli.json),
        Command::GitSshGuard { .. } => unreachable!("run before the configuration is loaded"),
        Command::Events { client, last } => {
            let all = crate::events::read_all(&cfg.events_log());
            let sel: Vec<_> = all
                .into_iter()
                .filter(|e| client.as_deref().is_none_or(|c| e.get("client").and_then(|v| v.as_str()) == Some(c)))
                .collect();
            let start = sel.len().saturating_sub(last);
            for e in &sel[start..] {
                if cli.json {
                    out::json_line(e)?;
                } else {
                    out::line(&crate::events::human(e))?;
                }
            }
            Ok(exit::OK)
        }
    }
}

fn web(cfg: &NodeConfig, command: WebCommand, json: bool) -> anyhow::Result<u8> {
    use crate::web::{self, Role, passwd};
    let report = match command {
        WebCommand::Sync => web::sync(cfg)?,
        WebCommand::Passwd { user, random, delete } => {
            // A password can always be removed (even of a user no longer
            // enrolled); only users with a view can get one.
            let role = if delete {
                if !ferry_gitosis::username::is_safe_username(&user) {
                    return Err(UsageError(format!("{:?} is not a user name", ferry_text::escape(&user, 100))).into());
                }
                None
            } else {
                Some(web::role(cfg, &user)?.map_err(UsageError)?)
            };
            let (secret, hash) = if delete {
                (None, None)
            } else {
                let secret = if random {
                    passwd::random_password()
                } else {
                    let p = passwd::read(&user)?;
                    passwd::check(&p).map_err(|e| UsageError(format!("{e}; nothing changed")))?;
                    p
                };
                let hash = passwd::hash(&secret)?;
                (random.then_some(secret), Some(hash))
            };
            let (removed, report) = web::set_password(cfg, &user, hash)?;
            if role == Some(Role::Client { web: false }) {
                ferry_text::stdout::err_line(&format!(
                    "note: {user} is enrolled with web = no: this password opens nothing until its \
                     [ferry client {user}] section says web = yes"
                ));
            }
            if json {
                ferry_text::stdout::json(
                    &serde_json::json!({ "user": user, "removed": removed, "password": secret, "web": report })
                        .to_string(),
                )?;
                return Ok(exit::OK);
            }
            if delete {
                ferry_text::stdout::err_line(&if removed {
                    format!("removed {user}'s web password")
                } else {
                    format!("{user} had no web password")
                });
            } else {
                let views: Vec<&str> =
                    report.clients.iter().filter(|v| v.users.contains(&user)).map(|v| v.path.as_str()).collect();
                let mut opens: Vec<&str> = if role == Some(Role::Admin) { vec!["/cgit/"] } else { Vec::new() };
                opens.extend(views);
                ferry_text::stdout::err_line(&format!(
                    "web password of {user} set; it opens {}",
                    if opens.is_empty() { "no view yet".to_owned() } else { opens.join(", ") }
                ));
            }
            if let Some(s) = secret {
                ferry_text::stdout::line(&s)?;
            }
            return Ok(exit::OK);
        }
    };
    if json {
        ferry_text::stdout::json(&serde_json::to_string_pretty(&report)?)?;
        return Ok(exit::OK);
    }
    let name = |u: &web::WebUser| if u.password { u.name.clone() } else { format!("{} (no password)", u.name) };
    ferry_text::stdout::line(&format!("web view {} ({}):", report.dir, report.generation))?;
    ferry_text::stdout::line(&format!(
        "  /cgit/ (every client): {}",
        report.admins.iter().map(name).collect::<Vec<_>>().join(", ")
    ))?;
    for v in &report.clients {
        ferry_text::stdout::line(&format!(
            "  {} ({}): {}",
            v.path,
            if v.web { "web = yes" } else { "web = no: administrators only" },
            if v.users.is_empty() { "nobody has a password".to_owned() } else { v.users.join(", ") }
        ))?;
    }
    Ok(exit::OK)
}

/// Map an error to an exit code.
pub fn code_of(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<UsageError>().is_some() { exit::USAGE } else { exit::FAILURE }
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
