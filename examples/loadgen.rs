//! The load generator of `benches/compare.sh`: the same load, from the same
//! program, against dispatch, other SOCKS5 servers, and the direct path.
//! Every byte that comes back is checked; a run that sees a wrong byte, a
//! short stream or a refused CONNECT prints `ok=0` and exits with status 1,
//! so a server that corrupts data fails instead of looking fast.
//!
//! ```text
//! loadgen serve [ADDR]                      the far end (mio, one thread); prints "listening ADDR"
//! loadgen throughput PROXY TARGET STREAMS BYTES [PID]
//! loadgen rate PROXY TARGET CONCURRENCY SECS
//! loadgen idle PROXY TARGET PID CONNS MAX [SECS]
//! loadgen udp PROXY DESTS COUNT WINDOW [PID]
//! loadgen report RESULTS.tsv OUT.md OUT.svg MACHINE-LINE
//! ```
//!
//! `PROXY` is a SOCKS5 server's address, or `direct` to talk to `TARGET`
//! (an echo server) straight. `PID` is the proxy's process: its CPU time and
//! memory are summed over it and all its descendants (dante forks), memory as
//! PSS so pages shared between processes count once. Each measuring command
//! prints one line of `key=value` fields; `report` turns the lines that
//! compare.sh collected into the README table and chart.
//!
//! `udp` echoes COUNT datagrams of [`UDP_PAYLOAD`] bytes (uTP's size)
//! through one UDP ASSOCIATE (or straight, with `direct`) to DESTS echo
//! sockets of its own on 127.0.0.1, round robin, WINDOW in flight; every
//! datagram that comes back is checked (the header names its destination,
//! the bytes are the pattern for its sequence number). Before that, 2,000
//! datagrams one at a time give the round trip's p50/p99 unloaded.
//!
//! Linux only for the measurements (`/proc`); it builds everywhere.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::exit;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

const CHUNK: usize = 256 << 10;
/// Length of the repeating test pattern: odd, so chunk boundaries and the
/// pattern's period never line up.
const PATTERN_LEN: usize = (1 << 20) + 13;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a = |i: usize| -> &str {
        args.get(i).map(String::as_str).unwrap_or_else(|| {
            eprintln!("missing argument {i}; see the usage in examples/loadgen.rs");
            exit(2)
        })
    };
    let _ = dispatch::sys::raise_nofile_limit();
    match a(0) {
        "serve" => serve(args.get(1).map_or("127.0.0.1:0", String::as_str)),
        "throughput" => throughput(
            proxy_arg(a(1)),
            parse(a(2)),
            parse(a(3)),
            parse(a(4)),
            args.get(5).map(|p| parse(p)),
        ),
        "rate" => rate(proxy_arg(a(1)), parse(a(2)), parse(a(3)), parse(a(4))),
        "idle" => idle(
            proxy_arg(a(1)),
            parse(a(2)),
            parse(a(3)),
            parse(a(4)),
            parse(a(5)),
            args.get(6).map_or(f64::INFINITY, |s| parse(s)),
        ),
        "udp" => udp(
            proxy_arg(a(1)),
            parse(a(2)),
            parse(a(3)),
            parse(a(4)),
            args.get(5).map(|p| parse(p)),
        ),
        "report" => report(a(1), a(2), a(3), a(4)),
        other => {
            eprintln!("unknown command {other:?}; see examples/loadgen.rs");
            exit(2)
        }
    }
}

fn parse<T: std::str::FromStr>(s: &str) -> T {
    s.parse().unwrap_or_else(|_| {
        eprintln!("bad argument {s:?}");
        exit(2)
    })
}

fn proxy_arg(s: &str) -> Option<SocketAddr> {
    (s != "direct").then(|| parse(s))
}

/// Prints the failure as a result line and exits 1.
fn fail(what: &str, detail: impl std::fmt::Display) -> ! {
    println!("{what} ok=0 error={}", detail.to_string().replace(' ', "_"));
    exit(1)
}

// --- the test pattern ------------------------------------------------------

fn pattern() -> &'static [u8] {
    static P: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    P.get_or_init(|| {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut v = Vec::with_capacity(PATTERN_LEN + 8);
        while v.len() < PATTERN_LEN {
            // xorshift64*
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            v.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        v.truncate(PATTERN_LEN);
        v
    })
}

/// The pattern from `offset` on, at most `max` bytes, not wrapping.
fn pattern_at(offset: usize, max: usize) -> &'static [u8] {
    let p = pattern();
    let start = offset % PATTERN_LEN;
    &p[start..(start + max).min(PATTERN_LEN)]
}

/// Checks that `got` is the pattern from `offset` on.
fn matches_pattern(mut offset: usize, mut got: &[u8]) -> bool {
    while !got.is_empty() {
        let want = pattern_at(offset, got.len());
        if got[..want.len()] != *want {
            return false;
        }
        offset += want.len();
        got = &got[want.len()..];
    }
    true
}

// --- SOCKS5 client -----------------------------------------------------------

/// Connects to `target`, through the SOCKS5 server `proxy` when there is one:
/// greeting, method reply, CONNECT, reply, as a client that waits for each
/// answer does. With a timeout, every step has it, so a server that stops
/// answering ends a count instead of hanging it.
fn open(
    proxy: Option<SocketAddr>,
    target: SocketAddr,
    timeout: Option<Duration>,
) -> io::Result<TcpStream> {
    let to = proxy.unwrap_or(target);
    let mut s = match timeout {
        Some(t) => TcpStream::connect_timeout(&to, t)?,
        None => TcpStream::connect(to)?,
    };
    s.set_read_timeout(timeout)?;
    s.set_write_timeout(timeout)?;
    s.set_nodelay(true)?;
    if proxy.is_none() {
        return Ok(s);
    }
    s.write_all(&[5, 1, 0])?;
    let mut method = [0u8; 2];
    s.read_exact(&mut method)?;
    if method != [5, 0] {
        return Err(io::Error::other(format!("method reply {method:?}")));
    }
    let SocketAddr::V4(t) = target else {
        return Err(io::Error::other("IPv4 targets only"));
    };
    let mut req = vec![5, 1, 0, 1];
    req.extend_from_slice(&t.ip().octets());
    req.extend_from_slice(&t.port().to_be_bytes());
    s.write_all(&req)?;
    let mut head = [0u8; 4];
    s.read_exact(&mut head)?;
    if head[..2] != [5, 0] {
        return Err(io::Error::other(format!("CONNECT reply {head:?}")));
    }
    let rest = match head[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => {
            let mut n = [0u8; 1];
            s.read_exact(&mut n)?;
            usize::from(n[0]) + 2
        }
        other => return Err(io::Error::other(format!("reply ATYP {other}"))),
    };
    let mut bound = [0u8; 255 + 2];
    s.read_exact(&mut bound[..rest])?;
    Ok(s)
}

