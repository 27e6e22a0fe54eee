//! Shared helpers for the integration tests: a guard around the real
//! `dispatch` binary, small servers on loopback, raw SOCKS4/5 client code,
//! a deterministic byte stream, and network-namespace guards for the tests
//! that need root.
//!
//! Everything here talks only to loopback addresses or to addresses inside
//! namespaces the tests create themselves.

#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

pub mod files;
pub mod http;
#[cfg(target_os = "linux")]
pub mod topology;

pub const BIN: &str = env!("CARGO_BIN_EXE_dispatch");

/// Default read/write timeout on every client socket, so a hung proxy makes a
/// test fail instead of hanging the suite.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A name unique within this machine for the lifetime of the test process.
pub fn unique(tag: &str) -> String {
    format!(
        "{tag}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

// ---------------------------------------------------------------------------
// Temporary directory
// ---------------------------------------------------------------------------

pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new() -> TempDir {
        let path = std::env::temp_dir().join(unique("dispatch-test"));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

// ---------------------------------------------------------------------------
// Output collection
// ---------------------------------------------------------------------------

type Buf = Arc<Mutex<Vec<u8>>>;

fn drain<R: Read + Send + 'static>(
    r: R,
    buf: Buf,
    listening: Option<mpsc::Sender<String>>,
) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut r = BufReader::new(r);
        let mut line = Vec::new();
        let mut listening = listening;
        loop {
            line.clear();
            match r.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    buf.lock().unwrap().extend_from_slice(&line);
                    if let Some(tx) = &listening {
                        let text = String::from_utf8_lossy(&line);
                        if let Some(pos) = text.find("listening on ") {
                            let rest = &text[pos + "listening on ".len()..];
                            let token = rest
                                .split_whitespace()
                                .next()
                                .unwrap_or("")
                                .trim_end_matches([',', '.', ';']);
                            if token.parse::<SocketAddr>().is_ok() {
                                let _ = tx.send(token.to_string());
                                listening = None;
                            }
                        }
                    }
                }
            }
        }
    })
}

fn text(buf: &Buf) -> String {
    String::from_utf8_lossy(&buf.lock().unwrap()).into_owned()
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        // An error (never seen) counts as still running: this must not
        // panic, `Proxy::drop` calls it while unwinding.
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

pub fn sigterm(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM {pid} failed");
}

fn sigkill(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
}

/// Remove every proxy-related environment variable so that child processes
/// (curl in particular) never go anywhere but where the test says.
/// Removes the variables that would send a child's traffic elsewhere
/// (proxy settings) or change what it logs or reads (RUST_LOG, CURL_HOME).
pub fn scrub_env(cmd: &mut Command) {
    for var in [
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "no_proxy",
        "ftp_proxy",
        "socks_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "FTP_PROXY",
        "SOCKS_PROXY",
        "RUST_LOG",
        "CURL_HOME",
    ] {
        cmd.env_remove(var);
    }
}

// ---------------------------------------------------------------------------
// The proxy under test
// ---------------------------------------------------------------------------

/// A running `dispatch -d start --ip 127.0.0.1 --port 0 ...`.
///
/// `finish()` (or drop) sends SIGINT (stop at once), waits for exit status 0 and asserts
/// that stderr does not contain "panicked".
pub struct Proxy {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub pid: u32,
    stdout: Buf,
    stderr: Buf,
    readers: Vec<JoinHandle<()>>,
    _state: TempDir,
}

/// How [`Proxy::launch`] starts the binary.
pub struct Launch<'a> {
    /// Inside this network namespace (`ip netns exec`).
    pub netns: Option<&'a str>,
    /// `--ip` (default 127.0.0.1).
    pub ip: &'a str,
    /// `-d`: debug log on stdout (default). Without it the log goes to a
    /// file under [`Proxy::state_dir`].
    pub debug: bool,
    /// Set in its environment (after the proxy variables are removed;
    /// `XDG_STATE_HOME` here replaces the proxy's own temporary one).
    pub env: Vec<(&'a str, String)>,
    /// A command the binary runs under, e.g. `["setpriv", "--bounding-set=-net_raw", "--"]`.
    pub wrap: Vec<&'a str>,
}

impl Default for Launch<'_> {
    fn default() -> Self {
        Launch {
            netns: None,
            ip: "127.0.0.1",
            debug: true,
            env: Vec::new(),
            wrap: Vec::new(),
        }
    }
}

pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Proxy {
    /// Start the proxy on 127.0.0.1 with a free port; `args` follow
    /// `start --ip 127.0.0.1 --port 0` (options, then addresses).
    pub fn start(args: &[&str]) -> Proxy {
        Proxy::spawn(None, "127.0.0.1", args)
    }

    /// Same, listening on `ip` instead of 127.0.0.1.
    pub fn start_on(ip: &str, args: &[&str]) -> Proxy {
        Proxy::spawn(None, ip, args)
    }

    /// Same, but inside the network namespace `ns` (via `ip netns exec`).
    pub fn start_in_netns(ns: &Netns, args: &[&str]) -> Proxy {
        Proxy::spawn(Some(&ns.name), "127.0.0.1", args)
    }

    /// Inside the network namespace `ns`, listening on `ip`.
    pub fn start_in_netns_on(ns: &Netns, ip: &str, args: &[&str]) -> Proxy {
        Proxy::spawn(Some(&ns.name), ip, args)
    }

    fn spawn(netns: Option<&str>, listen_ip: &str, args: &[&str]) -> Proxy {
        Proxy::launch(
            &Launch {
                netns,
                ip: listen_ip,
                ..Launch::default()
            },
            args,
        )
    }

    /// Starts the proxy as `launch` says; `args` follow `start --ip IP
    /// --port 0`.
    pub fn launch(launch: &Launch, args: &[&str]) -> Proxy {
        let state = TempDir::new();
        let mut cmd = match launch.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]);
                c
            }
            None => Command::new(launch.wrap.first().copied().unwrap_or(BIN)),
        };
        let wrap = if launch.netns.is_some() {
            &launch.wrap[..]
        } else {
            launch.wrap.get(1..).unwrap_or(&[])
        };
        cmd.args(wrap);
        if launch.netns.is_some() || !launch.wrap.is_empty() {
            cmd.arg(BIN);
        }
        if launch.debug {
            cmd.arg("-d");
        }
        cmd.args(["start", "--ip", launch.ip, "--port", "0"])
            .args(args)
            .env("XDG_STATE_HOME", &state.path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        scrub_env(&mut cmd);
        for (k, v) in &launch.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn dispatch");
        let pid = child.id();
        let stdout = Buf::default();
        let stderr = Buf::default();
        let (tx, rx) = mpsc::channel();
        let readers = vec![
            drain(child.stdout.take().unwrap(), stdout.clone(), Some(tx)),
            drain(child.stderr.take().unwrap(), stderr.clone(), None),
        ];
        let deadline = Instant::now() + Duration::from_secs(15);
        let token = loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(token) => break token,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // stdout closed without the line: the process is exiting.
                    let status = wait_timeout(&mut child, Duration::from_secs(5));
                    thread::sleep(Duration::from_millis(50));
                    panic!(
                        "dispatch {args:?} exited ({status:?}) before printing \
                         'dispatch listening on'\n--- stdout:\n{}\n--- stderr:\n{}",
                        text(&stdout),
                        text(&stderr)
                    );
                }
            }
            if let Some(status) = child.try_wait().expect("try_wait") {
                thread::sleep(Duration::from_millis(100));
                panic!(
                    "dispatch {args:?} exited ({status}) before printing \
                     'dispatch listening on'\n--- stdout:\n{}\n--- stderr:\n{}",
                    text(&stdout),
                    text(&stderr)
                );
            }
            if Instant::now() >= deadline {
                sigkill(pid);
                panic!(
                    "dispatch {args:?} did not print 'dispatch listening on' within 15 s\n\
                     --- stdout:\n{}\n--- stderr:\n{}",
                    text(&stdout),
                    text(&stderr)
                );
            }
        };
        let addr: SocketAddr = token.parse().unwrap_or_else(|e| {
            sigkill(pid);
            panic!("cannot parse listen address {token:?}: {e}")
        });
        assert_ne!(addr.port(), 0, "proxy reported port 0");
        Proxy {
            child: Some(child),
            addr,
            pid,
            stdout,
            stderr,
            readers,
            _state: state,
        }
    }

    pub fn stdout(&self) -> String {
        text(&self.stdout)
    }

    /// How many bytes it has printed on stdout so far.
    pub fn stdout_len(&self) -> usize {
        self.stdout.lock().unwrap().len()
    }

    /// What it printed on stdout from byte `offset` on (a long run's log
    /// read in steps, not copied whole each time).
    pub fn stdout_from(&self, offset: usize) -> String {
        let buf = self.stdout.lock().unwrap();
        String::from_utf8_lossy(&buf[offset.min(buf.len())..]).into_owned()
    }

    /// Its `XDG_STATE_HOME`: without `-d` the log is
    /// `<this>/dispatch/dispatch-0.log` (port 0's). Removed when the `Proxy` is dropped.
    pub fn state_dir(&self) -> &std::path::Path {
        &self._state.path
    }

    pub fn stderr(&self) -> String {
        text(&self.stderr)
    }

    /// Number of open file descriptors of the proxy process.
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .expect("read /proc/PID/fd")
            .count()
    }

    /// The descriptor count without the passing ones: the smallest of a
    /// few samples. The interface watcher (a netlink socket) and the state
    /// file hold a descriptor for an instant now and then, so one sample can
    /// be one too many, and a baseline taken then would hide a leak or flag
    /// a loss that is not one.
    #[allow(dead_code)] // not every test binary uses it
    pub fn fd_count_quiet(&self) -> usize {
        (0..5)
            .map(|i| {
                if i > 0 {
                    thread::sleep(Duration::from_millis(20));
                }
                self.fd_count()
            })
            .min()
            .unwrap()
    }

    /// The descriptor count once it is back to `baseline` or below, or
    /// after `within` (closing is asynchronous: give it time, not forever).
    #[allow(dead_code)] // not every test binary uses it
    pub fn fd_count_settled(&self, baseline: usize, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        let mut now = self.fd_count();
        while now > baseline && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
            now = self.fd_count();
        }
        now
    }

    /// Panics if the process has exited.
    pub fn assert_alive(&mut self) {
        let child = self.child.as_mut().expect("proxy already finished");
        if let Some(status) = child.try_wait().expect("try_wait") {
            thread::sleep(Duration::from_millis(100));
            panic!(
                "proxy exited unexpectedly ({status})\n--- stdout:\n{}\n--- stderr:\n{}",
                self.stdout(),
                self.stderr()
            );
        }
    }

    /// SIGINT and wait (SIGKILL after 10 s). `Err` says what went wrong;
    /// never panics, so that it is safe from `drop` while unwinding.
    fn stop(&mut self) -> Option<Result<Finished, String>> {
        let mut child = self.child.take()?;
        let status = match child.try_wait() {
            Ok(Some(status)) => Ok(status),
            _ => {
                // A failed kill shows up as the timeout below. SIGINT stops
                // at once; SIGTERM would let open connections finish first.
                let _ = Command::new("kill")
                    .args(["-INT", &self.pid.to_string()])
                    .status();
                match wait_timeout(&mut child, Duration::from_secs(10)) {
                    Some(status) => Ok(status),
                    None => {
                        sigkill(self.pid);
                        let _ = child.wait();
                        Err("proxy did not exit within 10 s of SIGINT".to_string())
                    }
                }
            }
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        Some(match status {
            Ok(status) => Ok(Finished {
                status,
                stdout: self.stdout(),
                stderr: self.stderr(),
            }),
            Err(why) => Err(format!(
                "{why}\n--- stdout:\n{}\n--- stderr:\n{}",
                self.stdout(),
                self.stderr()
            )),
        })
    }

    /// Waits (up to 60 s) for the proxy to exit by itself, after a signal
    /// the test sent; its output.
    #[allow(dead_code)]
    pub fn wait_exit(mut self) -> Finished {
        let mut child = self.child.take().expect("proxy already finished");
        let status = wait_timeout(&mut child, Duration::from_secs(60)).unwrap_or_else(|| {
            sigkill(self.pid);
            let _ = child.wait();
            panic!(
                "proxy did not exit within 60 s:\n{}",
                tail(&self.stdout(), 30)
            )
        });
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        Finished {
            status,
            stdout: self.stdout(),
            stderr: self.stderr(),
        }
    }

    /// SIGINT, wait, and check: exit status 0, no panic on stderr.
    pub fn finish(mut self) -> Finished {
        let out = self
            .stop()
            .expect("proxy already finished")
            .unwrap_or_else(|why| panic!("{why}"));
        check_finished(&out);
        out
    }
}

