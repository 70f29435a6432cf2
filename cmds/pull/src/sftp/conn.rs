//! One sftp channel: our own `ssh -s sftp` child (or the openssh crate's
//! mux), the frame guard on its stream, and how its failures are explained.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use ferry_request::Reason;
use ferry_text::escape;
use openssh_sftp_client::error::SftpErrorKind;
use openssh_sftp_client::{Error as SftpError, Sftp, SftpOptions};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::task::JoinHandle;

use super::clock::Clock;
use super::ssh::{check_endpoint, classify_ssh, error_chain, grow_pipe, ssh_args, write_mux_config};
use super::{CLOSE_WAIT, CONTROL_PERSIST_SECS, STDERR_CAP, SftpEndpoint, Transport, Tuning};
use crate::PullError;
use ferry_run::ssh::CONTROL_PATH_MAX;
/// Passes the sftp server's byte stream through while following its packet
/// framing, and fails the stream on a packet no answer of ours can need: the
/// sftp library would otherwise allocate whatever length a hostile server
/// announces (up to 4 GiB per packet), and underflows on lengths below 5.
struct FrameGuard<R> {
    inner: R,
    header: [u8; 4],
    header_len: usize,
    remaining: u64,
    max: u32,
    violation: Arc<Mutex<Option<String>>>,
}

impl<R> FrameGuard<R> {
    fn new(inner: R, max: u32, violation: Arc<Mutex<Option<String>>>) -> Self {
        FrameGuard { inner, header: [0; 4], header_len: 0, remaining: 0, max, violation }
    }

    fn scan(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            if self.remaining > 0 {
                let take = (self.remaining.min(data.len() as u64)) as usize;
                self.remaining -= take as u64;
                data = &data[take..];
                continue;
            }
            self.header[self.header_len] = data[0];
            self.header_len += 1;
            data = &data[1..];
            if self.header_len == 4 {
                self.header_len = 0;
                let len = u32::from_be_bytes(self.header);
                if !(5..=self.max).contains(&len) {
                    let msg = format!("the client's sftp server sent a packet of {len} bytes (limit {})", self.max);
                    *self.violation.lock().unwrap_or_else(|p| p.into_inner()) = Some(msg.clone());
                    return Err(io::Error::new(io::ErrorKind::InvalidData, msg));
                }
                self.remaining = u64::from(len);
            }
        }
        Ok(())
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for FrameGuard<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let this = self.get_mut();
                Poll::Ready(this.scan(&buf.filled()[before..]))
            }
            other => other,
        }
    }
}

enum Channel {
    Own { child: tokio::process::Child, stderr: JoinHandle<()> },
    Mux { session: Option<Arc<openssh::Session>>, child: Option<openssh::Child<Arc<openssh::Session>>> },
}

/// One open sftp channel plus what is needed to explain its failures.
pub(super) struct Conn {
    sftp: Option<Sftp>,
    channel: Channel,
    stderr: Arc<Mutex<Vec<u8>>>,
    violation: Arc<Mutex<Option<String>>>,
}

fn sftp_options(tuning: &Tuning) -> SftpOptions {
    let mut o = SftpOptions::new().flush_interval(tuning.flush_interval);
    if let Some(n) = std::num::NonZeroU16::new(u16::try_from(tuning.depth.max(1) + 4).unwrap_or(u16::MAX)) {
        o = o.max_pending_requests(n);
    }
    o
}

/// Largest packet we accept: a data answer to our largest read, plus its
/// header and some slack.
pub(super) fn packet_limit(chunk: u32) -> u32 {
    chunk.max(64 * 1024) + 1024
}

impl Conn {
    pub(super) async fn open(ep: &SftpEndpoint, tuning: &Tuning, chunk: u32, clock: &Clock) -> Result<Conn, PullError> {
        match tuning.transport {
            Transport::OwnChild => Self::open_own(ep, tuning, chunk, clock).await,
            Transport::OpensshMux => Self::open_mux(ep, tuning, chunk, clock).await,
        }
    }

