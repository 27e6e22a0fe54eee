//! SOCKS5 (RFC 1928), SOCKS4 and SOCKS4a messages, without I/O.
//!
//! Every parser takes the bytes received so far and answers, like `httparse`:
//! - `Ok(Status::Partial)`: the message is not complete yet; read more and call again,
//! - `Ok(Status::Complete(msg, consumed))`: a message, and how many bytes it took
//!   (bytes after `consumed` belong to the client's next message or are payload),
//! - `Err(ParseError)`: the bytes can never become a valid message. Errors are
//!   reported as early as the offending byte arrives.
//!
//! Parsed messages borrow from the input (a domain name is a `&str` into it),
//! so nothing is allocated. Replies are written into a caller's buffer by the
//! `emit_*` functions, which return the number of bytes written.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

#[rustfmt::skip]
pub mod consts {
    pub const SOCKS4_VERSION: u8          = 0x04;
    pub const SOCKS5_VERSION: u8          = 0x05;

    /// RFC 1928 §3: METHOD values.
    pub const METHOD_NO_AUTH: u8          = 0x00;
    pub const METHOD_USER_PASS: u8        = 0x02;
    pub const METHOD_NONE_ACCEPTABLE: u8  = 0xFF;

    /// RFC 1928 §4: CMD values (SOCKS4 uses the same numbers for CONNECT and BIND).
    pub const CMD_CONNECT: u8             = 0x01;
    pub const CMD_BIND: u8                = 0x02;
    pub const CMD_UDP_ASSOCIATE: u8       = 0x03;

    /// RFC 1928 §4: ATYP values.
    pub const ATYP_IPV4: u8               = 0x01;
    pub const ATYP_DOMAIN: u8             = 0x03;
    pub const ATYP_IPV6: u8               = 0x04;

    /// SOCKS4 reply codes (CD field of the reply, whose VN is 0).
    pub const SOCKS4_GRANTED: u8          = 0x5A;
    pub const SOCKS4_REJECTED: u8         = 0x5B;

    /// Longest SOCKS4 USERID (and SOCKS4a domain) accepted, NUL excluded.
    pub const SOCKS4_MAX_FIELD: usize     = 255;

    /// Longest SOCKS5 reply: VER REP RSV ATYP + 16-byte IPv6 + port.
    pub const MAX_REPLY_LEN: usize        = 4 + 16 + 2;
    /// Longest request `Request::emit` writes: a SOCKS4a one with an empty
    /// USERID and a 255-byte name (VN CD PORT IP NUL name NUL). A SOCKS5
    /// request is at most 5 + 255 + 2 = 262 bytes.
    pub const MAX_REQUEST_LEN: usize      = 8 + 1 + 255 + 1;
}
use consts::*;

/// The outcome of feeding bytes to a parser; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status<T> {
    Partial,
    Complete(T, usize),
}

/// Bytes that can never become a valid message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// The first byte is neither 4 nor 5 (see [`sniff`] for HTTP).
    BadVersion(u8),
    /// A SOCKS5 greeting offering zero methods.
    NoMethods,
    /// A CMD value that RFC 1928 / SOCKS4 do not define.
    UnknownCommand(u8),
    /// An ATYP value that RFC 1928 does not define.
    UnknownAddressType(u8),
    /// A domain of length zero or not valid UTF-8 / not printable.
    BadDomain,
    /// A SOCKS4 USERID or SOCKS4a domain longer than [`consts::SOCKS4_MAX_FIELD`].
    FieldTooLong,
}

impl ParseError {
    /// The SOCKS5 reply this error earns.
    pub fn reply(self) -> Reply {
        match self {
            ParseError::UnknownCommand(_) => Reply::CommandNotSupported,
            ParseError::UnknownAddressType(_) => Reply::AddressTypeNotSupported,
            _ => Reply::GeneralFailure,
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::BadVersion(v) => write!(f, "unsupported SOCKS version {v:#04x}"),
            ParseError::NoMethods => f.write_str("greeting offers no authentication method"),
            ParseError::UnknownCommand(c) => write!(f, "unknown command {c:#04x}"),
            ParseError::UnknownAddressType(a) => write!(f, "unknown address type {a:#04x}"),
            ParseError::BadDomain => f.write_str("empty or malformed domain name"),
            ParseError::FieldTooLong => f.write_str("SOCKS4 user id or domain too long"),
        }
    }
}

impl std::error::Error for ParseError {}

/// What the first byte of a new connection says the client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Socks4,
    Socks5,
    /// Anything else: HTTP (a method starts with a letter; what is not HTTP
    /// either gets the HTTP parser's `400`, which a person can read).
    Http,
}

/// Classifies a connection by its first byte.
pub fn sniff(first: u8) -> Protocol {
    match first {
        SOCKS4_VERSION => Protocol::Socks4,
        SOCKS5_VERSION => Protocol::Socks5,
        _ => Protocol::Http,
    }
}

/// A SOCKS5 method-selection message: `VER NMETHODS METHODS...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Greeting<'a> {
    pub methods: &'a [u8],
}

