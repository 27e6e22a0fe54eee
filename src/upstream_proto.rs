//! Links that are other proxies, without I/O: the `socks5://`, `socks5h://`
//! and `http://` link syntax, and the client side of the handshake dispatch
//! runs with such an upstream before relaying (RFC 1928 and RFC 1929 for
//! SOCKS5, an HTTP/1.1 `CONNECT` for HTTP).
//!
//! The handshake is a plain state machine like the parsers in
//! [`crate::socks`]: [`Handshake::to_send`] says what to write next, and
//! [`Handshake::on_input`] takes the bytes received so far and answers
//! `Partial` (read more), `Complete(step, consumed)` or an error. Replies are
//! never read past their end: what the upstream sends after its reply is
//! the target's and belongs to the relay.
//!
//! Credentials are shown only redacted (`socks5://user:***@host:port`), by
//! every `Display` here.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use crate::auth;
use crate::http;
use crate::socks::{self, consts::*, Dest, Reply, Status};

/// How the upstream is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// SOCKS5; a name is resolved here and its address passed on.
    Socks5,
    /// SOCKS5; a name is passed on for the upstream to resolve.
    Socks5h,
    /// HTTP `CONNECT host:port`; names are passed on.
    Http,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Socks5 => "socks5",
            Scheme::Socks5h => "socks5h",
            Scheme::Http => "http",
        }
    }

    /// Whether the client's target name is passed on unresolved.
    pub fn passes_names(self) -> bool {
        self != Scheme::Socks5
    }
}

/// `scheme://[user:pass@]host:port[@iface]`, as given on the command line.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    pub scheme: Scheme,
    /// A name or an IP literal (IPv6 without its brackets).
    pub host: String,
    pub port: u16,
    pub credentials: Option<(String, String)>,
    /// The interface the connection to the proxy leaves by (`None`: the
    /// routing table decides).
    pub iface: Option<String>,
}

/// Why a link written as a URL is not one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadUrl(pub String);

impl fmt::Display for BadUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether an `ADDRESS` is written as a proxy URL (it names a scheme).
pub fn is_url(s: &str) -> bool {
    s.contains("://")
}

/// `text` as typed, for echoing a value that did not parse: in a URL,
/// everything between `://` and the last `@` before the host is cut (only
/// a user written before a `:` stays), so no part of a password shows
/// however the value is malformed.
pub fn redact_typed(text: &str) -> String {
    let Some((scheme, rest)) = text.split_once("://") else {
        return text.to_string();
    };
    let Some((before, last)) = rest.rsplit_once('@') else {
        return text.to_string();
    };
    // `host:port@iface`: the last `@` is the interface's, and the host's
    // is the one before. Anything else after the last `@` is the host.
    let (userinfo, host) = match before.rsplit_once('@') {
        Some((userinfo, host)) if !last.contains(':') && looks_like_host_port(host) => {
            (userinfo, format!("{host}@{last}"))
        }
        _ => (before, last.to_string()),
    };
    match userinfo.split_once(':') {
        Some((user, _)) if !user.contains('@') => format!("{scheme}://{user}:***@{host}"),
        _ => format!("{scheme}://***@{host}"),
    }
}

/// `host:port` or `[v6]:port`: a port of digits after the last `:`.
fn looks_like_host_port(s: &str) -> bool {
    s.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())
    })
}

const URL_HELP: &str = "write an upstream proxy as socks5://[user:pass@]host:port[@iface], \
     socks5h://… or http://…";

impl FromStr for ProxyUrl {
    type Err = BadUrl;

