//! The two URL shapes a request may carry, parsed into parts.
//!
//! A URL is never passed on as the client wrote it: [`GitUrl::to_url_string`]
//! and [`SftpUrl::to_url_string`] rebuild it from validated parts, so what
//! git or ssh receives contains nothing the grammar did not name (SECURITY.md
//! C2, STYLE.md practice 5).

use std::fmt;
use std::str::FromStr;

use crate::reason::{Reason, Rejection};
use crate::value::{Host, RemotePath, User, parse_port};

/// The transports a `git` request may use. `file://`, `http://`, local
/// paths, scp-like `host:path` and every `<helper>::` remote helper are
/// absent on purpose (GU-01..GU-03): each one lets a request reach something
/// other than the client's own server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GitScheme {
    /// `git://` (unauthenticated; only where the administrator enrolled it).
    Git,
    /// `ssh://`, the preferred transport, with a pinned host key.
    Ssh,
    /// `https://`.
    Https,
}

impl GitScheme {
    /// The scheme as written in a URL, without `://`.
    pub fn as_str(&self) -> &'static str {
        match self {
            GitScheme::Git => "git",
            GitScheme::Ssh => "ssh",
            GitScheme::Https => "https",
        }
    }

    /// Whether a `user@` part is allowed. Only ssh has a login name that is
    /// not a credential; a user in `git://` or `https://` is userinfo that
    /// could end up in a credential helper or a stored remote (GU-13).
    pub fn allows_user(&self) -> bool {
        matches!(self, GitScheme::Ssh)
    }

    /// Parses a scheme name as written before `://` (`git`, `ssh` or
    /// `https`, lower case); anything else is [`Reason::UrlScheme`]. This is
    /// the one spelling of a scheme, in a request and in an enrollment.
    pub fn parse(s: &str) -> Result<GitScheme, Rejection> {
        GitScheme::from_scheme(s).ok_or_else(|| {
            Rejection::new(Reason::UrlScheme, Some(0), "not a git transport (git, ssh or https)", s.as_bytes())
        })
    }

    fn from_scheme(s: &str) -> Option<GitScheme> {
        match s {
            "git" => Some(GitScheme::Git),
            "ssh" => Some(GitScheme::Ssh),
            "https" => Some(GitScheme::Https),
            _ => None,
        }
    }
}

impl FromStr for GitScheme {
    type Err = Rejection;
    fn from_str(s: &str) -> Result<Self, Rejection> {
        GitScheme::parse(s)
    }
}

impl fmt::Display for GitScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed `git` request URL: `scheme://[user@]host[:port]path`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GitUrl {
    /// Transport.
    pub scheme: GitScheme,
    /// Login name; only ever `Some` for [`GitScheme::Ssh`] when parsed.
    pub user: Option<User>,
    /// Server.
    pub host: Host,
    /// Explicit port, if the URL had one.
    pub port: Option<u16>,
    /// Repository path on the server.
    pub path: RemotePath,
}

/// A parsed `sftp` request URL: `sftp://user@host[:port]path`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SftpUrl {
    /// Login name (required: the node always logs in as the enrolled user).
    pub user: User,
    /// Server.
    pub host: Host,
    /// Explicit port, if the URL had one.
    pub port: Option<u16>,
    /// Absolute path of the file on the client.
    pub path: RemotePath,
}

impl GitUrl {
    /// Validates a git URL. See the crate documentation for the order in
    /// which problems are reported.
    pub fn parse(s: &str) -> Result<GitUrl, Rejection> {
        let parts = split(s, &["git", "ssh", "https"])?;
        let Some(scheme) = GitScheme::from_scheme(parts.scheme) else {
            return Err(Rejection::new(Reason::UrlScheme, Some(0), "scheme not allowed", s.as_bytes()));
        };
        let user = match parts.userinfo {
            None => None,
            Some((at, _)) if !scheme.allows_user() => {
                return Err(Rejection::new(
                    Reason::UrlUserinfo,
                    Some(at),
                    "user or credentials in a git:// or https:// URL",
                    s.as_bytes(),
                ));
            }
            Some((at, info)) => Some(parse_user(info, at, s)?),
        };
        let (host, port, path) = parts.finish(s)?;
        Ok(GitUrl { scheme, user, host, port, path })
    }

