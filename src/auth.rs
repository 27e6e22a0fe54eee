//! Who may use the proxy: the credentials of `--auth` / `--auth-file`, and
//! the client address ranges of `--allow` (or the safe default).
//!
//! Comparisons of secrets run in time independent of where they differ, and
//! passwords are never written to logs.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::IpAddr;
use std::path::Path;

use crate::http::trim;

/// One `user:pass` pair, with its HTTP Basic form precomputed so a
/// `Proxy-Authorization` header is checked without decoding it.
#[derive(Clone, PartialEq, Eq)]
struct Entry {
    user: Vec<u8>,
    pass: Vec<u8>,
    basic: Vec<u8>,
    /// The next entry of the same user (one user may have several
    /// passwords, e.g. while changing it): index in `entries`.
    next: Option<usize>,
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:***", String::from_utf8_lossy(&self.user))
    }
}

/// The accepted credentials. With none, authentication is off unless it was
/// [`Credentials::require`]d (then every client is refused).
///
/// A check looks the user (or the Basic token) up in a map, then compares
/// the secret in constant time, once per password that user has: O(1) per
/// attempt whatever the number of users, on the reactor thread.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    entries: Vec<Entry>,
    /// Index in `entries` of the first entry of each user name (the
    /// others follow through `Entry::next`).
    by_user: HashMap<Vec<u8>, usize>,
    /// Index in `entries` by Basic token.
    by_basic: HashMap<Vec<u8>, usize>,
    required: bool,
}

impl PartialEq for Credentials {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries && self.required == other.required
    }
}

impl Eq for Credentials {}

/// A `user:pass` that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadCredential {
    pub line: Option<usize>,
}

impl fmt::Display for BadCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(n) => write!(f, "line {n} is not user:pass"),
            None => f.write_str("credentials must be given as user:pass"),
        }
    }
}

impl std::error::Error for BadCredential {}

impl Credentials {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether clients must authenticate.
    pub fn required(&self) -> bool {
        self.required || !self.entries.is_empty()
    }

    /// Keeps authentication on even with no credentials left (an auth file
    /// emptied while running refuses everyone; it does not open the proxy).
    pub fn require(&mut self) {
        self.required = true;
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Adds `user:pass` (the password may itself contain `:`).
    pub fn add(&mut self, pair: &str) -> Result<(), BadCredential> {
        let (user, pass) = pair.split_once(':').ok_or(BadCredential { line: None })?;
        // RFC 1929 carries each in at most 255 bytes.
        if user.is_empty() || user.len() > 255 || pass.len() > 255 {
            return Err(BadCredential { line: None });
        }
        self.push(Entry {
            user: user.as_bytes().to_vec(),
            pass: pass.as_bytes().to_vec(),
            basic: base64(pair.as_bytes()).into_bytes(),
            next: None,
        });
        Ok(())
    }

    fn push(&mut self, mut entry: Entry) {
        let i = self.entries.len();
        entry.next = None;
        match self.by_user.get(&entry.user) {
            // Another password of a known user: chained behind its last.
            Some(&first) => {
                let mut last = first;
                while let Some(next) = self.entries[last].next {
                    last = next;
                }
                self.entries[last].next = Some(i);
            }
            None => {
                self.by_user.insert(entry.user.clone(), i);
            }
        }
        self.by_basic.insert(entry.basic.clone(), i);
        self.entries.push(entry);
    }

    /// Parses an auth file: one `user:pass` a line; blank lines and lines
    /// starting with `#` are skipped.
    pub fn parse_file(text: &str) -> Result<Credentials, BadCredential> {
        let mut creds = Credentials::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            creds
                .add(line)
                .map_err(|_| BadCredential { line: Some(n + 1) })?;
        }
        Ok(creds)
    }

