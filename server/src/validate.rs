//! Checking a parsed request against what the administrator enrolled for
//! the client whose queue it came from (SECURITY I1, I4, C1.4).
//!
//! The parser already guaranteed the *shape* of every field, and the
//! enrollment holds values of the same grammar's types (parsed once, at
//! enrollment); here each one is compared with the enrollment record as
//! typed values: the host byte for byte, the port, the user, the scheme,
//! the path prefix. The storage name is derived from validated path
//! segments only. Every failure names its reason code.

use ferry_gitosis::enroll::ClientEnrollment;
use ferry_request::{GitRequest, GitScheme, GitUrl, Reason, RemotePath, SftpRequest, SftpUrl, TreeRequest};

/// A rejection: reason code plus an explanation for the administrator.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub reason: Reason,
    pub detail: String,
}

impl Refusal {
    pub fn new(reason: Reason, detail: impl Into<String>) -> Refusal {
        Refusal { reason, detail: detail.into() }
    }
}

/// A git request the node may act on, with the storage location derived
/// from validated segments.
#[derive(Debug, Clone)]
pub struct GitTarget {
    /// Path below `data/<client>/git/`, segment by segment; the last one
    /// ends in `.git`.
    pub storage: Vec<String>,
    /// What the node pulls from: the enrolled scheme, user, address and
    /// *port* with the validated path. Never the client's URL itself: a
    /// URL without a port would otherwise go to the scheme's default port
    /// of the enrolled address, which may be another host behind NAT.
    pub url: GitUrl,
}

impl GitTarget {
    /// Whether `recorded` (a mirror's `ferry-origin`, perhaps written
    /// before URLs were rebuilt from the enrollment, without a port) names
    /// the same repository as this target.
    pub fn same_origin(&self, recorded: &str) -> bool {
        if recorded == self.url.to_url_string() {
            return true;
        }
        match GitUrl::parse(recorded) {
            Ok(old) => {
                old.scheme == self.url.scheme
                    && old.user == self.url.user
                    && old.host == self.url.host
                    && old.path == self.url.path
                    && old.port.is_none_or(|p| Some(p) == self.url.port)
            }
            Err(_) => false,
        }
    }
}

/// Validate a `git` request against the enrollment.
pub fn git(req: &GitRequest, client: &ClientEnrollment) -> Result<GitTarget, Refusal> {
    let u = &req.url;
    let enrolled = client.git_scheme;
    if u.scheme != enrolled {
        return Err(Refusal::new(
            Reason::UrlScheme,
            format!("scheme {} is not the one enrolled for this client ({})", u.scheme.as_str(), enrolled.as_str()),
        ));
    }
    if u.host != client.address {
        return Err(Refusal::new(
            Reason::ReqHostNotOwned,
            format!("host {} is not this client's enrolled address", u.host),
        ));
    }
    let port = if enrolled == GitScheme::Ssh { client.port } else { client.git_port };
    if let Some(p) = u.port
        && p != port
    {
        return Err(Refusal::new(Reason::UrlPort, format!("port {p} is not the enrolled port {port}")));
    }
    if enrolled == GitScheme::Ssh {
        match &u.user {
            Some(user) if *user == client.user => {}
            Some(user) => {
                return Err(Refusal::new(
                    Reason::UrlUser,
                    format!("user {user} is not the enrolled user {}", client.user),
                ));
            }
            None => return Err(Refusal::new(Reason::UrlUser, "ssh URL without the enrolled user")),
        }
    }
    if client.git_roots.is_empty() {
        return Err(Refusal::new(Reason::ReqPath, "no git-roots are enrolled for this client"));
    }
    let Some(rel) = client.git_roots.iter().find_map(|r| u.path.relative_to(r).filter(|rel| !rel.is_empty())) else {
        return Err(Refusal::new(Reason::ReqPath, format!("{} is not under an enrolled git root", u.path)));
    };
    let storage = storage_name(&rel)?;
    let url = GitUrl {
        scheme: enrolled,
        user: if enrolled == GitScheme::Ssh { u.user.clone() } else { None },
        host: u.host.clone(),
        port: Some(port),
        path: u.path.clone(),
    };
    Ok(GitTarget { storage, url })
}

/// Storage path for a repository from its path segments below the root:
/// every segment allow-listed (the grammar did that), no `.git` directory
/// component inside (a repository is a leaf), at most 8 deep, and the last
/// segment ending in `.git`.
pub fn storage_name(rel: &[&str]) -> Result<Vec<String>, Refusal> {
    if rel.len() > 8 {
        return Err(Refusal::new(Reason::ReqName, "repository path is more than 8 directories below its root"));
    }
    let mut out = Vec::with_capacity(rel.len());
    for (i, seg) in rel.iter().enumerate() {
        let last = i + 1 == rel.len();
        if !ferry_text::is_safe_token(seg) || seg.eq_ignore_ascii_case(".git") {
            return Err(Refusal::new(Reason::ReqName, format!("path segment {seg:?} cannot be a storage name")));
        }
        if !last && seg.to_ascii_lowercase().ends_with(".git") {
            return Err(Refusal::new(Reason::ReqName, "a repository cannot contain another repository"));
        }
        if last {
            let name = if seg.ends_with(".git") { (*seg).to_owned() } else { format!("{seg}.git") };
            if name.len() > 100 || name == ".git" {
                return Err(Refusal::new(Reason::ReqName, "repository name too long"));
            }
            out.push(name);
        } else {
            out.push((*seg).to_owned());
        }
    }
    Ok(out)
}

