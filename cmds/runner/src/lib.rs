//! The one helper that runs every external program Ferry uses (git, ssh,
//! pg_dump, mysqldump, pipe and script modules, hooks).
//!
//! Why one helper: every rule about child processes lives here once.
//!
//! * **Cleared environment by default.** A child sees `PATH=/usr/bin:/bin`,
//!   `LANG=C` and only the variables the caller adds, so nothing from the
//!   invoking environment (a hook's `GIT_DIR`, an admin's `GIT_SSH`, sshd's
//!   `SSH_ORIGINAL_COMMAND`) leaks into git or ssh (SECURITY C3).
//! * **Arguments are a vector**, never a shell string.
//! * **Output is drained concurrently and capped**: stderr keeps its first
//!   and last few KiB (a hostile git server can send unbounded sideband
//!   text), stdout is captured up to a cap or streamed to a sink.
//! * **Deadlines kill the whole process group**, so `git` and the `ssh` it
//!   started go together (SECURITY SF-02, RE-03).
//! * **Optionally dies with its parent** (`setpriv --pdeathsig KILL`), so a
//!   killed `ferry-node scan` does not leave a fetch running into a mirror
//!   the next scan is about to use.
//!
//! * **Every way of starting a program is here**: run to completion
//!   ([`Cmd::run`]), replace this process ([`Cmd::exec`], the forced
//!   commands), start detached ([`Cmd::spawn_detached`], the hooks'
//!   background jobs) and, behind the `tokio` feature, start with async
//!   pipes ([`Cmd::spawn_async`], the sftp puller's ssh). All four share the
//!   environment rules above, so no caller repeats them by hand.
//! * **One hardened ssh option set** ([`ssh::SshOptions`]) for every ssh
//!   Ferry starts, directly or as git's `GIT_SSH_COMMAND`.
//!
//! std::process is used directly rather than duct (on the design card):
//! duct's capture buffers are unbounded and it has no process-group
//! deadline, which are exactly the two things this module must guarantee.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

mod launch;
pub mod ssh;

/// Default cap on captured stderr (head + tail), per SECURITY C11.
pub const DEFAULT_STDERR_CAP: usize = 8 * 1024;
/// Default cap on captured stdout.
pub const DEFAULT_STDOUT_CAP: usize = 4 * 1024 * 1024;
/// The PATH every child gets unless the caller sets one.
pub const SAFE_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// How long the child's pipes may stay open once its process group was
/// killed. A process outside the group can hold them: an ssh
/// `ControlPersist` master keeps the descriptors of a session it carries for
/// as long as the (possibly hostile) remote keeps that session open. After
/// this grace the run ends anyway, so a deadline is a deadline (RE-03,
/// SF-02).
pub const KILL_GRACE: Duration = Duration::from_secs(2);

/// What the child reads on standard input.
pub enum Input {
    Null,
    Bytes(Vec<u8>),
    File(File),
    /// Streamed from a reader on a thread (e.g. a decompressor feeding a
    /// restore tool), never held whole in memory.
    Reader(Box<dyn Read + Send>),
}

impl fmt::Debug for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Input::Null => "Null",
            Input::Bytes(_) => "Bytes",
            Input::File(_) => "File",
            Input::Reader(_) => "Reader",
        })
    }
}

/// A check run while the child runs; `Some(reason)` stops the child.
pub type Watch = Box<dyn FnMut() -> Option<String> + Send>;

/// A command to run. Build it, then call [`Cmd::run`], [`Cmd::run_checked`]
/// or [`Cmd::run_to`].
pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    inherit_env: bool,
    cwd: Option<PathBuf>,
    stdin: Input,
    timeout: Option<Duration>,
    stdout_cap: usize,
    stderr_cap: usize,
    die_with_parent: bool,
    watch: Option<(Duration, Watch)>,
}

impl fmt::Debug for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cmd").field("cmd", &self.display()).field("timeout", &self.timeout).finish()
    }
}

/// The result of a finished child.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stdout_truncated: bool,
    /// First and last bytes of stderr (see [`DEFAULT_STDERR_CAP`]).
    pub stderr: Vec<u8>,
    pub stderr_truncated: bool,
    pub elapsed: Duration,
    /// Bytes the child wrote to stdout (also when streamed to a sink).
    pub stdout_bytes: u64,
}

