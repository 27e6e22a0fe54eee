//! Links that are other proxies (issue 14), with real upstreams started by
//! the test on loopback: dispatch itself (a second instance, whose own links
//! are 127.0.0.3 or 127.0.0.4, so the origin on 127.0.0.1 tells by the
//! source address which path a connection took), and two small upstreams
//! written here that record what they were asked: an HTTP CONNECT proxy and
//! a SOCKS5 one.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

use common::*;

/// One SOCKS5 CONNECT through `proxy` to a whoami server: the source
/// address the server saw.
fn source_of(proxy: SocketAddr, target: impl Into<Dest>) -> IpAddr {
    let (s, _) = socks5_ok(proxy, target);
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).expect("whoami line");
    let seen: SocketAddr = line.trim().parse().expect("whoami address");
    seen.ip()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Copies both ways between two sockets until both sides are done.
fn splice(a: TcpStream, b: TcpStream) {
    let (mut a2, mut b2) = (a.try_clone().unwrap(), b.try_clone().unwrap());
    let (mut a, mut b) = (a, b);
    let t = thread::spawn(move || {
        let _ = std::io::copy(&mut a2, &mut b2);
        let _ = b2.shutdown(Shutdown::Write);
    });
    let _ = std::io::copy(&mut b, &mut a);
    let _ = a.shutdown(Shutdown::Write);
    let _ = t.join();
}

/// What a test upstream was asked: the request line or SOCKS5 destination,
/// and any credentials, as text.
type Asked = Arc<Mutex<Vec<String>>>;

/// An HTTP CONNECT proxy: records the head, connects to the authority (an
/// `IP:port`; a name is answered 502) and tunnels.
fn http_upstream() -> (Server, Asked) {
    let asked: Asked = Arc::default();
    let log = Arc::clone(&asked);
    let server = Server::start("127.0.0.1:0", move |s, _| {
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        log.lock().unwrap().push(head.clone());
        let mut s = s;
        let authority = head.split_whitespace().nth(1).unwrap_or("").to_string();
        match authority.parse::<SocketAddr>().map(TcpStream::connect) {
            Ok(Ok(target)) => {
                s.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .unwrap();
                splice(s, target);
            }
            _ => {
                let _ = s.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
            }
        }
    });
    (server, asked)
}

/// A SOCKS5 proxy without authentication that records each request's
/// destination (`name NAME:PORT` or `addr IP:PORT`) and connects every one
/// to `origin`, whatever it names.
fn socks5_upstream(origin: SocketAddr) -> (Server, Asked) {
    socks5_upstream_at("127.0.0.1:0", origin)
}

/// [`socks5_upstream`] listening on `bind`.
fn socks5_upstream_at(bind: &str, origin: SocketAddr) -> (Server, Asked) {
    let asked: Asked = Arc::default();
    let log = Arc::clone(&asked);
    let server = Server::start(bind, move |mut s, _| {
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut greeting = [0u8; 2];
        if s.read_exact(&mut greeting).is_err() {
            return;
        }
        let mut methods = vec![0u8; usize::from(greeting[1])];
        s.read_exact(&mut methods).unwrap();
        s.write_all(&[5, 0]).unwrap();
        let mut head = [0u8; 4];
        s.read_exact(&mut head).unwrap();
        let dest = match head[3] {
            1 => {
                let mut b = [0u8; 6];
                s.read_exact(&mut b).unwrap();
                let a =
                    SocketAddr::from(([b[0], b[1], b[2], b[3]], u16::from_be_bytes([b[4], b[5]])));
                format!("addr {a}")
            }
            3 => {
                let mut len = [0u8; 1];
                s.read_exact(&mut len).unwrap();
                let mut b = vec![0u8; usize::from(len[0]) + 2];
                s.read_exact(&mut b).unwrap();
                let n = b.len() - 2;
                let port = u16::from_be_bytes([b[n], b[n + 1]]);
                format!("name {}:{port}", String::from_utf8_lossy(&b[..n]))
            }
            other => format!("atyp {other}"),
        };
        log.lock().unwrap().push(dest);
        let target = TcpStream::connect(origin).unwrap();
        let bound = target.local_addr().unwrap();
        let SocketAddr::V4(b) = bound else { panic!() };
        let mut reply = vec![5, 0, 0, 1];
        reply.extend_from_slice(&b.ip().octets());
        reply.extend_from_slice(&b.port().to_be_bytes());
        s.write_all(&reply).unwrap();
        splice(s, target);
    });
    (server, asked)
}

