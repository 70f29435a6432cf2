//! cgit behind a real web server on loopback: nginx (private config, no
//! system site) → FastCGI → fcgiwrap (private unix socket) →
//! `/usr/lib/cgit/cgit.cgi` with a private cgitrc passed as `CGIT_CONFIG`.
//!
//! Two sites: [`CgitWeb::start`] is the harness's own open cgit at `/cgit/`
//! with a cgitrc the caller gives; [`CgitWeb::start_site`] runs a site
//! file as shipped (Ferry's `deploy/nginx-cgit.conf`, with its access
//! control), so tests check the configuration users install.
//!
//! nginx runs with `-c <dir>/nginx.conf -p <dir> -e stderr`, so it reads
//! no configuration under `/etc/nginx` (a site's `include fastcgi_params`
//! reads a copy in `<dir>`) and writes nothing under `/var`: its error log
//! goes to the guard's log file `<dir>/nginx.log`, its access log and temp
//! paths are inside the directory. cgit's cache root is pointed into the
//! directory too (`cache-root=<dir>/cgit-cache` is put before the caller's
//! cgitrc), so a cgitrc that enables caching does not write to
//! `/var/cache/cgit`. As root it needs `user root;`
//! (otherwise workers would switch to `nobody`, which cannot reach the
//! fcgiwrap socket).

use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::env::{SocketDir, free_port, is_root, next_loopback, which};
use crate::http::http_get;
use crate::process::{Daemon, READY_TIMEOUT, Signal};

/// Debian's cgit CGI program.
pub const CGIT_CGI: &str = "/usr/lib/cgit/cgit.cgi";
/// Debian's cgit static files (CSS, logo), served at `/cgit-css/`.
pub const CGIT_STATIC: &str = "/usr/share/cgit";

/// cgit served by nginx + fcgiwrap at `http://127.0.0.x:port/cgit/`, static
/// files at `/cgit-css/`. Both daemons are stopped on drop (nginx first).
pub struct CgitWeb {
    dir: PathBuf,
    addr: Ipv4Addr,
    port: u16,
    // Field order is drop order: nginx before fcgiwrap before the socket dir.
    nginx: Daemon,
    fcgiwrap: Daemon,
    _sock: SocketDir,
}

impl CgitWeb {
    /// Writes `cgitrc_text` (after a `cache-root=` line pointing into `dir`)
    /// to `<dir>/cgitrc` and starts fcgiwrap and nginx serving it at
    /// `/cgit/` without access control, with `dir` as their own directory
    /// (created if needed), on a fresh [`next_loopback`] address; waits
    /// until nginx accepts connections.
    pub fn start(dir: &Path, cgitrc_text: &str) -> CgitWeb {
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let cgitrc = dir.join("cgitrc");
        fs::write(
            &cgitrc,
            format!(
                "# cache-root added by ferry-tests (CgitWeb)\ncache-root={}\n{cgitrc_text}",
                dir.join("cgit-cache").display()
            ),
        )
        .expect("write cgitrc");
        Self::launch(dir, |addr, port, sock| open_server(&cgitrc, sock).replace("@LISTEN@", &format!("{addr}:{port}")))
    }

    /// Runs a shipped nginx `server { … }` block (Ferry's
    /// `deploy/nginx-cgit.conf`) as it is, with `@LISTEN@` and `@FCGIWRAP@`
    /// filled in here; the caller fills the rest (`@WEB_DIR@`). Its
    /// `include fastcgi_params` reads a copy of Debian's
    /// `/etc/nginx/fastcgi_params` in `dir`. cgit's cache stays off
    /// (the shipped cgitrc files set no cache size).
    pub fn start_site(dir: &Path, site: &str) -> CgitWeb {
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let params = fs::read_to_string("/etc/nginx/fastcgi_params").unwrap_or_else(|_| FASTCGI_PARAMS.to_owned());
        fs::write(dir.join("fastcgi_params"), params).expect("write fastcgi_params");
        let site = site.to_owned();
        Self::launch(dir, move |addr, port, sock| {
            site.replace("@LISTEN@", &format!("{addr}:{port}"))
                .replace("@FCGIWRAP@", &format!("unix:{}", sock.display()))
        })
    }

    /// Starts fcgiwrap and nginx in `dir` with the `server` block that
    /// `server(addr, port, fcgiwrap_socket)` returns.
    fn launch(dir: &Path, server: impl FnOnce(Ipv4Addr, u16, &Path) -> String) -> CgitWeb {
        let tmp = dir.join("tmp");
        fs::create_dir_all(&tmp).unwrap_or_else(|e| panic!("mkdir {}: {e}", tmp.display()));
        let sock = SocketDir::new(&dir.join("sock"));
        let sock_path = sock.path.join("fcgiwrap.sock");

        let mut fcgi_cmd = Command::new(which("fcgiwrap").expect("fcgiwrap"));
        fcgi_cmd.arg("-s").arg(format!("unix:{}", sock_path.display())).current_dir(dir);
        let mut fcgiwrap =
            Daemon::spawn("fcgiwrap", fcgi_cmd, &dir.join("fcgiwrap.log"), Signal::TERM, Duration::from_secs(5));
        fcgiwrap.wait_ready(READY_TIMEOUT, &format!("fcgiwrap socket {}", sock_path.display()), |_| {
            UnixStream::connect(&sock_path).is_ok()
        });

        let addr = next_loopback();
        let port = free_port(addr);
        let conf = dir.join("nginx.conf");
        fs::write(&conf, nginx_conf(dir, &server(addr, port, &sock_path))).expect("write nginx.conf");
        let mut nginx_cmd = Command::new(which("nginx").expect("nginx"));
        nginx_cmd.arg("-c").arg(&conf).arg("-p").arg(dir).args(["-e", "stderr"]).current_dir(dir);
        let mut nginx = Daemon::spawn(
            &format!("nginx {addr}:{port}"),
            nginx_cmd,
            &dir.join("nginx.log"),
            Signal::TERM,
            Duration::from_secs(5),
        );
        nginx.wait_for_tcp(addr, port, READY_TIMEOUT);
        CgitWeb { dir: dir.to_path_buf(), addr, port, nginx, fcgiwrap, _sock: sock }
    }