    fn from_str(s: &str) -> Result<ProxyUrl, BadUrl> {
        let bad = |why: &str| BadUrl(format!("{why}; {URL_HELP}"));
        let (scheme, rest) = s.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "socks5" => Scheme::Socks5,
            "socks5h" => Scheme::Socks5h,
            "http" => Scheme::Http,
            other => {
                return Err(bad(&format!(
                    "unknown scheme {:?} (socks5, socks5h and http are known)",
                    redact_text(other)
                )))
            }
        };
        // After the port, `@iface`: a segment with no ':' (a port has one).
        let (rest, iface) = match rest.rsplit_once('@') {
            Some((before, name)) if !name.contains(':') => {
                if name.is_empty() || name.contains(['/', ' ', '[', ']']) {
                    return Err(bad("bad interface name after the port"));
                }
                (before, Some(name.to_string()))
            }
            _ => (rest, None),
        };
        // The credentials end at the last '@': a password may hold one
        // (or write it %40).
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let credentials = match userinfo {
            None => None,
            Some(u) => {
                let (user, pass) = u
                    .split_once(':')
                    .ok_or_else(|| bad("credentials need user:pass"))?;
                let (user, pass) = (percent_decode(user), percent_decode(pass));
                let (Some(user), Some(pass)) = (user, pass) else {
                    return Err(bad("bad %-escape in the credentials"));
                };
                // Basic joins them with ':': a user holding one is ambiguous.
                if scheme == Scheme::Http && user.contains(':') {
                    return Err(bad("an http:// link's user cannot hold ':' (%3A)"));
                }
                if user.is_empty() || user.len() > 255 || pass.len() > 255 {
                    return Err(bad(
                        "a user of 1 to 255 bytes and a password of at most 255 are needed",
                    ));
                }
                Some((user, pass))
            }
        };
        let (host, port) = match hostport.strip_prefix('[') {
            Some(v6) => {
                let (ip, port) = v6.split_once("]:").ok_or_else(|| bad("no port"))?;
                ip.parse::<std::net::Ipv6Addr>()
                    .map_err(|_| bad("bad IPv6 address in brackets"))?;
                (ip, port)
            }
            None => hostport.rsplit_once(':').ok_or_else(|| bad("no port"))?,
        };
        let v6 = host.contains(':') && host.parse::<std::net::Ipv6Addr>().is_ok();
        if host.is_empty()
            || host.len() > 255
            || (!v6 && host.contains(['/', ':', '[', ']', ' ', '@']))
        {
            return Err(bad("bad host"));
        }
        let port: u16 = port.parse().map_err(|_| bad("bad port"))?;
        if port == 0 {
            return Err(bad("port 0"));
        }
        Ok(ProxyUrl {
            scheme,
            host: host.to_string(),
            port,
            credentials,
            iface,
        })
    }
}

impl ProxyUrl {
    /// The host and port the proxy listens on, as one would connect to it.
    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Redacted: the password never shows.
impl fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme.as_str())?;
        if let Some((user, _)) = &self.credentials {
            write!(f, "{}:***@", percent_encode(user))?;
        }
        f.write_str(&self.host_port())?;
        match &self.iface {
            Some(name) => write!(f, "@{name}"),
            None => Ok(()),
        }
    }
}

impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProxyUrl({self})")
    }
}

/// An unknown scheme is echoed in an error: cut it short and keep it to
/// printable ASCII.
fn redact_text(s: &str) -> String {
    s.chars()
        .take(16)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            // Two hex digits: from_str_radix alone takes "+1".
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What went wrong in a handshake with an upstream, and whose fault it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamError {
    /// The upstream does not speak the protocol (or not as we ask): the
    /// link's fault.
    Malformed(&'static str),
    /// The upstream wants credentials we do not have, or refused ours.
    Auth(&'static str),
    /// The upstream answered the request with a failure (SOCKS5 reply code):
    /// it works; the target failed.
    Socks(Reply),
    /// The upstream answered the `CONNECT` with this HTTP status.
    Http(u16),
}

/// Whose fault a failed handshake is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The upstream misbehaved: a link failure; another link may do.
    Link,
    /// The upstream refused our credentials: down until restart or SIGHUP.
    Credentials,
    /// The upstream answered: the target refused or was unreachable.
    Target,
}

impl UpstreamError {
    pub fn blame(&self) -> Blame {
        match self {
            UpstreamError::Malformed(_) => Blame::Link,
            UpstreamError::Auth(_) | UpstreamError::Http(407) => Blame::Credentials,
            // It cannot do the job (tunnel, take CONNECT, or take a name or
            // an address of that type): another route may.
            UpstreamError::Http(400 | 405 | 501)
            | UpstreamError::Socks(Reply::CommandNotSupported | Reply::AddressTypeNotSupported) => {
                Blame::Link
            }
            UpstreamError::Socks(_) | UpstreamError::Http(_) => Blame::Target,
        }
    }

    /// The reply the client gets: the upstream's code as it is for SOCKS5;
    /// an HTTP status by what it means (the client's own protocol then
    /// maps it as every failure is, see `conn::reply`).
    pub fn reply(&self) -> Reply {
        match self {
            UpstreamError::Socks(r) => *r,
            UpstreamError::Http(403) => Reply::NotAllowed,
            UpstreamError::Http(504) => Reply::TtlExpired,
            UpstreamError::Http(502 | 503) => Reply::HostUnreachable,
            UpstreamError::Http(_) | UpstreamError::Malformed(_) | UpstreamError::Auth(_) => {
                Reply::GeneralFailure
            }
        }
    }
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamError::Malformed(what) => write!(f, "upstream handshake failed: {what}"),
            UpstreamError::Auth(what) => write!(f, "upstream authentication failed: {what}"),
            UpstreamError::Socks(r) => write!(f, "upstream replied: {r}"),
            UpstreamError::Http(status) => write!(f, "upstream answered HTTP {status}"),
        }
    }
}