fn check_finished(out: &Finished) {
    assert!(
        !out.stderr.contains("panicked"),
        "proxy panicked:\n--- stderr:\n{}",
        out.stderr
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "proxy did not exit with status 0 after SIGINT ({})\n--- stdout (tail):\n{}\n--- stderr:\n{}",
        out.status,
        tail(&out.stdout, 40),
        out.stderr
    );
}

pub fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

impl Drop for Proxy {
    /// Stops the proxy. While the test is already panicking, only prints
    /// what the proxy said: a second panic would abort the process and
    /// leave this and every other proxy and namespace behind.
    fn drop(&mut self) {
        let Some(out) = self.stop() else { return };
        if thread::panicking() {
            match out {
                Ok(out) => eprintln!(
                    "--- proxy stdout (tail):\n{}\n--- proxy stderr:\n{}",
                    tail(&out.stdout, 40),
                    out.stderr
                ),
                Err(why) => eprintln!("{why}"),
            }
        } else {
            check_finished(&out.unwrap_or_else(|why| panic!("{why}")));
        }
    }
}

/// Result of running the binary to completion.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Run `dispatch ARGS` and wait for it to exit (at most `timeout`; a process
/// still running then is killed and the test fails).
pub fn run_bin(args: &[&str], timeout: Duration) -> Run {
    let state = TempDir::new();
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("XDG_STATE_HOME", &state.path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    scrub_env(&mut cmd);
    let mut child = cmd.spawn().expect("spawn dispatch");
    let stdout = Buf::default();
    let stderr = Buf::default();
    let r1 = drain(child.stdout.take().unwrap(), stdout.clone(), None);
    let r2 = drain(child.stderr.take().unwrap(), stderr.clone(), None);
    let status = match wait_timeout(&mut child, timeout) {
        Some(s) => s,
        None => {
            sigkill(child.id());
            let _ = child.wait();
            let _ = r1.join();
            let _ = r2.join();
            panic!(
                "dispatch {args:?} still running after {timeout:?}\n--- stdout:\n{}\n--- stderr:\n{}",
                text(&stdout),
                text(&stderr)
            );
        }
    };
    let _ = r1.join();
    let _ = r2.join();
    let run = Run {
        code: status.code(),
        stdout: text(&stdout),
        stderr: text(&stderr),
    };
    assert!(
        !run.stderr.contains("panicked"),
        "dispatch {args:?} panicked:\n{}",
        run.stderr
    );
    run
}

/// Seconds since the Unix epoch of a log line that starts with the proxy's
/// UTC timestamp (`2026-11-30T23:45:00.356Z ...`), to the millisecond.
/// Lets a test compare when the proxy did two things by the proxy's own
/// clock, not by when the test happened to look.
pub fn log_time(line: &str) -> Option<f64> {
    let ts = line.split_whitespace().next()?.strip_suffix('Z')?;
    let (date, time) = ts.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':');
    let (hh, mm): (i64, i64) = (t.next()?.parse().ok()?, t.next()?.parse().ok()?);
    let ss: f64 = t.next()?.parse().ok()?;
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + hh * 3600 + mm * 60) as f64 + ss)
}

