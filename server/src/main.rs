use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Parser;
use ferry_node::cli::Command;

fn main() -> ExitCode {
    let cli = ferry_node::Cli::parse();
    // Two accounts share the node's files through a group (see layout.rs).
    ferry_node::layout::share_with_group();
    // serve and hooks talk to a git client over stderr: keep logs quiet
    // there unless asked.
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    // Colour only for a person at this node's terminal. serve and the hooks
    // run inside a client's `git push`: their stderr is relayed to the
    // pushing client's terminal, never the node's, so never coloured there.
    let relayed = matches!(cli.command, Command::Serve { .. } | Command::Hook { .. });
    let log = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(!relayed && std::io::stderr().is_terminal())
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG").unwrap_or_else(|_| level.into()))
        .with_target(false);
    // FERRY_LOG_UPTIME=1: every line says how long after start it was
    // written (where a scan's milliseconds go; bench/spine.sh sets it).
    if std::env::var_os("FERRY_LOG_UPTIME").is_some() {
        log.with_timer(tracing_subscriber::fmt::time::uptime()).init();
    } else {
        log.without_time().init();
    }
    match ferry_node::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            ferry_node::out::err_line(&format!("ferry-node: {e:#}"));
            ExitCode::from(ferry_node::cli::code_of(&e))
        }
    }
}