    async fn open_own(ep: &SftpEndpoint, tuning: &Tuning, chunk: u32, clock: &Clock) -> Result<Conn, PullError> {
        let args = ssh_args(ep, tuning.multiplex)?;
        // The runner's child rules (cleared environment, own process group,
        // killed with its parent and when dropped), with async pipes.
        let mut child =
            ferry_run::Cmd::new(&ep.ssh).args(&args).die_with_parent().spawn_async().map_err(|e| match e {
                ferry_run::RunError::Spawn { source, .. } => {
                    PullError::new(Reason::FetchFailed, format!("start {}: {source}", ep.ssh.display()))
                }
                e => PullError::new(Reason::FetchFailed, e.to_string()),
            })?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        grow_pipe(&stdout, tuning.pipe_size);
        let mut err_pipe = child.stderr.take().expect("piped stderr");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&stderr);
        let drain = tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let mut v = sink.lock().unwrap_or_else(|p| p.into_inner());
                let room = STDERR_CAP.saturating_sub(v.len()).min(n);
                v.extend_from_slice(&buf[..room]);
            }
        });
        let violation = Arc::new(Mutex::new(None));
        let guarded = FrameGuard::new(stdout, packet_limit(chunk), Arc::clone(&violation));
        let mut conn = Conn { sftp: None, channel: Channel::Own { child, stderr: drain }, stderr, violation };
        match clock.within("ssh connection", Sftp::new(stdin, guarded, sftp_options(tuning))).await {
            Ok(Ok(sftp)) => {
                conn.sftp = Some(sftp);
                Ok(conn)
            }
            Ok(Err(e)) => {
                conn.shutdown(false).await;
                Err(conn.explain("ssh connection", &e))
            }
            Err(timeout) => {
                conn.shutdown(false).await;
                Err(timeout)
            }
        }
    }

    async fn open_mux(ep: &SftpEndpoint, tuning: &Tuning, chunk: u32, clock: &Clock) -> Result<Conn, PullError> {
        check_endpoint(ep)?;
        // The crate puts its socket at <dir>/.ssh-connectionXXXXXX/master.
        if ep.control_dir.as_os_str().len() + "/.ssh-connectionXXXXXX/master".len() > CONTROL_PATH_MAX {
            return Err(PullError::new(
                Reason::Internal,
                "control_dir is too long for the openssh crate's socket".into(),
            ));
        }
        let conf = write_mux_config(ep)?;
        let mut b = openssh::SessionBuilder::default();
        b.known_hosts_check(openssh::KnownHosts::Strict)
            .user_known_hosts_file(&ep.known_hosts)
            .keyfile(&ep.identity)
            .control_directory(&ep.control_dir)
            .config_file(&conf)
            .server_alive_interval(Duration::from_secs(15))
            .connect_timeout(ep.connect_timeout.max(Duration::from_secs(1)))
            .control_persist(openssh::ControlPersist::IdleFor(
                std::num::NonZeroUsize::new(CONTROL_PERSIST_SECS as usize).expect("non-zero"),
            ))
            .user(ep.user.clone())
            .port(ep.port);
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let violation = Arc::new(Mutex::new(None));
        let session = match clock.within("ssh connection", b.connect_mux(&ep.host)).await? {
            Ok(s) => Arc::new(s),
            Err(e) => {
                let text = error_chain(&e);
                return Err(PullError::new(classify_ssh(&text), format!("ssh connection: {}", escape(&text, 600))));
            }
        };
        let mut subsystem = openssh::Session::to_subsystem(Arc::clone(&session), "sftp");
        let mut conn =
            Conn { sftp: None, channel: Channel::Mux { session: Some(session), child: None }, stderr, violation };
        let spawned = clock
            .within(
                "sftp subsystem",
                subsystem
                    .stdin(openssh::Stdio::piped())
                    .stdout(openssh::Stdio::piped())
                    .stderr(openssh::Stdio::null())
                    .spawn(),
            )
            .await;
        let mut c = match spawned {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                let text = error_chain(&e);
                conn.shutdown(false).await;
                return Err(PullError::new(classify_ssh(&text), format!("sftp subsystem: {}", escape(&text, 600))));
            }
            Err(t) => {
                conn.shutdown(false).await;
                return Err(t);
            }
        };
        let stdin = c.stdin().take().expect("piped stdin");
        let stdout = c.stdout().take().expect("piped stdout");
        grow_pipe(&stdout, tuning.pipe_size);
        if let Channel::Mux { child, .. } = &mut conn.channel {
            *child = Some(c);
        }
        let guarded = FrameGuard::new(stdout, packet_limit(chunk), Arc::clone(&conn.violation));
        match clock.within("sftp init", Sftp::new(stdin, guarded, sftp_options(tuning))).await {
            Ok(Ok(sftp)) => {
                conn.sftp = Some(sftp);
                Ok(conn)
            }
            Ok(Err(e)) => {
                conn.shutdown(false).await;
                Err(conn.explain("sftp init", &e))
            }
            Err(t) => {
                conn.shutdown(false).await;
                Err(t)
            }
        }
    }

    pub(super) fn sftp(&self) -> &Sftp {
        self.sftp.as_ref().expect("sftp open")
    }

    /// Close the channel: politely after a good transfer, by killing after
    /// a failed one. Bounded either way; the master (if any) stays for
    /// `ControlPersist` and no longer.
    pub(super) async fn shutdown(&mut self, polite: bool) {
        if let Some(sftp) = self.sftp.take() {
            if polite {
                let _ = tokio::time::timeout(CLOSE_WAIT, sftp.close()).await;
            } else {
                drop(sftp);
            }
        }
        match &mut self.channel {
            Channel::Own { child, stderr } => {
                if !polite {
                    let _ = child.start_kill();
                }
                if tokio::time::timeout(CLOSE_WAIT, child.wait()).await.is_err() {
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                }
                let _ = tokio::time::timeout(Duration::from_millis(500), stderr).await;
            }
            Channel::Mux { session, child } => {
                if let Some(c) = child.take() {
                    if polite {
                        let _ = tokio::time::timeout(CLOSE_WAIT, c.wait()).await;
                    } else {
                        drop(c);
                    }
                }
                // The crate's master runs with ControlPersist; ask it to go
                // (dropping the last reference asks too, without waiting).
                if let Some(s) = session.take().and_then(|s| Arc::try_unwrap(s).ok()) {
                    let _ = tokio::time::timeout(CLOSE_WAIT, s.close()).await;
                }
            }
        }
    }

    /// Turn a failure of the sftp channel into a reason, with ssh's own
    /// words (escaped) when it said something.
    pub(super) fn explain(&self, what: &str, e: &SftpError) -> PullError {
        self.explain_at(what, e, None)
    }

    /// [`Conn::explain`], saying how far the transfer got: `progress` is
    /// (bytes received, bytes declared) once data flows. A connection cut
    /// mid-transfer says so, with the count, instead of the sftp library's
    /// "background task failed".
    pub(super) fn explain_at(&self, what: &str, e: &SftpError, progress: Option<(u64, u64)>) -> PullError {
        if let Some(v) = self.violation.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return PullError::new(Reason::FetchLimit, format!("{what}: {v}"));
        }
        if let SftpError::SftpError(kind, msg) = e {
            let reason = match kind {
                SftpErrorKind::NoSuchFile => Reason::FetchNotFound,
                _ => Reason::FetchFailed,
            };
            return PullError::new(reason, format!("{what}: {kind:?}: {}", escape(msg.get().0, 200)));
        }
        let stderr = self.stderr.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let text = String::from_utf8_lossy(&stderr);
        let text = text.trim();
        let reason = classify_ssh(text);
        // The channel ended (ssh or the server went away) rather than
        // carrying something we could not read.
        let closed = matches!(
            e,
            SftpError::BackgroundTaskFailure(_)
                | SftpError::IOError(_)
                | SftpError::AwaitableError(_)
                | SftpError::RecursiveErrors(_)
                | SftpError::RecursiveErrors3(_)
        );
        let mut msg = match (closed, progress) {
            (true, Some((got, of))) => format!("{what}: the connection was closed after {got} of {of} bytes"),
            (true, None) => format!("{what}: the connection was closed before the transfer began"),
            (false, Some((got, of))) => format!("{what}: the sftp stream broke after {got} of {of} bytes"),
            (false, None) => format!("{what}: the sftp stream broke"),
        };
        // The library's own words add nothing to "closed" but its name
        // for a cancelled task; other errors keep them.
        if !matches!(e, SftpError::BackgroundTaskFailure(_)) {
            msg.push_str(&format!(" ({})", escape(&error_chain(e), 300)));
        }
        if !text.is_empty() {
            msg.push_str(&format!("; ssh: {}", escape(text, 600)));
        }
        PullError::new(reason, msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_guard_refuses_oversized_and_tiny_packets() {
        let v = Arc::new(Mutex::new(None));
        let mut g = FrameGuard::new((), 1000, Arc::clone(&v));
        // Two good packets split anywhere.
        let mut stream = Vec::new();
        for len in [5u32, 1000] {
            stream.extend_from_slice(&len.to_be_bytes());
            stream.extend(std::iter::repeat_n(7u8, len as usize));
        }
        for piece in stream.chunks(3) {
            g.scan(piece).unwrap();
        }
        assert!(v.lock().unwrap().is_none());
        assert!(g.scan(&1001u32.to_be_bytes()).is_err());
        assert!(v.lock().unwrap().as_deref().unwrap().contains("1001"));
        let mut g = FrameGuard::new((), 1000, Arc::new(Mutex::new(None)));
        assert!(g.scan(&4u32.to_be_bytes()).is_err());
    }
}