impl std::error::Error for UpstreamError {}

/// The SOCKS5 method choice (`VER METHOD`).
pub fn parse_method_choice(buf: &[u8]) -> Result<Status<u8>, UpstreamError> {
    match buf {
        [] | [_] if buf.first().is_none_or(|&v| v == SOCKS5_VERSION) => Ok(Status::Partial),
        [SOCKS5_VERSION, method, ..] => Ok(Status::Complete(*method, 2)),
        _ => Err(UpstreamError::Malformed("not a SOCKS5 server")),
    }
}

/// The RFC 1929 status (`VER STATUS`): whether the credentials passed.
pub fn parse_auth_status(buf: &[u8]) -> Result<Status<bool>, UpstreamError> {
    match buf {
        [] | [socks::USER_PASS_VERSION] => Ok(Status::Partial),
        [socks::USER_PASS_VERSION, status, ..] => Ok(Status::Complete(*status == 0, 2)),
        _ => Err(UpstreamError::Malformed("bad user/password status")),
    }
}

/// A SOCKS5 reply (`VER REP RSV ATYP BND.ADDR BND.PORT`): its code, and the
/// bound address when it is one. Exactly the reply's bytes are taken, but
/// the bound address is not judged: a failure's code counts whatever it
/// names (its connection ends, so an unknown ATYP there ends the reply
/// after it), and a success's name may be any bytes.
pub fn parse_socks5_reply(buf: &[u8]) -> Result<Status<(u8, Option<SocketAddr>)>, UpstreamError> {
    const ADDR: usize = 4;
    match buf.first() {
        None => return Ok(Status::Partial),
        Some(&SOCKS5_VERSION) => {}
        Some(_) => return Err(UpstreamError::Malformed("not a SOCKS5 reply")),
    }
    let (Some(&code), Some(&atyp)) = (buf.get(1), buf.get(3)) else {
        return Ok(Status::Partial);
    };
    let addr_len = match atyp {
        ATYP_IPV4 => 4,
        ATYP_IPV6 => 16,
        ATYP_DOMAIN => match buf.get(ADDR) {
            Some(&len) => 1 + usize::from(len),
            None => return Ok(Status::Partial),
        },
        _ if code != 0 => return Ok(Status::Complete((code, None), ADDR)),
        _ => {
            return Err(UpstreamError::Malformed(
                "bad address type in the SOCKS5 reply",
            ))
        }
    };
    let n = ADDR + addr_len + 2;
    let Some(reply) = buf.get(..n) else {
        return Ok(Status::Partial);
    };
    let port = u16::from_be_bytes([reply[n - 2], reply[n - 1]]);
    let addr = &reply[ADDR..n - 2];
    let bound = match atyp {
        ATYP_IPV4 => <[u8; 4]>::try_from(addr)
            .ok()
            .map(|ip| SocketAddr::from((ip, port))),
        ATYP_IPV6 => <[u8; 16]>::try_from(addr)
            .ok()
            .map(|ip| SocketAddr::from((ip, port))),
        _ => None,
    };
    Ok(Status::Complete((code, bound), n))
}