#[test]
fn dispatch_chained_behind_dispatch() {
    let origin = Server::whoami("127.0.0.1:0");
    let upstream = Proxy::start(&["127.0.0.3"]);
    let front = Proxy::start(&[&format!("socks5://{}", upstream.addr)]);
    for _ in 0..3 {
        assert_eq!(source_of(front.addr, origin.addr), ip("127.0.0.3"));
    }
    // Data both ways, through two relays.
    let echo = Server::echo("127.0.0.1:0");
    let (mut s, _) = socks5_ok(front.addr, echo.addr);
    send_stream(&mut s, 7, 256 * 1024, 16 * 1024).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    recv_stream(&mut s, 7, 256 * 1024, 16 * 1024).unwrap();
    let out = front.finish().stdout;
    assert!(
        out.contains(&format!("socks5://{}", upstream.addr)),
        "the link is named in the log:\n{}",
        tail(&out, 20)
    );
}

#[test]
fn a_socks5_upstream_reply_reaches_the_client_as_the_same_code() {
    let closed = closed_port("127.0.0.1");
    let origin = Server::whoami("127.0.0.1:0");
    let upstream = Proxy::start(&["127.0.0.3"]);
    let front = Proxy::start(&[&format!("socks5://{}", upstream.addr)]);
    let (_, reply) = socks5_connect(front.addr, *closed);
    assert_eq!(reply.rep, rep::CONNECTION_REFUSED, "{:02x?}", reply.raw);
    // SOCKS4 has one failure code.
    let SocketAddr::V4(c) = *closed else { panic!() };
    let mut s = client(front.addr);
    s.write_all(&socks4_request(*c.ip(), c.port(), b"", None))
        .unwrap();
    assert_eq!(read_reply4(&mut s).unwrap()[1], 91);
    // The target's refusal is not the link's: it still carries the next.
    assert_eq!(source_of(front.addr, origin.addr), ip("127.0.0.3"));
    let out = front.finish().stdout;
    let down = format!("link socks5://{} down", upstream.addr);
    assert!(!out.contains(&down), "{}", tail(&out, 20));
}

#[test]
fn an_http_connect_upstream_with_credentials() {
    let origin = Server::whoami("127.0.0.1:0");
    let (upstream, asked) = http_upstream();
    let secret = "pw-never-in-logs";
    let front = Proxy::start(&[&format!("http://alice:{secret}@{}", upstream.addr)]);
    assert_eq!(source_of(front.addr, origin.addr), ip("127.0.0.1"));
    let heads = asked.lock().unwrap().clone();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert!(
        heads[0].starts_with(&format!("CONNECT {} HTTP/1.1\r\n", origin.addr)),
        "{heads:?}"
    );
    // base64("alice:pw-never-in-logs")
    assert!(
        heads[0].contains("Proxy-Authorization: Basic YWxpY2U6cHctbmV2ZXItaW4tbG9ncw==\r\n"),
        "{heads:?}"
    );
    // The upstream's 502 (it cannot reach names) is the client's 502.
    let mut s = client(front.addr);
    s.write_all(
        b"CONNECT upstream-only.localhost:80 HTTP/1.1\r\nHost: upstream-only.localhost:80\r\n\r\n",
    )
    .unwrap();
    let mut status = String::new();
    BufReader::new(&mut s).read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 502"), "{status:?}");
    let out = front.finish().stdout;
    assert!(!out.contains(secret), "the password is in the log");
    assert!(out.contains("http://alice:***@"), "{}", tail(&out, 20));
}

#[test]
fn socks5h_names_go_to_the_upstream_unresolved() {
    let origin = Server::whoami("127.0.0.1:0");
    let (upstream, asked) = socks5_upstream(origin.addr);
    let front = Proxy::start(&[&format!("socks5h://{}", upstream.addr)]);
    // dispatch answers `.localhost` names itself (RFC 6761): had the name
    // been resolved here, the upstream would have been asked for 127.0.0.1.
    let (s, _) = socks5_ok(front.addr, Dest::name("only-upstream.localhost", 8443));
    drop(s);
    assert_eq!(
        asked.lock().unwrap().clone(),
        ["name only-upstream.localhost:8443"]
    );
    // An HTTP client's name too long for SOCKS5 is answered, not passed.
    let mut s = client(front.addr);
    let long = format!("{}.localhost:80", "a".repeat(300));
    s.write_all(format!("CONNECT {long} HTTP/1.1\r\nHost: {long}\r\n\r\n").as_bytes())
        .unwrap();
    let mut status = String::new();
    BufReader::new(&mut s).read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 502"), "{status:?}");
    assert_eq!(asked.lock().unwrap().len(), 1);
    // That no DNS query leaves for the name is watched, in a namespace, by
    // socks5h_sends_no_dns_query_for_the_name.
}

