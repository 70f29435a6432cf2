//! The client side of the `git` module: nothing to prepare, only the URL the
//! node will mirror from, built from the enrolled export endpoint.

use std::path::{Component, Path, PathBuf};

use ferry_request::{GitRequest, GitScheme, GitUrl, RemotePath, Request};

use crate::{Context, GitExportScheme, PrepareError};

/// Build the `git` node request for the repository at `arg`.
pub fn prepare(arg: &str, ctx: &Context<'_>) -> Result<Request, PrepareError> {
    let path = canonical_repo(Path::new(arg))?;
    let ep = ctx.endpoint;
    let root = ep.git_roots.iter().find(|r| path.starts_with(r)).ok_or_else(|| {
        PrepareError::Invalid(format!(
            "{} is not under an exported git root ({}); add its directory to export.git_roots",
            path.display(),
            ep.git_roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", ")
        ))
    })?;
    let _ = root;
    let url_path = match (ep.git_scheme, &ep.git_daemon_base) {
        (GitExportScheme::Git, Some(base)) => {
            let rel = path.strip_prefix(base).map_err(|_| {
                PrepareError::Invalid(format!("{} is not under export.git_daemon_base", path.display()))
            })?;
            Path::new("/").join(rel)
        }
        _ => path.clone(),
    };
    let text = url_path.to_str().ok_or_else(|| PrepareError::Invalid(format!("{} is not UTF-8", path.display())))?;
    let remote: RemotePath = text.parse().map_err(|e: ferry_request::Rejection| {
        PrepareError::Invalid(format!("repository path {text:?} cannot be exported: {e}"))
    })?;
    let host = ep
        .address
        .parse()
        .map_err(|e: ferry_request::Rejection| PrepareError::Invalid(format!("export.address: {e}")))?;
    let url = match ep.git_scheme {
        GitExportScheme::Ssh => GitUrl {
            scheme: GitScheme::Ssh,
            user: Some(
                ep.user
                    .parse()
                    .map_err(|e: ferry_request::Rejection| PrepareError::Invalid(format!("export.user: {e}")))?,
            ),
            host,
            port: Some(ep.port),
            path: remote,
        },
        GitExportScheme::Git => {
            GitUrl { scheme: GitScheme::Git, user: None, host, port: Some(ep.git_port), path: remote }
        }
    };
    Ok(Request::Git(GitRequest { url }))
}

/// Absolute, normalised path of a repository, checked to look like a git
/// repository (bare, or the `.git` of a work tree).
pub fn canonical_repo(p: &Path) -> Result<PathBuf, PrepareError> {
    let abs = p.canonicalize().map_err(|e| PrepareError::Io { context: format!("{}", p.display()), source: e })?;
    if abs.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(PrepareError::Invalid(format!("{}: unexpected '..'", abs.display())));
    }
    let is_repo = |d: &Path| d.join("HEAD").is_file() && d.join("objects").is_dir() && d.join("refs").is_dir();
    if is_repo(&abs) {
        Ok(abs)
    } else if is_repo(&abs.join(".git")) {
        Ok(abs.join(".git"))
    } else {
        Err(PrepareError::Invalid(format!("{} is not a git repository", abs.display())))
    }
}
