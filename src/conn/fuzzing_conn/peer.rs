//! The harness's side of each socket: a peer that sends, half-closes,
//! resets, pauses and reads, and keeps what it sent and saw; with small
//! kernel buffers, so back-pressure comes after a few sends.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream as StdStream};
use std::time::Duration;

use super::super::fuzz_input::pattern_at;

/// Small kernel buffers on the peers' sockets, so back-pressure is
/// reached with a few sends.
const PEER_BUFFER: usize = 4096;

/// One of the two peers: its socket (this side), and what it did and saw.
#[derive(Default)]
pub struct Peer {
    pub sock: Option<StdStream>,
    pub sent: Vec<u8>,
    pub got: Vec<u8>,
    pub paused: bool,
    pub shut: bool,
    /// It reset a connection (it has none until a new one is attached).
    pub reset: bool,
    pub saw_eof: bool,
    pub saw_error: bool,
    /// Bytes to send as the socket takes them (an HTTP peer's messages).
    pub queued: Vec<u8>,
    /// Asked to half-close: done once `queued` is out.
    pub shutting: bool,
}

impl Peer {
    pub fn attach(&mut self, sock: StdStream) {
        sock.set_nonblocking(true).unwrap();
        // Each send goes out at once: Nagle would hold small ones back
        // for an ACK, and the session would settle before they arrive.
        sock.set_nodelay(true).unwrap();
        self.sock = Some(sock);
    }

    /// Sends what the socket takes of `n` more bytes of its stream.
    pub fn send(&mut self, n: usize, seed: usize) {
        let Some(sock) = self.sock.as_mut().filter(|_| !self.shut && !self.shutting) else {
            return;
        };
        // Only the new bytes are made: a session sends megabytes.
        let more = pattern_at(self.sent.len(), n, seed);
        if let Ok(k) = sock.write(&more) {
            self.sent.extend_from_slice(&more[..k]);
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        if let Some(sock) = self.sock.as_mut() {
            let _ = sock.write_all(bytes);
        }
    }

    /// Half-closes, once what is queued is out.
    pub fn shut(&mut self) {
        self.shutting = true;
        self.flush();
    }

    /// Queues `bytes` behind what is queued, and sends what fits.
    pub fn queue(&mut self, bytes: &[u8]) {
        if !self.shutting && !self.ended() {
            self.queued.extend_from_slice(bytes);
            self.flush();
        }
    }

    /// Sends what the socket takes of the queue (then half-closes, if
    /// asked to); whether anything happened.
    pub fn flush(&mut self) -> bool {
        let Some(sock) = self.sock.as_mut().filter(|_| !self.shut) else {
            return false;
        };
        let mut moved = false;
        while !self.queued.is_empty() {
            match sock.write(&self.queued) {
                Ok(k) => {
                    self.sent.extend(self.queued.drain(..k));
                    moved = true;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return moved,
            }
        }
        if self.shutting {
            let _ = sock.shutdown(Shutdown::Write);
            self.shut = true;
            moved = true;
        }
        moved
    }

    /// A new connection in place of the one it had (an HTTP origin the
    /// proxy connected to anew): what it queued for the old one is lost.
    pub fn replace(&mut self, sock: StdStream) {
        self.queued.clear();
        self.shut = false;
        self.shutting = false;
        self.saw_eof = false;
        self.saw_error = false;
        self.attach(sock);
    }

    /// Closes with a reset (linger 0): its peer sees ECONNRESET.
    pub fn reset(&mut self) {
        if let Some(sock) = self.sock.take() {
            let _ = socket2::SockRef::from(&sock).set_linger(Some(Duration::ZERO));
            self.reset = true;
        }
    }

    /// Reads what is there, unless paused; whether anything happened.
    pub fn pull(&mut self) -> bool {
        let Some(sock) = self.sock.as_mut() else {
            return false;
        };
        if self.paused || self.saw_eof || self.saw_error {
            return false;
        }
        let mut buf = [0; 16 * 1024];
        let mut moved = false;
        loop {
            match sock.read(&mut buf) {
                Ok(0) => {
                    self.saw_eof = true;
                    return true;
                }
                Ok(n) => {
                    self.got.extend_from_slice(&buf[..n]);
                    moved = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return moved,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.saw_error = true;
                    return true;
                }
            }
        }
    }

    /// Whether it has no more to say: half-closed (or about to be), reset
    /// or gone.
    pub fn ended(&self) -> bool {
        self.shut || self.shutting || self.sock.is_none()
    }
}

/// A session's target: listeners on 127.0.0.1 and, where there is IPv6, on
/// ::1 at the same port (a `.localhost` name gives both addresses, and the
/// proxy may try either), whose accepted sockets have small buffers. One a
/// session, so no connection of an earlier session is ever taken for one
/// of this session's.
pub struct Origin {
    v4: TcpListener,
    v6: Option<TcpListener>,
}

impl Origin {
    pub fn new() -> Origin {
        loop {
            let v4 = small_listener(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
            let port = v4.local_addr().unwrap().port();
            let v6 = small_listener(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)));
            match v6 {
                Ok(v6) => return Origin { v4, v6: Some(v6) },
                // The port is someone else's on ::1: another pair.
                Err(e) if e.kind() == ErrorKind::AddrInUse => continue,
                // No IPv6 here: the proxy's ::1 attempt is refused at once.
                Err(_) => return Origin { v4, v6: None },
            }
        }
    }

    /// The IPv4 address requests name.
    pub fn addr(&self) -> SocketAddr {
        self.v4.local_addr().unwrap()
    }

    /// A connection the proxy made to it, if one is waiting.
    pub fn accept(&self) -> Option<StdStream> {
        let v6 = self.v6.iter().filter_map(|l| l.accept().ok());
        self.v4
            .accept()
            .ok()
            .into_iter()
            .chain(v6)
            .map(|(s, _)| s)
            .next()
    }
}

fn small_listener(at: SocketAddr) -> std::io::Result<TcpListener> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(at),
        socket2::Type::STREAM,
        None,
    )?;
    if at.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_recv_buffer_size(PEER_BUFFER)?;
    s.set_send_buffer_size(PEER_BUFFER)?;
    s.bind(&at.into())?;
    s.listen(16)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// A port on 127.0.0.1 nothing listens on, held (bound, never listening)
/// so that no other socket takes it: connections to it are refused.
pub fn refused_port() -> (socket2::Socket, SocketAddr) {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let addr = s.local_addr().unwrap().as_socket().unwrap();
    (s, addr)
}

/// A client socket with small buffers, connected to the proxy's listener.
pub fn small_client(to: SocketAddr) -> StdStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(PEER_BUFFER).unwrap();
    s.set_send_buffer_size(PEER_BUFFER).unwrap();
    // A signal (libFuzzer's timer) may interrupt the connect, which then
    // goes on by itself: wait until it is done.
    let mut tries = 0;
    loop {
        match s.connect(&to.into()) {
            Ok(()) => break,
            Err(e) if e.raw_os_error() == Some(libc::EISCONN) => break,
            Err(e)
                if tries < 1000
                    && (e.kind() == ErrorKind::Interrupted
                        || e.raw_os_error() == Some(libc::EALREADY)) =>
            {
                tries += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("connect to the proxy: {e}"),
        }
    }
    s.into()
}