impl Greeting<'_> {
    pub fn offers(&self, method: u8) -> bool {
        self.methods.contains(&method)
    }
}

/// Parses a SOCKS5 greeting (RFC 1928 §3).
pub fn parse_greeting(buf: &[u8]) -> Result<Status<Greeting<'_>>, ParseError> {
    let Some(&version) = buf.first() else {
        return Ok(Status::Partial);
    };
    if version != SOCKS5_VERSION {
        return Err(ParseError::BadVersion(version));
    }
    let Some(&n) = buf.get(1) else {
        return Ok(Status::Partial);
    };
    if n == 0 {
        return Err(ParseError::NoMethods);
    }
    let end = 2 + n as usize;
    match buf.get(2..end) {
        Some(methods) => Ok(Status::Complete(Greeting { methods }, end)),
        None => Ok(Status::Partial),
    }
}

/// RFC 1929 username/password sub-negotiation:
/// `VER=1 ULEN UNAME PLEN PASSWD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserPass<'a> {
    pub user: &'a [u8],
    pub pass: &'a [u8],
}

/// The sub-negotiation version of RFC 1929.
pub const USER_PASS_VERSION: u8 = 0x01;

/// Parses an RFC 1929 username/password request.
pub fn parse_user_pass(buf: &[u8]) -> Result<Status<UserPass<'_>>, ParseError> {
    let Some(&version) = buf.first() else {
        return Ok(Status::Partial);
    };
    if version != USER_PASS_VERSION {
        return Err(ParseError::BadVersion(version));
    }
    let Some(&ulen) = buf.get(1) else {
        return Ok(Status::Partial);
    };
    let user_end = 2 + ulen as usize;
    let Some(&plen) = buf.get(user_end) else {
        return Ok(Status::Partial);
    };
    let end = user_end + 1 + plen as usize;
    if buf.len() < end {
        return Ok(Status::Partial);
    }
    let creds = UserPass {
        user: &buf[2..user_end],
        pass: &buf[user_end + 1..end],
    };
    Ok(Status::Complete(creds, end))
}

impl UserPass<'_> {
    /// Writes the request as a client sends it; returns the length.
    /// `out` must hold 3 + 255 + 255 bytes.
    ///
    /// # Panics
    /// If the user or password is longer than 255 bytes, or `out` too short.
    pub fn emit(&self, out: &mut [u8]) -> usize {
        let ulen = u8::try_from(self.user.len()).expect("user at most 255 bytes");
        let plen = u8::try_from(self.pass.len()).expect("password at most 255 bytes");
        let user_end = 2 + self.user.len();
        out[0] = USER_PASS_VERSION;
        out[1] = ulen;
        out[2..user_end].copy_from_slice(self.user);
        out[user_end] = plen;
        out[user_end + 1..user_end + 1 + self.pass.len()].copy_from_slice(self.pass);
        user_end + 1 + self.pass.len()
    }
}

/// The RFC 1929 status reply: 0 accepts, anything else refuses.
pub fn emit_user_pass_status(ok: bool, out: &mut [u8]) -> usize {
    out[..2].copy_from_slice(&[USER_PASS_VERSION, if ok { 0x00 } else { 0x01 }]);
    2
}

/// Where the client wants to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest<'a> {
    Addr(SocketAddr),
    /// A name to resolve, and the port. SOCKS5 ATYP 3 or SOCKS4a.
    Name(&'a str, u16),
}

impl Dest<'_> {
    pub fn port(&self) -> u16 {
        match *self {
            Dest::Addr(a) => a.port(),
            Dest::Name(_, p) => p,
        }
    }
}

impl fmt::Display for Dest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dest::Addr(a) => a.fmt(f),
            Dest::Name(n, p) => write!(f, "{n}:{p}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Connect,
    Bind,
    UdpAssociate,
}

impl Command {
    fn from_u8(b: u8) -> Result<Command, ParseError> {
        match b {
            CMD_CONNECT => Ok(Command::Connect),
            CMD_BIND => Ok(Command::Bind),
            CMD_UDP_ASSOCIATE => Ok(Command::UdpAssociate),
            other => Err(ParseError::UnknownCommand(other)),
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            Command::Connect => CMD_CONNECT,
            Command::Bind => CMD_BIND,
            Command::UdpAssociate => CMD_UDP_ASSOCIATE,
        }
    }
}

/// Which protocol a request came in, which decides the reply format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Socks4,
    Socks5,
}

/// A SOCKS5 or SOCKS4/4a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    pub version: Version,
    pub command: Command,
    pub dest: Dest<'a>,
}

fn domain(bytes: &[u8]) -> Result<&str, ParseError> {
    // Names go to getaddrinfo; refuse what no resolver would accept rather than
    // pass control characters along into logs.
    if bytes.is_empty() || !bytes.iter().all(|b| b.is_ascii_graphic()) {
        return Err(ParseError::BadDomain);
    }
    std::str::from_utf8(bytes).map_err(|_| ParseError::BadDomain)
}

fn port_at(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([buf[at], buf[at + 1]])
}