impl Output {
    /// Exit status 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// stderr, escaped for a log line or a mail, capped.
    pub fn stderr_excerpt(&self) -> String {
        ferry_text::escape_bytes(trim_ascii(&self.stderr), 600)
    }

    /// stdout as (lossy) text, for commands whose output Ferry parses.
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Why running a command failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot start {cmd}: {source}")]
    Spawn {
        cmd: String,
        #[source]
        source: io::Error,
    },
    #[error("{cmd} failed ({status}): {stderr}")]
    Failed { cmd: String, status: String, stderr: String, output: Box<Output> },
    #[error("{cmd} killed after {after:?} (deadline): {stderr}")]
    TimedOut { cmd: String, after: Duration, stderr: String },
    #[error("{cmd} stopped: {reason}")]
    Stopped { cmd: String, reason: String, stderr: String },
    #[error("{cmd}: writing its output failed: {source}")]
    Sink {
        cmd: String,
        #[source]
        source: io::Error,
    },
    #[error("{cmd}: {source}")]
    Io {
        cmd: String,
        #[source]
        source: io::Error,
    },
}

impl RunError {
    /// The captured output of a command that ran and failed.
    pub fn output(&self) -> Option<&Output> {
        match self {
            RunError::Failed { output, .. } => Some(output),
            _ => None,
        }
    }

