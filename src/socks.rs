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
pub fn parse_addr(buf: &[u8]) -> Result<Status<Dest<'_>>, ParseError> {
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
mod tests;
