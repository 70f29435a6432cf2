//! A minimal HTTP/1.0 client over `TcpStream`, enough to check what cgit or
//! Ferry's status server answer (no extra crates, no TLS).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// A parsed HTTP response.
#[derive(Clone, Debug)]
pub struct HttpResponse {
    /// Status code, e.g. 200.
    pub status: u16,
    /// Header fields in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked if the server used chunked encoding).
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as lossy UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `GET url` (`http://host:port/path?query`) with HTTP/1.0 and
/// `Connection: close`; 60 s read/write timeouts. Redirects are not
/// followed. Panics on connection or protocol errors (an HTTP error status
/// is a normal response).
pub fn http_get(url: &str) -> HttpResponse {
    http_get_with(url, &[])
}

/// [`http_get`] with HTTP basic authentication (`Authorization: Basic …`).
/// The request target is sent exactly as written (no `..` or `%XX`
/// normalisation, unlike a browser), so tests can send every spelling.
pub fn http_get_auth(url: &str, user: &str, password: &str) -> HttpResponse {
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    http_get_with(url, &[("Authorization", &format!("Basic {token}"))])
}

/// [`http_get`] with extra request header fields.
pub fn http_get_with(url: &str, headers: &[(&str, &str)]) -> HttpResponse {
    let rest =
        url.strip_prefix("http://").unwrap_or_else(|| panic!("http_get: only http:// URLs are supported, got {url}"));
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let target = if authority.contains(':') { authority.to_string() } else { format!("{authority}:80") };
    let addr = target
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .unwrap_or_else(|| panic!("http_get: cannot resolve {target}"));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("http_get {url}: connect: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(60))).ok();
    stream.set_write_timeout(Some(Duration::from_secs(60))).ok();
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: ferry-tests\r\nAccept: */*\r\n{extra}Connection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap_or_else(|e| panic!("http_get {url}: write: {e}"));
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap_or_else(|e| panic!("http_get {url}: read: {e}"));
    parse_response(&raw).unwrap_or_else(|e| {
        panic!("http_get {url}: {e}; got:\n{}", String::from_utf8_lossy(&raw[..raw.len().min(2000)]))
    })
}

fn parse_response(raw: &[u8]) -> Result<HttpResponse, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, i + 4))
        .or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|i| (i, i + 2)))
        .ok_or("no end of headers")?;
    let head = String::from_utf8_lossy(&raw[..split.0]);
    let mut lines = head.lines();
    let status_line = lines.next().ok_or("empty response")?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    let mut body = raw[split.1..].to_vec();
    let chunked =
        headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body)?;
    }
    Ok(HttpResponse { status, headers, body })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = data.windows(2).position(|w| w == b"\r\n").ok_or("truncated chunk size")?;
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size_hex = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16).map_err(|_| format!("bad chunk size {size_hex:?}"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}