/// Sends `len` (at most 65,535) pattern bytes from `offset` in `mode`
/// ([`MODE_PING`] or [`MODE_HOLD`]) and checks they come back.
fn ping(s: &mut TcpStream, mode: u8, offset: usize, len: usize) -> io::Result<()> {
    let out = pattern_at(offset, len);
    let mut msg = Vec::with_capacity(3 + out.len());
    msg.push(mode);
    msg.extend_from_slice(&(out.len() as u16).to_be_bytes());
    msg.extend_from_slice(out);
    s.write_all(&msg)?;
    let mut back = vec![0u8; out.len()];
    s.read_exact(&mut back)?;
    if back != out {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "echo differs"));
    }
    Ok(())
}

/// Reads until EOF, which must come with no more bytes.
fn expect_eof(s: &mut TcpStream) -> io::Result<()> {
    let mut extra = [0u8; 1];
    match s.read(&mut extra)? {
        0 => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bytes after the echo",
        )),
    }
}

// --- udp: one association, many destinations --------------------------------

/// uTP's datagram size.
const UDP_PAYLOAD: usize = 1200;
/// Round trips timed one at a time for the latency figures.
const UDP_PINGS: u64 = 2000;
/// A datagram not back within this is lost.
const UDP_LOST_AFTER: Duration = Duration::from_millis(300);

/// Opens a UDP ASSOCIATE on `proxy` for `client` (whose address it
/// announces): the control connection (kept open) and the relay address.
fn associate(proxy: SocketAddr, client: SocketAddr) -> io::Result<(TcpStream, SocketAddr)> {
    let mut s = TcpStream::connect(proxy)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(&[5, 1, 0])?;
    let mut method = [0u8; 2];
    s.read_exact(&mut method)?;
    if method != [5, 0] {
        return Err(io::Error::other(format!("method reply {method:?}")));
    }
    let SocketAddr::V4(c) = client else {
        return Err(io::Error::other("IPv4 clients only"));
    };
    let mut req = vec![5, 3, 0, 1];
    req.extend_from_slice(&c.ip().octets());
    req.extend_from_slice(&c.port().to_be_bytes());
    s.write_all(&req)?;
    let mut head = [0u8; 10];
    s.read_exact(&mut head)?;
    if head[..2] != [5, 0] || head[3] != 1 {
        return Err(io::Error::other(format!("UDP ASSOCIATE reply {head:?}")));
    }
    let ip = std::net::Ipv4Addr::new(head[4], head[5], head[6], head[7]);
    let mut relay = SocketAddr::from((ip, u16::from_be_bytes([head[8], head[9]])));
    if ip.is_unspecified() {
        relay.set_ip(proxy.ip()); // "send to the address you reached me on"
    }
    Ok((s, relay))
}

/// The echo sockets, on one mio thread: each sends back what it gets.
fn udp_echoes(n: usize) -> Vec<SocketAddr> {
    use mio::net::UdpSocket;
    use mio::{Events, Interest, Poll, Token};
    let mut poll = Poll::new().unwrap();
    let mut socks: Vec<UdpSocket> = (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap())
        .collect();
    for (i, s) in socks.iter_mut().enumerate() {
        poll.registry()
            .register(s, Token(i), Interest::READABLE)
            .unwrap();
    }
    let addrs = socks.iter().map(|s| s.local_addr().unwrap()).collect();
    thread::spawn(move || {
        let mut events = Events::with_capacity(1024);
        let mut buf = vec![0u8; 65_536];
        loop {
            if poll.poll(&mut events, None).is_err() {
                continue;
            }
            for e in events.iter() {
                let s = &socks[e.token().0];
                while let Ok((len, from)) = s.recv_from(&mut buf) {
                    let _ = s.send_to(&buf[..len], from);
                }
            }
        }
    });
    addrs
}

/// Sends datagram `seq` to `dest`: through the relay with a SOCKS5 UDP
/// header (an IPv4 destination), or straight. The payload is the sequence
/// number, then the pattern from an offset it gives.
fn udp_send(
    sock: &std::net::UdpSocket,
    relay: Option<SocketAddr>,
    dest: SocketAddr,
    seq: u64,
    buf: &mut Vec<u8>,
) -> io::Result<()> {
    buf.clear();
    if relay.is_some() {
        let SocketAddr::V4(d) = dest else {
            unreachable!("echoes are on 127.0.0.1")
        };
        buf.extend_from_slice(&[0, 0, 0, 1]);
        buf.extend_from_slice(&d.ip().octets());
        buf.extend_from_slice(&d.port().to_be_bytes());
    }
    buf.extend_from_slice(&seq.to_be_bytes());
    buf.extend_from_slice(udp_pattern(seq));
    sock.send_to(buf, relay.unwrap_or(dest)).map(|_| ())
}

/// The bytes after datagram `seq`'s sequence number.
fn udp_pattern(seq: u64) -> &'static [u8] {
    pattern_at(
        seq as usize * 131 % (PATTERN_LEN - UDP_PAYLOAD),
        UDP_PAYLOAD - 8,
    )
}