/// The proxy's timestamp of the `nth` (0-based) line of `text` containing
/// `needle`.
pub fn log_time_of(text: &str, needle: &str, nth: usize) -> Option<f64> {
    text.lines()
        .filter(|l| l.contains(needle))
        .nth(nth)
        .and_then(log_time)
}

// ---------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------

type Handler = dyn Fn(TcpStream, SocketAddr) + Send + Sync + 'static;

/// A TCP server on `bind` (port 0) that records the peer address of every
/// accepted connection (in accept order) and runs `handler` for it on its
/// own thread.
pub struct Server {
    pub addr: SocketAddr,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    pub fn start<F>(bind: &str, handler: F) -> Server
    where
        F: Fn(TcpStream, SocketAddr) + Send + Sync + 'static,
    {
        let listener = TcpListener::bind(bind).unwrap_or_else(|e| panic!("bind {bind}: {e}"));
        let addr = listener.local_addr().unwrap();
        let peers = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let accept = {
            let peers = peers.clone();
            let stop = stop.clone();
            thread::spawn(move || loop {
                let (stream, peer) = match listener.accept() {
                    Ok(x) => x,
                    Err(_) => {
                        if stop.load(Ordering::SeqCst) {
                            return;
                        }
                        continue;
                    }
                };
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                peers.lock().unwrap().push(peer);
                let handler = handler.clone();
                thread::Builder::new()
                    .stack_size(256 * 1024)
                    .spawn(move || handler(stream, peer))
                    .expect("spawn handler");
            })
        };
        Server {
            addr,
            peers,
            stop,
            accept: Some(accept),
        }
    }

    /// Peer addresses of the accepted connections, in accept order.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.peers.lock().unwrap().clone()
    }

    /// Writes "<peer ip:port>\n" to every connection, then closes it.
    pub fn whoami(bind: &str) -> Server {
        Server::start(bind, |mut s, peer| {
            let _ = s.write_all(format!("{peer}\n").as_bytes());
            let _ = s.shutdown(Shutdown::Write);
            // Wait for the other side to close so that our close is clean.
            let _ = s.set_read_timeout(Some(IO_TIMEOUT));
            let mut sink = [0u8; 1024];
            while let Ok(n) = s.read(&mut sink) {
                if n == 0 {
                    break;
                }
            }
        })
    }

    /// Echoes everything back; half-closes its write side on EOF.
    pub fn echo(bind: &str) -> Server {
        Server::start(bind, |mut s, _| {
            let _ = s.set_read_timeout(Some(IO_TIMEOUT));
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if s.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = s.shutdown(Shutdown::Write);
        })
    }

    /// A minimal HTTP/1.1 server answering every request with `body`.
    pub fn http(bind: &str, body: &'static str) -> Server {
        Server::start(bind, move |mut s, _| {
            let _ = s.set_read_timeout(Some(IO_TIMEOUT));
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes());
            let _ = s.shutdown(Shutdown::Write);
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
            }
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept().
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

/// A loopback port on which nobody listens, held for as long as this lives:
/// a TCP socket bound to it (without SO_REUSEADDR) but not listening, so a
/// connect to it is refused, and no other socket can take the port meanwhile
/// (neither a bind, even with SO_REUSEADDR, nor a connect's ephemeral port).
/// Derefs to its address.
pub struct ClosedPort {
    pub addr: SocketAddr,
    _held: socket2::Socket,
}

impl std::ops::Deref for ClosedPort {
    type Target = SocketAddr;
    fn deref(&self) -> &SocketAddr {
        &self.addr
    }
}

impl std::fmt::Display for ClosedPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.addr.fmt(f)
    }
}

/// A port on 127.0.0.1 that was free a moment ago (for an argument that
/// needs a number before anything listens on it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn closed_port(ip: &str) -> ClosedPort {
    let ip: IpAddr = ip.parse().expect("closed_port takes an IP");
    let any = SocketAddr::new(ip, 0);
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(any),
        socket2::Type::STREAM,
        None,
    )
    .expect("socket");
    sock.bind(&any.into()).expect("bind");
    let addr = sock
        .local_addr()
        .unwrap()
        .as_socket()
        .expect("an IP socket");
    ClosedPort { addr, _held: sock }
}

// ---------------------------------------------------------------------------
// SOCKS clients
// ---------------------------------------------------------------------------

pub mod rep {
    pub const SUCCEEDED: u8 = 0x00;
    pub const GENERAL_FAILURE: u8 = 0x01;
    pub const NETWORK_UNREACHABLE: u8 = 0x03;
    pub const HOST_UNREACHABLE: u8 = 0x04;
    pub const CONNECTION_REFUSED: u8 = 0x05;
    pub const TTL_EXPIRED: u8 = 0x06;
    pub const COMMAND_NOT_SUPPORTED: u8 = 0x07;
    pub const ATYP_NOT_SUPPORTED: u8 = 0x08;
}

#[derive(Clone, Debug)]
pub enum Dest {
    Addr(SocketAddr),
    Name(String, u16),
}