/// Validate an `sftp` request's endpoint against the enrollment (the
/// module checks sizes, quotas and the timestamp window).
pub fn sftp_endpoint(req: &SftpRequest, client: &ClientEnrollment) -> Result<Vec<String>, Refusal> {
    export_file(&req.url, client)
}

/// A `tree` request the node may act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeTarget {
    /// The manifest's path below the enrolled export dir, segment by
    /// segment (exactly what [`sftp_endpoint`] returns for a file).
    pub manifest: Vec<String>,
    /// The enrolled `tree-roots` entry the request's root is or lies
    /// under (the first that matches, in enrollment order).
    pub tree_root: RemotePath,
}

/// Validate a `tree` request against the enrollment: the manifest exactly
/// like an sftp request's file (host, port, user, inside the export dir),
/// and the root on that same endpoint, equal to or below an enrolled
/// `tree-roots` entry. The grammar already refused a root on another
/// endpoint; it is checked again here so a request built in code cannot
/// slip past. Without `tree-roots` every tree request is refused: which
/// directories the node may read is the administrator's decision alone.
pub fn tree(req: &TreeRequest, client: &ClientEnrollment) -> Result<TreeTarget, Refusal> {
    let manifest = export_file(&req.manifest, client)?;
    if !TreeRequest::same_endpoint(&req.manifest, &req.root) {
        return Err(Refusal::new(
            Reason::ReqTreeRoot,
            format!("root {} is not on the manifest's user, host and port", req.root),
        ));
    }
    if client.tree_roots.is_empty() {
        return Err(Refusal::new(
            Reason::ReqPath,
            format!(
                "no tree-roots are enrolled for this client, so no tree may be pulled; add the directory (here {}) to option tree-roots of [ferry client {}] in gitosis.conf",
                req.root.path, client.name
            ),
        ));
    }
    let path = &req.root.path;
    let Some(tree_root) = client.tree_roots.iter().find(|r| path.is_within(r)) else {
        let roots: Vec<&str> = client.tree_roots.iter().map(RemotePath::as_str).collect();
        return Err(Refusal::new(
            Reason::ReqPath,
            format!("tree root {path} is not an enrolled tree-roots entry or below one ({})", roots.join(" ")),
        ));
    };
    Ok(TreeTarget { manifest, tree_root: tree_root.clone() })
}

