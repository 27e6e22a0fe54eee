//! UDP ASSOCIATE through links that are other proxies (issue 14): dispatch
//! chained behind dispatch, the front one with a `socks5://` or
//! `socks5h://` link to the back one, whose own link is 127.0.0.3. UDP echo
//! servers on 127.0.0.1 answer every datagram with the source address they
//! saw, so the client learns which path each took; a tiny SOCKS5 server
//! that answers 07 (command not supported) to UDP ASSOCIATE, and a TCP
//! listener standing for an HTTP proxy, stand for upstreams that carry no
//! UDP. Loopback only.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::*;

const UDP_ASSOCIATE: u8 = 0x03;
/// How long one datagram's answer is waited for before it is sent again
/// (where a first datagram may be lost by design: see each test).
const ANSWER: Duration = Duration::from_secs(2);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A UDP echo server on 127.0.0.1: answers each datagram with the source
/// address it came from, a space, and the datagram itself.
struct Echo {
    addr: SocketAddr,
}

impl Echo {
    fn start() -> Echo {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while let Ok((n, from)) = socket.recv_from(&mut buf) {
                let mut answer = format!("{from} ").into_bytes();
                answer.extend_from_slice(&buf[..n]);
                let _ = socket.send_to(&answer, from);
            }
        });
        Echo { addr }
    }
}

/// A client's UDP association with a proxy: its control connection, the
/// relay, and the socket it sends from.
struct Assoc {
    _control: TcpStream,
    relay: SocketAddr,
    socket: UdpSocket,
}

impl Assoc {
    fn open(proxy: SocketAddr) -> Assoc {
        let mut control = client(proxy);
        socks5_greet(&mut control);
        let any = Dest::Addr("0.0.0.0:0".parse().unwrap());
        control
            .write_all(&socks5_request(UDP_ASSOCIATE, &any))
            .unwrap();
        let reply = read_reply5(&mut control).unwrap();
        assert_eq!(reply.rep, rep::SUCCEEDED, "UDP ASSOCIATE with the front");
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(ANSWER)).unwrap();
        Assoc {
            _control: control,
            relay: reply.bnd.expect("a relay address"),
            socket,
        }
    }

    /// Sends `data` to `dest` once; the answer: the header's source, and
    /// the data (`None`: nothing came within [`ANSWER`]).
    fn try_exchange(&self, dest: &Dest, data: &[u8]) -> Option<(SocketAddr, Vec<u8>)> {
        let request = socks5_request(0, dest);
        let mut d = vec![0, 0, 0];
        d.extend_from_slice(&request[3..]);
        d.extend_from_slice(data);
        self.socket.send_to(&d, self.relay).unwrap();
        let mut buf = vec![0u8; 65_536];
        let (n, from) = self.socket.recv_from(&mut buf).ok()?;
        assert_eq!(from, self.relay, "answers come from the relay");
        let d = &buf[..n];
        assert_eq!(&d[..4], [0, 0, 0, 1], "RSV FRAG, an IPv4 source: {d:02x?}");
        let source = SocketAddr::from(([d[4], d[5], d[6], d[7]], u16::from_be_bytes([d[8], d[9]])));
        Some((source, d[10..].to_vec()))
    }

    /// Sends `data` to the echo server at `dest` (sent again, up to 5
    /// times, while no answer comes); returns the address the server saw
    /// the datagram come from. The answer must be intact and name `dest`'s
    /// address as its source (`echo`).
    fn exchange(&self, dest: &Dest, echo: SocketAddr, data: &[u8]) -> IpAddr {
        for _ in 0..5 {
            let Some((source, answer)) = self.try_exchange(dest, data) else {
                continue;
            };
            assert_eq!(source, echo, "the header names the echo server");
            let text = String::from_utf8_lossy(&answer[..answer.len().min(40)]).to_string();
            let space = answer.iter().position(|&b| b == b' ').expect(&text);
            assert_eq!(&answer[space + 1..], data, "the datagram came back intact");
            let seen: SocketAddr = std::str::from_utf8(&answer[..space])
                .unwrap()
                .parse()
                .unwrap();
            return seen.ip();
        }
        panic!("no answer from {echo} through the front proxy");
    }
}