impl Dest {
    pub fn name(name: &str, port: u16) -> Dest {
        Dest::Name(name.to_string(), port)
    }
}

impl From<SocketAddr> for Dest {
    fn from(a: SocketAddr) -> Dest {
        Dest::Addr(a)
    }
}

/// A client socket to the proxy with read/write timeouts set.
pub fn client(proxy: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&proxy, IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect to proxy {proxy}: {e}"));
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

pub const GREETING: [u8; 3] = [0x05, 0x01, 0x00];

/// SOCKS5 request bytes: VER CMD RSV ATYP DST.ADDR DST.PORT.
pub fn socks5_request(cmd: u8, dest: &Dest) -> Vec<u8> {
    let mut v = vec![0x05, cmd, 0x00];
    let port = match dest {
        Dest::Addr(SocketAddr::V4(a)) => {
            v.push(0x01);
            v.extend_from_slice(&a.ip().octets());
            a.port()
        }
        Dest::Addr(SocketAddr::V6(a)) => {
            v.push(0x04);
            v.extend_from_slice(&a.ip().octets());
            a.port()
        }
        Dest::Name(name, port) => {
            v.push(0x03);
            v.push(u8::try_from(name.len()).expect("name too long"));
            v.extend_from_slice(name.as_bytes());
            *port
        }
    };
    v.extend_from_slice(&port.to_be_bytes());
    v
}

#[derive(Debug, Clone)]
pub struct Reply5 {
    pub rep: u8,
    pub atyp: u8,
    /// BND.ADDR:BND.PORT when ATYP is 1 or 4.
    pub bnd: Option<SocketAddr>,
    pub raw: Vec<u8>,
}

/// Reads and strictly parses a SOCKS5 reply.
pub fn read_reply5(s: &mut TcpStream) -> io::Result<Reply5> {
    let mut head = [0u8; 4];
    s.read_exact(&mut head)?;
    let mut raw = head.to_vec();
    if head[0] != 0x05 || head[2] != 0x00 {
        return Err(io::Error::new(
            ErrorKind::InvalidData,
            format!("bad SOCKS5 reply header {head:02x?}"),
        ));
    }
    let bnd = match head[3] {
        0x01 => {
            let mut b = [0u8; 6];
            s.read_exact(&mut b)?;
            raw.extend_from_slice(&b);
            let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            Some(SocketAddr::new(
                IpAddr::V4(ip),
                u16::from_be_bytes([b[4], b[5]]),
            ))
        }
        0x04 => {
            let mut b = [0u8; 18];
            s.read_exact(&mut b)?;
            raw.extend_from_slice(&b);
            let mut o = [0u8; 16];
            o.copy_from_slice(&b[..16]);
            Some(SocketAddr::new(
                IpAddr::V6(o.into()),
                u16::from_be_bytes([b[16], b[17]]),
            ))
        }
        0x03 => {
            let mut l = [0u8; 1];
            s.read_exact(&mut l)?;
            let mut b = vec![0u8; l[0] as usize + 2];
            s.read_exact(&mut b)?;
            raw.push(l[0]);
            raw.extend_from_slice(&b);
            None
        }
        other => {
            return Err(io::Error::new(
                ErrorKind::InvalidData,
                format!("bad ATYP {other:#04x} in SOCKS5 reply {head:02x?}"),
            ))
        }
    };
    Ok(Reply5 {
        rep: head[1],
        atyp: head[3],
        bnd,
        raw,
    })
}

/// Greeting (method 0x00) and check of the method selection reply.
pub fn socks5_greet(s: &mut TcpStream) {
    s.write_all(&GREETING).expect("send greeting");
    let mut r = [0u8; 2];
    s.read_exact(&mut r).expect("read method selection");
    assert_eq!(r, [0x05, 0x00], "method selection reply");
}

/// Connects to the proxy, greets, sends CONNECT to `dest`, returns the reply.
pub fn socks5_connect(proxy: SocketAddr, dest: impl Into<Dest>) -> (TcpStream, Reply5) {
    let dest = dest.into();
    let mut s = client(proxy);
    socks5_greet(&mut s);
    s.write_all(&socks5_request(0x01, &dest))
        .expect("send request");
    let reply = read_reply5(&mut s).unwrap_or_else(|e| panic!("reply to CONNECT {dest:?}: {e}"));
    (s, reply)
}

/// Like [`socks5_connect`] but asserts success and returns the stream.
pub fn socks5_ok(proxy: SocketAddr, dest: impl Into<Dest>) -> (TcpStream, SocketAddr) {
    let dest = dest.into();
    let (s, reply) = socks5_connect(proxy, dest.clone());
    assert_eq!(
        reply.rep,
        rep::SUCCEEDED,
        "CONNECT {dest:?} failed: reply {:02x?}",
        reply.raw
    );
    let bnd = reply
        .bnd
        .unwrap_or_else(|| panic!("success reply without an IP BND.ADDR: {:02x?}", reply.raw));
    (s, bnd)
}

/// SOCKS4 (domain None) or SOCKS4a (domain Some) CONNECT request.
pub fn socks4_request(ip: Ipv4Addr, port: u16, user: &[u8], domain: Option<&str>) -> Vec<u8> {
    let mut v = vec![0x04, 0x01];
    v.extend_from_slice(&port.to_be_bytes());
    v.extend_from_slice(&ip.octets());
    v.extend_from_slice(user);
    v.push(0);
    if let Some(d) = domain {
        v.extend_from_slice(d.as_bytes());
        v.push(0);
    }
    v
}

pub fn read_reply4(s: &mut TcpStream) -> io::Result<[u8; 8]> {
    let mut r = [0u8; 8];
    s.read_exact(&mut r)?;
    Ok(r)
}

/// Reads until the peer closes. Returns what was received before the close,
/// or an error string if the connection was still open after `within`.
/// A reset counts as closed.
pub fn read_until_closed(s: &mut TcpStream, within: Duration) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "connection still open after {within:?} (received {got:02x?})"
            ));
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return Ok(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(format!(
                    "connection still open after {within:?} (received {got:02x?})"
                ))
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Ok(got), // reset / aborted: closed
        }
    }
}

