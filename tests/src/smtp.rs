//! A real SMTP server on loopback (Debian's `python3-aiosmtpd`) that stores
//! every message it accepts, and a parser for what it stored.
//!
//! The server is `/usr/bin/python3 -m aiosmtpd -n -u -l addr:port -c
//! ferry_smtp_handler.Store <dir>/mail` with a tiny handler module written
//! into the server's directory at start. For each message the handler writes
//! `<seq>.eml` (the raw bytes as received, after dot-unstuffing) and then
//! `<seq>.json` (the envelope) atomically, so a `.json` file means a complete
//! message. Plain SMTP only, no TLS, no AUTH: Ferry must be configured for
//! plaintext on loopback.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;

use crate::env::{SYSTEM_PYTHON, free_port, next_loopback};
use crate::process::{Daemon, READY_TIMEOUT, Signal, tail};

const HANDLER: &str = r#""""Ferry test harness: store each SMTP message as <seq>.eml + <seq>.json."""
import itertools
import json
import os
import time

_seq = itertools.count()


class Store:
    def __init__(self, outdir):
        self.outdir = outdir
        os.makedirs(outdir, exist_ok=True)

    @classmethod
    def from_cli(cls, parser, *args):
        if len(args) != 1:
            parser.error("Store takes one argument: the output directory")
        return cls(args[0])

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content
        if raw is None:
            raw = envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        name = "%020d-%06d" % (time.time_ns(), next(_seq))
        for ext, write in (
            (".eml", lambda f: f.write(raw)),
            (".json", lambda f: f.write(json.dumps({
                "mail_from": envelope.mail_from,
                "rcpt_tos": list(envelope.rcpt_tos),
                "peer": str(session.peer),
            }).encode("utf-8"))),
        ):
            tmp = os.path.join(self.outdir, "." + name + ext + ".tmp")
            with open(tmp, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, os.path.join(self.outdir, name + ext))
        print("stored", name, flush=True)
        return "250 OK"
"#;

/// One message the [`Smtp`] server accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mail {
    /// `MAIL FROM` address.
    pub envelope_from: String,
    /// `RCPT TO` addresses, in order.
    pub envelope_to: Vec<String>,
    /// The message exactly as received (after SMTP dot-unstuffing).
    pub raw: Vec<u8>,
    /// The `Subject` header, RFC 2047 encoded-words decoded ("" if absent).
    pub subject: String,
    /// Header fields in order: names as sent, values unfolded (line breaks
    /// removed, the folding whitespace kept, outer whitespace trimmed) and
    /// not decoded.
    pub headers: Vec<(String, String)>,
    /// The body after the blank line, line ends normalised to `\n`. A
    /// single-part body is decoded from base64 or quoted-printable per its
    /// `Content-Transfer-Encoding`; multipart bodies are left as sent.
    pub body: String,
}

impl Mail {
    /// Parses a raw message with its envelope (public so tests can check the
    /// parser, or parse `.eml` files, without a server).
    pub fn parse(envelope_from: &str, envelope_to: Vec<String>, raw: Vec<u8>) -> Mail {
        let (head, body) = split_message(&raw);
        let headers = parse_headers(&String::from_utf8_lossy(head));
        let header = |name: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
        let subject = header("Subject").map(decode_rfc2047).unwrap_or_default();
        let cte = header("Content-Transfer-Encoding").unwrap_or("").trim().to_ascii_lowercase();
        let multipart =
            header("Content-Type").is_some_and(|ct| ct.trim().to_ascii_lowercase().starts_with("multipart/"));
        let decoded = if multipart {
            body.to_vec()
        } else {
            match cte.as_str() {
                "base64" => {
                    let compact: Vec<u8> = body.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
                    base64::engine::general_purpose::STANDARD.decode(&compact).unwrap_or_else(|_| body.to_vec())
                }
                "quoted-printable" => decode_qp(body),
                _ => body.to_vec(),
            }
        };
        let body = String::from_utf8_lossy(&decoded).replace("\r\n", "\n");
        Mail { envelope_from: envelope_from.to_string(), envelope_to, raw, subject, headers, body }
    }