/// A response head to a `CONNECT` (interim or final): its status. Only
/// the head is parsed: after a 2xx the tunnel starts and its framing
/// headers mean nothing (RFC 9110 §9.3.6), and a failure's body is never
/// read (its connection ends).
pub fn parse_connect_response(buf: &[u8]) -> Result<Status<u16>, UpstreamError> {
    let too_long = || UpstreamError::Malformed("response head to CONNECT too long");
    let mut storage = [httparse::EMPTY_HEADER; http::MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut storage);
    match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n > http::MAX_HEAD => Err(too_long()),
        Ok(httparse::Status::Complete(n)) => match resp.code {
            Some(status) if status >= 100 => Ok(Status::Complete(status, n)),
            _ => Err(UpstreamError::Malformed(
                "bad status in the response to CONNECT",
            )),
        },
        Ok(httparse::Status::Partial) if buf.len() > http::MAX_HEAD => Err(too_long()),
        Ok(httparse::Status::Partial) => Ok(Status::Partial),
        Err(httparse::Error::TooManyHeaders) => Err(too_long()),
        Err(_) => Err(UpstreamError::Malformed("not an HTTP response to CONNECT")),
    }
}

/// Where a handshake stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// SOCKS5: the greeting is out, the method choice awaited.
    Method,
    /// SOCKS5: the credentials are out, their status awaited.
    Auth,
    /// The request is out, its reply awaited.
    Reply,
    Done,
}

/// What a complete reply led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Carry on: send what is queued ([`Handshake::to_send`], empty after
    /// an interim HTTP response), then read the next reply.
    Send,
    /// The tunnel is open; the address the upstream bound, when it said.
    Established(Option<SocketAddr>),
}

/// The client side of one handshake with an upstream. Its `Debug` shows
/// no message: they carry the credentials.
#[derive(Clone)]
pub struct Handshake {
    scheme: Scheme,
    phase: Phase,
    /// The message being sent, and how much of it is out.
    out: Vec<u8>,
    sent: usize,
    /// SOCKS5: the RFC 1929 message, sent if the upstream chooses it.
    auth: Option<Vec<u8>>,
    /// SOCKS5: the CONNECT request, sent after the method (and credentials).
    request: Vec<u8>,
}

impl fmt::Debug for Handshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handshake")
            .field("scheme", &self.scheme)
            .field("phase", &self.phase)
            .field(
                "sent",
                &format_args!("{} of {} bytes", self.sent, self.out.len()),
            )
            .finish_non_exhaustive()
    }
}

/// Longest SOCKS5 CONNECT request: VER CMD RSV ATYP LEN name(255) PORT.
const MAX_SOCKS5_REQUEST: usize = 5 + 255 + 2;

impl Handshake {
    /// A handshake asking `url`'s upstream to connect to `dest`. A name is
    /// sent as it is (the caller resolves it first where the scheme says).
    ///
    /// # Panics
    /// If a name is longer than 255 bytes (no request carries one).
    pub fn new(url: &ProxyUrl, dest: Dest<'_>) -> Handshake {
        match url.scheme {
            Scheme::Socks5 | Scheme::Socks5h => {
                let methods: &[u8] = match url.credentials {
                    Some(_) => &[SOCKS5_VERSION, 2, METHOD_NO_AUTH, METHOD_USER_PASS],
                    None => &[SOCKS5_VERSION, 1, METHOD_NO_AUTH],
                };
                let auth = url.credentials.as_ref().map(|(user, pass)| {
                    let mut m = vec![0u8; 3 + user.len() + pass.len()];
                    let creds = socks::UserPass {
                        user: user.as_bytes(),
                        pass: pass.as_bytes(),
                    };
                    let n = creds.emit(&mut m);
                    m.truncate(n);
                    m
                });
                let mut request = vec![0u8; MAX_SOCKS5_REQUEST];
                let n = socks::Request {
                    version: socks::Version::Socks5,
                    command: socks::Command::Connect,
                    dest,
                }
                .emit(&mut request);
                request.truncate(n);
                Handshake {
                    scheme: url.scheme,
                    phase: Phase::Method,
                    out: methods.to_vec(),
                    sent: 0,
                    auth,
                    request,
                }
            }
            Scheme::Http => {
                let authority = match dest {
                    Dest::Addr(a) => a.to_string(),
                    // A name that is an IPv6 literal (from a SOCKS5 client)
                    // needs its brackets.
                    Dest::Name(name, port) if name.contains(':') => format!("[{name}]:{port}"),
                    Dest::Name(name, port) => format!("{name}:{port}"),
                };
                let mut head = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
                if let Some((user, pass)) = &url.credentials {
                    let basic = auth::base64(format!("{user}:{pass}").as_bytes());
                    head.push_str(&format!("Proxy-Authorization: Basic {basic}\r\n"));
                }
                head.push_str("\r\n");
                Handshake {
                    scheme: url.scheme,
                    phase: Phase::Reply,
                    out: head.into_bytes(),
                    sent: 0,
                    auth: None,
                    request: Vec::new(),
                }
            }
        }
    }