/// Reads everything until EOF (a reset is an error here).
pub fn read_to_eof(s: &mut TcpStream) -> Vec<u8> {
    let mut v = Vec::new();
    s.read_to_end(&mut v).expect("read until EOF");
    v
}

// ---------------------------------------------------------------------------
// Deterministic byte stream
// ---------------------------------------------------------------------------

/// splitmix64 stream of bytes; `fill` continues where it left off.
pub struct Prng {
    state: u64,
    spare: [u8; 8],
    spare_len: usize,
}

impl Prng {
    pub fn new(seed: u64) -> Prng {
        Prng {
            state: seed,
            spare: [0; 8],
            spare_len: 0,
        }
    }

    #[inline]
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn fill(&mut self, mut buf: &mut [u8]) {
        if self.spare_len > 0 {
            let n = self.spare_len.min(buf.len());
            let start = 8 - self.spare_len;
            buf[..n].copy_from_slice(&self.spare[start..start + n]);
            self.spare_len -= n;
            buf = &mut buf[n..];
        }
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            self.spare = self.next_u64().to_le_bytes();
            let n = rest.len();
            rest.copy_from_slice(&self.spare[..n]);
            self.spare_len = 8 - n;
        }
    }
}

/// Checks received bytes against the stream a [`Prng`] with the same seed
/// produces.
pub struct Verifier {
    prng: Prng,
    scratch: Vec<u8>,
    pub offset: u64,
}

impl Verifier {
    pub fn new(seed: u64) -> Verifier {
        Verifier {
            prng: Prng::new(seed),
            scratch: Vec::new(),
            offset: 0,
        }
    }

    pub fn check(&mut self, data: &[u8]) -> Result<(), String> {
        self.scratch.resize(data.len(), 0);
        self.prng.fill(&mut self.scratch);
        if self.scratch[..] != data[..] {
            let i = data
                .iter()
                .zip(&self.scratch)
                .position(|(a, b)| a != b)
                .unwrap();
            return Err(format!(
                "byte {} differs: got {:#04x}, expected {:#04x}",
                self.offset + i as u64,
                data[i],
                self.scratch[i]
            ));
        }
        self.offset += data.len() as u64;
        Ok(())
    }
}

/// Sends `len` bytes of the stream `seed` using `chunk`-sized writes.
pub fn send_stream(s: &mut TcpStream, seed: u64, len: u64, chunk: usize) -> io::Result<()> {
    let mut prng = Prng::new(seed);
    let mut buf = vec![0u8; chunk];
    let mut left = len;
    while left > 0 {
        let n = (chunk as u64).min(left) as usize;
        prng.fill(&mut buf[..n]);
        s.write_all(&buf[..n])?;
        left -= n as u64;
    }
    Ok(())
}

/// Reads until EOF and verifies that exactly `len` bytes of stream `seed`
/// arrived.
pub fn recv_stream(s: &mut TcpStream, seed: u64, len: u64, chunk: usize) -> Result<(), String> {
    let mut v = Verifier::new(seed);
    let mut buf = vec![0u8; chunk];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if v.offset + n as u64 > len {
                    return Err(format!(
                        "received more than the {len} bytes sent (at least {})",
                        v.offset + n as u64
                    ));
                }
                v.check(&buf[..n])?;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read error after {} bytes: {e}", v.offset)),
        }
    }
    if v.offset != len {
        return Err(format!("EOF after {} of {len} bytes", v.offset));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Root and network namespaces
// ---------------------------------------------------------------------------

/// Effective uid from /proc/self/status.
pub fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .expect("Uid line");
    line.split_whitespace().nth(2) == Some("0")
}

/// The variable `.ci/run` sets: where every test must run, a skip fails.
pub const REQUIRE_ALL: &str = "DISPATCH_TEST_REQUIRE_ALL";

/// The one way a test says it does not run. The line goes to the process's
/// real stderr (descriptor 2, unbuffered), which the harness does not
/// capture, so `cargo test` shows it even though the test then passes.
/// With `DISPATCH_TEST_REQUIRE_ALL` set (not empty, not "0"), as `.ci/run`
/// does, the skip is a failure instead, with the same reason.
pub fn not_run(test: &str, why: &str) {
    let line = format!("NOT RUN: {test} {why}");
    let required = std::env::var_os(REQUIRE_ALL).is_some_and(|v| !v.is_empty() && v != "0");
    assert!(
        !required,
        "{line}, and {REQUIRE_ALL} is set: this test must run here"
    );
    // `eprintln!` goes into the harness's capture, `io::stderr()` does not.
    let _ = writeln!(io::stderr(), "{line}");
}