/// Parses a SOCKS5 request (RFC 1928 §4):
/// `VER CMD RSV ATYP DST.ADDR DST.PORT`.
///
/// ```
/// use dispatch::socks::{parse_request, Dest, Status};
///
/// // CONNECT example.org:443, followed by payload the client pipelined.
/// let mut bytes = vec![5, 1, 0, 3, 11];
/// bytes.extend_from_slice(b"example.org");
/// bytes.extend_from_slice(&443u16.to_be_bytes());
/// bytes.extend_from_slice(b"GET /");
/// let Ok(Status::Complete(request, consumed)) = parse_request(&bytes) else { panic!() };
/// assert_eq!(request.dest, Dest::Name("example.org", 443));
/// assert_eq!(&bytes[consumed..], b"GET /");
/// // Fewer bytes are not an error, only not enough yet.
/// assert_eq!(parse_request(&bytes[..7]), Ok(Status::Partial));
/// ```
pub fn parse_request(buf: &[u8]) -> Result<Status<Request<'_>>, ParseError> {
    mod field {
        pub const VER: usize = 0;
        pub const CMD: usize = 1;
        pub const ATYP: usize = 3;
    }
    let Some(&version) = buf.get(field::VER) else {
        return Ok(Status::Partial);
    };
    if version != SOCKS5_VERSION {
        return Err(ParseError::BadVersion(version));
    }
    let Some(&cmd) = buf.get(field::CMD) else {
        return Ok(Status::Partial);
    };
    let command = Command::from_u8(cmd)?;
    // RSV (byte 2) must be 0 per the RFC; clients in the wild send junk, and
    // nothing depends on it, so it is ignored.
    let addr = buf.get(field::ATYP..).unwrap_or_default();
    Ok(match parse_addr(addr)? {
        Status::Partial => Status::Partial,
        Status::Complete(dest, n) => {
            let request = Request {
                version: Version::Socks5,
                command,
                dest,
            };
            Status::Complete(request, field::ATYP + n)
        }
    })
}

/// Parses `ATYP DST.ADDR DST.PORT`, as requests and UDP headers carry it.
fn parse_addr(buf: &[u8]) -> Result<Status<Dest<'_>>, ParseError> {
    const ADDR: usize = 1;
    let Some(&atyp) = buf.first() else {
        return Ok(Status::Partial);
    };
    let (addr_len, name_offset) = match atyp {
        ATYP_IPV4 => (4, 0),
        ATYP_IPV6 => (16, 0),
        ATYP_DOMAIN => match buf.get(ADDR) {
            Some(&0) => return Err(ParseError::BadDomain),
            Some(&n) => (n as usize, 1),
            None => return Ok(Status::Partial),
        },
        other => return Err(ParseError::UnknownAddressType(other)),
    };
    let addr_start = ADDR + name_offset;
    let port_field = addr_start + addr_len;
    let end = port_field + 2;
    if buf.len() < end {
        // A name can already be judged before the port arrives.
        if atyp == ATYP_DOMAIN && buf.len() >= port_field {
            domain(&buf[addr_start..port_field])?;
        }
        return Ok(Status::Partial);
    }
    let port = port_at(buf, port_field);
    let raw = &buf[addr_start..port_field];
    let dest = match atyp {
        ATYP_IPV4 => {
            let ip: [u8; 4] = raw.try_into().expect("length checked");
            Dest::Addr(SocketAddr::new(IpAddr::from(ip), port))
        }
        ATYP_IPV6 => {
            let ip: [u8; 16] = raw.try_into().expect("length checked");
            Dest::Addr(SocketAddr::new(IpAddr::from(ip), port))
        }
        _ => Dest::Name(domain(raw)?, port),
    };
    Ok(Status::Complete(dest, end))
}

/// Parses a SOCKS4 or SOCKS4a request:
/// `VN=4 CD DSTPORT(2) DSTIP(4) USERID NUL [DOMAIN NUL]`, where a DSTIP of
/// `0.0.0.x` (x ≠ 0) announces the SOCKS4a domain.
pub fn parse_socks4(buf: &[u8]) -> Result<Status<Request<'_>>, ParseError> {
    const USERID: usize = 8;
    let Some(&version) = buf.first() else {
        return Ok(Status::Partial);
    };
    if version != SOCKS4_VERSION {
        return Err(ParseError::BadVersion(version));
    }
    let Some(&cd) = buf.get(1) else {
        return Ok(Status::Partial);
    };
    let command = match Command::from_u8(cd)? {
        Command::UdpAssociate => return Err(ParseError::UnknownCommand(cd)),
        c => c,
    };
    if buf.len() < USERID {
        return Ok(Status::Partial);
    }
    let port = port_at(buf, 2);
    let ip = Ipv4Addr::new(buf[4], buf[5], buf[6], buf[7]);
    let Some(userid_end) = nul_terminated(&buf[USERID..])? else {
        return Ok(Status::Partial);
    };
    let after_userid = USERID + userid_end + 1;
    let o = ip.octets();
    let is_4a = o[0] == 0 && o[1] == 0 && o[2] == 0 && o[3] != 0;
    if !is_4a {
        let request = Request {
            version: Version::Socks4,
            command,
            dest: Dest::Addr(SocketAddr::new(IpAddr::V4(ip), port)),
        };
        return Ok(Status::Complete(request, after_userid));
    }
    let Some(name_len) = nul_terminated(&buf[after_userid..])? else {
        return Ok(Status::Partial);
    };
    let name = domain(&buf[after_userid..after_userid + name_len])?;
    let request = Request {
        version: Version::Socks4,
        command,
        dest: Dest::Name(name, port),
    };
    Ok(Status::Complete(request, after_userid + name_len + 1))
}

