//! Outgoing connections: a non-blocking socket bound to the chosen local
//! address, and what a failed connect means to a SOCKS client.

use std::io;
use std::net::{IpAddr, SocketAddr};

use mio::net::TcpStream;
use socket2::{Domain, Protocol, Socket, Type};

use crate::socks::Reply;
use crate::sys;

/// Starts connecting to `remote` from `local` (port chosen by the kernel).
/// The returned stream is connecting: wait for it to become writable, then
/// call [`connect_result`].
pub fn connect_from(local: IpAddr, remote: SocketAddr) -> io::Result<TcpStream> {
    let socket = Socket::new(
        Domain::for_address(remote),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    // Not fatal: without it connections still work, they only use up
    // ephemeral ports sooner.
    if let Err(e) = sys::set_bind_address_no_port(&socket) {
        log::debug!("IP_BIND_ADDRESS_NO_PORT unavailable: {e}");
    }
    socket.bind(&SocketAddr::new(local, 0).into())?;
    match socket.connect(&remote.into()) {
        Ok(()) => {}
        Err(e) if sys::is_in_progress(&e) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

/// After a writable event on a connecting stream: `Ok(true)` connected,
/// `Ok(false)` still connecting (a spurious event), `Err` failed.
pub fn connect_result(stream: &TcpStream) -> io::Result<bool> {
    if let Some(e) = stream.take_error()? {
        return Err(e);
    }
    match stream.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(e) => Err(e),
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
}