/// A file in the client's export dir on the enrolled endpoint: its path
/// segments below the export dir.
fn export_file(u: &SftpUrl, client: &ClientEnrollment) -> Result<Vec<String>, Refusal> {
    if u.host != client.address {
        return Err(Refusal::new(
            Reason::ReqHostNotOwned,
            format!("host {} is not this client's enrolled address", u.host),
        ));
    }
    if let Some(p) = u.port
        && p != client.port
    {
        return Err(Refusal::new(Reason::UrlPort, format!("port {p} is not the enrolled port {}", client.port)));
    }
    if u.user != client.user {
        return Err(Refusal::new(Reason::UrlUser, format!("user {} is not the enrolled user {}", u.user, client.user)));
    }
    match u.path.relative_to(&client.export_dir) {
        Some(rel) if !rel.is_empty() => Ok(rel.into_iter().map(str::to_owned).collect()),
        _ => Err(Refusal::new(
            Reason::ReqPath,
            format!("{} is not inside the enrolled export dir {}", u.path, client.export_dir),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enrollment(tree_roots: &[&str]) -> ClientEnrollment {
        let conf = format!(
            "[ferry client host-a]\naddress = 10.0.0.1\nport = 2222\nuser = ferry\nhostkey = {KEY}\nexport = /var/lib/ferry/export\n{}",
            if tree_roots.is_empty() { String::new() } else { format!("tree-roots = {}\n", tree_roots.join(" ")) }
        );
        let keydir =
            std::collections::BTreeMap::from([("host-a.pub".to_owned(), format!("{KEY} host-a\n").into_bytes())]);
        let conf = ferry_gitosis::conf::Config::parse(conf.as_bytes()).unwrap();
        let e = ferry_gitosis::enroll::Enrollment::build(&conf, &keydir).unwrap();
        e.clients["host-a"].clone()
    }

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEVlgYkvK80ylRT3Cgdwh1zs0BC5hiCP8Z7eQtCiV9mg";
    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn tree_req(manifest: &str, root: &str) -> TreeRequest {
        let line = format!("tree 20261122T010203Z {manifest} {root} sha256={HEX} size=10 source=home\n");
        match ferry_request::parse(line.as_bytes()) {
            Ok(ferry_request::Request::Tree(t)) => t,
            other => panic!("{line}: {other:?}"),
        }
    }

    const MANIFEST: &str = "sftp://ferry@10.0.0.1:2222/var/lib/ferry/export/home/20261122T010203Z.ftree";

    #[test]
    fn tree_requests_need_an_enrolled_tree_root() {
        let c = enrollment(&["/home", "/srv/data"]);
        for (root, want) in [("/home", "/home"), ("/home/alice/src", "/home"), ("/srv/data/www", "/srv/data")] {
            let t = tree(&tree_req(MANIFEST, &format!("sftp://ferry@10.0.0.1:2222{root}")), &c)
                .unwrap_or_else(|r| panic!("{root}: {r:?}"));
            assert_eq!(t.manifest, ["home", "20261122T010203Z.ftree"]);
            assert_eq!(t.tree_root.as_str(), want);
        }
        // (`/` itself is no path of the grammar: a whole-system tree is
        // enrolled as its top-level directories.)
        for root in ["/homes", "/srv", "/etc", "/var/lib/ferry/export/home", "/srv/database"] {
            let r = tree(&tree_req(MANIFEST, &format!("sftp://ferry@10.0.0.1:2222{root}")), &c);
            match r {
                Err(r) => {
                    assert_eq!(r.reason, Reason::ReqPath, "{root}");
                    assert!(r.detail.contains("tree-roots") && r.detail.contains(root), "{}", r.detail);
                }
                Ok(t) => panic!("{root} accepted: {t:?}"),
            }
        }
        // No tree-roots at all: refused, naming the option and the client.
        let none = enrollment(&[]);
        let r = tree(&tree_req(MANIFEST, "sftp://ferry@10.0.0.1:2222/home"), &none).unwrap_err();
        assert_eq!(r.reason, Reason::ReqPath);
        assert!(
            r.detail.contains("no tree-roots are enrolled") && r.detail.contains("[ferry client host-a]"),
            "{}",
            r.detail
        );
    }

    #[test]
    fn tree_manifests_are_checked_like_sftp_files() {
        let c = enrollment(&["/home"]);
        for (manifest, root, want) in [
            (
                "sftp://ferry@10.0.0.2:2222/var/lib/ferry/export/a.ftree",
                "sftp://ferry@10.0.0.2:2222/home",
                Reason::ReqHostNotOwned,
            ),
            ("sftp://ferry@10.0.0.1:22/var/lib/ferry/export/a.ftree", "sftp://ferry@10.0.0.1:22/home", Reason::UrlPort),
            (
                "sftp://root@10.0.0.1:2222/var/lib/ferry/export/a.ftree",
                "sftp://root@10.0.0.1:2222/home",
                Reason::UrlUser,
            ),
            ("sftp://ferry@10.0.0.1:2222/home/a.ftree", "sftp://ferry@10.0.0.1:2222/home", Reason::ReqPath),
            ("sftp://ferry@10.0.0.1:2222/var/lib/ferry/export", "sftp://ferry@10.0.0.1:2222/home", Reason::ReqPath),
        ] {
            assert_eq!(tree(&tree_req(manifest, root), &c).unwrap_err().reason, want, "{manifest}");
        }
        // A request built in code with the root on another endpoint.
        let mut t = tree_req(MANIFEST, "sftp://ferry@10.0.0.1:2222/home");
        t.root = SftpUrl::parse("sftp://ferry@10.0.0.3:2222/home").unwrap();
        assert_eq!(tree(&t, &c).unwrap_err().reason, Reason::ReqTreeRoot);
    }

    #[test]
    fn storage_names() {
        assert_eq!(storage_name(&["a.git"]).unwrap(), vec!["a.git"]);
        assert_eq!(storage_name(&["team", "a"]).unwrap(), vec!["team", "a.git"]);
        assert!(storage_name(&["x.git", "y.git"]).is_err());
        assert!(storage_name(&[".git"]).is_err());
        assert!(storage_name(&["a"; 9]).is_err());
    }

    #[test]
    fn recorded_origins_without_a_port_are_the_same_repository() {
        let t = GitTarget {
            storage: vec!["p.git".into()],
            url: GitUrl::parse("ssh://u@10.0.0.1:2222/srv/git/p.git").unwrap(),
        };
        assert!(t.same_origin("ssh://u@10.0.0.1:2222/srv/git/p.git"));
        assert!(t.same_origin("ssh://u@10.0.0.1/srv/git/p.git"));
        assert!(!t.same_origin("ssh://u@10.0.0.1:22/srv/git/p.git"));
        assert!(!t.same_origin("ssh://v@10.0.0.1:2222/srv/git/p.git"));
        assert!(!t.same_origin("ssh://u@10.0.0.1:2222/srv/git/q.git"));
        assert!(!t.same_origin("git://10.0.0.1/srv/git/p.git"));
        assert!(!t.same_origin("garbage"));
    }
}