/// The length of a NUL-terminated field at the start of `buf`, `None` if the
/// NUL has not arrived yet, an error once it is overdue.
fn nul_terminated(buf: &[u8]) -> Result<Option<usize>, ParseError> {
    let window = &buf[..buf.len().min(SOCKS4_MAX_FIELD + 1)];
    match window.iter().position(|&b| b == 0) {
        Some(n) => Ok(Some(n)),
        None if window.len() > SOCKS4_MAX_FIELD => Err(ParseError::FieldTooLong),
        None => Ok(None),
    }
}

impl Request<'_> {
    /// Writes the request as a client would send it; returns the length.
    /// `out` must hold [`consts::MAX_REQUEST_LEN`] bytes.
    /// SOCKS4 requests are written with an empty USERID.
    ///
    /// # Panics
    /// If `out` is too short, or a SOCKS4 request has an IPv6 address or a
    /// SOCKS5 one a name longer than 255 bytes.
    pub fn emit(&self, out: &mut [u8]) -> usize {
        match self.version {
            Version::Socks5 => {
                out[..3].copy_from_slice(&[SOCKS5_VERSION, self.command.to_u8(), 0]);
                let n = emit_addr(self.dest, &mut out[3..]);
                3 + n
            }
            Version::Socks4 => {
                out[0] = SOCKS4_VERSION;
                out[1] = self.command.to_u8();
                out[2..4].copy_from_slice(&self.dest.port().to_be_bytes());
                match self.dest {
                    Dest::Addr(SocketAddr::V4(a)) => {
                        out[4..8].copy_from_slice(&a.ip().octets());
                        out[8] = 0;
                        9
                    }
                    Dest::Addr(SocketAddr::V6(_)) => panic!("SOCKS4 cannot carry IPv6"),
                    Dest::Name(name, _) => {
                        out[4..8].copy_from_slice(&[0, 0, 0, 1]);
                        out[8] = 0;
                        let end = 9 + name.len();
                        out[9..end].copy_from_slice(name.as_bytes());
                        out[end] = 0;
                        end + 1
                    }
                }
            }
        }
    }
}

/// Writes `ATYP DST.ADDR DST.PORT`; returns the length.
fn emit_addr(dest: Dest<'_>, out: &mut [u8]) -> usize {
    let port = dest.port().to_be_bytes();
    let end = match dest {
        Dest::Addr(SocketAddr::V4(a)) => {
            out[0] = ATYP_IPV4;
            out[1..5].copy_from_slice(&a.ip().octets());
            5
        }
        Dest::Addr(SocketAddr::V6(a)) => {
            out[0] = ATYP_IPV6;
            out[1..17].copy_from_slice(&a.ip().octets());
            17
        }
        Dest::Name(name, _) => {
            let len = u8::try_from(name.len()).expect("SOCKS5 names are at most 255 bytes");
            out[0] = ATYP_DOMAIN;
            out[1] = len;
            out[2..2 + name.len()].copy_from_slice(name.as_bytes());
            2 + name.len()
        }
    };
    out[end..end + 2].copy_from_slice(&port);
    end + 2
}

/// The header of a datagram relayed by UDP ASSOCIATE (RFC 1928 §7):
///
/// ```text
/// +-----+------+------+----------+----------+----------+
/// | RSV | FRAG | ATYP | DST.ADDR | DST.PORT |   DATA   |
/// |  2  |  1   |  1   | Variable |    2     | Variable |
/// +-----+------+------+----------+----------+----------+
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpHeader<'a> {
    /// Fragment number; 0 is a whole datagram (the only kind relayed).
    pub frag: u8,
    pub dest: Dest<'a>,
}

/// Longest UDP header: RSV FRAG ATYP LEN + 255-byte name + port.
pub const MAX_UDP_HEADER_LEN: usize = 4 + 1 + 255 + 2;

/// Parses the header of a datagram; `consumed` is where its data starts.
/// A datagram is whole, so `Partial` means it was cut short.
pub fn parse_udp_header(buf: &[u8]) -> Result<Status<UdpHeader<'_>>, ParseError> {
    const FRAG: usize = 2;
    const ATYP: usize = 3;
    let Some(&frag) = buf.get(FRAG) else {
        return Ok(Status::Partial);
    };
    Ok(match parse_addr(&buf[ATYP..])? {
        Status::Partial => Status::Partial,
        Status::Complete(dest, n) => Status::Complete(UdpHeader { frag, dest }, ATYP + n),
    })
}