    /// What is left to write of the message under way (empty: wait for
    /// the reply).
    pub fn to_send(&self) -> &[u8] {
        &self.out[self.sent..]
    }

    /// `n` bytes of [`Handshake::to_send`] went out.
    pub fn sent(&mut self, n: usize) {
        self.sent = (self.sent + n).min(self.out.len());
    }

    /// The longest reply the upstream may send, and one byte more (a
    /// buffer this long tells a reply that is too long): a SOCKS5 reply with
    /// a 255-byte name, or an HTTP head of [`http::MAX_HEAD`].
    pub fn reply_buffer_len(&self) -> usize {
        match self.scheme {
            Scheme::Socks5 | Scheme::Socks5h => 4 + 1 + 255 + 2 + 1,
            Scheme::Http => http::MAX_HEAD + 1,
        }
    }

    /// Whether the tunnel is open.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// The upstream's bytes received since the last complete reply. An
    /// error ends the handshake; `Complete(step, consumed)` says how many
    /// bytes the reply took (the rest, once established, is the target's).
    pub fn on_input(&mut self, buf: &[u8]) -> Result<Status<Step>, UpstreamError> {
        let (step, n) = match self.phase {
            Phase::Method => {
                let Status::Complete(method, n) = parse_method_choice(buf)? else {
                    return Ok(Status::Partial);
                };
                match (method, self.auth.take()) {
                    (METHOD_NO_AUTH, _) => self.queue(Phase::Reply, None),
                    (METHOD_USER_PASS, Some(auth)) => self.queue(Phase::Auth, Some(auth)),
                    (METHOD_NONE_ACCEPTABLE | METHOD_USER_PASS, None) => {
                        return Err(UpstreamError::Auth(
                            "it wants a user and password; give them in the link's URL",
                        ))
                    }
                    (METHOD_NONE_ACCEPTABLE, Some(_)) => {
                        return Err(UpstreamError::Auth(
                            "it accepts none of the methods offered",
                        ))
                    }
                    _ => return Err(UpstreamError::Malformed("it chose a method not offered")),
                }
                (Step::Send, n)
            }
            Phase::Auth => {
                let Status::Complete(ok, n) = parse_auth_status(buf)? else {
                    return Ok(Status::Partial);
                };
                if !ok {
                    return Err(UpstreamError::Auth("user or password refused"));
                }
                self.queue(Phase::Reply, None);
                (Step::Send, n)
            }
            Phase::Reply if self.scheme == Scheme::Http => {
                let Status::Complete(status, n) = parse_connect_response(buf)? else {
                    return Ok(Status::Partial);
                };
                // 101 switches to a protocol not asked for.
                if status == 101 {
                    return Err(UpstreamError::Malformed("101 to CONNECT, not asked for"));
                }
                // Interim (RFC 9110 §15.2): the final response follows.
                if (100..200).contains(&status) {
                    return Ok(Status::Complete(Step::Send, n));
                }
                if !(200..300).contains(&status) {
                    return Err(UpstreamError::Http(status));
                }
                self.phase = Phase::Done;
                (Step::Established(None), n)
            }
            Phase::Reply => {
                let Status::Complete((code, bound), n) = parse_socks5_reply(buf)? else {
                    return Ok(Status::Partial);
                };
                if code != 0 {
                    return Err(match reply_of(code) {
                        Some(r) => UpstreamError::Socks(r),
                        None => UpstreamError::Malformed("unknown SOCKS5 reply code"),
                    });
                }
                self.phase = Phase::Done;
                (Step::Established(bound), n)
            }
            Phase::Done => return Err(UpstreamError::Malformed("bytes after the handshake")),
        };
        Ok(Status::Complete(step, n))
    }