/// Checks a datagram that came back and returns its sequence number.
fn udp_check(got: &[u8], relay: Option<SocketAddr>, dests: &[SocketAddr]) -> Result<u64, String> {
    let payload = match relay {
        Some(_) => {
            if got.len() < 10 || got[..4] != [0, 0, 0, 1] {
                return Err(format!("bad header {:?}", &got[..got.len().min(10)]));
            }
            got.get(10..).unwrap_or_default()
        }
        None => got,
    };
    if payload.len() != UDP_PAYLOAD {
        return Err(format!("{} bytes, not {UDP_PAYLOAD}", payload.len()));
    }
    let seq = u64::from_be_bytes(payload[..8].try_into().unwrap());
    if relay.is_some() {
        let dest = dests[(seq % dests.len() as u64) as usize];
        let SocketAddr::V4(d) = dest else {
            unreachable!()
        };
        if got[4..8] != d.ip().octets() || got[8..10] != d.port().to_be_bytes() {
            return Err(format!("datagram {seq} names another source"));
        }
    }
    if payload[8..] != *udp_pattern(seq) {
        return Err(format!("datagram {seq} came back wrong"));
    }
    Ok(seq)
}

fn udp(proxy: Option<SocketAddr>, dests: usize, count: u64, window: u64, pid: Option<u32>) {
    let addrs = udp_echoes(dests);
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let (_control, relay) = match proxy {
        Some(p) => match associate(p, sock.local_addr().unwrap()) {
            Ok((c, r)) => (Some(c), Some(r)),
            Err(e) => fail("udp", format!("UDP ASSOCIATE: {e}")),
        },
        None => (None, None),
    };
    let mut out = Vec::with_capacity(UDP_PAYLOAD + 10);
    let mut buf = vec![0u8; 65_536];
    let dest = |seq: u64| addrs[(seq % dests as u64) as usize];
    // Latency: one at a time, each datagram to the next destination.
    let mut rtt = Vec::with_capacity(UDP_PINGS as usize);
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut lost_pings = 0;
    for seq in 0..UDP_PINGS {
        let t = Instant::now();
        if let Err(e) = udp_send(&sock, relay, dest(seq), seq, &mut out) {
            fail("udp", format!("send: {e}"));
        }
        loop {
            match sock.recv_from(&mut buf) {
                Ok((n, _)) => match udp_check(&buf[..n], relay, &addrs) {
                    Ok(s) if s == seq => {
                        rtt.push(t.elapsed().as_secs_f64() * 1e6);
                        break;
                    }
                    Ok(_) => {} // a late one
                    Err(e) => fail("udp", e),
                },
                Err(_) => {
                    lost_pings += 1;
                    break;
                }
            }
        }
    }
    if rtt.is_empty() {
        fail("udp", "no datagram came back");
    }
    rtt.sort_by(f64::total_cmp);
    let pct = |p: f64| rtt[((rtt.len() - 1) as f64 * p).round() as usize];
    // Throughput: WINDOW in flight; one lost frees its place after a while.
    let base = UDP_PINGS;
    let mut back = vec![false; count as usize];
    let (mut sent, mut received, mut lost) = (0u64, 0u64, 0u64);
    let mut oldest = 0u64; // the oldest not known back or lost
    sock.set_read_timeout(Some(UDP_LOST_AFTER)).unwrap();
    let cpu0 = pid.map(cpu_seconds);
    let t0 = Instant::now();
    while oldest < count {
        while sent < count && sent - oldest < window {
            if let Err(e) = udp_send(&sock, relay, dest(base + sent), base + sent, &mut out) {
                fail("udp", format!("send: {e}"));
            }
            sent += 1;
        }
        match sock.recv_from(&mut buf) {
            Ok((n, _)) => {
                let seq = match udp_check(&buf[..n], relay, &addrs) {
                    Ok(s) => s,
                    Err(e) => fail("udp", e),
                };
                if seq < base || seq - base < oldest || back[(seq - base) as usize] {
                    continue; // a ping, one given up as lost, or a duplicate
                }
                back[(seq - base) as usize] = true;
                received += 1;
            }
            Err(_) => {
                // Nothing for a while: what is in flight is lost.
                lost += sent - oldest - (oldest..sent).filter(|&s| back[s as usize]).count() as u64;
                oldest = sent;
            }
        }
        while oldest < sent && back[oldest as usize] {
            oldest += 1;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = pid.map(|p| cpu_seconds(p) - cpu0.unwrap());
    // Payload relayed, both ways.
    let bytes = received * UDP_PAYLOAD as u64 * 2;
    if lost * 20 > count {
        fail("udp", format!("{lost} of {count} datagrams lost"));
    }
    let mut line = format!(
        "udp ok=1 dests={dests} window={window} sent={count} received={received} lost={lost} \
         secs={secs:.3} per_sec={:.0} bytes={bytes} p50_us={:.1} p99_us={:.1} lost_pings={lost_pings}",
        received as f64 / secs,
        pct(0.5),
        pct(0.99),
    );
    if let Some(cpu) = cpu {
        let _ = write!(
            line,
            " cpu_s={cpu:.3} cpu_s_per_gb={:.3}",
            cpu / (bytes as f64 / 1e9)
        );
    }
    println!("{line}");
}

// --- /proc accounting ----------------------------------------------------

/// `pid` and all its descendants.
fn tree(pid: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if let Some(f) = stat_fields(p) {
                // Fields after the command: state, ppid, ...
                if let Some(ppid) = f.get(1).and_then(|s| s.parse::<u32>().ok()) {
                    parent_of.push((p, ppid));
                }
            }
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(parent_of.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    out
}

/// The fields of `/proc/PID/stat` after the `(comm)` field.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// CPU seconds used by the process tree: user and system time of each live
/// process, plus what each has collected from children that exited.
fn cpu_seconds(pid: u32) -> f64 {
    // utime stime cutime cstime are fields 14-17 of stat, 11-14 after comm.
    let ticks: u64 = tree(pid)
        .into_iter()
        .filter_map(stat_fields)
        .map(|f| {
            f[11..15]
                .iter()
                .map(|v| v.parse::<u64>().unwrap_or(0))
                .sum::<u64>()
        })
        .sum();
    ticks as f64 / 100.0 // USER_HZ
}

/// Proportional set size of the process tree, KiB.
fn pss_kib(pid: u32) -> u64 {
    tree(pid)
        .into_iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/smaps_rollup")).ok())
        .filter_map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .sum()
}

// --- serve: the far end ---------------------------------------------------

// What a client asks the server for with its first byte. The server closes
// first in every mode, as an HTTP/1.0 server does: the TIME_WAIT states then
// stay on the servers' listening ports instead of taking ephemeral ports,
// which tens of thousands of connections a round would exhaust (dante binds
// every outgoing socket to a port of its own and fails when none is free).

/// Followed by two big-endian u64s, a byte count and a pattern offset: the
/// server sends that many pattern bytes from that offset, then closes.
const MODE_SEND: u8 = b'D';
/// Followed by a big-endian u16 length and that many bytes: the server
/// echoes them, then closes.
const MODE_PING: u8 = b'P';
/// As [`MODE_PING`], but the server then holds the connection until the
/// client sends one more byte, and closes then.
const MODE_HOLD: u8 = b'H';

/// The far end of every test: one mio thread, so it holds thousands of idle
/// connections without a thread each (the machine has 32,768 pids).
fn serve(addr: &str) {
    use mio::net::TcpListener;
    use mio::{Events, Interest, Poll, Token};

    enum Mode {
        /// The first bytes, until the mode is known.
        Header(Vec<u8>),
        Send {
            left: u64,
            offset: usize,
        },
        /// Echoing; `left` bytes still to come.
        Ping {
            left: usize,
            hold: bool,
        },
        /// Echoed; waiting for the client's word to close.
        Held,
    }
    struct Conn {
        s: mio::net::TcpStream,
        mode: Mode,
        /// Received, not yet echoed (only when the client reads slower).
        pending: Vec<u8>,
    }
    const LISTENER: Token = Token(usize::MAX);
    let addr: SocketAddr = parse(addr);
    let mut poll = Poll::new().unwrap();
    let mut listener = TcpListener::bind(addr).unwrap();
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .unwrap();
    println!("listening {}", listener.local_addr().unwrap());
    io::stdout().flush().unwrap();
    let mut conns = slab::Slab::<Conn>::new();
    let mut buf = vec![0u8; CHUNK];
    let mut events = Events::with_capacity(1024);
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            panic!("poll: {e}");
        }
        for ev in &events {
            if ev.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut s, _)) => {
                            let _ = s.set_nodelay(true);
                            let entry = conns.vacant_entry();
                            poll.registry()
                                .register(
                                    &mut s,
                                    Token(entry.key()),
                                    Interest::READABLE | Interest::WRITABLE,
                                )
                                .unwrap();
                            entry.insert(Conn {
                                s,
                                mode: Mode::Header(Vec::new()),
                                pending: Vec::new(),
                            });
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            // Out of descriptors: let the clients time out.
                            eprintln!("accept: {e}");
                            thread::sleep(Duration::from_millis(10));
                            break;
                        }
                    }
                }
                continue;
            }
            let key = ev.token().0;
            let Some(c) = conns.get_mut(key) else {
                continue;
            };
            let done = drive(c, &mut buf).unwrap_or(true);
            if done {
                let mut c = conns.remove(key);
                let _ = c.s.shutdown(Shutdown::Write);
                let _ = poll.registry().deregister(&mut c.s);
            }
        }
    }

    /// Does what the connection's readiness allows; true when it is finished.
    fn drive(c: &mut Conn, buf: &mut [u8]) -> io::Result<bool> {
        loop {
            match &mut c.mode {
                Mode::Header(head) => {
                    let n = match c.s.read(buf) {
                        Ok(0) => return Ok(true),
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    };
                    head.extend_from_slice(&buf[..n]);
                    match head[0] {
                        mode @ (MODE_PING | MODE_HOLD) if head.len() >= 3 => {
                            let len = usize::from(u16::from_be_bytes([head[1], head[2]]));
                            c.pending = head.split_off(3);
                            c.mode = Mode::Ping {
                                left: len.saturating_sub(c.pending.len()),
                                hold: mode == MODE_HOLD,
                            };
                        }
                        MODE_PING | MODE_HOLD => {}
                        MODE_SEND if head.len() >= 17 => {
                            let left = u64::from_be_bytes(head[1..9].try_into().unwrap());
                            let offset = u64::from_be_bytes(head[9..17].try_into().unwrap());
                            c.mode = Mode::Send {
                                left,
                                offset: (offset % PATTERN_LEN as u64) as usize,
                            };
                        }
                        MODE_SEND => {}
                        _ => return Ok(true),
                    }
                }
                Mode::Send { left, offset } => {
                    if *left == 0 {
                        return Ok(true);
                    }
                    let chunk = pattern_at(*offset, (*left).min(CHUNK as u64) as usize);
                    match c.s.write(chunk) {
                        Ok(n) => {
                            *left -= n as u64;
                            *offset = (*offset + n) % PATTERN_LEN;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                Mode::Ping { left, hold } => {
                    while !c.pending.is_empty() {
                        match c.s.write(&c.pending) {
                            Ok(n) => {
                                c.pending.drain(..n);
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => return Err(e),
                        }
                    }
                    if *left == 0 {
                        if !*hold {
                            return Ok(true);
                        }
                        c.mode = Mode::Held;
                        continue;
                    }
                    let want = (*left).min(buf.len());
                    match c.s.read(&mut buf[..want]) {
                        Ok(0) => return Ok(true),
                        Ok(n) => {
                            *left -= n;
                            c.pending.extend_from_slice(&buf[..n]);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                Mode::Held => {
                    return match c.s.read(buf) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
                        // The word to close, EOF or an error.
                        _ => Ok(true),
                    };
                }
            }
        }
    }
}

// --- throughput ------------------------------------------------------------

/// STREAMS connections at once each download their share of BYTES from the
/// server through the proxy, checking every byte against the pattern.
/// Throughput is payload bytes per second; CPU is the proxy's per GB relayed.
///
/// One way only, on purpose: with both ways saturated at once (an echo),
/// a relay that blocks in `write` (microsocks: a thread per connection)
/// deadlocks, the upstream and the client each waiting on the other.
fn throughput(
    proxy: Option<SocketAddr>,
    target: SocketAddr,
    streams: usize,
    bytes: u64,
    pid: Option<u32>,
) {
    let per_stream = bytes / streams as u64;
    let mut socks = Vec::new();
    for i in 0..streams {
        match open(proxy, target, None) {
            Ok(s) => socks.push(s),
            Err(e) => fail("throughput", format!("connection {i}: {e}")),
        }
    }
    let start = Arc::new(Barrier::new(streams + 1));
    let bad = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for (i, mut s) in socks.into_iter().enumerate() {
        let offset = i * 7919;
        let (start, bad, received) = (Arc::clone(&start), Arc::clone(&bad), Arc::clone(&received));
        workers.push(thread::spawn(move || {
            let mut ask = vec![MODE_SEND];
            ask.extend_from_slice(&per_stream.to_be_bytes());
            ask.extend_from_slice(&(offset as u64).to_be_bytes());
            let mut buf = vec![0u8; CHUNK];
            let mut got = 0usize;
            start.wait();
            if s.write_all(&ask).is_err() {
                return;
            }
            loop {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if !matches_pattern(offset + got, &buf[..n]) {
                            bad.store(true, Ordering::SeqCst);
                            return;
                        }
                        got += n;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            received.fetch_add(got as u64, Ordering::SeqCst);
        }));
    }
    let cpu0 = pid.map(cpu_seconds);
    start.wait();
    let t0 = Instant::now();
    for w in workers {
        w.join().unwrap();
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = pid.map(|p| cpu_seconds(p) - cpu0.unwrap());
    let expected = per_stream * streams as u64;
    if bad.load(Ordering::SeqCst) {
        fail("throughput", "a byte came back wrong");
    }
    let got = received.load(Ordering::SeqCst);
    if got != expected {
        fail("throughput", format!("{got} of {expected} bytes came back"));
    }
    let gb = expected as f64 / 1e9;
    let mut line = format!(
        "throughput ok=1 streams={streams} bytes={expected} secs={secs:.4} gbps={:.4}",
        gb / secs
    );
    if let Some(cpu) = cpu {
        let _ = write!(line, " cpu_s={cpu:.3} cpu_s_per_gb={:.4}", cpu / gb);
    }
    println!("{line}");
}

// --- rate: connections per second at a concurrency ---------------------------

/// CONCURRENCY clients, each in a loop for SECS: open a connection through the
/// proxy (TCP connect, greeting, CONNECT, reply), check a 32-byte echo, see
/// the server close. Latency is from the TCP connect to the CONNECT reply.
fn rate(proxy: Option<SocketAddr>, target: SocketAddr, concurrency: usize, secs: f64) {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Arc::new(Barrier::new(concurrency));
    let workers: Vec<_> = (0..concurrency)
        .map(|i| {
            let start = Arc::clone(&start);
            thread::spawn(move || {
                let mut lat = Vec::new();
                let mut errors = 0u64;
                start.wait();
                let mut n = 0usize;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let result =
                        open(proxy, target, Some(Duration::from_secs(5))).and_then(|mut s| {
                            let l = t.elapsed();
                            ping(&mut s, MODE_PING, i * 131 + n * 32, 32)?;
                            expect_eof(&mut s)?;
                            Ok(l)
                        });
                    match result {
                        Ok(l) => lat.push(l),
                        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                            fail("rate", "a byte came back wrong")
                        }
                        Err(_) => errors += 1,
                    }
                    n += 1;
                }
                (lat, errors)
            })
        })
        .collect();
    let t0 = Instant::now();
    let mut lat = Vec::new();
    let mut errors = 0;
    for w in workers {
        let (l, e) = w.join().unwrap();
        lat.extend(l);
        errors += e;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    if lat.is_empty() {
        fail("rate", format!("no connection succeeded ({errors} errors)"));
    }
    lat.sort();
    let q = |p: f64| lat[((lat.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3;
    println!(
        "rate ok=1 conns={} errors={errors} secs={elapsed:.3} per_sec={:.0} p50_ms={:.3} p99_ms={:.3}",
        lat.len(),
        lat.len() as f64 / elapsed,
        q(0.50),
        q(0.99)
    );
}

// --- idle: memory per held connection ------------------------------------

/// Opens CONNS connections through the proxy, each exchanging 1 KiB each way
/// (so it has used buffers once, as a BitTorrent peer that went quiet), then
/// measures the proxy's memory growth per connection; then keeps opening, up
/// to MAX or for at most SECS in all, until one fails or stalls, and reports
/// how many it held.
fn idle(
    proxy: Option<SocketAddr>,
    target: SocketAddr,
    pid: u32,
    conns: usize,
    max: usize,
    secs: f64,
) {
    let Some(proxy) = proxy else {
        fail("idle", "needs a proxy");
    };
    thread::sleep(Duration::from_millis(300));
    let before = pss_kib(pid);
    let mut held = Vec::with_capacity(max);
    let mut per_conn = None;
    let mut stopped = String::from("cap");
    let t0 = Instant::now();
    while held.len() < max {
        if t0.elapsed().as_secs_f64() > secs {
            stopped = format!("time limit of {secs} s");
            break;
        }
        let i = held.len();
        let attempt = open(Some(proxy), target, Some(Duration::from_secs(2))).and_then(|mut s| {
            // The mode, the length and 1,021 pattern bytes: 1 KiB, one read
            // for any relay.
            ping(&mut s, MODE_HOLD, i * 1024, 1021)?;
            Ok(s)
        });
        match attempt {
            Ok(s) => held.push(s),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                fail("idle", "a byte came back wrong")
            }
            Err(e) => {
                stopped = e.to_string();
                break;
            }
        }
        if held.len() == conns {
            thread::sleep(Duration::from_millis(500));
            let after = pss_kib(pid);
            per_conn = Some(after.saturating_sub(before) as f64 / conns as f64);
        }
    }
    let open_secs = t0.elapsed().as_secs_f64();
    // The servers close first (see MODE_HOLD): ask each, then wait for it.
    for s in &mut held {
        let _ = s.write_all(b"C");
    }
    for s in &mut held {
        let _ = expect_eof(s);
    }
    let Some(per_conn) = per_conn else {
        fail(
            "idle",
            format!("held only {} connections: {stopped}", held.len()),
        );
    };
    println!(
        "idle ok=1 conns={conns} kib_per_conn={per_conn:.3} pss_before_kib={before} max_held={} open_secs={:.1} stopped_by={}",
        held.len(),
        open_secs,
        stopped.replace(' ', "_")
    );
}

// --- report: the table and the chart ---------------------------------------

/// One figure over the rounds.
#[derive(Clone, Copy)]
struct Stat {
    median: f64,
    min: f64,
    max: f64,
}

fn stat(mut v: Vec<f64>) -> Option<Stat> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Stat {
        median,
        min: v[0],
        max: v[n - 1],
    })
}

/// One run: its round and the `key=value` fields of its line.
type Run = (u32, BTreeMap<String, String>);

/// Results: `round subject test line`, tab-separated, where line is what a
/// measuring command printed.
struct Results {
    /// (subject, test) -> per round, the fields of the line.
    runs: BTreeMap<(String, String), Vec<Run>>,
    subjects: Vec<String>,
}

impl Results {
    fn load(path: &str) -> Results {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
            eprintln!("{path}: {e}");
            exit(2)
        });
        let mut runs: BTreeMap<_, Vec<_>> = BTreeMap::new();
        let mut subjects = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let mut cols = line.splitn(4, '\t');
            let (Some(round), Some(subject), Some(test), Some(out)) =
                (cols.next(), cols.next(), cols.next(), cols.next())
            else {
                continue;
            };
            let fields: BTreeMap<String, String> = out
                .split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            if !subjects.iter().any(|s| s == subject) {
                subjects.push(subject.to_string());
            }
            runs.entry((subject.to_string(), test.to_string()))
                .or_default()
                .push((round.parse().unwrap_or(0), fields));
        }
        Results { runs, subjects }
    }

    fn runs(&self, subject: &str, test: &str) -> &[Run] {
        self.runs
            .get(&(subject.to_string(), test.to_string()))
            .map_or(&[], Vec::as_slice)
    }

    /// A failure message, if any run of the test failed.
    fn failure(&self, subject: &str, test: &str) -> Option<String> {
        self.runs(subject, test)
            .iter()
            .find(|(_, f)| f.get("ok").map(String::as_str) != Some("1"))
            .map(|(_, f)| {
                f.get("error")
                    .cloned()
                    .unwrap_or_else(|| "no result".into())
                    .replace('_', " ")
            })
    }

    fn values(&self, subject: &str, test: &str, key: &str) -> Vec<(u32, f64)> {
        self.runs(subject, test)
            .iter()
            .filter(|(_, f)| f.get("ok").map(String::as_str) == Some("1"))
            .filter_map(|(r, f)| Some((*r, f.get(key)?.parse().ok()?)))
            .collect()
    }

    fn stat(&self, subject: &str, test: &str, key: &str) -> Option<Stat> {
        stat(
            self.values(subject, test, key)
                .into_iter()
                .map(|(_, v)| v)
                .collect(),
        )
    }

    /// Per round, subject's value over the direct path's in the same round.
    fn ratio(&self, subject: &str, test: &str, key: &str) -> Option<Stat> {
        self.per_round(subject, "direct", test, key, |v, base| v / base)
    }

    /// Per round, `f(subject's value, base's value)` in the same round.
    fn per_round(
        &self,
        subject: &str,
        base: &str,
        test: &str,
        key: &str,
        f: impl Fn(f64, f64) -> f64,
    ) -> Option<Stat> {
        let base: BTreeMap<u32, f64> = self.values(base, test, key).into_iter().collect();
        stat(
            self.values(subject, test, key)
                .into_iter()
                .filter_map(|(r, v)| Some(f(v, *base.get(&r)?)))
                .collect(),
        )
    }
}

fn fmt_num(v: f64) -> String {
    if v < 0.0 {
        return format!("−{}", fmt_num(-v));
    }
    if v >= 100.0 {
        let s = format!("{v:.0}");
        // Thousands separators.
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn cell(s: Option<Stat>) -> String {
    match s {
        None => "–".into(),
        Some(s) => format!(
            "{} ({}–{})",
            fmt_num(s.median),
            fmt_num(s.min),
            fmt_num(s.max)
        ),
    }
}

/// The most connections held: a count where something gave way, "≥ count"
/// where the test's cap or time limit stopped it first.
fn held_cell(r: &Results, subject: &str) -> String {
    let Some((_, f)) = r.runs(subject, "held").first() else {
        return "–".into();
    };
    if f.get("ok").map(String::as_str) != Some("1") {
        return format!(
            "**FAIL**: {}",
            f.get("error").map_or("no result", |e| e.as_str())
        );
    }
    let n: f64 = f
        .get("max_held")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let secs = f.get("open_secs").map_or("?", String::as_str);
    match f.get("stopped_by").map(String::as_str).unwrap_or("") {
        "cap" => format!("≥ {} (cap; {secs} s)", fmt_num(n)),
        s if s.starts_with("time") => format!("≥ {} (time limit)", fmt_num(n)),
        s if s.contains("os_error_11") || s.contains("timed_out") => {
            format!("{} (then no answer in 2 s)", fmt_num(n))
        }
        s if s.starts_with("CONNECT_reply") => format!("{} (then CONNECT refused)", fmt_num(n)),
        s => format!("{} ({})", fmt_num(n), s.replace('_', " ")),
    }
}

fn report(results: &str, md_path: &str, svg_path: &str, machine: &str) {
    let r = Results::load(results);
    let rounds = r
        .runs
        .values()
        .flat_map(|v| v.iter().map(|(round, _)| *round))
        .max()
        .unwrap_or(0);
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Measured {machine}; median of {rounds} interleaved rounds, (min–max).\n"
    );
    let has = |test: &str| r.runs.keys().any(|(_, t)| t == test);
    let tcp = ["tp1", "tp8", "rate", "idle", "held"]
        .iter()
        .any(|t| has(t));
    if tcp {
        md.push_str(
            "| server | 1 stream GB/s | × direct | 8 streams GB/s | × direct | CPU s/GB | conn/s @64 | p50 ms | p99 ms | KiB/idle conn | most held |\n",
        );
        md.push_str("|---|---|---|---|---|---|---|---|---|---|---|\n");
    }
    for subject in r.subjects.iter().filter(|_| tcp) {
        let tp = |test: &str| match r.failure(subject, test) {
            Some(e) => (format!("**FAIL**: {e}"), "–".to_string()),
            None => (
                cell(r.stat(subject, test, "gbps")),
                if subject == "direct" {
                    "1".to_string()
                } else {
                    cell(r.ratio(subject, test, "gbps"))
                },
            ),
        };
        let (tp1, ratio1) = tp("tp1");
        let (tp8, ratio8) = tp("tp8");
        // CPU per GB over both throughput runs of a round.
        let cpu = {
            let per_round = |test: &str| -> BTreeMap<u32, (f64, f64)> {
                let cpu: BTreeMap<u32, f64> =
                    r.values(subject, test, "cpu_s").into_iter().collect();
                r.values(subject, test, "bytes")
                    .into_iter()
                    .filter_map(|(round, b)| Some((round, (cpu.get(&round).copied()?, b))))
                    .collect()
            };
            let (a, b) = (per_round("tp1"), per_round("tp8"));
            stat(
                a.iter()
                    .filter_map(|(round, (c1, b1))| {
                        let (c8, b8) = b.get(round)?;
                        Some((c1 + c8) / ((b1 + b8) / 1e9))
                    })
                    .collect(),
            )
        };
        let rate_cols = match r.failure(subject, "rate") {
            Some(e) => format!("**FAIL**: {e} | – | –"),
            None => format!(
                "{} | {} | {}",
                cell(r.stat(subject, "rate", "per_sec")),
                cell(r.stat(subject, "rate", "p50_ms")),
                cell(r.stat(subject, "rate", "p99_ms"))
            ),
        };
        let idle_cols = if subject == "direct" {
            "– | –".to_string()
        } else {
            match r.failure(subject, "idle") {
                Some(e) => format!("**FAIL**: {e} | –"),
                None => format!(
                    "{} | {}",
                    cell(r.stat(subject, "idle", "kib_per_conn")),
                    held_cell(&r, subject)
                ),
            }
        };
        let _ = writeln!(
            md,
            "| {subject} | {tp1} | {ratio1} | {tp8} | {ratio8} | {} | {rate_cols} | {idle_cols} |",
            if subject == "direct" {
                "–".to_string()
            } else {
                cell(cpu)
            }
        );
    }
    if has("udp") {
        udp_table(&r, &mut md, tcp);
    }
    std::fs::write(md_path, &md).unwrap();
    if has("tp1") {
        std::fs::write(svg_path, svg(&r, machine, rounds)).unwrap();
    }
    print!("{md}");
}

/// The UDP table: round trips a second through one association, CPU per
/// GB, the round trip unloaded and what the server adds to it.
fn udp_table(r: &Results, md: &mut String, after_tcp: bool) {
    if after_tcp {
        md.push('\n');
    }
    md.push_str(
        "| server (UDP) | round trips/s | × dante | CPU s/GB | RTT p50 µs | RTT p99 µs | added p50 µs | added p99 µs | lost |\n",
    );
    md.push_str("|---|---|---|---|---|---|---|---|---|\n");
    for subject in &r.subjects {
        if r.runs(subject, "udp").is_empty() {
            continue;
        }
        if let Some(e) = r.failure(subject, "udp") {
            let _ = writeln!(
                md,
                "| {subject} | **FAIL**: {e} | – | – | – | – | – | – | – |"
            );
            continue;
        }
        let direct = subject == "direct";
        let vs_dante = if subject == "dante" {
            "1".to_string()
        } else if direct {
            "–".to_string()
        } else {
            cell(r.per_round(subject, "dante", "udp", "per_sec", |v, b| v / b))
        };
        let added = |key: &str| {
            if direct {
                "–".to_string()
            } else {
                cell(r.per_round(subject, "direct", "udp", key, |v, b| v - b))
            }
        };
        let lost: f64 = r
            .values(subject, "udp", "lost")
            .iter()
            .map(|(_, v)| v)
            .sum();
        let sent: f64 = r
            .values(subject, "udp", "sent")
            .iter()
            .map(|(_, v)| v)
            .sum();
        let _ = writeln!(
            md,
            "| {subject} | {} | {vs_dante} | {} | {} | {} | {} | {} | {lost:.0} of {} |",
            cell(r.stat(subject, "udp", "per_sec")),
            if direct {
                "–".to_string()
            } else {
                cell(r.stat(subject, "udp", "cpu_s_per_gb"))
            },
            cell(r.stat(subject, "udp", "p50_us")),
            cell(r.stat(subject, "udp", "p99_us")),
            added("p50_us"),
            added("p99_us"),
            fmt_num(sent),
        );
    }
}

/// Two bar charts side by side: throughput (1 and 8 streams) and memory per
/// idle connection (log scale), each bar the median, whiskers min and max.
fn svg(r: &Results, machine: &str, rounds: u32) -> String {
    let (w, h) = (900.0, 420.0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15" font-weight="bold">SOCKS5 servers on loopback: throughput and memory per idle connection</text>"#,
        w / 2.0
    );
    let _ = writeln!(
        s,
        r##"<text x="{}" y="40" text-anchor="middle" fill="#555">{}</text>"##,
        w / 2.0,
        xml(machine)
    );
    let _ = writeln!(
        s,
        r##"<text x="{}" y="56" text-anchor="middle" fill="#555">median of {rounds} interleaved rounds, whiskers min–max; examples/loadgen.rs via benches/compare.sh</text>"##,
        w / 2.0
    );
    let colors = ["#4C78A8", "#F58518"];
    // Left: throughput.
    let subjects: Vec<&String> = r.subjects.iter().collect();
    let (x0, y0, pw, ph) = (60.0, 80.0, 470.0, 270.0);
    let tp: Vec<[Option<Stat>; 2]> = subjects
        .iter()
        .map(|sub| {
            ["tp1", "tp8"].map(|t| {
                if r.failure(sub, t).is_some() {
                    None
                } else {
                    r.stat(sub, t, "gbps")
                }
            })
        })
        .collect();
    let top = tp
        .iter()
        .flatten()
        .flatten()
        .map(|s| s.max)
        .fold(0.0, f64::max)
        .max(0.1);
    let top = (top * 1.1 * 2.0).ceil() / 2.0; // ticks every 0.5 GB/s
    axis(&mut s, x0, y0, pw, ph, "GB/s (download through the server)");
    let ticks = (top * 2.0).round() as u32;
    for i in 0..=ticks {
        let v = f64::from(i) * 0.5;
        let y = y0 + ph - ph * v / top;
        let _ = writeln!(
            s,
            r##"<line x1="{x0}" y1="{y}" x2="{}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{v:.1}</text>"##,
            x0 + pw,
            x0 - 5.0,
            y + 4.0
        );
    }
    let slot = pw / subjects.len() as f64;
    for (i, (sub, stats)) in subjects.iter().zip(&tp).enumerate() {
        let cx = x0 + slot * (i as f64 + 0.5);
        for (j, st) in stats.iter().enumerate() {
            let bw = slot * 0.32;
            let bx = cx - bw + bw * j as f64;
            match st {
                Some(st) => bar(&mut s, bx, bw, y0, ph, top, *st, colors[j], |v| {
                    format!("{v:.2}")
                }),
                None => {
                    let _ = writeln!(
                        s,
                        r#"<text x="{}" y="{}" text-anchor="middle" fill="red">FAIL</text>"#,
                        bx + bw / 2.0,
                        y0 + ph - 5.0
                    );
                }
            }
        }
        let _ = writeln!(
            s,
            r#"<text x="{cx}" y="{}" text-anchor="middle">{}</text>"#,
            y0 + ph + 16.0,
            xml(sub)
        );
    }
    for (j, label) in ["1 stream", "8 streams"].iter().enumerate() {
        let lx = x0 + 10.0 + 90.0 * j as f64;
        let _ = writeln!(
            s,
            r#"<rect x="{lx}" y="{}" width="10" height="10" fill="{}"/><text x="{}" y="{}">{label}</text>"#,
            y0 + ph + 30.0,
            colors[j],
            lx + 14.0,
            y0 + ph + 39.0
        );
    }
    // Right: KiB per idle connection, log scale.
    let (x1, pw1) = (620.0, 250.0);
    let mem: Vec<(&String, Stat)> = subjects
        .iter()
        .filter(|s| s.as_str() != "direct")
        .filter(|s| r.failure(s, "idle").is_none())
        .filter_map(|s| Some((*s, r.stat(s, "idle", "kib_per_conn")?)))
        .collect();
    axis(&mut s, x1, y0, pw1, ph, "KiB per idle connection (log)");
    let (lo, hi) = (0.1f64, 1000.0f64);
    let ly = |v: f64| y0 + ph - ph * (v.max(lo).log10() - lo.log10()) / (hi.log10() - lo.log10());
    for v in [0.1, 1.0, 10.0, 100.0, 1000.0] {
        let y = ly(v);
        let _ = writeln!(
            s,
            r##"<line x1="{x1}" y1="{y}" x2="{}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{v}</text>"##,
            x1 + pw1,
            x1 - 5.0,
            y + 4.0
        );
    }
    let slot = pw1 / mem.len().max(1) as f64;
    for (i, (sub, st)) in mem.iter().enumerate() {
        let cx = x1 + slot * (i as f64 + 0.5);
        let bw = slot * 0.45;
        let (yt, yb) = (ly(st.median), y0 + ph);
        let _ = writeln!(
            s,
            r##"<rect x="{}" y="{yt}" width="{bw}" height="{}" fill="#54A24B"/>"##,
            cx - bw / 2.0,
            yb - yt
        );
        whisker(&mut s, cx, ly(st.min), ly(st.max));
        let _ = writeln!(
            s,
            r#"<text x="{cx}" y="{}" text-anchor="middle">{}</text><text x="{cx}" y="{}" text-anchor="middle">{}</text>"#,
            yt - 6.0,
            fmt_num(st.median),
            y0 + ph + 16.0,
            xml(sub)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn axis(s: &mut String, x: f64, y: f64, w: f64, h: f64, label: &str) {
    let _ = writeln!(
        s,
        r#"<line x1="{x}" y1="{}" x2="{}" y2="{}" stroke="black"/><line x1="{x}" y1="{y}" x2="{x}" y2="{}" stroke="black"/>"#,
        y + h,
        x + w,
        y + h,
        y + h
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle" transform="rotate(-90 {} {})">{label}</text>"#,
        x - 42.0,
        y + h / 2.0,
        x - 42.0,
        y + h / 2.0
    );
}

#[allow(clippy::too_many_arguments)]
fn bar(
    s: &mut String,
    x: f64,
    w: f64,
    y0: f64,
    h: f64,
    top: f64,
    st: Stat,
    color: &str,
    label: impl Fn(f64) -> String,
) {
    let y = |v: f64| y0 + h - h * v / top;
    let yt = y(st.median);
    let _ = writeln!(
        s,
        r#"<rect x="{x}" y="{yt}" width="{w}" height="{}" fill="{color}"/>"#,
        y0 + h - yt
    );
    whisker(s, x + w / 2.0, y(st.min), y(st.max));
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle" font-size="10">{}</text>"#,
        x + w / 2.0,
        y(st.max) - 4.0,
        label(st.median)
    );
}

fn whisker(s: &mut String, x: f64, y_min: f64, y_max: f64) {
    let _ = writeln!(
        s,
        r#"<line x1="{x}" y1="{y_min}" x2="{x}" y2="{y_max}" stroke="black"/><line x1="{}" y1="{y_min}" x2="{}" y2="{y_min}" stroke="black"/><line x1="{}" y1="{y_max}" x2="{}" y2="{y_max}" stroke="black"/>"#,
        x - 4.0,
        x + 4.0,
        x - 4.0,
        x + 4.0
    );
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