/// Writes the header for a datagram from `source`; returns its length
/// (10 for IPv4, 22 for IPv6). `out` must hold 22 bytes.
pub fn emit_udp_header(source: SocketAddr, out: &mut [u8]) -> usize {
    out[..3].copy_from_slice(&[0, 0, 0]);
    3 + emit_addr(Dest::Addr(source), &mut out[3..])
}

/// How long the header [`emit_udp_header`] writes for `source` is.
pub fn udp_header_len(source: SocketAddr) -> usize {
    if source.is_ipv4() {
        10
    } else {
        22
    }
}

/// SOCKS5 reply codes (RFC 1928 §6). This is the one place where what
/// happened becomes what the client is told; see [`crate::net::reply_for`]
/// for the mapping from connect errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Reply {
    Succeeded = 0x00,
    GeneralFailure = 0x01,
    NotAllowed = 0x02,
    NetworkUnreachable = 0x03,
    /// Also sent when a name does not resolve, as most servers do.
    HostUnreachable = 0x04,
    ConnectionRefused = 0x05,
    /// "TTL expired": sent when the connect attempt timed out.
    TtlExpired = 0x06,
    CommandNotSupported = 0x07,
    AddressTypeNotSupported = 0x08,
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reply::Succeeded => "succeeded",
            Reply::GeneralFailure => "general failure",
            Reply::NotAllowed => "not allowed",
            Reply::NetworkUnreachable => "network unreachable",
            Reply::HostUnreachable => "host unreachable",
            Reply::ConnectionRefused => "connection refused",
            Reply::TtlExpired => "timed out",
            Reply::CommandNotSupported => "command not supported",
            Reply::AddressTypeNotSupported => "address type not supported",
        })
    }
}

/// The SOCKS5 method-selection reply.
pub fn emit_method(method: u8, out: &mut [u8]) -> usize {
    out[..2].copy_from_slice(&[SOCKS5_VERSION, method]);
    2
}