/// A payload of `len` bytes that tells its datagrams apart.
fn payload(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| seed.wrapping_add(i as u8)).collect()
}

#[test]
fn datagrams_go_through_a_socks5_upstream_and_leave_by_its_link() {
    let back = Proxy::start(&["127.0.0.3"]);
    let front = Proxy::start(&[&format!("socks5://{}", back.addr)]);
    let echoes: Vec<Echo> = (0..3).map(|_| Echo::start()).collect();
    let assoc = Assoc::open(front.addr);
    for round in 0..3u8 {
        for (i, echo) in echoes.iter().enumerate() {
            let data = payload(round * 10 + i as u8, [1, 1400, 8000][i]);
            let seen = assoc.exchange(&Dest::Addr(echo.addr), echo.addr, &data);
            assert_eq!(seen, ip("127.0.0.3"), "left by the back proxy's link");
        }
    }
    let out = front.finish().stdout;
    let asked = format!("UDP ASSOCIATE through socks5://{}", back.addr);
    assert_eq!(
        out.matches(&asked).count(),
        1,
        "one upstream association for every destination:\n{}",
        tail(&out, 30)
    );
}

#[test]
fn socks5h_passes_a_name_to_the_upstream_unresolved() {
    let back = Proxy::start(&["127.0.0.3"]);
    let front = Proxy::start(&[&format!("socks5h://{}", back.addr)]);
    let echo = Echo::start();
    let assoc = Assoc::open(front.addr);
    let name = Dest::name("echo.localhost", echo.addr.port());
    for round in 0..3 {
        let seen = assoc.exchange(&name, echo.addr, &payload(round, 100));
        assert_eq!(seen, ip("127.0.0.3"));
    }
    let resolving = format!("UDP resolving echo.localhost:{}", echo.addr.port());
    let front_out = front.finish().stdout;
    assert!(
        !front_out.contains(&resolving),
        "the front resolved the name:\n{}",
        tail(&front_out, 30)
    );
    let back_out = back.finish().stdout;
    assert!(
        back_out.contains(&resolving),
        "the back proxy resolved it:\n{}",
        tail(&back_out, 30)
    );
}

#[test]
fn a_socks5_link_with_credentials_authenticates_its_udp_association() {
    let back = Proxy::start(&["--auth", "alice:udp-secret", "127.0.0.3"]);
    let front = Proxy::start(&[&format!("socks5://alice:udp-secret@{}", back.addr)]);
    let echo = Echo::start();
    let assoc = Assoc::open(front.addr);
    let seen = assoc.exchange(&Dest::Addr(echo.addr), echo.addr, b"with credentials");
    assert_eq!(seen, ip("127.0.0.3"));
    let out = front.finish().stdout;
    assert!(!out.contains("udp-secret"), "{}", tail(&out, 30));
}

/// A SOCKS5 server without authentication that answers every request 07
/// (command not supported), or, `silently`, closes the connection at the
/// request as `ssh -D` does; counts the UDP ASSOCIATE requests.
fn refusing_upstream(silently: bool) -> (Server, Arc<AtomicUsize>) {
    let asked = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&asked);
    let server = Server::start("127.0.0.1:0", move |mut s, _| {
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut greeting = [0u8; 2];
        if s.read_exact(&mut greeting).is_err() {
            return;
        }
        let mut methods = vec![0u8; usize::from(greeting[1])];
        s.read_exact(&mut methods).unwrap();
        s.write_all(&[5, 0]).unwrap();
        // VER CMD RSV ATYP=1 ADDR(4) PORT(2): dispatch asks with 0.0.0.0:0.
        let mut request = [0u8; 10];
        s.read_exact(&mut request).unwrap();
        if request[1] == UDP_ASSOCIATE {
            count.fetch_add(1, Ordering::SeqCst);
        }
        if !silently {
            s.write_all(&[5, 7, 0, 1, 0, 0, 0, 0, 0, 0]).unwrap();
        }
    });
    (server, asked)
}