#[test]
fn socks5_names_are_resolved_here_and_passed_as_addresses() {
    let origin = Server::whoami("127.0.0.1:0");
    let (upstream, asked) = socks5_upstream(origin.addr);
    let front = Proxy::start(&[&format!("socks5://{}", upstream.addr)]);
    let (s, _) = socks5_ok(front.addr, Dest::name("localhost", 8443));
    drop(s);
    let got = asked.lock().unwrap().clone();
    assert!(
        got == ["addr 127.0.0.1:8443"] || got == ["addr [::1]:8443"],
        "{got:?}"
    );
    // A name that does not resolve is tried, with no DNS but the test's,
    // in socks5h_sends_no_dns_query_for_the_name.
}

#[test]
fn a_mix_of_an_interface_and_two_upstreams_follows_the_weights() {
    let origin = Server::whoami("127.0.0.1:0");
    let b1 = Proxy::start(&["127.0.0.3"]);
    let b2 = Proxy::start(&["127.0.0.4"]);
    let front = Proxy::start(&[
        "127.0.0.2/1",
        &format!("socks5://{}/2", b1.addr),
        &format!("socks5h://{}/1", b2.addr),
    ]);
    let got: Vec<IpAddr> = (0..40)
        .map(|_| source_of(front.addr, origin.addr))
        .collect();
    let count = |a: &str| got.iter().filter(|&&g| g == ip(a)).count();
    assert_eq!(
        (count("127.0.0.2"), count("127.0.0.3"), count("127.0.0.4")),
        (10, 20, 10),
        "{got:?}"
    );
    // Smooth: never more than two in a row through the same path.
    assert!(
        got.windows(3).all(|w| !(w[0] == w[1] && w[1] == w[2])),
        "{got:?}"
    );
}

#[test]
fn killing_one_upstream_fails_no_new_client_connection() {
    let origin = Server::whoami("127.0.0.1:0");
    let b1 = Proxy::start(&["127.0.0.3"]);
    let b2 = Proxy::start(&["127.0.0.4"]);
    let front = Proxy::start(&[
        &format!("socks5://{}", b1.addr),
        &format!("socks5://{}", b2.addr),
    ]);
    let before: Vec<IpAddr> = (0..4).map(|_| source_of(front.addr, origin.addr)).collect();
    assert!(before.contains(&ip("127.0.0.4")), "{before:?}");
    let b2_addr = b2.addr;
    drop(b2.finish());
    for i in 0..10 {
        let (s, reply) = socks5_connect(front.addr, origin.addr);
        assert_eq!(reply.rep, rep::SUCCEEDED, "connection {i} after the kill");
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        assert!(line.starts_with("127.0.0.3:"), "{line}");
    }
    let out = front.finish().stdout;
    // Down at the first refusal (again at each trial, should one fall due).
    let down = format!("link socks5://{b2_addr} down");
    assert!(out.contains(&down), "{}", tail(&out, 30));
}

#[test]
fn refused_credentials_lock_the_link_and_are_said_once() {
    let origin = Server::whoami("127.0.0.1:0");
    let guarded = Proxy::start(&["--auth", "alice:right-password", "127.0.0.3"]);
    let open = Proxy::start(&["127.0.0.4"]);
    let front = Proxy::start(&[
        &format!("socks5://alice:wrong-password@{}", guarded.addr),
        &format!("socks5://{}", open.addr),
    ]);
    // Every request gets through, by the other link when the first refuses.
    for _ in 0..6 {
        assert_eq!(source_of(front.addr, origin.addr), ip("127.0.0.4"));
    }
    let out = front.finish().stdout;
    let locked = format!(
        "link socks5://alice:***@{} down until restart or SIGHUP",
        guarded.addr
    );
    assert_eq!(out.matches(&locked).count(), 1, "{}", tail(&out, 30));
    assert!(!out.contains("wrong-password"));
}

#[test]
fn right_credentials_pass_and_never_show() {
    let origin = Server::whoami("127.0.0.1:0");
    let guarded = Proxy::start(&["--auth", "alice:s3cret-of-alice", "127.0.0.3"]);
    let front = Proxy::start(&[&format!("socks5://alice:s3cret-of-alice@{}", guarded.addr)]);
    assert_eq!(source_of(front.addr, origin.addr), ip("127.0.0.3"));
    let out = front.finish().stdout;
    assert!(!out.contains("s3cret-of-alice"), "{out}");
    assert!(out.contains("socks5://alice:***@"), "{}", tail(&out, 20));
}

