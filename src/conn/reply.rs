//! What the client is told before any relayed byte: SOCKS method choices and
//! replies, or HTTP status lines, queued in a small outbox that is written
//! out first. Which reply a failure gets is decided here, in one place.

use std::io::{self, Write};
use std::net::SocketAddr;

use super::io::{self as sock, Outcome, Ready, SHORT_IO_DRAINS};
use super::request::Client;
use crate::http;
use crate::metrics::ErrorReply;
use crate::socks::{self, consts, Reply};

/// Replies waiting to be written to the client. Holds no memory while empty.
#[derive(Debug, Default)]
pub struct Outbox {
    buf: Vec<u8>,
    sent: usize,
    /// The last error reply queued, until the loop counts it (it takes it
    /// after each call into the connection, which queues one at most).
    said: Option<ErrorReply>,
}

impl Outbox {
    pub fn is_empty(&self) -> bool {
        self.sent == self.buf.len()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The error reply queued since the last call, if any (for the metrics).
    pub fn take_said(&mut self) -> Option<ErrorReply> {
        self.said.take()
    }

    /// The SOCKS5 method selection.
    pub fn method(&mut self, method: u8) {
        if method == consts::METHOD_NONE_ACCEPTABLE {
            self.said = Some(ErrorReply::SocksNoMethod);
        }
        let mut buf = [0u8; 2];
        let n = socks::emit_method(method, &mut buf);
        self.push(&buf[..n]);
    }

    /// The RFC 1929 status.
    pub fn user_pass_status(&mut self, ok: bool) {
        if !ok {
            self.said = Some(ErrorReply::SocksAuth);
        }
        let mut buf = [0u8; 2];
        let n = socks::emit_user_pass_status(ok, &mut buf);
        self.push(&buf[..n]);
    }

    /// An HTTP error response with this status and one reason.
    pub fn http_error(&mut self, status: u16, detail: &str, extra_headers: &str) {
        self.said = Some(ErrorReply::Http(status));
        self.push(&http::error_response(status, detail, extra_headers));
    }

    /// The answer to a request, in the client's protocol: `bound` is the
    /// address a success names, `error` what made a failure.
    pub fn reply(
        &mut self,
        client: Client,
        reply: Reply,
        bound: Option<SocketAddr>,
        error: Option<&io::Error>,
    ) {
        let version = match (client, reply) {
            (Client::Socks(version), _) => {
                if reply != Reply::Succeeded {
                    self.said = Some(ErrorReply::Socks(reply));
                }
                version
            }
            (Client::HttpConnect, Reply::Succeeded) => {
                return self.push(http::CONNECT_ESTABLISHED);
            }
            // The request itself is what goes out first.
            (Client::HttpForward, Reply::Succeeded) => return,
            (Client::HttpConnect | Client::HttpForward, _) => {
                // One reason: what failed, else the reply it maps to.
                let detail = match error {
                    Some(e) => e.to_string(),
                    None => reply.to_string(),
                };
                return self.http_error(http_status(reply), &detail, "");
            }
        };
        let mut buf = [0u8; consts::MAX_REPLY_LEN];
        let n = socks::emit_reply(version, reply, bound, &mut buf);
        self.push(&buf[..n]);
    }

    /// Writes what it holds until done or `WouldBlock`.
    pub fn flush(&mut self, dst: &mut impl Write, ready: &mut Ready) -> io::Result<()> {
        while ready.writable && !self.is_empty() {
            let rest = &self.buf[self.sent..];
            match sock::write(dst, rest) {
                Outcome::Continue(n) => {
                    self.sent += n;
                    if n < rest.len() && SHORT_IO_DRAINS {
                        ready.writable = false;
                    }
                }
                Outcome::WouldBlock => ready.writable = false,
                Outcome::Closed => return Err(io::ErrorKind::WriteZero.into()),
                Outcome::Reset(e) | Outcome::Error(e) => return Err(e),
            }
        }
        if self.is_empty() && self.buf.capacity() > 0 {
            let said = self.said;
            *self = Outbox {
                said,
                ..Outbox::default()
            };
        }
        Ok(())
    }
}

/// The HTTP status a SOCKS reply code stands for.
fn http_status(reply: Reply) -> u16 {
    match reply {
        Reply::NotAllowed => 403,
        Reply::TtlExpired => 504,
        _ => 502,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::socks::Version;

    #[test]
    fn http_clients_get_a_status_for_each_failure() {
        for (reply, status) in [
            (Reply::NotAllowed, "403"),
            (Reply::TtlExpired, "504"),
            (Reply::ConnectionRefused, "502"),
        ] {
            let mut out = Outbox::default();
            out.reply(Client::HttpConnect, reply, None, None);
            let text = String::from_utf8(out.buf).unwrap();
            assert!(text.starts_with(&format!("HTTP/1.1 {status} ")), "{text}");
        }
    }

    #[test]
    fn error_replies_are_noted_until_taken_even_across_a_flush() {
        let mut out = Outbox::default();
        out.reply(Client::Socks(Version::Socks5), Reply::Succeeded, None, None);
        out.method(consts::METHOD_NO_AUTH);
        assert_eq!(out.take_said(), None);
        let refused = Reply::ConnectionRefused;
        out.reply(Client::Socks(Version::Socks4), refused, None, None);
        let mut ready = Ready::BOTH;
        out.flush(&mut Vec::new(), &mut ready).unwrap();
        assert_eq!(out.take_said(), Some(ErrorReply::Socks(refused)));
        assert_eq!(out.take_said(), None);
        out.reply(Client::HttpConnect, Reply::NotAllowed, None, None);
        assert_eq!(out.take_said(), Some(ErrorReply::Http(403)));
        out.method(consts::METHOD_NONE_ACCEPTABLE);
        assert_eq!(out.take_said(), Some(ErrorReply::SocksNoMethod));
        out.user_pass_status(false);
        assert_eq!(out.take_said(), Some(ErrorReply::SocksAuth));
    }

    #[test]
    fn a_forward_request_is_answered_by_its_origin() {
        let mut out = Outbox::default();
        out.reply(Client::HttpForward, Reply::Succeeded, None, None);
        assert!(out.is_empty());
    }

    #[test]
    fn flush_resumes_after_a_partial_write_and_frees_the_buffer() {
        let mut out = Outbox::default();
        out.reply(Client::Socks(Version::Socks4), Reply::Succeeded, None, None);
        assert_eq!(out.buf.len(), 8);
        /// Takes 3 bytes, then would block.
        struct Narrow(Vec<u8>);
        impl Write for Narrow {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                let n = buf.len().min(3 - self.0.len());
                if n == 0 {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                self.0.extend_from_slice(&buf[..n]);
                Ok(n)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut ready = Ready::BOTH;
        out.flush(&mut Narrow(Vec::new()), &mut ready).unwrap();
        assert_eq!(out.sent, 3);
        assert!(!ready.writable);
        let mut rest = Vec::new();
        let mut ready = Ready::BOTH;
        out.flush(&mut rest, &mut ready).unwrap();
        assert_eq!(rest.len(), 5);
        assert!(out.is_empty());
        assert_eq!(out.buf.capacity(), 0);
    }
}
