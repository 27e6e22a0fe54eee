//! Outgoing connections: a non-blocking socket bound to the chosen local
//! address, and what a failed connect means to a SOCKS client.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mio::net::TcpStream;
use socket2::{Domain, Protocol, Socket, Type};

use crate::socks::Reply;
use crate::sys::{self, Device};

/// Starts connecting to `remote` from `local` (port chosen by the kernel;
/// with no `local`, the address the system picks), through `device` when
/// given. The returned stream is connecting: wait for it to become
/// writable, then call [`connect_result`].
pub fn connect_from(
    local: Option<IpAddr>,
    device: Option<&Device>,
    remote: SocketAddr,
) -> io::Result<TcpStream> {
    // Created non-blocking where the system allows (saves two fcntl calls).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let socket = Socket::new(
        Domain::for_address(remote),
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )?;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let socket = {
        let socket = Socket::new(
            Domain::for_address(remote),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        socket.set_nonblocking(true)?;
        socket
    };
    if let Some(dev) = device {
        sys::bind_device(&socket, dev, remote.is_ipv6())?;
    }
    socket.set_tcp_nodelay(true)?;
    set_keepalive(&socket);
    if let Some(local) = local {
        // Not fatal: without it connections still work, they only use up
        // ephemeral ports sooner.
        if let Err(e) = sys::set_bind_address_no_port(&socket) {
            log::debug!("IP_BIND_ADDRESS_NO_PORT unavailable: {e}");
        }
        socket.bind(&SocketAddr::new(local, 0).into())?;
    }
    match socket.connect(&remote.into()) {
        Ok(()) => {}
        Err(e) if sys::is_in_progress(&e) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

/// TCP keepalive, so a relayed connection whose peer vanished (a link that
/// died, a laptop that slept) is noticed and closed instead of held forever:
/// probes after a minute of silence, then at the system's interval (on
/// Linux 9 probes 75 s apart, so a dead peer is gone within about 12 min).
/// Two system calls; the interval and count are left alone to save two more
/// on every connection.
pub fn set_keepalive(socket: &Socket) {
    let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(60));
    if let Err(e) = socket.set_tcp_keepalive(&keepalive) {
        log::debug!("TCP keepalive unavailable: {e}");
    }
}

/// Whether the proxy may connect to `addr` at all: the unspecified address
/// (which Linux takes as "this host"), multicast and broadcast are refused.
pub fn is_connectable(addr: SocketAddr) -> bool {
    match addr.ip() {
        IpAddr::V4(ip) => !(ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast()),
        IpAddr::V6(ip) => !(ip.is_unspecified() || ip.is_multicast()),
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) as the IPv4 address it
/// is, so it leaves through an IPv4 link.
/// Any other address is kept as it is, with its scope (an IPv6 link-local
/// address leaves by the interface its scope names).
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) if v6.ip().to_ipv4_mapped().is_some() => {
            SocketAddr::new(addr.ip().to_canonical(), addr.port())
        }
        _ => addr,
    }
}

/// After a writable event on a connecting stream: `Ok(true)` connected,
/// `Ok(false)` still connecting (a spurious event), `Err` failed.
///
/// A peer address means connected: one system call on the path every
/// connection takes. Only without one is the pending error asked for (a
/// failed connect leaves the socket unconnected with its error set; an
/// error that arrives after the connect is met by the relay's first read
/// or write, as any later one is).
pub fn connect_result(stream: &TcpStream) -> io::Result<bool> {
    match stream.peer_addr() {
        Ok(_) => Ok(true),
        // Not connected: a failed connect's own error is pending (macOS
        // says EINVAL here, not ENOTCONN, for a socket it left shut down
        // both ways), or none yet while it is still in progress.
        Err(e) => match stream.take_error()? {
            Some(pending) => Err(pending),
            None if e.kind() == io::ErrorKind::NotConnected || sys::is_in_progress(&e) => Ok(false),
            None => Err(e),
        },
    }
}

/// The SOCKS5 reply for a connect that failed with `err`.
pub fn reply_for(err: &io::Error) -> Reply {
    use io::ErrorKind::*;
    match err.kind() {
        ConnectionRefused => Reply::ConnectionRefused,
        NetworkUnreachable | NetworkDown => Reply::NetworkUnreachable,
        HostUnreachable => Reply::HostUnreachable,
        TimedOut => Reply::TtlExpired,
        PermissionDenied => Reply::NotAllowed,
        _ => Reply::GeneralFailure,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_refused_connect_says_refused_and_a_good_one_connected() {
        let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        for (to, refused) in [(open.local_addr().unwrap(), false), (closed, true)] {
            let stream = TcpStream::connect(to).unwrap();
            let deadline = Instant::now() + Duration::from_secs(5);
            let outcome = loop {
                match connect_result(&stream) {
                    Ok(false) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    other => break other,
                }
            };
            if refused {
                let e = outcome.expect_err("a closed port refuses");
                assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");
            } else {
                assert!(matches!(outcome, Ok(true)), "{outcome:?}");
            }
        }
    }

    #[test]
    fn errors_map_to_replies() {
        let e = |k| io::Error::from(k);
        assert_eq!(
            reply_for(&e(io::ErrorKind::ConnectionRefused)),
            Reply::ConnectionRefused
        );
        assert_eq!(
            reply_for(&e(io::ErrorKind::NetworkUnreachable)),
            Reply::NetworkUnreachable
        );
        assert_eq!(
            reply_for(&e(io::ErrorKind::HostUnreachable)),
            Reply::HostUnreachable
        );
        assert_eq!(reply_for(&e(io::ErrorKind::TimedOut)), Reply::TtlExpired);
        assert_eq!(reply_for(&e(io::ErrorKind::Other)), Reply::GeneralFailure);
    }

    #[test]
    fn canonical_unmaps_ipv4_and_keeps_a_scope() {
        let mapped: SocketAddr = "[::ffff:192.0.2.1]:80".parse().unwrap();
        assert_eq!(canonical(mapped), "192.0.2.1:80".parse().unwrap());
        let scoped = SocketAddr::V6(std::net::SocketAddrV6::new(
            "fe80::1".parse().unwrap(),
            80,
            0,
            3,
        ));
        assert_eq!(canonical(scoped), scoped);
    }

    #[test]
    fn unspecified_multicast_and_broadcast_are_not_connectable() {
        for bad in [
            "0.0.0.0:80",
            "224.0.0.1:80",
            "255.255.255.255:80",
            "[::]:80",
            "[ff02::1]:80",
        ] {
            assert!(!is_connectable(bad.parse().unwrap()), "{bad}");
        }
        for good in ["127.0.0.1:80", "10.0.0.1:443", "[::1]:80"] {
            assert!(is_connectable(good.parse().unwrap()), "{good}");
        }
    }
}
