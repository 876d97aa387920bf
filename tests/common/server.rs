//! The server under test: which combination to start ([`Setup`]) and the running process
//! ([`Server`]).
//!
//! Owns: starting the `wschat` binary on a free port with exactly the flags a test gives
//! (no `WSCHAT_*` from the environment leaks in), finding its address in its start-up line,
//! keeping its output for diagnostics, signals and exit. Must never: leave a server process
//! behind (it is killed and reaped on drop), or wait for it without a bound.

use std::convert::Infallible;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::{EXIT_TIMEOUT, IO_TIMEOUT, STARTUP_TIMEOUT};

/// How long a failing test waits for the output pumps to reach EOF once the server has
/// exited. They normally end at once; the bound is for a process that left a grandchild
/// holding the pipes open, whose last lines are then reported as far as they came.
const OUTPUT_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// One (execution pattern, I/O backend) combination under test.
#[derive(Debug, Clone, Copy)]
pub struct Setup {
    pub pattern: &'static str,
    pub io: &'static str,
    /// Flags every server of this combination gets (thread counts, `--uring-features none`).
    pub flags: &'static [&'static str],
}

impl Setup {
    pub const fn new(
        pattern: &'static str,
        io: &'static str,
        flags: &'static [&'static str],
    ) -> Setup {
        Setup { pattern, io, flags }
    }

    /// Event loops that hold connections: how many threads a room can span.
    pub fn loops(&self) -> usize {
        match self.pattern {
            "single-thread" | "work-queue" => 1,
            _ => self
                .flags
                .iter()
                .position(|f| *f == "--threads")
                .and_then(|i| self.flags.get(i + 1))
                .and_then(|n| n.parse().ok())
                .unwrap_or(1),
        }
    }

    /// Starts the server for this combination with default flags.
    pub fn server(&self) -> Server {
        self.server_with(&[])
    }

    /// Starts the server for this combination with extra flags.
    pub fn server_with(&self, extra: &[&str]) -> Server {
        Server::start(*self, extra)
    }
}

/// A running `wschat` process; killed (SIGKILL) and reaped on drop.
pub struct Server {
    child: Child,
    addr: SocketAddr,
    pub setup: Setup,
    /// Everything the server printed (stdout and stderr), for failure diagnostics.
    log: Arc<Mutex<String>>,
    /// Disconnects when both output pumps have ended (nothing is ever sent on it).
    pumps: mpsc::Receiver<Infallible>,
    exited: Option<ExitStatus>,
}

/// Copies `src` line by line into `log` until EOF; `done` is dropped when it ends.
fn spawn_line_pump<R: Read + Send + 'static>(
    src: R,
    tag: &'static str,
    log: Arc<Mutex<String>>,
    first_lines: Option<mpsc::Sender<String>>,
    done: mpsc::Sender<Infallible>,
) {
    thread::spawn(move || {
        let _done = done;
        let mut reader = BufReader::new(src);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf).into_owned();
                    if let Ok(mut l) = log.lock() {
                        // Keep diagnostics bounded.
                        if l.len() < 256 * 1024 {
                            l.push_str(tag);
                            l.push_str(&line);
                        }
                    }
                    if let Some(tx) = &first_lines {
                        // The receiver may be gone after start-up: ignore errors.
                        let _ = tx.send(line);
                    }
                }
            }
        }
    });
}

/// Waits, bounded by [`OUTPUT_DRAIN_TIMEOUT`], until every pump holding a sender of `pumps`
/// has ended: after the server exited, that is when its last lines are in the log.
fn drain_output(pumps: &mpsc::Receiver<Infallible>) {
    // Only a timeout or the disconnect of the last sender can end the wait.
    let _ = pumps.recv_timeout(OUTPUT_DRAIN_TIMEOUT);
}

impl Server {
    pub fn start(setup: Setup, extra: &[&str]) -> Server {
        Server::launch(setup, Command::new(env!("CARGO_BIN_EXE_wschat")), extra)
    }

    /// Starts the server with its open-file limit (soft and hard) set to `limit`.
    pub fn start_with_fd_limit(setup: Setup, limit: u32, extra: &[&str]) -> Server {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_wschat"));
        Server::launch(setup, cmd, extra)
    }

    fn launch(setup: Setup, mut cmd: Command, extra: &[&str]) -> Server {
        cmd.args([
            "--addr",
            "127.0.0.1:0",
            "--pattern",
            setup.pattern,
            "--io",
            setup.io,
        ])
        .args(setup.flags)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        // Flags only: no WSCHAT_* setting from the caller's environment leaks in.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("WSCHAT_") {
                cmd.env_remove(key);
            }
        }
        let mut child = cmd.spawn().expect("spawn wschat binary");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let (pumps_done, pumps) = mpsc::channel();
        spawn_line_pump(
            child.stdout.take().unwrap(),
            "[stdout] ",
            log.clone(),
            Some(tx),
            pumps_done.clone(),
        );
        spawn_line_pump(
            child.stderr.take().unwrap(),
            "[stderr] ",
            log.clone(),
            None,
            pumps_done,
        );

        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.split("listening on").nth(1) {
                        let tok = rest.split_whitespace().next().unwrap_or("");
                        let tok = tok.trim_end_matches(|c: char| !c.is_ascii_digit());
                        let addr: SocketAddr = tok
                            .parse()
                            .unwrap_or_else(|e| panic!("bad address {tok:?} in {line:?}: {e}"));
                        break addr;
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait();
                    drain_output(&pumps);
                    panic!(
                        "server ({setup:?}, flags {extra:?}) printed no 'listening on' line \
                         (exit: {status:?}); output:\n{}",
                        log.lock().map(|l| l.clone()).unwrap_or_default()
                    );
                }
            }
        };
        Server {
            child,
            addr,
            setup,
            log,
            pumps,
            exited: None,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A plain TCP connection with liveness timeouts and TCP_NODELAY.
    pub fn tcp(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).expect("tcp connect to server");
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    /// Sends SIGTERM to the server process.
    pub fn sigterm(&self) {
        let st = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -TERM failed: {st:?}");
    }

    /// Waits (bounded by EXIT_TIMEOUT) for the process to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                self.exited = Some(st);
                return st;
            }
            if Instant::now() >= deadline {
                panic!("server did not exit within {EXIT_TIMEOUT:?}");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn output(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if thread::panicking() {
            // The process is gone: the pumps end at EOF, with its last lines logged.
            drain_output(&self.pumps);
            let out = self.output();
            let tail: String = {
                let start = out.len().saturating_sub(8 * 1024);
                let start = (start..out.len())
                    .find(|&i| out.is_char_boundary(i))
                    .unwrap_or(0);
                out[start..].to_string()
            };
            eprintln!(
                "--- server output ({:?}) ---\n{tail}--- end ---",
                self.setup
            );
        }
    }
}