/// A free loopback port (bound, then let go).
/// A child process killed and reaped on drop.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until something accepts on `addr`.
fn wait_listening(addr: SocketAddr, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} never listened on {addr}"
        );
        thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// OpenSSH's `ssh -D` as a `socks5h://` link: an sshd started here on a
/// loopback port with its own host key and a key made for the test, and an
/// `ssh -N -D` to it.
#[test]
fn an_ssh_dynamic_forward_is_a_socks5h_link() {
    const TEST: &str = "an_ssh_dynamic_forward_is_a_socks5h_link";
    if !is_root() {
        return not_run(TEST, "needs root (sshd logs the test in as root)");
    }
    let sshd = std::path::Path::new("/usr/sbin/sshd");
    if !sshd.exists()
        || std::process::Command::new("ssh")
            .arg("-V")
            .output()
            .is_err()
    {
        return not_run(TEST, "needs openssh-server and openssh-client");
    }
    let dir = TempDir::new();
    let path = |f: &str| dir.path.join(f).to_string_lossy().into_owned();
    for key in ["host_key", "client_key"] {
        let made = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f", &path(key)])
            .status()
            .unwrap();
        assert!(made.success(), "ssh-keygen {key}");
    }
    std::fs::copy(path("client_key.pub"), path("authorized_keys")).unwrap();
    // Privilege separation wants this directory.
    let _ = std::fs::create_dir_all("/run/sshd");
    let ssh_port = free_port();
    let config = format!(
        "Port {ssh_port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
         PidFile {}\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n\
         PasswordAuthentication no\nAllowTcpForwarding yes\n",
        path("host_key"),
        path("authorized_keys"),
        path("sshd.pid"),
    );
    std::fs::write(path("sshd_config"), config).unwrap();
    let _sshd = Child(
        std::process::Command::new(sshd)
            .args(["-D", "-e", "-f", &path("sshd_config")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start sshd"),
    );
    wait_listening(SocketAddr::from(([127, 0, 0, 1], ssh_port)), "sshd");
    let socks_port = free_port();
    let _ssh = Child(
        std::process::Command::new("ssh")
            .args([
                "-N",
                "-D",
                &format!("127.0.0.1:{socks_port}"),
                "-i",
                &path("client_key"),
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "ExitOnForwardFailure=yes",
                "-p",
                &ssh_port.to_string(),
                "root@127.0.0.1",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start ssh"),
    );
    let socks = SocketAddr::from(([127, 0, 0, 1], socks_port));
    wait_listening(socks, "ssh -D");
    let origin = Server::whoami("127.0.0.1:0");
    let echo = Server::echo("127.0.0.1:0");
    let front = Proxy::start(&[&format!("socks5h://{socks}")]);
    // By address and by name (sshd resolves `localhost`).
    assert_eq!(source_of(front.addr, origin.addr), ip("127.0.0.1"));
    let (mut s, _) = socks5_ok(front.addr, Dest::name("localhost", echo.addr.port()));
    send_stream(&mut s, 3, 128 * 1024, 8 * 1024).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    recv_stream(&mut s, 3, 128 * 1024, 8 * 1024).unwrap();
    assert_eq!(origin.peers().len(), 1);
    let out = front.finish().stdout;
    assert!(
        out.contains(&format!("link socks5h://{socks}: up, 2 connections")),
        "{}",
        tail(&out, 10)
    );
}

/// Inside a namespace: a nameserver on 127.0.0.1:53 that answers nothing
/// and prints `Q NAME` per query, and a SOCKS5 upstream on 127.0.0.1:1085
/// that prints `S name NAME` or `S addr IP` per request and answers
/// success (then closes).
const PY_WATCH: &str = r#"
import socket, sys, threading
d = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
d.bind(("127.0.0.1", 53))
t = socket.socket()
t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind(("127.0.0.1", 1085))
t.listen(16)
def dns():
    while True:
        data, _ = d.recvfrom(4096)
        i, labels = 12, []
        while i < len(data) and data[i] != 0:
            n = data[i]
            labels.append(data[i + 1:i + 1 + n].decode("ascii", "replace"))
            i += 1 + n
        print("Q", ".".join(labels).lower(), flush=True)
threading.Thread(target=dns, daemon=True).start()
def exact(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError()
        b += c
    return b
print("READY", flush=True)
while True:
    c, _ = t.accept()
    try:
        g = exact(c, 2)
        exact(c, g[1])
        c.sendall(b"\x05\x00")
        h = exact(c, 4)
        if h[3] == 3:
            name = exact(c, exact(c, 1)[0]).decode()
            exact(c, 2)
            print("S name", name, flush=True)
        elif h[3] == 1:
            print("S addr", socket.inet_ntoa(exact(c, 6)[:4]), flush=True)
        else:
            exact(c, 18)
            print("S addr6", flush=True)
        c.sendall(b"\x05\x00\x00\x01\x00\x00\x00\x00\x00\x00")
    except Exception as e:
        print("E", e, flush=True)
    c.close()
"#;

/// The privacy point of `socks5h://`: the name goes to the upstream and no
/// DNS query for it leaves this machine. Watched by the namespace's only
/// nameserver; a `socks5://` link's lookup, which it does see, shows the
/// watch works.
#[test]
fn socks5h_sends_no_dns_query_for_the_name() {
    const TEST: &str = "socks5h_sends_no_dns_query_for_the_name";
    if !require_root(TEST) {
        return;
    }
    let mut ns = Netns::new("ups");
    ns.isolate_dns();
    let mut watch = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.name, "python3", "-c", PY_WATCH])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the watcher");
    let stdout = watch.stdout.take().unwrap();
    let _watch = Child(watch);
    let (tx, lines) = std::sync::mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let wait_for = |want: &str, seen: &mut Vec<String>| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !seen.iter().any(|l| l == want) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => seen.push(line),
                Err(_) => panic!("never saw {want:?}; saw {seen:?}"),
            }
        }
    };
    wait_for("READY", &mut seen);
    let hidden = Proxy::start_in_netns(&ns, &["socks5h://127.0.0.1:1085"]);
    let r = ns_socks5(&ns, hidden.addr, "name", "secret.leak.test", 443);
    assert_eq!(r.rep(), 0, "{r:?}");
    wait_for("S name secret.leak.test", &mut seen);
    // The control: a socks5:// link looks the name up here.
    let open = Proxy::start_in_netns(&ns, &["--connect-timeout", "1", "socks5://127.0.0.1:1085"]);
    let r = ns_socks5(&ns, open.addr, "name", "control.leak.test", 443);
    assert_eq!(r.rep(), 4, "the lookup is never answered: {r:?}");
    wait_for("Q control.leak.test", &mut seen);
    // The upstream takes one request at a time: once it has this one, it
    // would have shown one for the unresolved name before.
    let r = ns_socks5(&ns, hidden.addr, "name", "marker.leak.test", 443);
    assert_eq!(r.rep(), 0, "{r:?}");
    wait_for("S name marker.leak.test", &mut seen);
    assert!(
        !seen.iter().any(|l| l.starts_with("S addr")),
        "a request went up for a name that did not resolve: {seen:?}"
    );
    assert!(
        !seen
            .iter()
            .any(|l| l.starts_with("Q ") && l.contains("secret")),
        "a DNS query for the socks5h name left: {seen:?}"
    );
}