    /// Builds a URL from parts, with the same rules as parsing: a user only
    /// with ssh, a port in 1..=65535.
    pub fn new(
        scheme: GitScheme,
        user: Option<User>,
        host: Host,
        port: Option<u16>,
        path: RemotePath,
    ) -> Result<GitUrl, Rejection> {
        if user.is_some() && !scheme.allows_user() {
            return Err(Rejection::plain(Reason::UrlUserinfo, None, "user in a git:// or https:// URL"));
        }
        check_port(port)?;
        Ok(GitUrl { scheme, user, host, port, path })
    }

    /// The canonical URL, rebuilt from the parts: this, never the request's
    /// text, is what the node hands to git.
    pub fn to_url_string(&self) -> String {
        build(self.scheme.as_str(), self.user.as_ref(), &self.host, self.port, &self.path)
    }
}

impl SftpUrl {
    /// Validates an sftp URL. See the crate documentation for the order in
    /// which problems are reported.
    pub fn parse(s: &str) -> Result<SftpUrl, Rejection> {
        let parts = split(s, &["sftp"])?;
        let Some((at, info)) = parts.userinfo else {
            return Err(Rejection::new(Reason::UrlUser, Some(parts.host.0), "sftp URL without 'user@'", s.as_bytes()));
        };
        let user = parse_user(info, at, s)?;
        let (host, port, path) = parts.finish(s)?;
        Ok(SftpUrl { user, host, port, path })
    }

    /// Builds a URL from parts; the port, if any, must be in 1..=65535.
    pub fn new(user: User, host: Host, port: Option<u16>, path: RemotePath) -> Result<SftpUrl, Rejection> {
        check_port(port)?;
        Ok(SftpUrl { user, host, port, path })
    }

    /// The canonical URL, rebuilt from the parts.
    pub fn to_url_string(&self) -> String {
        build("sftp", Some(&self.user), &self.host, self.port, &self.path)
    }
}

fn check_port(port: Option<u16>) -> Result<(), Rejection> {
    if port == Some(0) {
        return Err(Rejection::plain(Reason::UrlPort, None, "port 0"));
    }
    Ok(())
}

fn build(scheme: &str, user: Option<&User>, host: &Host, port: Option<u16>, path: &RemotePath) -> String {
    let mut s = String::with_capacity(scheme.len() + host.as_str().len() + path.as_str().len() + 48);
    s.push_str(scheme);
    s.push_str("://");
    if let Some(u) = user {
        s.push_str(u.as_str());
        s.push('@');
    }
    s.push_str(host.as_str());
    if let Some(p) = port {
        s.push(':');
        s.push_str(&p.to_string());
    }
    s.push_str(path.as_str());
    s
}

macro_rules! url_traits {
    ($ty:ident) => {
        impl FromStr for $ty {
            type Err = Rejection;
            fn from_str(s: &str) -> Result<Self, Rejection> {
                $ty::parse(s)
            }
        }

        impl TryFrom<&str> for $ty {
            type Error = Rejection;
            fn try_from(s: &str) -> Result<Self, Rejection> {
                $ty::parse(s)
            }
        }

        impl fmt::Display for $ty {
            /// The canonical URL.
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_url_string())
            }
        }
    };
}

url_traits!(GitUrl);
url_traits!(SftpUrl);

