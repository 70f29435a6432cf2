//! External script modules: the seed's extension mechanism.
//!
//! Contract (documented for administrators in the README):
//!
//! * an executable file named `<module>` in the client's `script_dir`
//!   (module names are `[a-z][a-z0-9_-]*`, so no path can be smuggled in);
//! * called as `<script_dir>/<module> <module> <arg>` — the seed's `$1`
//!   module, `$2` path — with a cleared environment plus `FERRY_MODULE`,
//!   `FERRY_ARG`, `FERRY_REQUEST_ID`, `FERRY_CLIENT`, `FERRY_EXPORT_DIR`,
//!   `FERRY_EXPORT_ADDRESS`, `FERRY_EXPORT_USER`, `FERRY_EXPORT_PORT`;
//! * it prints one node request per line on standard output, in the request
//!   grammar (`git <url>`, `sftp <stamp> <url> sha256=… size=… source=…`,
//!   `dummy <word>`) — this replaces the seed's `add_queue`; empty lines are
//!   ignored; anything it prints on stderr is kept (capped) for the reason;
//! * exit status 0 means success; anything else fails the request with the
//!   stderr excerpt as the reason.
//!
//! Every printed line is parsed with the node's own strict parser before it
//! is queued, so a broken script fails here, visibly, on the client.

use std::path::PathBuf;

use ferry_request::Request;
use ferry_run::Cmd;

use crate::{Context, PrepareError};

/// Most request lines one script invocation may print.
pub const MAX_LINES: usize = 256;

fn valid_module_name(m: &str) -> bool {
    let b = m.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_lowercase()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

/// The executable for `module`, if the script directory holds one.
pub fn find(module: &str, ctx: &Context<'_>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if !valid_module_name(module) {
        return None;
    }
    let p = ctx.script_dir?.join(module);
    let md = std::fs::metadata(&p).ok()?;
    (md.is_file() && md.permissions().mode() & 0o111 != 0).then_some(p)
}

/// Run the script module and parse what it printed.
pub fn prepare(module: &str, arg: &str, ctx: &Context<'_>) -> Result<Vec<Request>, PrepareError> {
    let exe = find(module, ctx).ok_or_else(|| PrepareError::UnknownModule(module.to_owned()))?;
    let ep = ctx.endpoint;
    let out = Cmd::new(&exe)
        .arg(module)
        .arg(arg)
        .env("FERRY_MODULE", module)
        .env("FERRY_ARG", arg)
        .env("FERRY_REQUEST_ID", ctx.request_id)
        .env("FERRY_CLIENT", ctx.client_name)
        .env("FERRY_EXPORT_DIR", &ep.export_dir)
        .env("FERRY_EXPORT_ADDRESS", &ep.address)
        .env("FERRY_EXPORT_USER", &ep.user)
        .env("FERRY_EXPORT_PORT", ep.port.to_string())
        .timeout(ctx.timeout)
        .stdout_cap(MAX_LINES * 4200)
        .run()
        .map_err(|e| PrepareError::Failed { module: module.to_owned(), message: e.to_string() })?;
    if !out.success() {
        return Err(PrepareError::Failed {
            module: module.to_owned(),
            message: format!("{}: {}", ferry_run::describe_status(&out.status), out.stderr_excerpt()),
        });
    }
    if out.stdout_truncated {
        return Err(PrepareError::Failed { module: module.to_owned(), message: "printed too much output".into() });
    }
    let mut reqs = Vec::new();
    for (i, line) in out.stdout.split_inclusive(|b| *b == b'\n').enumerate() {
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        if reqs.len() == MAX_LINES {
            return Err(PrepareError::Failed {
                module: module.to_owned(),
                message: format!("printed more than {MAX_LINES} requests"),
            });
        }
        let mut owned = line.to_vec();
        if !owned.ends_with(b"\n") {
            owned.push(b'\n');
        }
        let req = ferry_request::parse(&owned).map_err(|rejection| PrepareError::BadLine {
            module: module.to_owned(),
            line: i + 1,
            rejection,
        })?;
        reqs.push(req);
    }
    Ok(reqs)
}
