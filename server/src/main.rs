use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = ferry_node::Cli::parse();
    // serve and hooks talk to a git client over stderr: keep logs quiet
    // there unless asked.
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG").unwrap_or_else(|_| level.into()))
        .with_target(false)
        .without_time()
        .init();
    match ferry_node::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("ferry-node: {e:#}");
            ExitCode::from(ferry_node::cli::code_of(&e))
        }
    }
}
