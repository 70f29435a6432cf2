//! `ferry-node serve USER` for `ferry-restore …`: a client reads back its
//! own backups (issue 13 point 2). The decision is the pure
//! `ferry_gitosis::serve_restore::decide_restore`; this module only acts on
//! a granted request, always inside `data/<USER>`, never writing there.

use std::io::{Read, Write};

use ferry_gitosis::serve::Denied;
use ferry_gitosis::serve_restore::RestoreRequest;

use crate::catalog::Query;
use crate::config::NodeConfig;
use crate::store::ArtifactKey;

/// Act on a granted request; returns the exit code (0 done). `deny` logs
/// and reports a refusal the way every other refused command is.
pub fn serve(cfg: &NodeConfig, user: &str, req: RestoreRequest, deny: &dyn Fn(&str) -> u8) -> u8 {
    match req {
        RestoreRequest::List { source, at } => match list(cfg, user, source.as_str(), at.map(|s| s.to_string())) {
            Ok(Some(json)) => {
                // A client that hangs up ends the answer quietly.
                u8::from(ferry_text::stdout::json(&json).is_err())
            }
            Ok(None) => deny(&Denied::ReadDenied.to_string()),
            Err(e) => {
                eprintln!("ERROR:ferry.restore:{}", ferry_text::sanitize(&format!("{e:#}"), 600));
                1
            }
        },
        RestoreRequest::ListAll { at } => match list_all(cfg, user, at.map(|s| s.to_string())) {
            Ok(json) => {
                // A client that hangs up ends the answer quietly.
                u8::from(ferry_text::stdout::json(&json).is_err())
            }
            Err(e) => {
                eprintln!("ERROR:ferry.restore:{}", ferry_text::sanitize(&format!("{e:#}"), 600));
                1
            }
        },
        RestoreRequest::Get { path, offset } => match get(cfg, user, &path, offset) {
            Ok(true) => 0,
            Ok(false) => deny(&Denied::ReadDenied.to_string()),
            Err(e) => {
                eprintln!("ERROR:ferry.restore:{}", ferry_text::sanitize(&format!("{e:#}"), 600));
                1
            }
        },
        RestoreRequest::Git { repo } => {
            let mirror = cfg.client_data(user).join("git").join(format!("{repo}.git"));
            if !mirror.join("HEAD").is_file() {
                return deny(&Denied::ReadDenied.to_string());
            }
            // Read-only: upload-pack never writes to the repository. In the
            // two-account layout the scan account owns the mirror and `git`
            // serves it: declared safe on the command line (protected
            // configuration) for this one mirror, else git refuses it as
            // "dubious ownership".
            let mut safe = std::ffi::OsString::from("safe.directory=");
            safe.push(mirror.as_os_str());
            let err = ferry_run::Cmd::new(&cfg.git)
                .env("HOME", cfg.empty_dir())
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .arg("-c")
                .arg(safe)
                .args(["upload-pack", "--strict", "--"])
                .arg(&mirror)
                .exec();
            eprintln!("ERROR:gitosis.serve.main:Cannot execute git-shell. ({err})");
            1
        }
    }
}

/// The JSON description of what a restore of `source` as of `at` uses:
/// the catalog artifact, or the mirror; `None` when the user stores neither.
fn list(cfg: &NodeConfig, user: &str, source: &str, at: Option<String>) -> anyhow::Result<Option<String>> {
    Ok(describe(cfg, user, source, at.as_deref())?.map(|v| v.to_string()))
}

/// Every member of a whole-host restore of `user` ([`describe`] of each,
/// or `missing` for a declared source with nothing stored), as a JSON
/// array.
fn list_all(cfg: &NodeConfig, user: &str, at: Option<String>) -> anyhow::Result<String> {
    let mut out = Vec::new();
    for (name, what) in crate::restore::all::host_inventory(cfg, user)? {
        let v = match what {
            "git" => Some(serde_json::json!({ "kind": "git", "repo": name })),
            "source" => describe(cfg, user, &name, at.as_deref())?,
            _ => None,
        };
        let mut v = v.unwrap_or_else(|| serde_json::json!({ "kind": "missing" }));
        v["name"] = serde_json::Value::String(name);
        out.push(v);
    }
    Ok(serde_json::Value::Array(out).to_string())
}

/// What a restore of `source` as of `at` uses (see [`list`]).
fn describe(cfg: &NodeConfig, user: &str, source: &str, at: Option<&str>) -> anyhow::Result<Option<serde_json::Value>> {
    let catalog = crate::catalog::open_existing(cfg)?;
    let kept = match &catalog {
        Some(c) => {
            c.find(&Query { client: Some(user.to_owned()), source: Some(source.to_owned()), ..Query::default() })?
        }
        None => Vec::new(),
    };
    if let Some(oldest) = kept.first() {
        // The same choice as `ferry-node restore --at`.
        let chosen = match at {
            None => kept.last(),
            Some(t) => kept.iter().rev().find(|a| a.received.as_str() <= t),
        };
        let v = match chosen {
            Some(a) => serde_json::json!({
                "kind": "artifact",
                "module": a.module,
                "path": a.path,
                "size": a.size,
                "sha256": a.sha256,
                "received": a.received,
            }),
            None => serde_json::json!({ "kind": "none", "oldest": oldest.received }),
        };
        return Ok(Some(v));
    }
    let mirror = cfg.client_data(user).join("git").join(format!("{source}.git"));
    if mirror.join("HEAD").is_file() {
        return Ok(Some(serde_json::json!({ "kind": "git", "repo": source })));
    }
    Ok(None)
}

/// Stream the artifact `path` from `offset` to standard output; `false`
/// when the catalog does not hold it for `user`.
fn get(cfg: &NodeConfig, user: &str, path: &str, offset: u64) -> anyhow::Result<bool> {
    let Some(key) = ArtifactKey::parse(path) else { return Ok(false) };
    if key.client != user {
        return Ok(false);
    }
    let Some(catalog) = crate::catalog::open_existing(cfg)? else { return Ok(false) };
    let q = Query { client: Some(user.to_owned()), source: Some(key.source.clone()), ..Query::default() };
    if !catalog.find(&q)?.iter().any(|a| a.path == path) {
        return Ok(false);
    }
    let store = crate::store::open(cfg)?;
    let mut f: Box<dyn Read + Send> = match store.local_path(&key) {
        // A resumed download of a large artifact starts where it stopped.
        Some(p) => {
            use std::io::{Seek, SeekFrom};
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(p)?;
            file.seek(SeekFrom::Start(offset))?;
            Box::new(file)
        }
        None => {
            let mut f = store.open(&key)?;
            std::io::copy(&mut (&mut f).take(offset), &mut std::io::sink())?;
            f
        }
    };
    let mut out = std::io::stdout().lock();
    std::io::copy(&mut f, &mut out)?;
    out.flush()?;
    Ok(true)
}