    /// The cgit index URL, e.g. `http://127.0.0.3:41234/cgit/`.
    pub fn url(&self) -> String {
        format!("{}/cgit/", self.base_url())
    }

    /// The server root, e.g. `http://127.0.0.3:41234` (no trailing slash).
    pub fn base_url(&self) -> String {
        format!("http://{}:{}", self.addr, self.port)
    }

    /// The listen address.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its own directory (configs, logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// nginx's error log plus fcgiwrap's output (where cgit's stderr goes),
    /// for failure messages.
    pub fn logs(&self) -> String {
        format!("--- nginx\n{}\n--- fcgiwrap\n{}", self.nginx.output(), self.fcgiwrap.output())
    }

    /// `GET path` over a plain HTTP/1.0 connection; `path` is absolute
    /// (`/cgit/`, `/cgit-css/cgit.css`) or relative to `/cgit/`
    /// (`host-a/etc/log/`). Returns the status and the body as lossy UTF-8.
    pub fn get(&self, path: &str) -> (u16, String) {
        let url =
            if path.starts_with('/') { format!("{}{path}", self.base_url()) } else { format!("{}{path}", self.url()) };
        let resp = http_get(&url);
        (resp.status, resp.text())
    }
}

/// The parameters of Debian's `/etc/nginx/fastcgi_params`, for a machine
/// without it.
const FASTCGI_PARAMS: &str = "fastcgi_param QUERY_STRING $query_string;
fastcgi_param REQUEST_METHOD $request_method;
fastcgi_param CONTENT_TYPE $content_type;
fastcgi_param CONTENT_LENGTH $content_length;
fastcgi_param SCRIPT_NAME $fastcgi_script_name;
fastcgi_param REQUEST_URI $request_uri;
fastcgi_param DOCUMENT_URI $document_uri;
fastcgi_param DOCUMENT_ROOT $document_root;
fastcgi_param SERVER_PROTOCOL $server_protocol;
fastcgi_param GATEWAY_INTERFACE CGI/1.1;
fastcgi_param SERVER_SOFTWARE nginx;
fastcgi_param REMOTE_ADDR $remote_addr;
fastcgi_param REMOTE_PORT $remote_port;
fastcgi_param REMOTE_USER $remote_user;
fastcgi_param SERVER_ADDR $server_addr;
fastcgi_param SERVER_PORT $server_port;
fastcgi_param SERVER_NAME $server_name;
fastcgi_param HTTP_HOST $host;
";

/// The harness's own open site for [`CgitWeb::start`]: cgit at `/cgit/`
/// with `cgitrc`, no access control.
fn open_server(cgitrc: &Path, sock: &Path) -> String {
    format!(
        r#"server {{
        listen @LISTEN@;
        server_name localhost;
        location = /cgit {{ return 301 /cgit/; }}
        location /cgit-css/ {{ alias {CGIT_STATIC}/; }}
        location /cgit/ {{
{params}            fastcgi_split_path_info ^(/cgit)(/.*)$;
            fastcgi_param SCRIPT_FILENAME {CGIT_CGI};
            fastcgi_param PATH_INFO $fastcgi_path_info;
            fastcgi_param CGIT_CONFIG {cgitrc};
            fastcgi_read_timeout 120s;
            fastcgi_pass unix:{sock};
        }}
    }}"#,
        params = FASTCGI_PARAMS.lines().map(|l| format!("            {l}\n")).collect::<String>(),
        cgitrc = cgitrc.display(),
        sock = sock.display(),
    )
}

fn nginx_conf(dir: &Path, server: &str) -> String {
    let d = dir.display();
    let user = if is_root() { "user root;\n" } else { "" };
    format!(
        r#"# Written by ferry-tests (CgitWeb); private to this test.
daemon off;
master_process on;
worker_processes 1;
{user}pid {d}/nginx.pid;
error_log stderr info;
events {{ worker_connections 128; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/tmp/body;
    fastcgi_temp_path {d}/tmp/fastcgi;
    proxy_temp_path {d}/tmp/proxy;
    scgi_temp_path {d}/tmp/scgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    types {{
        text/html html;
        text/css css;
        image/png png;
        image/x-icon ico;
        text/plain txt;
    }}
    default_type application/octet-stream;
{server}
}}
"#
    )
}