    pub fn load_file(path: &Path) -> io::Result<Credentials> {
        let text = std::fs::read_to_string(path)?;
        Credentials::parse_file(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    pub fn extend(&mut self, other: Credentials) {
        for entry in other.entries {
            self.push(entry);
        }
        self.required |= other.required;
    }

    /// Whether `user` is one of the configured user names.
    pub fn knows(&self, user: &[u8]) -> bool {
        self.by_user.contains_key(user)
    }

    /// RFC 1929 username and password. An unknown user costs the same
    /// comparison as a known one.
    pub fn check(&self, user: &[u8], pass: &[u8]) -> bool {
        let Some(&first) = self.by_user.get(user) else {
            // The same comparison as for a known user with one password.
            let _ = ct_eq(&[], pass);
            return false;
        };
        let mut ok = false;
        let mut at = Some(first);
        while let Some(i) = at {
            let e = &self.entries[i];
            ok |= ct_eq(&e.pass, pass);
            at = e.next;
        }
        ok
    }

    /// The value of a `Proxy-Authorization` header: `Basic <base64>`.
    pub fn check_basic(&self, header: &[u8]) -> bool {
        let header = trim(header);
        let Some(token) = header
            .split_at_checked(6)
            .filter(|(scheme, rest)| scheme.eq_ignore_ascii_case(b"basic ") && !rest.is_empty())
            .map(|(_, rest)| trim(rest))
        else {
            return false;
        };
        let entry = self.by_basic.get(token).map(|&i| &self.entries[i]);
        let expected = entry.map_or(&[][..], |e| &e.basic[..]);
        ct_eq(expected, token) & entry.is_some()
    }
}

/// Longest secret compared: RFC 1929 fields are at most 255 bytes, a Basic
/// token for them at most 684.
const CT_LEN: usize = 1024;

/// Equality that takes the same time whatever the inputs (up to [`CT_LEN`]
/// bytes): neither where they differ nor their lengths show.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len()) | u8::from(a.len() > CT_LEN);
    for i in 0..CT_LEN {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

/// Standard base64 with padding (RFC 4648 §4), as HTTP Basic uses.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// An address range, `10.0.0.0/8` or `fd00::/8`; a bare address is a /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let bad =
            || format!("{s:?} is not an address range; give one as in 192.168.1.0/24 or ::1/128");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|&p| p <= max).ok_or_else(bad)?,
            None => max,
        };
        // `::ffff:a.b.c.d/n` is the IPv4 range it maps, as clients are seen.
        if let IpAddr::V6(v6) = addr {
            if let (Some(v4), true) = (v6.to_ipv4_mapped(), prefix >= 96) {
                return Ok(Cidr {
                    addr: IpAddr::V4(v4),
                    prefix: prefix - 96,
                });
            }
        }
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(
                u128::from(u32::from(net)) << 96,
                u128::from(u32::from(ip)) << 96,
                self.prefix,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(u128::from(net), u128::from(ip), self.prefix)
            }
            // A wide IPv6 range may hold the mapped form of an IPv4 client.
            (IpAddr::V6(net), IpAddr::V4(ip)) => prefix_eq(
                u128::from(net),
                u128::from(ip.to_ipv6_mapped()),
                self.prefix,
            ),
            _ => false,
        }
    }
}

fn prefix_eq(a: u128, b: u128, prefix: u8) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix))
    };
    a & mask == b & mask
}

/// Which client addresses may connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Anyone (a loopback listener, or authentication is on).
    Anyone,
    /// Only these ranges (`--allow`).
    Only(Vec<Cidr>),
    /// The safe default for a listener beyond loopback with neither
    /// authentication nor `--allow`: loopback, private and link-local.
    LocalNetworks,
}

impl Access {
    /// The rule for a listener on `listen_ip`.
    pub fn new(listen_ip: IpAddr, allow: Vec<Cidr>, auth: bool) -> Access {
        if !allow.is_empty() {
            Access::Only(allow)
        } else if auth || listen_ip.is_loopback() {
            Access::Anyone
        } else {
            Access::LocalNetworks
        }
    }

    pub fn allows(&self, client: IpAddr) -> bool {
        match self {
            Access::Anyone => true,
            Access::Only(ranges) => ranges.iter().any(|r| r.contains(client)),
            Access::LocalNetworks => is_local_network(client.to_canonical()),
        }
    }
}

