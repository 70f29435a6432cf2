use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = ferry_client::Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG").unwrap_or_else(|_| level.into()))
        .with_target(false)
        .init();
    match ferry_client::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("ferry: {e:#}");
            let usage = e.downcast_ref::<ferry_client::exit::UsageError>().is_some();
            ExitCode::from(if usage { ferry_client::exit::USAGE } else { ferry_client::exit::FAILURE })
        }
    }
}
