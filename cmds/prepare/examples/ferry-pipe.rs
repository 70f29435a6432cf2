//! Runs one `pipe` source through the real module and prints the request
//! line it produced — for `bench/pipe-memory.sh` and manual checks:
//!
//! ```text
//! ferry-pipe EXPORT_DIR SOURCE COMMAND [ARG]...
//! ferry-pipe /tmp/export zeros head -c 4G /dev/zero
//! ```
//!
//! The artifact lands in `EXPORT_DIR/SOURCE/<stamp>.pipe` (retention keeps
//! the default 3 per source). Exit 1 with the reason when the module fails,
//! 2 on a usage error.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use ferry_prepare::{Context, ExportEndpoint, GitExportScheme, SourceKind, SourceSpec, prepare_source};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: ferry-pipe EXPORT_DIR SOURCE COMMAND [ARG]...");
        return ExitCode::from(2);
    }
    let endpoint = ExportEndpoint {
        address: "client.example".into(),
        port: 22,
        user: "ferry".into(),
        export_dir: PathBuf::from(&args[0]),
        git_scheme: GitExportScheme::Ssh,
        git_port: 9418,
        git_roots: Vec::new(),
        git_daemon_base: None,
    };
    let ctx = Context {
        client_name: "bench",
        request_id: "bench",
        endpoint: &endpoint,
        script_dir: None,
        git: Path::new("git"),
        timeout: Duration::from_secs(24 * 3600),
    };
    let mut spec = SourceSpec::new(&args[1], SourceKind::Pipe { command: args[2..].to_vec() });
    spec.timeout = Duration::from_secs(24 * 3600);
    match prepare_source(&spec, &ctx, &|_: &Path| false) {
        Ok(prepared) => {
            for r in prepared.requests {
                print!("{}", r.to_line());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ferry-pipe: {e} ({})", e.code());
            ExitCode::from(1)
        }
    }
}
