use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Parser;
use ferry_client::cli::{Command, HookCommand};

fn main() -> ExitCode {
    let cli = ferry_client::Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    // Colour only for a person at this host's terminal. `gate` is the
    // node's forced command (its stderr goes to the node over ssh) and the
    // post-update hook runs inside somebody's `git push`: never coloured.
    let relayed = matches!(cli.command, Command::Gate | Command::Hook(HookCommand::PostUpdate));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(!relayed && std::io::stderr().is_terminal())
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG").unwrap_or_else(|_| level.into()))
        .with_target(false)
        .init();
    match ferry_client::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            ferry_client::out::err_line(&format!("ferry: {e:#}"));
            let usage = e.downcast_ref::<ferry_client::exit::UsageError>().is_some();
            ExitCode::from(if usage { ferry_client::exit::USAGE } else { ferry_client::exit::FAILURE })
        }
    }
}