/// Loopback, private (RFC 1918, RFC 4193) and link-local addresses.
pub fn is_local_network(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local(),
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback() || (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(pairs: &[&str]) -> Credentials {
        let mut c = Credentials::default();
        for p in pairs {
            c.add(p).unwrap();
        }
        c
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn user_and_password_must_both_match() {
        let c = creds(&["alice:s3cret", "bob:p:w"]);
        assert!(c.check(b"alice", b"s3cret"));
        assert!(c.check(b"bob", b"p:w"), "a password may contain ':'");
        assert!(!c.check(b"alice", b"p:w"));
        assert!(!c.check(b"alice", b"s3cre"));
        assert!(!c.check(b"", b""));
    }

    #[test]
    fn basic_header_is_checked_without_decoding() {
        let c = creds(&["alice:s3cret"]);
        let good = format!("Basic {}", base64(b"alice:s3cret"));
        assert!(c.check_basic(good.as_bytes()));
        assert!(c.check_basic(format!("basic  {} ", base64(b"alice:s3cret")).as_bytes()));
        assert!(!c.check_basic(format!("Basic {}", base64(b"alice:wrong")).as_bytes()));
        assert!(!c.check_basic(b"Bearer abc"));
        assert!(!c.check_basic(b"Basic "));
        assert!(!c.check_basic(b""));
    }

    #[test]
    fn auth_file_skips_comments_and_reports_bad_lines() {
        let c = Credentials::parse_file("# users\nalice:1\n\n  # more\nbob:2\r\n").unwrap();
        assert_eq!(c, creds(&["alice:1", "bob:2"]));
        assert_eq!(
            Credentials::parse_file("alice:1\nnocolon\n"),
            Err(BadCredential { line: Some(2) })
        );
    }

    #[test]
    fn required_stays_on_with_no_credentials() {
        let mut c = Credentials::default();
        assert!(!c.required());
        c.require();
        assert!(c.required());
        assert!(!c.check(b"", b""), "nobody gets in");
        assert!(!c.check_basic(b"Basic Og=="), "not even an empty user:pass");
    }

    #[test]
    fn lengths_do_not_short_cut_the_comparison() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abcd"));
        assert!(!ct_eq(b"", b"\0"), "padding is not equality");
        let long = vec![b'a'; CT_LEN + 1];
        assert!(!ct_eq(&long, &long), "longer than any secret: refused");
    }

    #[test]
    fn debug_never_shows_passwords() {
        let text = format!("{:?}", creds(&["alice:s3cret"]));
        assert!(text.contains("alice") && !text.contains("s3cret"), "{text}");
    }

    #[test]
    fn cidr_parses_and_matches() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(c.contains("10.1.200.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert_eq!(one.to_string(), "127.0.0.1/32");
        assert!(
            one.contains("::ffff:127.0.0.1".parse().unwrap()),
            "mapped addresses count as IPv4"
        );
        let mapped: Cidr = "::ffff:10.0.0.1/104".parse().unwrap();
        assert_eq!(
            mapped.to_string(),
            "10.0.0.1/8",
            "a mapped range is its IPv4 range"
        );
        assert!(mapped.contains("10.9.9.9".parse().unwrap()));
        assert!(mapped.contains("::ffff:10.0.0.1".parse().unwrap()));
        let wide: Cidr = "::/0".parse().unwrap();
        assert!(
            wide.contains("10.0.0.1".parse().unwrap()),
            "holds the mapped IPv4 space"
        );
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        for bad in ["10.0.0.0/33", "::/129", "nonsense", "10.0.0.0/x"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn default_access_depends_on_listener_auth_and_allow() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let lan: IpAddr = "192.168.1.2".parse().unwrap();
        assert_eq!(Access::new(lo, vec![], false), Access::Anyone);
        assert_eq!(Access::new(lan, vec![], true), Access::Anyone);
        assert_eq!(Access::new(lan, vec![], false), Access::LocalNetworks);
        let only = Access::new(lan, vec!["127.0.0.1/32".parse().unwrap()], false);
        assert!(only.allows(lo));
        assert!(!only.allows("127.0.0.9".parse().unwrap()));
    }

    #[test]
    fn local_networks_are_loopback_private_and_link_local() {
        let rule = Access::LocalNetworks;
        for ok in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.0.9",
            "169.254.1.1",
            "::1",
            "fd00::1",
            "fe80::1",
        ] {
            assert!(rule.allows(ok.parse().unwrap()), "{ok}");
        }
        for no in ["8.8.8.8", "198.18.0.5", "172.32.0.1", "2001:db8::1"] {
            assert!(!rule.allows(no.parse().unwrap()), "{no}");
        }
    }

    #[test]
    fn bad_credential_says_which_line() {
        assert_eq!(
            BadCredential { line: Some(3) }.to_string(),
            "line 3 is not user:pass"
        );
        assert_eq!(
            BadCredential { line: None }.to_string(),
            "credentials must be given as user:pass"
        );
    }

    #[test]
    fn len_and_is_empty_count_entries() {
        let none = Credentials::default();
        assert!(none.is_empty());
        assert_eq!(none.len(), 0);
        let two = creds(&["alice:1", "bob:2"]);
        assert!(!two.is_empty());
        assert_eq!(two.len(), 2);
    }

    #[test]
    fn add_takes_fields_up_to_255_bytes_and_a_user() {
        let (b255, b256) = ("u".repeat(255), "u".repeat(256));
        let mut c = Credentials::default();
        assert_eq!(c.add(&format!("{b255}:pw")), Ok(()));
        assert_eq!(c.add(&format!("alice:{b255}")), Ok(()));
        assert_eq!(c.add(&format!("{b255}:{b255}")), Ok(()));
        for bad in [
            format!("{b256}:pw"),
            format!("alice:{b256}"),
            format!("{b256}:{b256}"),
            ":pw".to_string(),
            ":".to_string(),
        ] {
            assert_eq!(
                c.add(&bad),
                Err(BadCredential { line: None }),
                "{}",
                &bad[..bad.len().min(20)]
            );
        }
        assert_eq!(c.len(), 3, "refused pairs are not added");
    }

    #[test]
    fn load_file_of_a_missing_path_is_an_error() {
        let err = Credentials::load_file(Path::new("")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    /// Found by the auth_parse fuzz target: with a user on two lines
    /// (a password being changed), the map kept only the last, and the
    /// first line's password, accepted before, was refused.
    #[test]
    fn a_user_on_several_lines_has_each_password() {
        let c = Credentials::parse_file("bob:old\nalice:a\nbob:new\nbob:newer\n").unwrap();
        assert!(c.check(b"bob", b"old") && c.check(b"bob", b"new") && c.check(b"bob", b"newer"));
        assert!(c.check(b"alice", b"a") && !c.check(b"bob", b"a") && !c.check(b"eve", b"old"));
        for pair in ["bob:old", "bob:new", "bob:newer"] {
            let basic = format!("Basic {}", base64(pair.as_bytes()));
            assert!(c.check_basic(basic.as_bytes()), "{pair}");
        }
        assert_eq!(c.len(), 4);
    }

    #[test]
    fn extend_adds_entries_and_keeps_required() {
        let mut c = creds(&["alice:1"]);
        c.extend(creds(&["bob:2"]));
        assert!(c.check(b"alice", b"1") && c.check(b"bob", b"2"));
        // An emptied auth file still requires authentication after merging.
        let mut required = Credentials::default();
        required.require();
        let mut merged = Credentials::default();
        merged.extend(required);
        assert!(merged.required());
        merged.extend(Credentials::default());
        assert!(merged.required(), "a later source does not turn it off");
    }

    #[test]
    fn knows_configured_user_names_only() {
        let c = creds(&["alice:s3cret"]);
        assert!(c.knows(b"alice"));
        assert!(!c.knows(b"alic"));
        assert!(!c.knows(b"bob"));
        assert!(!Credentials::default().knows(b""));
    }

    #[test]
    fn a_pair_given_twice_still_matches() {
        // `--auth` and `--auth-file` may both name the same user:pass.
        let c = creds(&["alice:s3cret", "alice:s3cret"]);
        assert!(c.check(b"alice", b"s3cret"));
        assert!(c.check_basic(format!("Basic {}", base64(b"alice:s3cret")).as_bytes()));
    }

    #[test]
    fn basic_token_under_another_scheme_is_refused() {
        let c = creds(&["alice:s3cret"]);
        let token = base64(b"alice:s3cret");
        for header in [format!("Bearer {token}"), format!("Basix {token}")] {
            assert!(!c.check_basic(header.as_bytes()), "{header}");
        }
    }

    #[test]
    fn ct_eq_compares_secrets_of_ct_len_bytes_and_refuses_longer() {
        let max = vec![b'a'; CT_LEN];
        assert!(ct_eq(&max, &max), "CT_LEN bytes are still compared");
        let mut other = max.clone();
        other[CT_LEN - 1] = b'b';
        assert!(!ct_eq(&max, &other));
        // Longer than CT_LEN and of another length: both flags set, not cancelled.
        let long = vec![b'a'; CT_LEN + 1];
        assert!(!ct_eq(&long, &max));
        assert!(!ct_eq(&max, &long));
    }
}