#[test]
fn a_family_no_interface_link_has_goes_to_an_upstream() {
    let Ok(listener) = std::net::TcpListener::bind("[::1]:0") else {
        return not_run(
            "a_family_no_interface_link_has_goes_to_an_upstream",
            "needs IPv6 loopback",
        );
    };
    drop(listener);
    let origin = Server::whoami("[::1]:0");
    // The upstream reaches this machine's ::1 directly (no link needed).
    let upstream = Proxy::start(&[]);
    let front = Proxy::start(&["127.0.0.2/9", &format!("socks5://{}", upstream.addr)]);
    for _ in 0..3 {
        assert_eq!(source_of(front.addr, origin.addr), ip("::1"));
    }
    // IPv4 still follows the weights (9 to 1): mostly the interface.
    let server4 = Server::whoami("127.0.0.1:0");
    assert_eq!(source_of(front.addr, server4.addr), ip("127.0.0.2"));
}

/// `@iface` after the port: the connection to the upstream leaves by that
/// interface, not by the routing table's choice. On the three-link
/// topology of tests/links.rs (root only), an upstream dispatch in inet on
/// 10.9.0.1 logs each client's address: 10.2.0.2 when the link says `@l2`,
/// 10.1.0.2 (the lowest-metric default route) when it names no interface.
/// inet's strict reverse-path filter drops what leaves l1 from 10.2.0.2, so
/// only a socket bound to the device l2 gets through.
#[cfg(target_os = "linux")]
#[test]
fn an_interface_after_the_port_picks_the_way_to_the_upstream() {
    use common::topology::*;
    use std::time::Duration;
    if !require_root("an_interface_after_the_port_picks_the_way_to_the_upstream") {
        return;
    }
    let t = Topology::new("ui");
    let server = t.exchange_server();
    let upstream = Proxy::start_in_netns_on(&t.inet, SERVER_IP, &[]);
    let port = upstream.addr.port();
    let via_l2 = t.proxy(&[&format!("socks5://{SERVER_IP}:{port}@l2")]);
    let routed = t.proxy(&[&format!("socks5://{SERVER_IP}:{port}")]);
    let target = server.addr();
    let ask = |front: &Proxy| {
        let r = ns_socks5(
            &t.home,
            front.addr,
            "4",
            &target.ip().to_string(),
            target.port(),
        );
        assert_eq!(r.rep(), 0, "{r:?}\n{}", tail(&front.stdout(), 20));
    };
    ask(&via_l2);
    wait_log(&upstream, " 10.2.0.2:", 1, Duration::from_secs(10)).unwrap();
    ask(&routed);
    wait_log(&upstream, " 10.1.0.2:", 1, Duration::from_secs(10)).unwrap();
    assert_eq!(upstream.stdout().matches(" 10.2.0.2:").count(), 1);
    let out = via_l2.finish().stdout;
    assert!(
        out.contains(&format!(
            "link socks5://{SERVER_IP}:{port}@l2: up, 1 connection"
        )),
        "{}",
        tail(&out, 10)
    );
}