/// Writes the reply to a request of `version`: for SOCKS5
/// `VER REP RSV ATYP BND.ADDR BND.PORT`, for SOCKS4 `0 CD DSTPORT DSTIP`
/// (granted only for [`Reply::Succeeded`]). `bound` is the address of the
/// outgoing socket; `None` writes `0.0.0.0:0`. `out` must hold
/// [`consts::MAX_REPLY_LEN`] bytes. Returns the length.
pub fn emit_reply(
    version: Version,
    reply: Reply,
    bound: Option<SocketAddr>,
    out: &mut [u8],
) -> usize {
    let bound = bound.unwrap_or(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0));
    match version {
        Version::Socks5 => {
            out[..3].copy_from_slice(&[SOCKS5_VERSION, reply as u8, 0]);
            3 + emit_addr(Dest::Addr(bound), &mut out[3..])
        }
        Version::Socks4 => {
            let cd = if reply == Reply::Succeeded {
                SOCKS4_GRANTED
            } else {
                SOCKS4_REJECTED
            };
            let ip = match bound.ip() {
                IpAddr::V4(ip) => ip,
                IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
            };
            out[..2].copy_from_slice(&[0, cd]);
            out[2..4].copy_from_slice(&bound.port().to_be_bytes());
            out[4..8].copy_from_slice(&ip.octets());
            8
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete<T: std::fmt::Debug>(r: Result<Status<T>, ParseError>) -> (T, usize) {
        match r {
            Ok(Status::Complete(m, n)) => (m, n),
            other => panic!("expected a complete message, got {other:?}"),
        }
    }

    /// The bytes a complete message took, `None` while partial.
    fn consumed<T>(s: Status<T>) -> Option<usize> {
        match s {
            Status::Partial => None,
            Status::Complete(_, n) => Some(n),
        }
    }

    /// Every strict prefix of a valid message is `Partial`, the whole message
    /// is `Complete` with its length, and trailing payload is not consumed.
    fn check_every_split(msg: &[u8], parse: impl Fn(&[u8]) -> Result<Option<usize>, ParseError>) {
        for cut in 0..msg.len() {
            assert_eq!(parse(&msg[..cut]), Ok(None), "prefix of {cut} bytes");
        }
        assert_eq!(parse(msg), Ok(Some(msg.len())));
        let mut more = msg.to_vec();
        more.extend_from_slice(b"payload");
        assert_eq!(parse(&more), Ok(Some(msg.len())));
    }

    #[test]
    fn greeting_no_auth() {
        let msg = [5, 2, 0x00, 0x02]; // VER, NMETHODS=2, no-auth, user/pass
        let (g, n) = complete(parse_greeting(&msg));
        assert_eq!(n, 4);
        assert!(g.offers(METHOD_NO_AUTH));
        check_every_split(&msg, |b| parse_greeting(b).map(consumed));
    }

    #[test]
    fn greeting_without_no_auth() {
        let (g, _) = complete(parse_greeting(&[5, 1, 0x02]));
        assert!(!g.offers(METHOD_NO_AUTH));
    }

    #[test]
    fn greeting_errors() {
        assert_eq!(parse_greeting(&[4]), Err(ParseError::BadVersion(4)));
        assert_eq!(parse_greeting(&[5, 0]), Err(ParseError::NoMethods));
    }

    #[test]
    fn request_ipv4() {
        // VER CMD RSV ATYP=1 | 127.0.0.1 | port 8080
        let msg = [5, 1, 0, 1, 127, 0, 0, 1, 0x1f, 0x90];
        let (r, n) = complete(parse_request(&msg));
        assert_eq!(n, 10);
        assert_eq!(r.version, Version::Socks5);
        assert_eq!(r.command, Command::Connect);
        assert_eq!(r.dest, Dest::Addr("127.0.0.1:8080".parse().unwrap()));
        check_every_split(&msg, |b| parse_request(b).map(consumed));
    }

    #[test]
    fn request_ipv6() {
        let mut msg = vec![5, 1, 0, 4];
        msg.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
        msg.extend_from_slice(&[0, 80]);
        let (r, n) = complete(parse_request(&msg));
        assert_eq!(n, 22);
        assert_eq!(r.dest, Dest::Addr("[::1]:80".parse().unwrap()));
        check_every_split(&msg, |b| parse_request(b).map(consumed));
    }

    #[test]
    fn request_domain() {
        let mut msg = vec![5, 1, 0, 3, 9];
        msg.extend_from_slice(b"localhost");
        msg.extend_from_slice(&[0x01, 0xbb]);
        let (r, _) = complete(parse_request(&msg));
        assert_eq!(r.dest, Dest::Name("localhost", 443));
        check_every_split(&msg, |b| parse_request(b).map(consumed));
    }

    #[test]
    fn request_commands() {
        let cmd = |c| {
            parse_request(&[5, c, 0, 1, 1, 2, 3, 4, 0, 1]).map(|s| match s {
                Status::Complete(r, _) => r.command,
                Status::Partial => panic!("partial"),
            })
        };
        assert_eq!(cmd(1), Ok(Command::Connect));
        assert_eq!(cmd(2), Ok(Command::Bind));
        assert_eq!(cmd(3), Ok(Command::UdpAssociate));
        assert_eq!(cmd(9), Err(ParseError::UnknownCommand(9)));
    }

    #[test]
    fn request_errors_are_early() {
        assert_eq!(parse_request(&[4]), Err(ParseError::BadVersion(4)));
        assert_eq!(parse_request(&[5, 7]), Err(ParseError::UnknownCommand(7)));
        assert_eq!(
            parse_request(&[5, 1, 0, 9]),
            Err(ParseError::UnknownAddressType(9))
        );
        assert_eq!(parse_request(&[5, 1, 0, 3, 0]), Err(ParseError::BadDomain));
        // A control character in the name is refused before the port arrives.
        assert_eq!(
            parse_request(&[5, 1, 0, 3, 2, b'a', b'\n']),
            Err(ParseError::BadDomain)
        );
    }

    #[test]
    fn error_replies() {
        assert_eq!(
            ParseError::UnknownCommand(9).reply(),
            Reply::CommandNotSupported
        );
        assert_eq!(
            ParseError::UnknownAddressType(9).reply(),
            Reply::AddressTypeNotSupported
        );
        assert_eq!(ParseError::BadDomain.reply(), Reply::GeneralFailure);
    }

    #[test]
    fn socks4_connect() {
        // VN CD | port 80 | 10.1.2.3 | USERID "bob" NUL
        let msg = [4, 1, 0, 80, 10, 1, 2, 3, b'b', b'o', b'b', 0];
        let (r, n) = complete(parse_socks4(&msg));
        assert_eq!(n, msg.len());
        assert_eq!(r.version, Version::Socks4);
        assert_eq!(r.dest, Dest::Addr("10.1.2.3:80".parse().unwrap()));
        check_every_split(&msg, |b| parse_socks4(b).map(consumed));
    }

    #[test]
    fn socks4a_domain() {
        // VN CD | port 80 | 0.0.0.1 | empty USERID NUL | "localhost" NUL
        let mut msg = vec![4, 1, 0, 80, 0, 0, 0, 1, 0];
        msg.extend_from_slice(b"localhost\0");
        let (r, n) = complete(parse_socks4(&msg));
        assert_eq!(n, msg.len());
        assert_eq!(r.dest, Dest::Name("localhost", 80));
        check_every_split(&msg, |b| parse_socks4(b).map(consumed));
    }

    #[test]
    fn socks4_errors() {
        assert_eq!(parse_socks4(&[4, 3]), Err(ParseError::UnknownCommand(3)));
        let mut long = vec![4, 1, 0, 80, 1, 2, 3, 4];
        long.extend(std::iter::repeat_n(b'x', SOCKS4_MAX_FIELD));
        assert_eq!(parse_socks4(&long), Ok(Status::Partial));
        long.push(b'x');
        assert_eq!(parse_socks4(&long), Err(ParseError::FieldTooLong));
        // SOCKS4a with an empty name.
        assert_eq!(
            parse_socks4(&[4, 1, 0, 80, 0, 0, 0, 1, 0, 0]),
            Err(ParseError::BadDomain)
        );
    }

    #[test]
    fn user_pass_every_split_and_round_trip() {
        // VER | ULEN=3 "bob" | PLEN=2 "pw"
        let msg = [1, 3, b'b', b'o', b'b', 2, b'p', b'w'];
        check_every_split(&msg, |b| parse_user_pass(b).map(consumed));
        let up = UserPass {
            user: b"bob",
            pass: b"pw",
        };
        assert_eq!(parse_user_pass(&msg), Ok(Status::Complete(up, 8)));
        let mut out = [0u8; 3 + 255 + 255];
        let n = up.emit(&mut out);
        assert_eq!(&out[..n], &msg);
        // Empty user and password are well-formed (and then refused by auth).
        assert_eq!(consumed(parse_user_pass(&[1, 0, 0]).unwrap()), Some(3));
        assert_eq!(parse_user_pass(&[5]), Err(ParseError::BadVersion(5)));
        let n = emit_user_pass_status(false, &mut out);
        assert_eq!(&out[..n], &[1, 1]);
    }

    #[test]
    fn udp_headers() {
        // RSV RSV FRAG | ATYP=1 127.0.0.1 | port 53 | data
        let dgram = [0, 0, 0, 1, 127, 0, 0, 1, 0, 53, b'h', b'i'];
        let (h, n) = complete(parse_udp_header(&dgram));
        assert_eq!((h.frag, n), (0, 10));
        assert_eq!(h.dest, Dest::Addr("127.0.0.1:53".parse().unwrap()));
        assert_eq!(&dgram[n..], b"hi");
        // A name, fragment 1.
        let mut named = vec![0, 0, 1, 3, 9];
        named.extend_from_slice(b"localhost");
        named.extend_from_slice(&[0x1f, 0x90]);
        let (h, n) = complete(parse_udp_header(&named));
        assert_eq!((h.frag, n), (1, named.len()));
        assert_eq!(h.dest, Dest::Name("localhost", 8080));
        for cut in 0..10 {
            assert_eq!(
                parse_udp_header(&dgram[..cut]),
                Ok(Status::Partial),
                "cut {cut}"
            );
        }
        assert_eq!(
            parse_udp_header(&[0, 0, 0, 9, 1, 2]),
            Err(ParseError::UnknownAddressType(9))
        );
        // What we emit parses back.
        let mut out = [0u8; 22];
        for src in ["10.1.2.3:4000", "[2001:db8::1]:53"] {
            let src: SocketAddr = src.parse().unwrap();
            let n = emit_udp_header(src, &mut out);
            assert_eq!(n, udp_header_len(src));
            let (h, m) = complete(parse_udp_header(&out[..n]));
            assert_eq!((h.frag, h.dest, m), (0, Dest::Addr(src), n));
        }
    }

    #[test]
    fn sniff_first_byte() {
        assert_eq!(sniff(5), Protocol::Socks5);
        assert_eq!(sniff(4), Protocol::Socks4);
        assert_eq!(sniff(b'G'), Protocol::Http);
        assert_eq!(sniff(b'C'), Protocol::Http);
        assert_eq!(sniff(0x16), Protocol::Http); // a TLS ClientHello: answered 400
    }

    #[test]
    fn requests_round_trip_through_emit() {
        let requests = [
            Request {
                version: Version::Socks5,
                command: Command::Connect,
                dest: Dest::Addr("1.2.3.4:5".parse().unwrap()),
            },
            Request {
                version: Version::Socks5,
                command: Command::Bind,
                dest: Dest::Addr("[::1]:80".parse().unwrap()),
            },
            Request {
                version: Version::Socks5,
                command: Command::UdpAssociate,
                dest: Dest::Name("example.org", 53),
            },
            Request {
                version: Version::Socks4,
                command: Command::Connect,
                dest: Dest::Addr("1.2.3.4:5".parse().unwrap()),
            },
            Request {
                version: Version::Socks4,
                command: Command::Connect,
                dest: Dest::Name("example.org", 80),
            },
        ];
        for req in requests {
            let mut out = [0u8; MAX_REQUEST_LEN];
            let n = req.emit(&mut out);
            let parsed = match req.version {
                Version::Socks5 => parse_request(&out[..n]),
                Version::Socks4 => parse_socks4(&out[..n]),
            };
            assert_eq!(parsed, Ok(Status::Complete(req, n)));
        }
    }

    #[test]
    fn socks5_replies() {
        let mut out = [0u8; MAX_REPLY_LEN];
        let n = emit_reply(
            Version::Socks5,
            Reply::Succeeded,
            Some("127.0.0.2:4660".parse().unwrap()),
            &mut out,
        );
        assert_eq!(&out[..n], &[5, 0, 0, 1, 127, 0, 0, 2, 0x12, 0x34]);
        let n = emit_reply(Version::Socks5, Reply::ConnectionRefused, None, &mut out);
        assert_eq!(&out[..n], &[5, 5, 0, 1, 0, 0, 0, 0, 0, 0]);
        let n = emit_reply(
            Version::Socks5,
            Reply::Succeeded,
            Some("[::1]:1".parse().unwrap()),
            &mut out,
        );
        assert_eq!(n, 22);
        assert_eq!(out[3], ATYP_IPV6);
    }

    #[test]
    fn socks4_replies() {
        let mut out = [0u8; MAX_REPLY_LEN];
        let n = emit_reply(
            Version::Socks4,
            Reply::Succeeded,
            Some("127.0.0.2:80".parse().unwrap()),
            &mut out,
        );
        assert_eq!(&out[..n], &[0, 0x5A, 0, 80, 127, 0, 0, 2]);
        let n = emit_reply(Version::Socks4, Reply::HostUnreachable, None, &mut out);
        assert_eq!(&out[..n], &[0, 0x5B, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn greeting_takes_exactly_its_methods() {
        let msg = [5, 3, 0x00, 0x02, 0x80, b'x'];
        let (g, n) = complete(parse_greeting(&msg));
        assert_eq!((g.methods, n), (&[0x00, 0x02, 0x80][..], 5));
        assert!(g.offers(0x80) && !g.offers(0x01));
    }

    #[test]
    fn socks4_address_is_4a_only_for_0_0_0_x() {
        for ip in [
            [0, 1, 0, 1],
            [1, 0, 0, 1],
            [1, 1, 0, 1],
            [0, 0, 1, 1],
            [0, 0, 0, 0],
        ] {
            let msg = [4, 1, 0, 80, ip[0], ip[1], ip[2], ip[3], 0];
            let (r, n) = complete(parse_socks4(&msg));
            let addr = SocketAddr::new(IpAddr::from(ip), 80);
            assert_eq!((r.dest, n), (Dest::Addr(addr), msg.len()), "{ip:?}");
        }
    }

    #[test]
    fn longest_messages_fill_the_max_lengths_exactly() {
        let name = "n".repeat(255);
        let mut out = [0u8; 1024];
        let reply = emit_reply(
            Version::Socks5,
            Reply::Succeeded,
            Some("[2001:db8::1]:1".parse().unwrap()),
            &mut out,
        );
        assert_eq!(reply, MAX_REPLY_LEN);
        assert_eq!(MAX_REPLY_LEN, 22);
        let socks4a = Request {
            version: Version::Socks4,
            command: Command::Connect,
            dest: Dest::Name(&name, 80),
        };
        assert_eq!(socks4a.emit(&mut out), MAX_REQUEST_LEN);
        assert_eq!(MAX_REQUEST_LEN, 265);
        let socks5 = Request {
            version: Version::Socks5,
            ..socks4a
        };
        assert_eq!(socks5.emit(&mut out), 262);
        let mut dgram = vec![0, 0, 0, ATYP_DOMAIN, 255];
        dgram.extend_from_slice(name.as_bytes());
        dgram.extend_from_slice(&[0, 53]);
        let (_, n) = complete(parse_udp_header(&dgram));
        assert_eq!(n, MAX_UDP_HEADER_LEN);
        assert_eq!(MAX_UDP_HEADER_LEN, 262);
    }

    #[test]
    fn errors_destinations_and_replies_display_as_text() {
        for (err, text) in [
            (ParseError::BadVersion(6), "unsupported SOCKS version 0x06"),
            (
                ParseError::NoMethods,
                "greeting offers no authentication method",
            ),
            (ParseError::UnknownCommand(9), "unknown command 0x09"),
            (
                ParseError::UnknownAddressType(7),
                "unknown address type 0x07",
            ),
            (ParseError::BadDomain, "empty or malformed domain name"),
            (
                ParseError::FieldTooLong,
                "SOCKS4 user id or domain too long",
            ),
        ] {
            assert_eq!(err.to_string(), text);
        }
        assert_eq!(
            Dest::Name("example.org", 443).to_string(),
            "example.org:443"
        );
        assert_eq!(
            Dest::Addr("[::1]:80".parse().unwrap()).to_string(),
            "[::1]:80"
        );
        for (reply, text) in [
            (Reply::Succeeded, "succeeded"),
            (Reply::GeneralFailure, "general failure"),
            (Reply::NotAllowed, "not allowed"),
            (Reply::NetworkUnreachable, "network unreachable"),
            (Reply::HostUnreachable, "host unreachable"),
            (Reply::ConnectionRefused, "connection refused"),
            (Reply::TtlExpired, "timed out"),
            (Reply::CommandNotSupported, "command not supported"),
            (Reply::AddressTypeNotSupported, "address type not supported"),
        ] {
            assert_eq!(reply.to_string(), text);
        }
    }

    #[test]
    fn method_reply_is_version_and_method() {
        let mut out = [0u8; 2];
        assert_eq!(emit_method(METHOD_USER_PASS, &mut out), 2);
        assert_eq!(out, [5, 2]);
        emit_method(METHOD_NONE_ACCEPTABLE, &mut out);
        assert_eq!(out, [5, 0xFF]);
    }
}
