//! What the network benches share: a dispatch reactor on loopback, the
//! servers at the far end, and a SOCKS5 client.
#![allow(dead_code)] // each bench uses its part

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::num::NonZeroU32;
use std::thread;

use dispatch::config::Config;
use dispatch::links::LinkSpec;
use dispatch::reactor::{Reactor, Shutdown};

pub const CHUNK: usize = 256 << 10;

/// A running reactor; stopped and joined on drop.
pub struct Proxy {
    pub addr: SocketAddr,
    stop: Shutdown,
    handle: Option<thread::JoinHandle<()>>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.trigger();
        if let Some(h) = self.handle.take() {
            h.join().unwrap();
        }
    }
}

/// Starts dispatch on 127.0.0.1 (any port), leaving from 127.0.0.1, with the
/// default ring size or another one.
pub fn start_proxy(ring_size: Option<usize>) -> Proxy {
    start_proxy_with(ring_size, |r| r)
}

/// [`start_proxy`], its reactor changed by `tune` before it runs (splice
/// off, another pipe size).
pub fn start_proxy_with(ring_size: Option<usize>, tune: fn(Reactor) -> Reactor) -> Proxy {
    let config = Config::new(
        (Ipv4Addr::LOCALHOST, 0).into(),
        vec![LinkSpec {
            ip: Ipv4Addr::LOCALHOST.into(),
            weight: NonZeroU32::MIN,
            iface: None,
            follow: false,
        }],
    );
    let reactor = match ring_size {
        Some(size) => Reactor::with_ring_size(config, size),
        None => Reactor::new(config),
    }
    .unwrap();
    let mut reactor = tune(reactor);
    let addr = reactor.local_addr();
    let stop = reactor.shutdown_handle();
    let handle = thread::spawn(move || {
        reactor.run().unwrap();
    });
    Proxy {
        addr,
        stop,
        handle: Some(handle),
    }
}

/// Accepts forever on 127.0.0.1, one thread per connection running `serve`.
fn server(serve: fn(TcpStream)) -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let s = stream.unwrap();
            thread::spawn(move || serve(s));
        }
    });
    addr
}

/// Reads everything a client sends and answers one byte at EOF, so the
/// client knows the last byte arrived.
pub fn sink_server() -> SocketAddr {
    server(|mut s| {
        let mut buf = vec![0u8; CHUNK];
        while s.read(&mut buf).map(|n| n > 0).unwrap_or(false) {}
        let _ = s.write_all(b"!");
    })
}

/// Reads an 8-byte big-endian count, sends that many bytes, closes.
pub fn source_server() -> SocketAddr {
    server(|mut s| {
        let mut n = [0u8; 8];
        if s.read_exact(&mut n).is_err() {
            return;
        }
        let mut left = u64::from_be_bytes(n) as usize;
        let chunk = vec![0xa5u8; CHUNK];
        while left > 0 {
            let n = left.min(CHUNK);
            if s.write_all(&chunk[..n]).is_err() {
                return;
            }
            left -= n;
        }
    })
}

/// Opens a connection to `target`, through the proxy when there is one:
/// SOCKS5 greeting and CONNECT, each answer awaited, as a client does.
pub fn connect(proxy: Option<SocketAddr>, target: SocketAddr) -> TcpStream {
    let Some(proxy) = proxy else {
        return TcpStream::connect(target).unwrap();
    };
    let mut s = TcpStream::connect(proxy).unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(&[5, 1, 0]).unwrap();
    let mut method = [0u8; 2];
    s.read_exact(&mut method).unwrap();
    assert_eq!(method, [5, 0]);
    let SocketAddr::V4(t) = target else {
        unreachable!("IPv4 targets only")
    };
    let mut request = vec![5, 1, 0, 1];
    request.extend_from_slice(&t.ip().octets());
    request.extend_from_slice(&t.port().to_be_bytes());
    s.write_all(&request).unwrap();
    let mut reply = [0u8; 10];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(reply[..2], [5, 0], "CONNECT refused: {reply:?}");
    s
}
