//! The three-link namespace topology of tests/links.rs and tests/health.rs
//! (root only): see tests/links.rs for the picture. Namespaces entered by
//! file descriptor, servers inside them, a SOCKS exchange that learns the
//! source address the server saw, and the proxy's log read back.

use super::*;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Namespaces by file descriptor
// ---------------------------------------------------------------------------

/// Moves the calling thread into the network namespace `ns` (an open
/// `/run/netns/NAME`).
pub fn try_enter(ns: &File) -> io::Result<()> {
    // SAFETY: setns on a valid descriptor; it only changes this thread's
    // network namespace.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Runs `f` on a thread inside the network namespace `ns`; a panic in `f`
/// is the caller's panic.
pub fn in_ns<T: Send>(ns: &File, f: impl FnOnce() -> T + Send) -> T {
    thread::scope(|s| {
        let h = s.spawn(|| {
            try_enter(ns).unwrap_or_else(|e| panic!("setns: {e}"));
            f()
        });
        match h.join() {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        }
    })
}

pub fn open_ns(ns: &Netns) -> File {
    File::open(format!("/run/netns/{}", ns.name))
        .unwrap_or_else(|e| panic!("open /run/netns/{}: {e}", ns.name))
}

/// A [`Server`] living in a namespace. Dropping a `Server` connects to its
/// own address to wake `accept`; that must happen inside the namespace too.
pub struct NsServer {
    pub server: Option<Server>,
    pub ns: File,
}

impl NsServer {
    /// `Server::start(handler)` on 10.9.0.1 (any port) inside `ns`.
    pub fn start<F>(ns: &File, handler: F) -> NsServer
    where
        F: Fn(TcpStream, SocketAddr) + Send + Sync + 'static,
    {
        NsServer::wrap(ns, |bind| Server::start(bind, handler))
    }

    /// A server made by `make("10.9.0.1:0")` inside `ns`.
    pub fn wrap(ns: &File, make: impl FnOnce(&str) -> Server + Send) -> NsServer {
        let server = in_ns(ns, || make(&format!("{SERVER_IP}:0")));
        NsServer {
            server: Some(server),
            ns: ns.try_clone().expect("dup netns fd"),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.as_ref().unwrap().addr
    }

    pub fn peer_ips(&self) -> Vec<IpAddr> {
        self.server
            .as_ref()
            .unwrap()
            .peers()
            .iter()
            .map(|p| p.ip())
            .collect()
    }
}

impl Drop for NsServer {
    fn drop(&mut self) {
        let Some(server) = self.server.take() else {
            return;
        };
        let Ok(ns) = self.ns.try_clone() else {
            std::mem::forget(server);
            return;
        };
        let _ = thread::spawn(move || {
            if try_enter(&ns).is_ok() {
                drop(server);
            } else {
                // Never wake it from the test's own namespace.
                std::mem::forget(server);
            }
        })
        .join();
    }
}

// ---------------------------------------------------------------------------
// The topology
// ---------------------------------------------------------------------------

pub const SERVER_IP: &str = "10.9.0.1";

pub fn home_ip(link: u8) -> IpAddr {
    IpAddr::from([10, link, 0, 2])
}

/// The IPv6 server address (on inet's lo), after [`Topology::add_ipv6`].
pub const SERVER_IP6: &str = "fd09::1";

/// Home's IPv6 address on link `link`, after [`Topology::add_ipv6`].
pub fn home_ip6(link: u8) -> IpAddr {
    format!("fd0{link}::2").parse().unwrap()
}

/// home and inet joined by links 1-3 (see the module doc).
pub struct Topology {
    pub home: Netns,
    pub inet: Netns,
    pub home_fd: File,
    pub inet_fd: File,
}

impl Topology {
    pub fn new(tag: &str) -> Topology {
        let home = Netns::new(&format!("{tag}h"));
        let inet = Netns::new(&format!("{tag}i"));
        let home_fd = open_ns(&home);
        let inet_fd = open_ns(&inet);
        let t = Topology {
            home,
            inet,
            home_fd,
            inet_fd,
        };
        // Loose in home, as distributions set it: replies to 10.2.0.2 come
        // in on l2 although the best route back to 10.9.0.1 is via l1.
        t.sysctl(&t.home, "net.ipv4.conf.all.rp_filter", "2");
        t.sysctl(&t.home, "net.ipv4.conf.default.rp_filter", "2");
        // Strict in inet: a packet from 10.2.0.2 is only accepted on r2.
        t.sysctl(&t.inet, "net.ipv4.conf.all.rp_filter", "1");
        t.sysctl(&t.inet, "net.ipv4.conf.default.rp_filter", "1");
        t.inet.ip(&["addr", "add", "10.9.0.1/32", "dev", "lo"]);
        for i in 1..=3 {
            t.add_link(i);
        }
        t
    }

    /// Sets `key` (as in sysctl, dots) inside `ns` through /proc/sys, which
    /// shows the network namespace of the thread that opens it (no need for
    /// the sysctl binary).
    pub fn sysctl(&self, ns: &Netns, key: &str, value: &str) {
        let fd = if ns.name == self.home.name {
            &self.home_fd
        } else {
            &self.inet_fd
        };
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        in_ns(fd, || std::fs::write(&path, value))
            .unwrap_or_else(|e| panic!("write {value} to {path} in {}: {e}", ns.name));
    }

    /// Creates link `i` (veth l{i} in home, r{i} in inet) with its
    /// addresses, its backup default route and strict rp_filter on r{i}.
    pub fn add_link(&self, i: u8) {
        let (l, r) = (format!("l{i}"), format!("r{i}"));
        let inet = self.inet.name.as_str();
        self.home.ip(&[
            "link", "add", "name", &l, "type", "veth", "peer", "name", &r, "netns", inet,
        ]);
        self.home
            .ip(&["addr", "add", &format!("10.{i}.0.2/24"), "dev", &l]);
        self.inet
            .ip(&["addr", "add", &format!("10.{i}.0.1/24"), "dev", &r]);
        self.sysctl(&self.inet, &format!("net.ipv4.conf.{r}.rp_filter"), "1");
        self.home.ip(&["link", "set", "dev", &l, "up"]);
        self.inet.ip(&["link", "set", "dev", &r, "up"]);
        self.add_default_route(i);
    }

    pub fn add_default_route(&self, i: u8) {
        let metric = (u32::from(i) * 100).to_string();
        self.home.ip(&[
            "route",
            "add",
            "default",
            "via",
            &format!("10.{i}.0.1"),
            "dev",
            &format!("l{i}"),
            "metric",
            &metric,
        ]);
    }

    /// tbf at `rate` (tc syntax, e.g. "1200kbps" = 1,200,000 bytes/s) on
    /// both ends of link `i`: upload (l{i} egress) and download (r{i}
    /// egress).
    pub fn shape(&self, i: u8, rate: &str) {
        for (ns, dev) in [(&self.home, format!("l{i}")), (&self.inet, format!("r{i}"))] {
            let out = ns.exec(
                "tc",
                &[
                    "qdisc", "add", "dev", &dev, "root", "tbf", "rate", rate, "burst", "32kb",
                    "latency", "100ms",
                ],
            );
            assert!(
                out.status.success(),
                "tc tbf on {dev} in {}: {}",
                ns.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// Bytes sent by home's end of link `i`.
    pub fn tx_bytes(&self, i: u8) -> u64 {
        let path = format!("/sys/class/net/l{i}/statistics/tx_bytes");
        let out = self.home.exec("cat", &[&path]);
        assert!(out.status.success(), "cat {path} in {}", self.home.name);
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// IPv6 beside IPv4 on the three links: fd0i::2/64 on li, fd0i::1/64
    /// on ri, the server address fd09::1 on inet's lo, and a default route
    /// per link with the same metrics. No duplicate address detection, so
    /// the addresses are usable at once. (No reverse-path filter exists for
    /// IPv6: the tests check the egress link by its byte counter instead.)
    pub fn add_ipv6(&self) {
        self.inet
            .ip(&["addr", "add", &format!("{SERVER_IP6}/128"), "dev", "lo"]);
        for i in 1..=3u8 {
            self.home.ip(&[
                "addr",
                "add",
                &format!("fd0{i}::2/64"),
                "dev",
                &format!("l{i}"),
                "nodad",
            ]);
            self.inet.ip(&[
                "addr",
                "add",
                &format!("fd0{i}::1/64"),
                "dev",
                &format!("r{i}"),
                "nodad",
            ]);
            self.home.ip(&[
                "-6",
                "route",
                "add",
                "default",
                "via",
                &format!("fd0{i}::1"),
                "dev",
                &format!("l{i}"),
                "metric",
                &(u32::from(i) * 100).to_string(),
            ]);
        }
    }

    /// The exchange server on [fd09::1] in inet.
    pub fn exchange_server6(&self) -> NsServer {
        NsServer::wrap(&self.inet_fd, |_| {
            Server::start(&format!("[{SERVER_IP6}]:0"), exchange_handler)
        })
    }

    /// `dispatch -d start --ip 127.0.0.1 --port 0 ARGS` in home.
    pub fn proxy(&self, args: &[&str]) -> Proxy {
        Proxy::start_in_netns(&self.home, args)
    }

    /// The exchange server (see [`exchange_handler`]) on 10.9.0.1 in inet.
    pub fn exchange_server(&self) -> NsServer {
        NsServer::start(&self.inet_fd, exchange_handler)
    }
}

// ---------------------------------------------------------------------------
// Exchange: a connection that moves a known number of bytes each way and
// learns the source address the server saw
// ---------------------------------------------------------------------------

/// Reads a line "<up> <down>\n", then exactly `up` bytes, then writes
/// "<peer ip:port>\n" and `down` bytes, half-closes and waits for the
/// client to close.
pub fn exchange_handler(s: TcpStream, peer: SocketAddr) {
    let _ = s.set_read_timeout(Some(IO_TIMEOUT));
    let _ = s.set_write_timeout(Some(IO_TIMEOUT));
    let mut w = match s.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut r = BufReader::new(s);
    let mut line = String::new();
    if r.read_line(&mut line).is_err() {
        return;
    }
    let mut f = line
        .split_whitespace()
        .map(|x| x.parse::<u64>().unwrap_or(0));
    let (up, down) = (f.next().unwrap_or(0), f.next().unwrap_or(0));
    if io::copy(&mut (&mut r).take(up), &mut io::sink()).ok() != Some(up) {
        return;
    }
    if w.write_all(format!("{peer}\n").as_bytes()).is_err() {
        return;
    }
    let mut prng = Prng::new(down);
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = down;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        prng.fill(&mut buf[..n]);
        if w.write_all(&buf[..n]).is_err() {
            return;
        }
        left -= n as u64;
    }
    let _ = w.shutdown(Shutdown::Write);
    let mut sink = [0u8; 1024];
    while let Ok(n) = r.read(&mut sink) {
        if n == 0 {
            break;
        }
    }
}

#[derive(Debug, Clone)]
pub struct Exchanged {
    /// The source address the server saw.
    pub peer: SocketAddr,
    /// Seconds from sending the SOCKS request to the success reply.
    pub connect_secs: f64,
    /// Payload bytes relayed each way (what the proxy's counters should say).
    pub up: u64,
    pub down: u64,
}

/// One SOCKS5 CONNECT through `proxy` (in home) to the exchange server,
/// moving `up` bytes to it and `down` bytes back. An error reply or a broken
/// exchange is an `Err` describing it.
pub fn exchange(
    t: &Topology,
    proxy: SocketAddr,
    server: SocketAddr,
    up: u64,
    down: u64,
) -> Result<Exchanged, String> {
    in_ns(&t.home_fd, || {
        let mut s = TcpStream::connect_timeout(&proxy, IO_TIMEOUT)
            .map_err(|e| format!("connect to proxy {proxy}: {e}"))?;
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_nodelay(true).unwrap();
        s.write_all(&GREETING)
            .map_err(|e| format!("greeting: {e}"))?;
        let mut m = [0u8; 2];
        s.read_exact(&mut m)
            .map_err(|e| format!("method reply: {e}"))?;
        if m != [5, 0] {
            return Err(format!("method reply {m:02x?}"));
        }
        let started = Instant::now();
        s.write_all(&socks5_request(0x01, &Dest::Addr(server)))
            .map_err(|e| format!("request: {e}"))?;
        let reply = read_reply5(&mut s).map_err(|e| {
            format!(
                "no reply to CONNECT after {:.3} s: {e}",
                started.elapsed().as_secs_f64()
            )
        })?;
        let connect_secs = started.elapsed().as_secs_f64();
        if reply.rep != rep::SUCCEEDED {
            return Err(format!(
                "CONNECT failed after {connect_secs:.3} s: reply {:02x?}",
                reply.raw
            ));
        }
        let header = format!("{up} {down}\n");
        s.write_all(header.as_bytes())
            .map_err(|e| format!("send header: {e}"))?;
        send_stream(&mut s, up, up, 64 * 1024).map_err(|e| format!("send {up} bytes: {e}"))?;
        let _ = s.shutdown(Shutdown::Write);
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line)
            .map_err(|e| format!("read the server's line: {e}"))?;
        let peer: SocketAddr = line
            .trim()
            .parse()
            .map_err(|_| format!("server's line {line:?} is not an address"))?;
        let mut v = Verifier::new(down);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => v.check(&buf[..n])?,
                Err(e) => return Err(format!("read after {} bytes: {e}", v.offset)),
            }
        }
        if v.offset != down {
            return Err(format!("EOF after {} of {down} bytes", v.offset));
        }
        Ok(Exchanged {
            peer,
            connect_secs,
            up: (header.len() as u64) + up,
            down: (line.len() as u64) + down,
        })
    })
}

/// Like [`exchange`] but a failure fails the test, with the proxy's log.
pub fn exchange_ok(
    t: &Topology,
    proxy: &Proxy,
    server: &NsServer,
    up: u64,
    down: u64,
) -> Exchanged {
    exchange(t, proxy.addr, server.addr(), up, down).unwrap_or_else(|e| {
        panic!(
            "connection through the proxy failed: {e}\n--- proxy stdout (tail):\n{}",
            tail(&proxy.stdout(), 30)
        )
    })
}

/// `n` small exchanges in a row; panics on any failure. Returns them.
pub fn exchanges(t: &Topology, proxy: &Proxy, server: &NsServer, n: usize) -> Vec<Exchanged> {
    (0..n)
        .map(|_| exchange_ok(t, proxy, server, 100, 100))
        .collect()
}

pub fn count_by_ip(ips: impl IntoIterator<Item = IpAddr>) -> BTreeMap<IpAddr, usize> {
    let mut m = BTreeMap::new();
    for ip in ips {
        *m.entry(ip).or_insert(0) += 1;
    }
    m
}

pub fn count_of(m: &BTreeMap<IpAddr, usize>, ip: IpAddr) -> usize {
    m.get(&ip).copied().unwrap_or(0)
}

// ---------------------------------------------------------------------------
// Log helpers
// ---------------------------------------------------------------------------

/// Waits until the proxy's stdout contains `needle` at least `times` times.
pub fn wait_log(
    proxy: &Proxy,
    needle: &str,
    times: usize,
    within: Duration,
) -> Result<Duration, String> {
    let start = Instant::now();
    loop {
        if proxy.stdout().matches(needle).count() >= times {
            return Ok(start.elapsed());
        }
        if start.elapsed() >= within {
            return Err(format!(
                "the proxy did not log {needle:?} (x{times}) within {within:?}\n--- proxy stdout (tail):\n{}",
                tail(&proxy.stdout(), 30)
            ));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Lines of `text` that contain `needle`.
pub fn lines_with<'a>(text: &'a str, needle: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.contains(needle)).collect()
}

/// The proxy's debug lines saying a connect attempt failed (`#7 connect to
/// ... through link l2 10.2.0.2 failed: ...`, or `... from 10.2.0.2:0
/// failed: ...` when it failed at once), through the link with address
/// `ip`, or through any link if `ip` is None. A failover shows up here
/// whatever the time it took, which a loaded machine cannot fake.
pub fn failed_attempts<'a>(text: &'a str, ip: Option<&str>) -> Vec<&'a str> {
    text.lines()
        .filter(|l| l.contains("connect to ") && l.contains(" failed: "))
        .filter(|l| {
            ip.is_none_or(|ip| {
                l.contains(&format!(" {ip} failed: ")) || l.contains(&format!(" from {ip}:"))
            })
        })
        .collect()
}

/// Parsed `link <label>: <state>, <n> connections, <f> failures, up <b> B,
/// down <b> B`.
#[derive(Debug, PartialEq, Eq)]
pub struct LinkSummary {
    pub state: String,
    pub connections: u64,
    pub failures: u64,
    pub up: u64,
    pub down: u64,
}

/// Every summary line for `label` in `text` (the proxy prints it on stdout
/// and, with -d, also logs it there), parsed; panics on a malformed one.
pub fn link_summaries(text: &str, label: &str) -> Vec<LinkSummary> {
    let prefix = format!("link {label}: ");
    text.lines()
        .filter_map(|l| l.find(&prefix).map(|p| &l[p + prefix.len()..]))
        .map(|rest| {
            parse_summary(rest)
                .unwrap_or_else(|| panic!("malformed summary line for {label}: {rest:?}"))
        })
        .collect()
}

pub fn parse_summary(rest: &str) -> Option<LinkSummary> {
    let f: Vec<&str> = rest.trim().split(", ").collect();
    if f.len() != 5 {
        return None;
    }
    let num = |s: &str, pre: &str, post: &str| -> Option<u64> {
        s.strip_prefix(pre)?.strip_suffix(post)?.parse().ok()
    };
    // "1 connection", "2 connections".
    let counted = |s: &str, noun: &str| -> Option<u64> {
        let n = num(s, "", &format!(" {noun}s")).or_else(|| num(s, "", &format!(" {noun}")))?;
        (s.ends_with('s') == (n != 1)).then_some(n)
    };
    Some(LinkSummary {
        state: f[0].to_string(),
        connections: counted(f[1], "connection")?,
        failures: counted(f[2], "failure")?,
        up: num(f[3], "up ", " B")?,
        down: num(f[4], "down ", " B")?,
    })
}

/// `ip -n NS -batch FILE` with `lines`, so the changes land together (the
/// proxy re-reads addresses every 2 s and should see one change, not the
/// gap between two commands).
pub fn ip_batch(ns: &Netns, lines: &[&str]) {
    let dir = TempDir::new();
    let file = dir.path.join("batch");
    std::fs::write(&file, lines.join("\n") + "\n").expect("write batch file");
    sh("ip", &["-n", &ns.name, "-batch", file.to_str().unwrap()]);
}

/// Waits until `n` lines of the proxy's stdout contain every one of `parts`.
pub fn wait_lines(proxy: &Proxy, parts: &[&str], n: usize, within: Duration) {
    let start = Instant::now();
    loop {
        let out = proxy.stdout();
        let got = out
            .lines()
            .filter(|l| parts.iter().all(|p| l.contains(p)))
            .count();
        if got >= n {
            return;
        }
        assert!(
            start.elapsed() < within,
            "want {n} line(s) containing {parts:?} within {within:?}, have {got}\n--- proxy stdout (tail):\n{}",
            tail(&out, 30)
        );
        thread::sleep(Duration::from_millis(50));
    }
}
