//! Shared helpers: a test directory with an export endpoint, a context, and
//! checks every artifact request must pass.

use std::path::{Path, PathBuf};

use ferry_prepare::{Context, ExportEndpoint, GitExportScheme, SourceSpec, prepare_source};
use ferry_request::{Request, SftpRequest};
use ferry_tests::TestDir;

pub const CLIENT: &str = "host-a";
pub const REQUEST_ID: &str = "20261122T010203Z-ab12cd34";

/// A test directory whose `export/` is the client's export directory.
pub struct Env {
    pub td: TestDir,
    pub endpoint: ExportEndpoint,
}

impl Env {
    pub fn new(name: &str) -> Env {
        let td = TestDir::new(name);
        let endpoint = ExportEndpoint {
            address: "client.example".into(),
            port: 2222,
            user: "ferry".into(),
            export_dir: td.join("export"),
            git_scheme: GitExportScheme::Ssh,
            git_port: 9418,
            git_roots: vec![],
            git_daemon_base: None,
        };
        Env { td, endpoint }
    }

    pub fn ctx(&self) -> Context<'_> {
        Context {
            client_name: CLIENT,
            request_id: REQUEST_ID,
            endpoint: &self.endpoint,
            script_dir: None,
            git: Path::new("git"),
            timeout: std::time::Duration::from_secs(1),
        }
    }

    pub fn source_dir(&self, name: &str) -> PathBuf {
        self.endpoint.export_dir.join(name)
    }

    /// Runs the source with a guard that protects nothing.
    pub fn prepare(&self, spec: &SourceSpec) -> Result<SftpRequest, ferry_prepare::PrepareError> {
        let p = prepare_source(spec, &self.ctx(), &|_: &Path| false)?;
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        Ok(self.check(spec, p.requests))
    }

    /// The one sftp request, checked against the file it names.
    pub fn check(&self, spec: &SourceSpec, reqs: Vec<Request>) -> SftpRequest {
        assert_eq!(reqs.len(), 1, "{reqs:?}");
        let line = reqs[0].to_line();
        // The node's own strict parser accepts the line and reads it back the same.
        assert_eq!(ferry_request::parse(line.as_bytes()).unwrap(), reqs[0], "{line}");
        let Request::Sftp(r) = reqs.into_iter().next().unwrap() else { panic!("not sftp: {line}") };
        assert_eq!(r.source.as_str(), spec.name);
        assert_eq!(r.url.user.as_str(), "ferry");
        assert_eq!(r.url.host.as_str(), "client.example");
        assert_eq!(r.url.port, Some(2222));
        let path = PathBuf::from(r.url.path.as_str());
        assert_eq!(path.parent().unwrap(), self.source_dir(&spec.name));
        assert_eq!(r.url.path.file_name(), format!("{}.{}", r.stamp, spec.kind.extension()));
        let md = std::fs::metadata(&path).unwrap();
        assert_eq!(md.len(), r.size, "{line}");
        assert_eq!(ferry_tests::sha256_file(&path), r.sha256.as_str(), "{line}");
        r
    }
}

/// Names in a source directory (artifacts, leftovers), sorted; the lock
/// file is not listed.
pub fn dir_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".lock")
        .collect();
    v.sort();
    v
}

pub fn argv(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// The file `r` names.
pub fn artifact(r: &SftpRequest) -> PathBuf {
    PathBuf::from(r.url.path.as_str())
}

/// Decompresses a `.sql.zst` artifact.
pub fn unzstd(path: &Path) -> Vec<u8> {
    zstd::stream::decode_all(std::fs::File::open(path).unwrap()).unwrap()
}