    /// Queues the next message: the credentials, or the request.
    fn queue(&mut self, phase: Phase, auth: Option<Vec<u8>>) {
        self.out = match auth {
            Some(auth) => auth,
            None => std::mem::take(&mut self.request),
        };
        self.sent = 0;
        self.phase = phase;
    }
}

/// What a failed UDP ASSOCIATE with an upstream says of its link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpBlame {
    /// The upstream works but does not carry UDP (reply 07, command not
    /// supported): no UDP goes to it until restart or SIGHUP.
    NoUdp,
    /// It refused our credentials: as for a connection.
    Credentials,
    /// Anything else: the link failed.
    Link,
}

impl Handshake {
    /// A handshake asking `url`'s SOCKS5 upstream for a UDP association
    /// (RFC 1928 §7): greeting, credentials if the URL has them, then
    /// `UDP ASSOCIATE` naming `from`, the address datagrams will come from
    /// (`0.0.0.0:0` when not known).
    ///
    /// # Panics
    /// If the scheme is not SOCKS5 (HTTP carries no UDP).
    pub fn udp_associate(url: &ProxyUrl, from: SocketAddr) -> Handshake {
        assert!(url.scheme != Scheme::Http, "UDP needs a SOCKS5 upstream");
        let mut handshake = Handshake::new(url, Dest::Addr(from));
        let mut request = vec![0u8; MAX_SOCKS5_REQUEST];
        let n = socks::Request {
            version: socks::Version::Socks5,
            command: socks::Command::UdpAssociate,
            dest: Dest::Addr(from),
        }
        .emit(&mut request);
        request.truncate(n);
        handshake.request = request;
        handshake
    }
}

impl Handshake {
    /// Whether the request is out and its reply awaited: the greeting (and
    /// credentials) passed. An upstream that closes the connection now
    /// refuses the request rather than failing (OpenSSH's `ssh -D` closes
    /// it at any command but CONNECT).
    pub fn awaits_reply(&self) -> bool {
        self.phase == Phase::Reply && self.to_send().is_empty()
    }
}

impl UpstreamError {
    /// Whose fault a failed UDP ASSOCIATE is.
    pub fn udp_blame(&self) -> UdpBlame {
        match self {
            UpstreamError::Socks(Reply::CommandNotSupported) => UdpBlame::NoUdp,
            e if e.blame() == Blame::Credentials => UdpBlame::Credentials,
            _ => UdpBlame::Link,
        }
    }
}

/// Where datagrams go for an upstream's UDP association: the `BND.ADDR`
/// and `BND.PORT` of its reply, except that an unspecified address
/// (`0.0.0.0`, `::`) means the upstream's own, as clients take it. `None`
/// if the reply named no address, or port 0: no relay to send to.
pub fn udp_relay_addr(bound: Option<SocketAddr>, upstream: SocketAddr) -> Option<SocketAddr> {
    let bound = bound.filter(|b| b.port() != 0)?;
    Some(if bound.ip().is_unspecified() {
        SocketAddr::new(upstream.ip(), bound.port())
    } else {
        bound
    })
}

/// A SOCKS5 reply code as the same code (RFC 1928 §6 defines 1 to 8).
fn reply_of(code: u8) -> Option<Reply> {
    Some(match code {
        0x01 => Reply::GeneralFailure,
        0x02 => Reply::NotAllowed,
        0x03 => Reply::NetworkUnreachable,
        0x04 => Reply::HostUnreachable,
        0x05 => Reply::ConnectionRefused,
        0x06 => Reply::TtlExpired,
        0x07 => Reply::CommandNotSupported,
        0x08 => Reply::AddressTypeNotSupported,
        _ => return None,
    })
}

#[cfg(test)]
mod tests;