/// The metrics endpoint names a proxy link by its URL, password redacted,
/// in both renderings.
#[test]
fn metrics_show_a_proxy_link_without_its_password() {
    let origin = Server::whoami("127.0.0.1:0");
    let guarded = Proxy::start(&["--auth", "alice:metrics-secret", "127.0.0.3"]);
    let front = Proxy::start(&[
        "--metrics",
        "0",
        &format!("socks5://alice:metrics-secret@{}", guarded.addr),
    ]);
    assert_eq!(source_of(front.addr, origin.addr), ip("127.0.0.3"));
    let out = front.stdout();
    let metrics: SocketAddr = out
        .split("metrics on http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no metrics line:\n{out}"));
    for path in ["/metrics", "/status"] {
        let mut s = TcpStream::connect(metrics).unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .unwrap();
        let body = String::from_utf8(read_to_eof(&mut s)).unwrap();
        assert!(body.starts_with("HTTP/1.1 200"), "{path}: {body}");
        assert!(!body.contains("metrics-secret"), "{path}: {body}");
        assert!(
            body.contains(&format!("socks5://alice:***@{}", guarded.addr)),
            "{path}: {body}"
        );
    }
}

/// Waits (up to 20 s) until the proxy has logged `needle`.
fn wait_logged(proxy: &Proxy, needle: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !proxy.stdout().contains(needle) {
        assert!(
            std::time::Instant::now() < deadline,
            "never logged {needle:?}:\n{}",
            tail(&proxy.stdout(), 20)
        );
        thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A down proxy link's trial that makes no attempt through it (the name is
/// refused once resolved here: it is dispatch itself) leaves the trial to
/// the next request; the link comes back and carries its share again.
#[test]
fn a_trial_that_makes_no_attempt_does_not_keep_the_link_out() {
    let origin = Server::whoami("127.0.0.1:0");
    // An address no other test listens on: the port stays closed until
    // this test listens there.
    let port = std::net::TcpListener::bind("127.0.0.77:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let link = format!("socks5://127.0.0.77:{port}");
    let front = Proxy::start(&["127.0.0.2", &link]);
    // Nothing listens there yet: the request it gets fails over, and the
    // link is down.
    for _ in 0..2 {
        assert_eq!(source_of(front.addr, origin.addr), ip("127.0.0.2"));
    }
    wait_logged(&front, &format!("link {link} down"));
    let (_upstream, asked) = socks5_upstream_at(&format!("127.0.0.77:{port}"), origin.addr);
    // Past the first backoff (5 s) the next request is the link's trial.
    thread::sleep(std::time::Duration::from_secs(6));
    let (_, reply) = socks5_connect(front.addr, Dest::name("me.localhost", front.addr.port()));
    assert_eq!(reply.rep, 0x02, "not allowed: {:02x?}", reply.raw);
    let trial = format!("link {link} trial");
    // (The log is read by another thread: it may come after the reply.)
    wait_logged(&front, &trial);
    assert_eq!(
        front.stdout().matches(&trial).count(),
        1,
        "{}",
        tail(&front.stdout(), 20)
    );
    assert!(asked.lock().unwrap().is_empty());
    // The upstream is back: it gets its share (1 in 2) of what follows.
    let got: Vec<IpAddr> = (0..10)
        .map(|_| source_of(front.addr, origin.addr))
        .collect();
    let through = got.iter().filter(|&&g| g == ip("127.0.0.1")).count();
    assert!(
        (5..=6).contains(&through),
        "{got:?}\n{}",
        tail(&front.stdout(), 20)
    );
    assert_eq!(asked.lock().unwrap().len(), through);
}

/// A proxy link's connect that fails for want of descriptors here says
/// nothing of the proxy: the link stays up. Dispatch is left one free
/// descriptor (prlimit), which the client's connection takes, so the
/// socket to the upstream cannot be made.
#[cfg(target_os = "linux")]
#[test]
fn out_of_descriptors_takes_no_proxy_link_down() {
    const TEST: &str = "out_of_descriptors_takes_no_proxy_link_down";
    let prlimit = |pid: u32, limit: &str| {
        std::process::Command::new("prlimit")
            .args([format!("--nofile={limit}"), format!("--pid={pid}")])
            .status()
    };
    let origin = Server::whoami("127.0.0.1:0");
    let (upstream, asked) = socks5_upstream(origin.addr);
    let link = format!("socks5://{}", upstream.addr);
    let front = Proxy::start(&[&link]);
    let open = front.fd_count_quiet();
    assert_eq!(source_of(front.addr, origin.addr), ip("127.0.0.1"));
    let open = front.fd_count_settled(open, std::time::Duration::from_secs(10));
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", front.pid)).unwrap();
    let hard = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4))
        .expect("the open-files limit")
        .to_string();
    // Descriptors take the lowest free number: the limit is the second
    // free one, so the first is the only one left.
    let used: std::collections::BTreeSet<u64> =
        std::fs::read_dir(format!("/proc/{}/fd", front.pid))
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
    assert!(used.len() <= open, "{used:?}");
    let limit = (0..).filter(|n| !used.contains(n)).nth(1).unwrap();
    match prlimit(front.pid, &format!("{limit}:{hard}")) {
        Ok(s) if s.success() => {}
        other => return not_run(TEST, &format!("needs prlimit (util-linux): {other:?}")),
    }
    let (_, reply) = socks5_connect(front.addr, origin.addr);
    assert_ne!(reply.rep, rep::SUCCEEDED, "{:02x?}", reply.raw);
    assert!(prlimit(front.pid, &format!("{hard}:{hard}"))
        .unwrap()
        .success());
    assert_eq!(source_of(front.addr, origin.addr), ip("127.0.0.1"));
    assert_eq!(asked.lock().unwrap().len(), 2);
    let out = front.finish().stdout;
    assert!(
        out.contains("Too many open files"),
        "the upstream socket was not what failed:\n{}",
        tail(&out, 20)
    );
    assert!(
        !out.contains(&format!("link {link} down")),
        "{}",
        tail(&out, 20)
    );
}

/// An upstream that takes the connection and never answers: it holds each
/// connection until dispatch closes it, and counts them
/// ([`Server::peers`]).
fn silent_upstream() -> Server {
    Server::start("127.0.0.1:0", |mut s, _| {
        let _ = s.read_to_end(&mut Vec::new());
    })
}

#[test]
fn a_silent_upstream_times_out_and_the_request_takes_the_next_route() {
    let origin = Server::whoami("127.0.0.1:0");
    let silent = silent_upstream();
    let open = Proxy::start(&["127.0.0.4"]);
    let link = format!("socks5://{}", silent.addr);
    let front = Proxy::start(&[
        "--connect-timeout",
        "1",
        &link,
        &format!("socks5://{}", open.addr),
    ]);
    for _ in 0..3 {
        assert_eq!(source_of(front.addr, origin.addr), ip("127.0.0.4"));
    }
    assert_eq!(silent.peers().len(), 1, "tried once, then down");
    let out = front.finish().stdout;
    let down = format!("link {link} down: upstream proxy timed out");
    assert!(out.contains(&down), "{}", tail(&out, 20));
}

/// Silent upstreams one after another hold a client no longer than a
/// connect as a whole may take (three connect timeouts): the fourth is
/// never tried, and the third, cut short, is not blamed.
#[test]
fn silent_upstreams_hold_a_client_no_longer_than_a_whole_connect() {
    let silent: Vec<Server> = (0..4).map(|_| silent_upstream()).collect();
    let links: Vec<String> = silent
        .iter()
        .map(|s| format!("socks5://{}", s.addr))
        .collect();
    let mut args = vec!["--connect-timeout", "1"];
    args.extend(links.iter().map(String::as_str));
    let front = Proxy::start(&args);
    let (_, reply) = socks5_connect(front.addr, "127.0.0.1:9".parse::<SocketAddr>().unwrap());
    assert_eq!(reply.rep, rep::TTL_EXPIRED, "{:02x?}", reply.raw);
    let tried: usize = silent.iter().map(|s| s.peers().len()).sum();
    assert_eq!(tried, 3, "{}", tail(&front.stdout(), 20));
    let out = front.finish().stdout;
    assert_eq!(
        out.matches(" down: upstream proxy timed out").count(),
        2,
        "{}",
        tail(&out, 20)
    );
    assert!(out.contains("connect given up"), "{}", tail(&out, 20));
}

/// An upstream proxy that refuses our connection is no refusal by the
/// target: with no route left, a SOCKS5 client hears a server failure (not
/// "connection refused"), and an HTTP client one reason.
#[test]
fn an_unreachable_upstream_is_no_target_refusal() {
    let gone = closed_port("127.0.0.1");
    let origin = Server::whoami("127.0.0.1:0");
    let front = Proxy::start(&[&format!("socks5h://{}", *gone)]);
    let (_, reply) = socks5_connect(front.addr, origin.addr);
    assert_eq!(reply.rep, rep::GENERAL_FAILURE, "{:02x?}", reply.raw);
    let mut c = common::http::HttpConn::connect(front.addr);
    let to = origin.addr;
    c.send(format!("GET http://{to}/ HTTP/1.1\r\nHost: {to}\r\n\r\n").as_bytes());
    let r = c.response();
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(
        r.text().contains("no upstream proxy could be reached"),
        "{}",
        r.text()
    );
    assert!(!r.text().contains("os error"), "{}", r.text());
    front.finish();
}

#[test]
fn an_http_upstream_answering_garbage_fails_as_a_link() {
    let origin = Server::whoami("127.0.0.1:0");
    let garbage = Server::start("127.0.0.1:0", |mut s, _| {
        let mut head = [0u8; 1024];
        let _ = s.read(&mut head);
        let _ = s.write_all(b"SSH-2.0-OpenSSH_9.2\r\n\r\n");
    });
    let open = Proxy::start(&["127.0.0.4"]);
    let link = format!("http://{}", garbage.addr);
    let front = Proxy::start(&[&link, &format!("socks5://{}", open.addr)]);
    for _ in 0..3 {
        assert_eq!(source_of(front.addr, origin.addr), ip("127.0.0.4"));
    }
    assert_eq!(garbage.peers().len(), 1, "tried once, then down");
    let out = front.finish().stdout;
    let down = format!("link {link} down: upstream handshake failed: not an HTTP response");
    assert!(out.contains(&down), "{}", tail(&out, 20));
}

/// A proxy locked out by its credentials gets a trial again on SIGHUP:
/// once the upstream takes them, it carries connections again.
#[cfg(unix)]
#[test]
fn sighup_unlocks_a_locked_proxy() {
    let origin = Server::whoami("127.0.0.1:0");
    let dir = TempDir::new();
    let users = dir.path.join("users");
    std::fs::write(&users, "alice:right-password\n").unwrap();
    let guarded = Proxy::start(&["--auth-file", users.to_str().unwrap(), "127.0.0.3"]);
    let open = Proxy::start(&["127.0.0.4"]);
    let link = format!("socks5://alice:old-password@{}", guarded.addr);
    let front = Proxy::start(&[&link, &format!("socks5://{}", open.addr)]);
    for _ in 0..4 {
        assert_eq!(source_of(front.addr, origin.addr), ip("127.0.0.4"));
    }
    let locked = format!(
        "link socks5://alice:***@{} down until restart or SIGHUP",
        guarded.addr
    );
    assert!(
        front.stdout().contains(&locked),
        "{}",
        tail(&front.stdout(), 20)
    );
    // The upstream now takes the password the link gives.
    std::fs::write(&users, "alice:old-password\n").unwrap();
    common::http::sighup(guarded.pid);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while common::http::socks5_login(&mut client(guarded.addr), "alice", "old-password")
        != Ok([1, 0])
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the upstream never re-read its users"
        );
        thread::sleep(std::time::Duration::from_millis(50));
    }
    // Without SIGHUP the link stays locked.
    for _ in 0..4 {
        assert_eq!(source_of(front.addr, origin.addr), ip("127.0.0.4"));
    }
    common::http::sighup(front.pid);
    wait_logged(&front, "unlocked: it gets a trial");
    let got: Vec<IpAddr> = (0..4).map(|_| source_of(front.addr, origin.addr)).collect();
    assert!(
        got.contains(&ip("127.0.0.3")),
        "{got:?}\n{}",
        tail(&front.stdout(), 20)
    );
    let out = front.finish().stdout;
    assert_eq!(out.matches(&locked).count(), 1, "{}", tail(&out, 30));
    assert!(!out.contains("old-password"));
}
