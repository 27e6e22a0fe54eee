//! The few calls that differ between platforms. Everything behind `cfg` lives here.

use std::io;

/// Raises the soft limit on open files to the hard limit, so thousands of
/// peer connections fit. Returns the limit now in force (`None` where the
/// platform has no such limit).
#[cfg(unix)]
pub fn raise_nofile_limit() -> io::Result<Option<u64>> {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(io::Error::last_os_error());
        }
        // macOS refuses RLIM_INFINITY for the soft limit; OPEN_MAX is its ceiling.
        #[cfg(target_os = "macos")]
        let target = lim.rlim_max.min(libc::OPEN_MAX as libc::rlim_t);
        #[cfg(not(target_os = "macos"))]
        let target = lim.rlim_max;
        if lim.rlim_cur < target {
            let old = lim.rlim_cur;
            lim.rlim_cur = target;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                lim.rlim_cur = old;
            }
        }
        Ok(Some(lim.rlim_cur as u64))
    }
}

#[cfg(not(unix))]
pub fn raise_nofile_limit() -> io::Result<Option<u64>> {
    Ok(None)
}

/// The soft limit on open files now in force, where there is one.
#[cfg(unix)]
pub fn nofile_limit() -> Option<u64> {
    // SAFETY: getrlimit only writes the struct we pass.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        (libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0).then_some(lim.rlim_cur as u64)
    }
}

#[cfg(not(unix))]
pub fn nofile_limit() -> Option<u64> {
    None
}

/// The hosts file the system resolver reads.
#[cfg(not(windows))]
pub fn hosts_path() -> std::path::PathBuf {
    std::path::PathBuf::from("/etc/hosts")
}

#[cfg(windows)]
pub fn hosts_path() -> std::path::PathBuf {
    let root = std::env::var_os("SystemRoot").unwrap_or_else(|| r"C:\Windows".into());
    std::path::PathBuf::from(root).join(r"System32\drivers\etc\hosts")
}

/// Linux: let `bind(ip, 0)` defer choosing the port to `connect`, so the
/// 4-tuple (not the port alone) must be unique and thousands of outgoing
/// connections from one address do not exhaust the ephemeral range.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn set_bind_address_no_port(sock: &socket2::Socket) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: a valid fd, a c_int option value and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub fn set_bind_address_no_port(_sock: &socket2::Socket) -> io::Result<()> {
    Ok(())
}

/// A non-blocking `connect` that has started but not finished.
pub fn is_in_progress(err: &io::Error) -> bool {
    #[cfg(unix)]
    {
        err.raw_os_error() == Some(libc::EINPROGRESS) || err.kind() == io::ErrorKind::WouldBlock
    }
    #[cfg(not(unix))]
    {
        // Windows reports WSAEWOULDBLOCK for a pending connect.
        err.kind() == io::ErrorKind::WouldBlock
    }
}

/// The process (or system) has no file descriptors left.
pub fn is_out_of_fds(err: &io::Error) -> bool {
    #[cfg(unix)]
    {
        matches!(err.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
    }
    #[cfg(windows)]
    {
        // WSAEMFILE
        err.raw_os_error() == Some(10024)
    }
    #[cfg(not(any(unix, windows)))]
    {
        let _ = err;
        false
    }
}

/// A network interface an outgoing socket can be bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub name: String,
    pub index: u32,
}

/// Binds `sock` to `dev`, so its packets leave by that interface whatever the
/// routing table says: Linux `SO_BINDTODEVICE`, macOS `IP_BOUND_IF` /
/// `IPV6_BOUND_IF`, Windows `IP_UNICAST_IF` / `IPV6_UNICAST_IF`.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn bind_device(sock: &socket2::Socket, dev: &Device, _ipv6: bool) -> io::Result<()> {
    sock.bind_device(Some(dev.name.as_bytes()))
}

#[cfg(any(target_os = "macos", target_os = "ios"))]
pub fn bind_device(sock: &socket2::Socket, dev: &Device, ipv6: bool) -> io::Result<()> {
    let index = std::num::NonZeroU32::new(dev.index)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "interface index 0"))?;
    if ipv6 {
        sock.bind_device_by_index_v6(Some(index))
    } else {
        sock.bind_device_by_index_v4(Some(index))
    }
}

#[cfg(windows)]
pub fn bind_device(sock: &socket2::Socket, dev: &Device, ipv6: bool) -> io::Result<()> {
    use std::os::windows::io::AsRawSocket;
    use windows_sys::Win32::Networking::WinSock::{
        setsockopt, IPPROTO_IP, IPPROTO_IPV6, IPV6_UNICAST_IF, IP_UNICAST_IF, SOCKET,
    };
    // IPv4 takes the index in network byte order, IPv6 in host order.
    let (level, name, value) = if ipv6 {
        (IPPROTO_IPV6, IPV6_UNICAST_IF, dev.index)
    } else {
        (IPPROTO_IP, IP_UNICAST_IF, dev.index.to_be())
    };
    // SAFETY: a valid socket, a u32 option value and its exact size.
    let rc = unsafe {
        setsockopt(
            sock.as_raw_socket() as SOCKET,
            level,
            name,
            &value as *const u32 as *const u8,
            std::mem::size_of::<u32>() as i32,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "macos",
    target_os = "ios",
    windows
)))]
pub fn bind_device(_sock: &socket2::Socket, _dev: &Device, _ipv6: bool) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

/// Whether this process may bind sockets to `dev` (on Linux before 5.7, or
/// for a socket already bound to a device, `SO_BINDTODEVICE` needs
/// `CAP_NET_RAW`). Tried once at start on a throwaway socket.
pub fn can_bind_device(dev: &Device, ipv6: bool) -> io::Result<()> {
    let domain = if ipv6 {
        socket2::Domain::IPV6
    } else {
        socket2::Domain::IPV4
    };
    let sock = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
    bind_device(&sock, dev, ipv6)
}