/// True if the test may run; otherwise says NOT RUN (see [`not_run`]).
pub fn require_root(test: &str) -> bool {
    if is_root() {
        true
    } else {
        not_run(test, "needs root (network namespaces)");
        false
    }
}

/// `ip netns add`/`del` and mounts are not safe to race within one process.
static NETNS_LOCK: Mutex<()> = Mutex::new(());

/// The PID of the test process that made namespace `name`, if the name is
/// one of ours: `dt<tag>-<pid>-<n>` as [`Netns::new`] makes it.
fn netns_creator(name: &str) -> Option<u32> {
    if !name.starts_with("dt") {
        return None;
    }
    let mut fields = name.rsplit('-');
    fields.next()?.parse::<u64>().ok()?;
    fields.next()?.parse().ok()
}

/// Deletes the `dt*` namespaces, and their /etc/netns dirs, whose creating
/// process is gone. Other test processes (other checkouts, other binaries)
/// may be running namespace tests right now: theirs are left alone. A PID
/// reused since only delays a sweep.
fn sweep_orphan_netns() {
    let listed = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let etc: Vec<String> = std::fs::read_dir("/etc/netns")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    let names = listed
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .chain(etc);
    for name in names {
        let Some(pid) = netns_creator(&name) else {
            continue;
        };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(&name));
    }
}