#[test]
fn an_upstream_that_refuses_udp_gets_none_and_datagrams_take_the_interface() {
    refused(false);
}

#[test]
fn an_upstream_that_closes_at_udp_associate_like_ssh_d_gets_none_and_stays_up() {
    let front = refused(true);
    let down = "down:";
    assert!(!front.contains(down), "{}", tail(&front, 30));
}

/// UDP through a front proxy with an interface link and a link to an
/// upstream that refuses UDP ASSOCIATE; returns the front's log.
fn refused(silently: bool) -> String {
    let (upstream, asked) = refusing_upstream(silently);
    let front = Proxy::start(&["127.0.0.2", &format!("socks5://{}", upstream.addr)]);
    let echoes: Vec<Echo> = (0..4).map(|_| Echo::start()).collect();
    let assoc = Assoc::open(front.addr);
    for round in 0..2u8 {
        for echo in &echoes {
            let seen = assoc.exchange(&Dest::Addr(echo.addr), echo.addr, &payload(round, 64));
            assert_eq!(seen, ip("127.0.0.2"), "the interface link carried it");
        }
    }
    // A second association does not ask again.
    let again = Assoc::open(front.addr);
    for echo in &echoes {
        let seen = again.exchange(&Dest::Addr(echo.addr), echo.addr, b"again");
        assert_eq!(seen, ip("127.0.0.2"));
    }
    assert_eq!(asked.load(Ordering::SeqCst), 1, "asked once, not again");
    let out = front.finish().stdout;
    let said = "the upstream does not carry UDP";
    assert_eq!(
        out.matches(said).count(),
        1,
        "said once:\n{}",
        tail(&out, 30)
    );
    out
}

#[test]
fn http_links_carry_no_udp() {
    // Whatever connects to the "HTTP proxy" is counted: nothing may.
    let http = Server::start("127.0.0.1:0", |_, _| {});
    let front = Proxy::start(&["127.0.0.2", &format!("http://{}", http.addr)]);
    let echoes: Vec<Echo> = (0..4).map(|_| Echo::start()).collect();
    let assoc = Assoc::open(front.addr);
    for echo in &echoes {
        let seen = assoc.exchange(&Dest::Addr(echo.addr), echo.addr, b"not via http");
        assert_eq!(seen, ip("127.0.0.2"));
    }
    assert!(http.peers().is_empty(), "{:?}", http.peers());
}

#[test]
fn killing_the_upstream_ends_its_leg_and_new_datagrams_go_elsewhere() {
    let back = Proxy::start(&["127.0.0.3"]);
    let back_addr = back.addr;
    let front = Proxy::start(&["127.0.0.2", &format!("socks5://{back_addr}")]);
    let echoes: Vec<Echo> = (0..6).map(|_| Echo::start()).collect();
    let assoc = Assoc::open(front.addr);
    // Interfaces and the upstream weigh the same: destinations alternate.
    let before: Vec<IpAddr> = echoes[..4]
        .iter()
        .map(|e| assoc.exchange(&Dest::Addr(e.addr), e.addr, b"before"))
        .collect();
    assert!(before.contains(&ip("127.0.0.3")), "{before:?}");
    assert!(before.contains(&ip("127.0.0.2")), "{before:?}");
    drop(back.finish());
    // The front sees the control connection end, and says the link is down.
    let down = format!("link socks5://{back_addr} down");
    let mut waited = 0;
    while !front.stdout().contains(&down) {
        assert!(waited < 100, "{}", tail(&front.stdout(), 30));
        thread::sleep(Duration::from_millis(100));
        waited += 1;
    }
    // Destinations it carried, and new ones, go by the interface now.
    for e in &echoes {
        let seen = assoc.exchange(&Dest::Addr(e.addr), e.addr, b"after");
        assert_eq!(seen, ip("127.0.0.2"), "after the kill");
    }
}