    /// True when the error came from the sink (e.g. disk full while storing).
    pub fn sink_error(&self) -> Option<&io::Error> {
        match self {
            RunError::Sink { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    b.trim_ascii()
}

/// Human-readable exit status ("exit 128", "signal 9").
pub fn describe_status(s: &ExitStatus) -> String {
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => "unknown status".into(),
    }
}

impl Cmd {
    /// A command with a cleared environment and no stdin.
    pub fn new(program: impl AsRef<OsStr>) -> Cmd {
        Cmd {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            inherit_env: false,
            cwd: None,
            stdin: Input::Null,
            timeout: None,
            stdout_cap: DEFAULT_STDOUT_CAP,
            stderr_cap: DEFAULT_STDERR_CAP,
            die_with_parent: false,
            watch: None,
        }
    }

    /// Call `check` every `every` while the child runs; when it returns a
    /// reason, the process group is killed and the run ends in
    /// [`RunError::Stopped`] (used to stop a fetch the moment it exceeds a
    /// quota, rather than after it filled the disk).
    pub fn watch(mut self, every: Duration, check: impl FnMut() -> Option<String> + Send + 'static) -> Cmd {
        self.watch = Some((every, Box::new(check)));
        self
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Cmd {
        self.args.push(a.as_ref().to_owned());
        self
    }

    pub fn args<I, S>(mut self, it: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args.extend(it.into_iter().map(|s| s.as_ref().to_owned()));
        self
    }

    /// Set one environment variable for the child.
    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Cmd {
        self.env.push((k.as_ref().to_owned(), v.as_ref().to_owned()));
        self
    }

    /// Keep the caller's environment (only for commands the administrator
    /// configured, such as pre/post hooks, never for anything facing a
    /// client).
    pub fn inherit_env(mut self) -> Cmd {
        self.inherit_env = true;
        self
    }

    pub fn cwd(mut self, dir: impl AsRef<Path>) -> Cmd {
        self.cwd = Some(dir.as_ref().to_owned());
        self
    }

    pub fn stdin_bytes(mut self, b: impl Into<Vec<u8>>) -> Cmd {
        self.stdin = Input::Bytes(b.into());
        self
    }

    pub fn stdin_file(mut self, f: File) -> Cmd {
        self.stdin = Input::File(f);
        self
    }

    /// Stream standard input from `r`.
    pub fn stdin_reader(mut self, r: impl Read + Send + 'static) -> Cmd {
        self.stdin = Input::Reader(Box::new(r));
        self
    }

    /// Kill the process group when it runs longer than `d`.
    pub fn timeout(mut self, d: Duration) -> Cmd {
        self.timeout = Some(d);
        self
    }

    pub fn timeout_opt(mut self, d: Option<Duration>) -> Cmd {
        self.timeout = d;
        self
    }

    pub fn stdout_cap(mut self, n: usize) -> Cmd {
        self.stdout_cap = n;
        self
    }

    pub fn stderr_cap(mut self, n: usize) -> Cmd {
        self.stderr_cap = n;
        self
    }

    /// Have the kernel kill the child if this process dies first.
    pub fn die_with_parent(mut self) -> Cmd {
        self.die_with_parent = true;
        self
    }

    /// The command line, escaped, for logs and error messages.
    pub fn display(&self) -> String {
        let mut s = ferry_text::escape_bytes(self.program.as_encoded_bytes(), 200);
        for a in &self.args {
            s.push(' ');
            s.push_str(&ferry_text::escape_bytes(a.as_encoded_bytes(), 200));
        }
        if s.len() > 1000 {
            s.truncate(1000);
            s.push_str("...");
        }
        s
    }

    /// Pass these variables of this process's environment through to the
    /// child, those that are set. The environment stays cleared otherwise:
    /// each caller names what it needs and says why at the call.
    pub fn pass_env(mut self, names: &[&str]) -> Cmd {
        for k in names {
            if let Some(v) = std::env::var_os(k) {
                self.env.push((OsString::from(k), v));
            }
        }
        self
    }

    /// The `Command` every way of starting (run, exec, detached, async)
    /// begins from: the program (behind `setpriv` when it must die with its
    /// parent), its arguments, the environment rules and the directory.
    fn base(&self) -> Command {
        let mut c = if self.die_with_parent && Path::new("/usr/bin/setpriv").exists() {
            let mut c = Command::new("/usr/bin/setpriv");
            c.arg("--pdeathsig").arg("KILL").arg("--").arg(&self.program);
            c
        } else {
            Command::new(&self.program)
        };
        c.args(&self.args);
        if !self.inherit_env {
            c.env_clear();
            c.env("PATH", SAFE_PATH).env("LANG", "C").env("LC_ALL", "C");
        }
        for (k, v) in &self.env {
            c.env(k, v);
        }
        if let Some(d) = &self.cwd {
            c.current_dir(d);
        }
        c
    }

    fn build(&self) -> Command {
        let mut c = self.base();
        c.process_group(0);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        c
    }

    /// Run to completion, capturing stdout (capped) and stderr (capped).
    /// A non-zero exit is not an error here; see [`Cmd::run_checked`].
    pub fn run(self) -> Result<Output, RunError> {
        let cap = self.stdout_cap;
        let mut buf = CappedBuf::new(cap);
        let out = self.run_inner(&mut buf)?;
        Ok(Output { stdout: buf.data, stdout_truncated: buf.truncated, ..out })
    }

    /// [`Cmd::run`], then turn a non-zero exit into [`RunError::Failed`].
    pub fn run_checked(self) -> Result<Output, RunError> {
        let cmd = self.display();
        let out = self.run()?;
        if out.success() {
            Ok(out)
        } else {
            Err(RunError::Failed {
                cmd,
                status: describe_status(&out.status),
                stderr: out.stderr_excerpt(),
                output: Box::new(out),
            })
        }
    }

    /// Run, streaming stdout into `sink` (never buffering it whole). A
    /// non-zero exit is [`RunError::Failed`]; a sink write error kills the
    /// child and is [`RunError::Sink`].
    pub fn run_to(self, sink: &mut dyn Write) -> Result<Output, RunError> {
        let cmd = self.display();
        let mut s = SinkAdapter { sink, error: None };
        let out = self.run_inner(&mut s)?;
        if let Some(source) = s.error {
            return Err(RunError::Sink { cmd, source });
        }
        if out.success() {
            Ok(out)
        } else {
            Err(RunError::Failed {
                cmd,
                status: describe_status(&out.status),
                stderr: out.stderr_excerpt(),
                output: Box::new(out),
            })
        }
    }

    fn run_inner(mut self, stdout_sink: &mut dyn StdoutSink) -> Result<Output, RunError> {
        let cmd = self.display();
        let mut command = self.build();
        let stdin: Option<Box<dyn Read + Send>> = match std::mem::replace(&mut self.stdin, Input::Null) {
            Input::Null => {
                command.stdin(Stdio::null());
                None
            }
            Input::File(f) => {
                command.stdin(Stdio::from(f));
                None
            }
            Input::Bytes(b) => {
                command.stdin(Stdio::piped());
                Some(Box::new(io::Cursor::new(b)))
            }
            Input::Reader(r) => {
                command.stdin(Stdio::piped());
                Some(r)
            }
        };
        self.finish(command, stdin, stdout_sink, cmd)
    }

    fn finish(
        &mut self,
        mut command: Command,
        stdin_src: Option<Box<dyn Read + Send>>,
        stdout_sink: &mut dyn StdoutSink,
        cmd: String,
    ) -> Result<Output, RunError> {
        let start = Instant::now();
        let mut child = command.spawn().map_err(|source| RunError::Spawn { cmd: cmd.clone(), source })?;
        let pid = child.id();

        // Watchdog: kills the process group at the deadline, or when the
        // watch check asks to, unless told the child finished first.
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let (fired_tx, fired_rx) = mpsc::channel::<Option<String>>();
        let deadline = self.timeout.map(|t| start + t);
        let mut watch = self.watch.take();
        let killed = Killed::default();
        let wd_killed = killed.clone();
        let watchdog = (deadline.is_some() || watch.is_some()).then(|| {
            thread::spawn(move || {
                loop {
                    let now = Instant::now();
                    let until_deadline = deadline.map(|d| d.saturating_duration_since(now));
                    let step = match (&watch, until_deadline) {
                        (Some((every, _)), Some(d)) => (*every).min(d),
                        (Some((every, _)), None) => *every,
                        (None, Some(d)) => d,
                        (None, None) => return,
                    };
                    match done_rx.recv_timeout(step) {
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        wd_killed.kill(pid);
                        let _ = fired_tx.send(None);
                        return;
                    }
                    if let Some((_, check)) = watch.as_mut()
                        && let Some(reason) = check()
                    {
                        wd_killed.kill(pid);
                        let _ = fired_tx.send(Some(reason));
                        return;
                    }
                }
            })
        });

        let stdin_thread = match (stdin_src, child.stdin.take()) {
            (Some(mut r), Some(mut w)) => Some(thread::spawn(move || -> io::Result<()> {
                match io::copy(&mut r, &mut w) {
                    Ok(_) => Ok(()),
                    // The child stopped reading: its exit status tells why.
                    Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
                    Err(e) => Err(e),
                }
            })),
            _ => None,
        };
        let stderr_cap = self.stderr_cap;
        let mut stderr_pipe = child.stderr.take().expect("stderr piped");
        let err_killed = killed.clone();
        let stderr_thread = thread::spawn(move || {
            let mut h = HeadTail::new(stderr_cap);
            let mut chunk = [0u8; 8192];
            loop {
                match read_pipe(&mut stderr_pipe, &mut chunk, &err_killed) {
                    Ok(0) => break,
                    Ok(n) => h.push(&chunk[..n]),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            h
        });

        let mut stdout_pipe = child.stdout.take().expect("stdout piped");
        let mut stdout_bytes = 0u64;
        let mut buf = vec![0u8; 256 * 1024];
        let read_result: io::Result<()> = loop {
            match read_pipe(&mut stdout_pipe, &mut buf, &killed) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    stdout_bytes += n as u64;
                    if !stdout_sink.accept(&buf[..n]) {
                        // The sink failed (e.g. disk full): stop the child.
                        killed.kill(pid);
                        break Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        drop(stdout_pipe);
        let status = wait(&mut child).map_err(|source| RunError::Io { cmd: cmd.clone(), source })?;
        let _ = done_tx.send(());
        if let Some(w) = watchdog {
            let _ = w.join();
        }
        // After a kill, a writer blocked on a pipe that an escaped process
        // holds open is left behind rather than waited for.
        let stdin_thread = stdin_thread.filter(|t| !killed.is_set() || killed.wait_finished(t));
        let stdin_result =
            stdin_thread.map(|t| t.join().unwrap_or_else(|_| Err(io::Error::other("stdin thread panicked"))));
        let stderr = stderr_thread.join().unwrap_or_else(|_| HeadTail::new(0));
        read_result.map_err(|source| RunError::Io { cmd: cmd.clone(), source })?;
        if let Some(Err(e)) = stdin_result {
            // The input could not be produced whole (e.g. a corrupt
            // compressed stream): the child's success would be a lie.
            return Err(RunError::Io { cmd, source: io::Error::new(e.kind(), format!("feeding standard input: {e}")) });
        }
        let elapsed = start.elapsed();
        let (stderr, stderr_truncated) = stderr.into_bytes();
        match fired_rx.try_recv() {
            Ok(None) => {
                return Err(RunError::TimedOut {
                    cmd,
                    after: elapsed,
                    stderr: ferry_text::escape_bytes(trim_ascii(&stderr), 600),
                });
            }
            Ok(Some(reason)) => {
                return Err(RunError::Stopped {
                    cmd,
                    reason,
                    stderr: ferry_text::escape_bytes(trim_ascii(&stderr), 600),
                });
            }
            Err(_) => {}
        }
        Ok(Output {
            status,
            stdout: Vec::new(),
            stdout_truncated: false,
            stderr,
            stderr_truncated,
            elapsed,
            stdout_bytes,
        })
    }
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display())
    }
}

fn wait(child: &mut Child) -> io::Result<ExitStatus> {
    loop {
        match child.wait() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

fn kill_group(pid: u32) {
    if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process_group(p, rustix::process::Signal::KILL);
    }
}

/// When the child's process group was killed, shared by the threads that
/// drain its pipes.
#[derive(Clone, Default)]
struct Killed(Arc<Mutex<Option<Instant>>>);

impl Killed {
    fn kill(&self, pid: u32) {
        kill_group(pid);
        if let Ok(mut g) = self.0.lock() {
            g.get_or_insert_with(Instant::now);
        }
    }

    fn is_set(&self) -> bool {
        self.0.lock().map(|g| g.is_some()).unwrap_or(true)
    }

    /// The group was killed more than [`KILL_GRACE`] ago.
    fn grace_over(&self) -> bool {
        self.0.lock().map(|g| g.is_some_and(|t| t.elapsed() >= KILL_GRACE)).unwrap_or(true)
    }

    /// Wait (within the grace) for a thread to finish; false if it did not.
    fn wait_finished<T>(&self, t: &thread::JoinHandle<T>) -> bool {
        while !t.is_finished() {
            if self.grace_over() {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
        true
    }
}

/// One `read` from a child's pipe, or `Ok(0)` (as at end of file) once the
/// child's group was killed and the pipe stayed open beyond [`KILL_GRACE`].
fn read_pipe<P: Read + AsFd>(pipe: &mut P, buf: &mut [u8], killed: &Killed) -> io::Result<usize> {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let step = Timespec { tv_sec: 0, tv_nsec: 100_000_000 };
    loop {
        let mut fds = [PollFd::new(&*pipe, PollFlags::IN)];
        match poll(&mut fds, Some(&step)) {
            Ok(0) if killed.grace_over() => return Ok(0),
            Ok(0) => {}
            Ok(_) => return pipe.read(buf),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

trait StdoutSink {
    /// Take a chunk; false means "stop, the sink failed".
    fn accept(&mut self, b: &[u8]) -> bool;
}

struct CappedBuf {
    data: Vec<u8>,
    cap: usize,
    truncated: bool,
}

impl CappedBuf {
    fn new(cap: usize) -> CappedBuf {
        CappedBuf { data: Vec::new(), cap, truncated: false }
    }
}

impl StdoutSink for CappedBuf {
    fn accept(&mut self, b: &[u8]) -> bool {
        let room = self.cap.saturating_sub(self.data.len());
        if b.len() > room {
            self.truncated = true;
        }
        self.data.extend_from_slice(&b[..b.len().min(room)]);
        true
    }
}

struct SinkAdapter<'a> {
    sink: &'a mut dyn Write,
    error: Option<io::Error>,
}

impl StdoutSink for SinkAdapter<'_> {
    fn accept(&mut self, b: &[u8]) -> bool {
        match self.sink.write_all(b) {
            Ok(()) => true,
            Err(e) => {
                self.error = Some(e);
                false
            }
        }
    }
}

/// Keeps the first and the last `cap/2` bytes of a stream: the start says
/// what the program was doing, the end says why it died.
struct HeadTail {
    head: Vec<u8>,
    tail: std::collections::VecDeque<u8>,
    half: usize,
    dropped: u64,
}

impl HeadTail {
    fn new(cap: usize) -> HeadTail {
        HeadTail { head: Vec::new(), tail: Default::default(), half: cap / 2, dropped: 0 }
    }

    fn push(&mut self, mut b: &[u8]) {
        if self.head.len() < self.half {
            let n = (self.half - self.head.len()).min(b.len());
            self.head.extend_from_slice(&b[..n]);
            b = &b[n..];
        }
        for &c in b {
            if self.tail.len() == self.half {
                self.tail.pop_front();
                self.dropped += 1;
            }
            if self.half > 0 {
                self.tail.push_back(c);
            } else {
                self.dropped += 1;
            }
        }
    }

    fn into_bytes(self) -> (Vec<u8>, bool) {
        let mut v = self.head;
        if self.dropped > 0 {
            v.extend_from_slice(format!("\n[... {} bytes omitted ...]\n", self.dropped).as_bytes());
        }
        v.extend(self.tail);
        (v, self.dropped > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_is_cleared() {
        // Our own environment has HOME; the child must not.
        let out = Cmd::new("/usr/bin/env").env("FERRY_X", "1").run_checked().unwrap();
        let s = out.stdout_str();
        assert!(s.contains("FERRY_X=1"));
        assert!(s.contains("PATH="));
        assert!(!s.contains("HOME="), "{s}");
    }

    #[test]
    fn failure_carries_escaped_stderr() {
        let e = Cmd::new("/bin/sh").args(["-c", "printf 'bad\\033[2J thing' >&2; exit 3"]).run_checked().unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("exit 3"), "{msg}");
        assert!(msg.contains("bad\\x1B[2J thing"), "{msg}");
    }

    #[test]
    fn deadline_kills_the_whole_group() {
        let t = Instant::now();
        let e = Cmd::new("/bin/sh")
            .args(["-c", "sleep 30 & sleep 30; echo never"])
            .timeout(Duration::from_millis(300))
            .run()
            .unwrap_err();
        assert!(matches!(e, RunError::TimedOut { .. }), "{e}");
        // The background sleep held stdout open; only a group kill ends it.
        assert!(t.elapsed() < Duration::from_secs(20));
    }

    #[test]
    fn deadline_holds_when_an_escaped_process_keeps_the_pipes() {
        // `setsid` leaves the group (as an ssh ControlPersist master does)
        // and keeps stdout and stderr open for 30 s.
        let t = Instant::now();
        let e = Cmd::new("/bin/sh")
            .args(["-c", "setsid sleep 30 & echo started >&2; sleep 30"])
            .timeout(Duration::from_millis(300))
            .run()
            .unwrap_err();
        assert!(matches!(e, RunError::TimedOut { .. }), "{e}");
        assert!(e.to_string().contains("started"), "stderr read so far is kept: {e}");
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    }

    #[test]
    fn stderr_is_capped_head_and_tail() {
        let out = Cmd::new("/bin/sh")
            .args(["-c", "echo START >&2; head -c 100000 /dev/zero | tr '\\0' x >&2; echo END >&2"])
            .stderr_cap(1000)
            .run()
            .unwrap();
        assert!(out.stderr_truncated);
        assert!(out.stderr.len() < 1100);
        let s = String::from_utf8_lossy(&out.stderr);
        assert!(s.starts_with("START"));
        assert!(s.trim_end().ends_with("END"));
    }

    #[test]
    fn stdout_streams_to_sink_and_counts() {
        let mut sink = Vec::new();
        let out =
            Cmd::new("/bin/sh").args(["-c", "head -c 3000000 /dev/zero"]).stdout_cap(10).run_to(&mut sink).unwrap();
        assert_eq!(sink.len(), 3_000_000);
        assert_eq!(out.stdout_bytes, 3_000_000);
    }

    #[test]
    fn sink_failure_stops_the_child() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::from_raw_os_error(28))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let e = Cmd::new("/bin/sh").args(["-c", "yes"]).run_to(&mut Full).unwrap_err();
        assert!(e.sink_error().is_some(), "{e}");
    }

    #[test]
    fn watch_stops_the_child_with_its_reason() {
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let s2 = seen.clone();
        let e = Cmd::new("/bin/sh")
            .args(["-c", "sleep 30"])
            .watch(Duration::from_millis(20), move || {
                (s2.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= 2).then(|| "too big".to_owned())
            })
            .run()
            .unwrap_err();
        assert!(matches!(&e, RunError::Stopped { reason, .. } if reason == "too big"), "{e}");
        assert!(seen.load(std::sync::atomic::Ordering::SeqCst) >= 3);
    }

    #[test]
    fn stdin_bytes_are_fed() {
        let out = Cmd::new("/bin/cat").stdin_bytes(b"hello".to_vec()).run_checked().unwrap();
        assert_eq!(out.stdout, b"hello");
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        let e = Cmd::new("/nonexistent/ferry-x").run().unwrap_err();
        assert!(matches!(e, RunError::Spawn { .. }));
    }
}