pub fn sh(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace with `lo` up, deleted (with its /etc/netns dir) on drop.
pub struct Netns {
    pub name: String,
    etc_dir: Option<PathBuf>,
}

impl Netns {
    /// A veth pair v0/v1, both ends here and up, 192.0.2.1/24 on v0.
    /// Nobody has 192.0.2.2, so ARP for it is never answered and a connect
    /// to it hangs until the connect timeout; no packet leaves the namespace.
    #[allow(dead_code)] // not every test binary uses it
    pub fn add_silent_link(&self) {
        self.ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"]);
        self.ip(&["addr", "add", "192.0.2.1/24", "dev", "v0"]);
        self.ip(&["link", "set", "v0", "up"]);
        self.ip(&["link", "set", "v1", "up"]);
    }

    /// A new namespace `dt<tag>-<pid>-<n>` (see [`unique`]); first sweeps
    /// what test processes that died (an abort, a SIGKILL) left behind.
    pub fn new(tag: &str) -> Netns {
        let name = unique(&format!("dt{tag}"));
        {
            let _g = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            sweep_orphan_netns();
            sh("ip", &["netns", "add", &name]);
        }
        let ns = Netns {
            name,
            etc_dir: None,
        };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NAME ARGS`.
    pub fn ip(&self, args: &[&str]) {
        let mut a = vec!["-n", self.name.as_str()];
        a.extend_from_slice(args);
        sh("ip", &a);
    }

    /// Makes `ip netns exec` bind-mount a resolv.conf pointing at 127.0.0.1
    /// inside the namespace (where nothing listens), so no DNS query leaves.
    pub fn isolate_dns(&mut self) {
        let dir = PathBuf::from("/etc/netns").join(&self.name);
        std::fs::create_dir_all(&dir).expect("create /etc/netns/NAME");
        self.etc_dir = Some(dir.clone());
        std::fs::write(dir.join("resolv.conf"), "nameserver 127.0.0.1\n")
            .expect("write resolv.conf");
    }

    /// `ip netns exec NAME PROG ARGS`, returning its output.
    pub fn exec(&self, prog: &str, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, prog]).args(args);
        scrub_env(&mut cmd);
        cmd.output()
            .unwrap_or_else(|e| panic!("ip netns exec {prog}: {e}"))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _g = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        if let Some(dir) = &self.etc_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A SOCKS5 client in Python, run inside a namespace. Prints one line:
/// `REPLY <hex> CLOSED <0|1> SECS <elapsed>` or `ERROR <text>`. CLOSED is
/// only checked (for up to 5 s) after an error reply. `atyp` "4a" makes it a
/// SOCKS4a client instead; a 7th argument "abandon" makes it close right
/// after sending the request.
const PY_SOCKS5: &str = r#"
import socket, sys, time
host, port, atyp, dst, dport = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
abandon = len(sys.argv) > 6 and sys.argv[6] == "abandon"
def exact(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError("EOF after %d of %d bytes: %s" % (len(b), n, b.hex()))
        b += c
    return b
try:
    s = socket.create_connection((host, port), timeout=15)
    if atyp == "4a":
        req = b"\x04\x01" + dport.to_bytes(2, "big") + b"\x00\x00\x00\x01u\x00" + dst.encode() + b"\x00"
    else:
        s.sendall(b"\x05\x01\x00")
        m = exact(s, 2)
        if m != b"\x05\x00":
            print("ERROR method reply " + m.hex()); sys.exit(0)
        if atyp == "4":
            a = b"\x01" + socket.inet_pton(socket.AF_INET, dst)
        elif atyp == "6":
            a = b"\x04" + socket.inet_pton(socket.AF_INET6, dst)
        else:
            a = b"\x03" + bytes([len(dst)]) + dst.encode()
        req = b"\x05\x01\x00" + a + dport.to_bytes(2, "big")
    t = time.monotonic()
    s.sendall(req)
    if abandon:
        s.close()
        print("REPLY 0000 CLOSED 1 SECS 0"); sys.exit(0)
    if atyp == "4a":
        r = exact(s, 8)
        ok = r[1] == 0x5A
    else:
        r = exact(s, 4)
        n = {1: 6, 4: 18}.get(r[3])
        if n is None and r[3] == 3:
            n = exact(s, 1)[0] + 2
            r += bytes([n - 2])
        if n is None:
            print("ERROR bad atyp " + r.hex()); sys.exit(0)
        r += exact(s, n)
        ok = r[1] == 0
    el = time.monotonic() - t
    closed = 0
    if not ok:
        s.settimeout(5)
        try:
            closed = 1 if s.recv(1) == b"" else 0
        except ConnectionResetError:
            closed = 1
        except socket.timeout:
            closed = 0
    print("REPLY %s CLOSED %d SECS %.3f" % (r.hex(), closed, el))
except Exception as e:
    print("ERROR %r" % (e,))
"#;

#[derive(Debug)]
pub struct NsReply {
    pub raw: Vec<u8>,
    pub closed: bool,
    pub secs: f64,
}

impl NsReply {
    pub fn rep(&self) -> u8 {
        self.raw[1]
    }
}

/// Runs a SOCKS5 CONNECT from inside `ns` to the proxy at `proxy`.
/// `atyp` is "4", "6" or "name".
pub fn ns_socks5(ns: &Netns, proxy: SocketAddr, atyp: &str, dst: &str, dport: u16) -> NsReply {
    ns_socks(ns, proxy, atyp, dst, dport, false)
}

/// Sends the request, then closes at once without waiting for the reply.
pub fn ns_socks5_abandon(ns: &Netns, proxy: SocketAddr, dst: &str, dport: u16) {
    ns_socks(ns, proxy, "4", dst, dport, true);
}

fn ns_socks(
    ns: &Netns,
    proxy: SocketAddr,
    atyp: &str,
    dst: &str,
    dport: u16,
    abandon: bool,
) -> NsReply {
    let out = ns.exec(
        "python3",
        &[
            "-c",
            PY_SOCKS5,
            &proxy.ip().to_string(),
            &proxy.port().to_string(),
            atyp,
            dst,
            &dport.to_string(),
            if abandon { "abandon" } else { "wait" },
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && stdout.starts_with("REPLY "),
        "python SOCKS5 client in {} failed ({}): {}{}",
        ns.name,
        out.status,
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    let f: Vec<&str> = stdout.split_whitespace().collect();
    let raw = (0..f[1].len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&f[1][i..i + 2], 16).unwrap())
        .collect::<Vec<u8>>();
    NsReply {
        raw,
        closed: f[3] == "1",
        secs: f[5].parse().unwrap(),
    }
}

/// Answers every HTTP request with the client's address (IPv4 clients of
/// its dual-stack socket as `::ffff:a.b.c.d`).
const PY_WHOAMI: &str = r#"
import http.server, socket, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = self.client_address[0].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
class S(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()
S(("::", int(sys.argv[1])), H).serve_forever()
"#;

/// An HTTP server inside a namespace that answers with the client's
/// address; killed on drop.
#[allow(dead_code)] // not every test binary uses it
pub struct WhoAmI(std::process::Child);

#[allow(dead_code)]
impl WhoAmI {
    /// Starts it in `ns` on every address, port `port`, and waits until it
    /// answers on `ip`.
    pub fn start(ns: &Netns, ip: &str, port: u16) -> WhoAmI {
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "python3", "-c", PY_WHOAMI])
            .arg(port.to_string())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start the HTTP server");
        let server = WhoAmI(child);
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            let probe =
                "import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 1)";
            if ns
                .exec("python3", &["-c", probe, ip, &port.to_string()])
                .status
                .success()
            {
                return server;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the HTTP server in {} never listened", ns.name);
    }
}

impl Drop for WhoAmI {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `curl <how> PROXY URL` from inside `ns` (how: `--socks5`,
/// `--socks5-hostname`, ...): the body, or a panic with curl's error and the
/// proxy's log.
#[allow(dead_code)]
pub fn ns_curl(ns: &Netns, proxy: &Proxy, how: &str, url: &str) -> String {
    let out = ns.exec(
        "curl",
        &["-sS", "--max-time", "20", how, &proxy.addr.to_string(), url],
    );
    assert!(
        out.status.success(),
        "curl {how} {url} failed: {}\nproxy log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        tail(&proxy.stdout(), 30)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// How the proxy relays: through kernel pipes with splice (Linux's
/// default) or through its rings (`DISPATCH_SPLICE=0`, and every other
/// system). Tests of the relay run both ways.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Relay {
    Splice,
    Rings,
}

impl Relay {
    pub const BOTH: [Relay; 2] = [Relay::Splice, Relay::Rings];
}

/// [`Proxy::start`], relaying as `relay` says.
pub fn start_relaying(relay: Relay, args: &[&str]) -> Proxy {
    let env = match relay {
        Relay::Splice => Vec::new(),
        Relay::Rings => vec![("DISPATCH_SPLICE", "0".to_string())],
    };
    Proxy::launch(
        &Launch {
            env,
            ..Launch::default()
        },
        args,
    )
}