    /// The first header named `name` (case-insensitive), unfolded, not
    /// decoded.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

fn split_message(raw: &[u8]) -> (&[u8], &[u8]) {
    if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
        return (&raw[..i], &raw[i + 4..]);
    }
    if let Some(i) = raw.windows(2).position(|w| w == b"\n\n") {
        return (&raw[..i], &raw[i + 2..]);
    }
    (raw, &[])
}

fn parse_headers(head: &str) -> Vec<(String, String)> {
    let mut unfolded: Vec<String> = Vec::new();
    for line in head.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with([' ', '\t'])
            && let Some(last) = unfolded.last_mut()
        {
            last.push_str(line);
            continue;
        }
        unfolded.push(line.to_string());
    }
    unfolded
        .iter()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

fn hex_val(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Quoted-printable: `=XX` escapes and `=` soft line breaks.
fn decode_qp(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i] == b'=' {
            if data[i + 1..].starts_with(b"\r\n") {
                i += 3;
                continue;
            }
            if data[i + 1..].starts_with(b"\n") {
                i += 2;
                continue;
            }
            if let (Some(h), Some(l)) =
                (data.get(i + 1).copied().and_then(hex_val), data.get(i + 2).copied().and_then(hex_val))
            {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(data[i]);
        i += 1;
    }
    out
}

/// Decodes one encoded-word's text to a string per charset.
fn decode_word(charset: &str, enc: &str, text: &str) -> Option<String> {
    let bytes = match enc.to_ascii_uppercase().as_str() {
        "B" => base64::engine::general_purpose::STANDARD
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
            .ok()?,
        "Q" => decode_qp(text.replace('_', " ").as_bytes()),
        _ => return None,
    };
    let charset = charset.split('*').next().unwrap_or("").to_ascii_lowercase();
    Some(match charset.as_str() {
        "iso-8859-1" | "latin1" | "latin-1" => bytes.iter().map(|&b| b as char).collect(),
        _ => String::from_utf8_lossy(&bytes).into_owned(),
    })
}

/// Decodes RFC 2047 encoded-words (`=?charset?B|Q?text?=`) in a header
/// value; whitespace between two adjacent encoded-words is dropped.
pub fn decode_rfc2047(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    let mut last_was_word = false;
    while let Some(start) = rest.find("=?") {
        let (before, from) = rest.split_at(start);
        match parse_encoded_word(from) {
            Some((decoded, consumed)) => {
                if !(last_was_word && before.chars().all(char::is_whitespace)) {
                    out.push_str(before);
                }
                out.push_str(&decoded);
                last_was_word = true;
                rest = &from[consumed..];
            }
            None => {
                out.push_str(before);
                out.push_str("=?");
                last_was_word = false;
                rest = &from[2..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Parses `=?charset?enc?text?=` at the start of `s`: the decoded text and
/// the number of bytes consumed.
fn parse_encoded_word(s: &str) -> Option<(String, usize)> {
    let inner = s.strip_prefix("=?")?;
    let (charset, after) = inner.split_once('?')?;
    let (enc, after) = after.split_once('?')?;
    let end = after.find("?=")?;
    let text = &after[..end];
    if charset.is_empty() || text.contains([' ', '\t']) {
        return None;
    }
    let decoded = decode_word(charset, enc, text)?;
    Some((decoded, 2 + charset.len() + 1 + enc.len() + 1 + end + 2))
}

/// A real SMTP server on `127.0.0.x:port` that stores what it receives in
/// `<dir>/mail/`. Stopped on drop; messages stay readable after
/// [`Smtp::stop`].
pub struct Smtp {
    dir: PathBuf,
    addr: Ipv4Addr,
    port: u16,
    daemon: Daemon,
}

impl Smtp {
    /// Starts the server with `dir` as its own directory (created if
    /// needed), on a fresh [`next_loopback`] address; waits until it
    /// greets with `220`.
    pub fn start(dir: &Path) -> Smtp {
        let mail = dir.join("mail");
        fs::create_dir_all(&mail).unwrap_or_else(|e| panic!("mkdir {}: {e}", mail.display()));
        fs::write(dir.join("ferry_smtp_handler.py"), HANDLER).expect("write smtp handler");
        let addr = next_loopback();
        let port = free_port(addr);
        let mut cmd = Command::new(SYSTEM_PYTHON);
        cmd.args(["-m", "aiosmtpd", "-n", "-u", "-l"])
            .arg(format!("{addr}:{port}"))
            .args(["-c", "ferry_smtp_handler.Store"])
            .arg(&mail)
            .env_remove("PYTHONHOME")
            .env("PYTHONPATH", dir)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONUNBUFFERED", "1")
            .current_dir(dir);
        let mut daemon = Daemon::spawn(
            &format!("aiosmtpd {addr}:{port}"),
            cmd,
            &dir.join("smtp.log"),
            Signal::TERM,
            Duration::from_secs(5),
        );
        let sa = SocketAddrV4::new(addr, port);
        daemon.wait_ready(READY_TIMEOUT, &format!("an SMTP 220 greeting on {sa}"), |_| greets(sa));
        Smtp { dir: dir.to_path_buf(), addr, port, daemon }
    }

    /// The listen address as text, e.g. `127.0.0.9`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The listen address.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `smtp://127.0.0.x:port` (plaintext, as lettre's `from_url` reads it).
    pub fn url(&self) -> String {
        format!("smtp://{}:{}", self.addr, self.port)
    }

    /// The directory holding the stored `.eml`/`.json` pairs.
    pub fn mail_dir(&self) -> PathBuf {
        self.dir.join("mail")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        self.daemon.output()
    }

    /// All messages received so far, in arrival order.
    pub fn messages(&self) -> Vec<Mail> {
        let mut names: Vec<String> = fs::read_dir(self.mail_dir())
            .map(|rd| {
                rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| n.ends_with(".json") && !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
            .iter()
            .map(|json_name| {
                let json_path = self.mail_dir().join(json_name);
                let eml_path = json_path.with_extension("eml");
                let env: serde_json::Value =
                    serde_json::from_slice(&fs::read(&json_path).unwrap_or_else(|e| panic!("read {json_name}: {e}")))
                        .unwrap_or_else(|e| panic!("parse {json_name}: {e}"));
                let raw = fs::read(&eml_path).unwrap_or_else(|e| panic!("read {}: {e}", eml_path.display()));
                let from = env["mail_from"].as_str().unwrap_or_default();
                let to = env["rcpt_tos"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
                    .unwrap_or_default();
                Mail::parse(from, to, raw)
            })
            .collect()
    }

    /// Polls until at least `n` messages arrived and returns all of them;
    /// panics after `timeout` with what arrived and the server log.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Mail> {
        let start = Instant::now();
        loop {
            let msgs = self.messages();
            if msgs.len() >= n {
                return msgs;
            }
            if start.elapsed() > timeout {
                let subjects: Vec<&str> = msgs.iter().map(|m| m.subject.as_str()).collect();
                panic!(
                    "expected {n} mail(s) within {timeout:?}, got {}: {subjects:?}; smtp log:\n{}",
                    msgs.len(),
                    tail(&self.log(), 20)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (later deliveries fail to connect). Idempotent.
    pub fn stop(&mut self) {
        self.daemon.stop();
    }
}

/// True if an SMTP server at `sa` sends a `220` greeting (then says QUIT).
fn greets(sa: SocketAddrV4) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&sa.into(), Duration::from_secs(2)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut line = String::new();
    let ok = BufReader::new(&s).read_line(&mut line).is_ok() && line.starts_with("220");
    let _ = s.write_all(b"QUIT\r\n");
    ok
}