/// A URL cut into its parts, each with its offset; nothing validated yet
/// except the scheme, dashes and the character set.
struct Parts<'a> {
    scheme: &'a str,
    userinfo: Option<(usize, &'a str)>,
    host: (usize, &'a str),
    port: Option<(usize, &'a str)>,
    path: (usize, &'a str),
}

impl Parts<'_> {
    /// Validates host, port and path, in that order.
    fn finish(&self, s: &str) -> Result<(Host, Option<u16>, RemotePath), Rejection> {
        let host = Host::parse(self.host.1).map_err(|e| e.shifted(self.host.0))?;
        let port = match self.port {
            Some((at, p)) => Some(parse_port(p).map_err(|e| e.shifted(at))?),
            None => None,
        };
        if self.path.1.is_empty() {
            return Err(Rejection::new(Reason::ReqPath, Some(self.path.0), "URL has no path", s.as_bytes()));
        }
        let path = RemotePath::parse(self.path.1).map_err(|e| e.shifted(self.path.0))?;
        Ok((host, port, path))
    }
}

fn parse_user(info: &str, at: usize, s: &str) -> Result<User, Rejection> {
    if let Some(i) = info.find(':') {
        return Err(Rejection::new(
            Reason::UrlUserinfo,
            Some(at + i),
            "password or token in the user part",
            s.as_bytes(),
        ));
    }
    User::parse(info).map_err(|e| e.shifted(at))
}

/// Whether a byte may never appear anywhere in a URL: percent-escapes (the
/// node never decodes, GU-15), query and fragment, backslash (a path
/// separator elsewhere), space, controls and anything non-ASCII.
fn forbidden_in_url(b: u8) -> bool {
    matches!(b, b'%' | b'?' | b'#' | b'\\' | b' ') || !(0x20..0x7f).contains(&b)
}

/// Splits a URL and applies the checks shared by every scheme, in this order:
/// leading `-` → scheme allow-list → `-` at the start of user, host or a
/// path segment → forbidden characters.
fn split<'a>(s: &'a str, allowed: &[&str]) -> Result<Parts<'a>, Rejection> {
    let err = |reason: Reason, offset: usize, msg: &str| Rejection::new(reason, Some(offset), msg, s.as_bytes());
    if s.starts_with('-') {
        return Err(err(Reason::UrlDash, 0, "URL starts with '-'"));
    }
    let Some(sep) = s.find("://") else {
        return Err(err(
            Reason::UrlScheme,
            0,
            "not a URL with an allowed scheme (local paths, scp-like host:path and remote helpers are refused)",
        ));
    };
    let scheme = s.get(..sep).unwrap_or_default();
    if !allowed.contains(&scheme) {
        return Err(err(Reason::UrlScheme, 0, "scheme not allowed"));
    }
    let auth_start = sep + 3;
    let rest = s.get(auth_start..).unwrap_or_default();
    let (authority, path_start) = match rest.find('/') {
        Some(i) => (rest.get(..i).unwrap_or_default(), auth_start + i),
        None => (rest, s.len()),
    };
    let path = s.get(path_start..).unwrap_or_default();

    let (userinfo, host_start) = match authority.rfind('@') {
        Some(i) => (Some((auth_start, authority.get(..i).unwrap_or_default())), auth_start + i + 1),
        None => (None, auth_start),
    };
    let hostport = s.get(host_start..auth_start + authority.len()).unwrap_or_default();
    let (host, port) = match hostport.find(':') {
        Some(i) => (
            hostport.get(..i).unwrap_or_default(),
            Some((host_start + i + 1, hostport.get(i + 1..).unwrap_or_default())),
        ),
        None => (hostport, None),
    };

    if let Some((at, u)) = userinfo
        && u.starts_with('-')
    {
        return Err(err(Reason::UrlDash, at, "user starts with '-'"));
    }
    if host.starts_with('-') {
        return Err(err(Reason::UrlDash, host_start, "host starts with '-'"));
    }
    let mut seg_start = path_start + 1;
    for seg in path.get(1..).unwrap_or_default().split('/') {
        if seg.starts_with('-') {
            return Err(err(Reason::UrlDash, seg_start, "path segment starts with '-'"));
        }
        seg_start += seg.len() + 1;
    }

    if let Some(i) = s.bytes().position(forbidden_in_url) {
        return Err(err(
            Reason::UrlCharset,
            i,
            "'%', '?', '#', backslash, space, control or non-ASCII character in URL",
        ));
    }

    Ok(Parts { scheme, userinfo, host: (host_start, host), port, path: (path_start, path) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git_reason(s: &str) -> Reason {
        match GitUrl::parse(s) {
            Ok(u) => panic!("accepted {s:?} as {u:?}"),
            Err(e) => e.reason,
        }
    }

    fn sftp_reason(s: &str) -> Reason {
        match SftpUrl::parse(s) {
            Ok(u) => panic!("accepted {s:?} as {u:?}"),
            Err(e) => e.reason,
        }
    }

    #[test]
    fn valid_git_urls_round_trip() {
        for s in [
            "git://172.16.0.60/project.git",
            "git://client.example/repo.git",
            "ssh://git@client.example:2222/srv/git/repo.git",
            "ssh://client.example/repo",
            "https://client.example/a/b/c.git",
            "https://client.example:8443/_x",
        ] {
            let u = GitUrl::parse(s).unwrap();
            assert_eq!(u.to_url_string(), s);
            assert_eq!(u.to_string(), s);
            assert_eq!(s.parse::<GitUrl>(), Ok(u));
        }
        let u = GitUrl::parse("ssh://git@client.example:2222/srv/repo.git").unwrap();
        assert_eq!(u.scheme, GitScheme::Ssh);
        assert_eq!(u.user.as_ref().map(User::as_str), Some("git"));
        assert_eq!(u.host.as_str(), "client.example");
        assert_eq!(u.port, Some(2222));
        assert_eq!(u.path.as_str(), "/srv/repo.git");
    }

    #[test]
    fn valid_sftp_urls_round_trip() {
        let s = "sftp://ferry@172.16.0.60/var/lib/ferry/export/trac/20261122T010203Z.tar.zst";
        let u = SftpUrl::parse(s).unwrap();
        assert_eq!(u.to_url_string(), s);
        assert_eq!(u.user.as_str(), "ferry");
        assert_eq!(u.path.file_name(), "20261122T010203Z.tar.zst");
        let s = "sftp://adminbackup@client.example:22/var/backup/export/a";
        assert_eq!(SftpUrl::parse(s).unwrap().to_url_string(), s);
    }

    #[test]
    fn schemes() {
        for s in [
            "ext::sh -c touch% /tmp/pwned",
            "ext::sh",
            "fd::17",
            "foo::bar",
            "testgit::x",
            "hg::https://client.example/r",
            "gcrypt::rsync://client.example/r",
            "persistent-https://client.example/r.git",
            "file:///etc",
            "/srv/backup/data/clientb/repo.git",
            "./x",
            "../clientb/repo.git",
            "~backupq/queue/clientb.git",
            "client.example:repo.git",
            "C:/x",
            "http://client.example/r.git",
            "git+ssh://client.example/r.git",
            "GIT://client.example/r.git",
            "Https://client.example/r.git",
            "sftp://ferry@client.example/r",
            "",
        ] {
            assert_eq!(git_reason(s), Reason::UrlScheme, "{s:?}");
        }
        assert_eq!(sftp_reason("ssh://ferry@client.example/r"), Reason::UrlScheme);
        assert_eq!(sftp_reason("SFTP://ferry@client.example/r"), Reason::UrlScheme);
    }

    #[test]
    fn dashes() {
        for s in [
            "--upload-pack=touch /tmp/x",
            "-u/bin/sh",
            "--config=core.sshCommand=id",
            "git://client.example/--upload-pack=x",
            "ssh://-oProxyCommand=sh%20-c%20id/x",
            "ssh://-oProxyCommand=id@client.example/r",
            "ssh://git@-oProxyCommand=id/x",
            "https://client.example/a/-b",
        ] {
            assert_eq!(git_reason(s), Reason::UrlDash, "{s:?}");
        }
        for s in
            ["sftp://-oProxyCommand=id@client.example/var/backup/export/a", "sftp://adminbackup@-oProxyCommand=id/x"]
        {
            assert_eq!(sftp_reason(s), Reason::UrlDash, "{s:?}");
        }
    }

    #[test]
    fn charset() {
        for s in [
            "https://client.example/%0ahost=evil.example/r.git",
            "https://client.example/%0d/r.git",
            "https://client.example/r\x1b.git",
            "git://client.example/r.git?x=1",
            "git://client.example/r.git#frag",
            "git://client.example/a\\..\\..\\b.git",
            "git://client.example/%2e%2e%2f%2e%2e%2fx.git",
            "git://client.example/..%2fclientb/x.git",
            "git://client.example/r\u{202e}.git",
            "git://client.example/r\n.git",
        ] {
            assert_eq!(git_reason(s), Reason::UrlCharset, "{s:?}");
        }
    }

    #[test]
    fn userinfo_host_user_port_path() {
        for (s, want) in [
            ("https://user:token@client.example/repo.git", Reason::UrlUserinfo),
            ("https://user@client.example/repo.git", Reason::UrlUserinfo),
            ("git://user@client.example/repo.git", Reason::UrlUserinfo),
            ("git://@client.example/repo.git", Reason::UrlUserinfo),
            ("ssh://user:pw@client.example/r", Reason::UrlUserinfo),
            ("ssh://@client.example/r", Reason::UrlUser),
            ("ssh://Root@client.example/r", Reason::UrlUser),
            ("ssh://a@b@client.example/r", Reason::UrlUser),
            ("git://Client.example/r", Reason::UrlHost),
            ("git://client.example./r", Reason::UrlHost),
            ("git:///r", Reason::UrlHost),
            ("git://[::1]/r", Reason::UrlHost),
            ("git://2130706433/r", Reason::UrlHost),
            ("git://client.example:/r", Reason::UrlPort),
            ("git://client.example:0/r", Reason::UrlPort),
            ("git://client.example:65536/r", Reason::UrlPort),
            ("git://client.example:-1/r", Reason::UrlPort),
            ("git://client.example:+22/r", Reason::UrlPort),
            ("git://client.example:022/r", Reason::UrlPort),
            ("git://client.example:22:22/r", Reason::UrlPort),
            ("git://client.example", Reason::ReqPath),
            ("git://client.example/", Reason::ReqPath),
            ("git://client.example/repo.git/", Reason::ReqPath),
            ("git://client.example/a//b", Reason::ReqPath),
            ("git://client.example/..", Reason::ReqPath),
            ("git://client.example/.", Reason::ReqPath),
            ("git://client.example/../../../srv/backup/data/clientb/x.git", Reason::ReqPath),
            ("git://client.example/.git", Reason::ReqName),
            ("git://client.example/a$b", Reason::ReqName),
        ] {
            assert_eq!(git_reason(s), want, "{s:?}");
        }
        // The user must be given for sftp.
        assert_eq!(sftp_reason("sftp://client.example/x"), Reason::UrlUser);
        assert_eq!(sftp_reason("sftp://a:b@client.example/x"), Reason::UrlUserinfo);
    }

    #[test]
    fn offsets_point_into_the_url() {
        let e = GitUrl::parse("git://client.example:99999/r").unwrap_err();
        assert_eq!(e.offset, Some(21));
        let e = GitUrl::parse("git://Client.example/r").unwrap_err();
        assert_eq!(e.offset, Some(6));
        let e = GitUrl::parse("git://client.example/ok/.x").unwrap_err();
        assert_eq!(e.offset, Some(24));
    }

    #[test]
    fn constructors() {
        let host = Host::parse("client.example").unwrap();
        let path = RemotePath::parse("/r.git").unwrap();
        let user = User::parse("git").unwrap();
        assert!(GitUrl::new(GitScheme::Https, Some(user.clone()), host.clone(), None, path.clone()).is_err());
        assert!(GitUrl::new(GitScheme::Git, None, host.clone(), Some(0), path.clone()).is_err());
        let u = GitUrl::new(GitScheme::Ssh, Some(user.clone()), host.clone(), Some(22), path.clone()).unwrap();
        assert_eq!(u.to_url_string(), "ssh://git@client.example:22/r.git");
        let s = SftpUrl::new(user, host, None, path).unwrap();
        assert_eq!(s.to_url_string(), "sftp://git@client.example/r.git");
    }
}
