//! The connection in its handshake: reading and parsing the request, then
//! acting on it (a SOCKS command, an HTTP CONNECT or forward request, the
//! next request on a kept-alive HTTP connection).

use super::super::*;
use crate::metrics::Request;

impl Conn {
    pub(in crate::conn) fn handshake(
        &mut self,
        ctx: &mut Ctx<'_>,
        mut hs: Handshake,
        kept: Option<Box<KeptAlive>>,
    ) -> Step {
        let state = |hs, kept| State::Handshake(hs, kept);
        if let Err(e) = self.flush_outbox() {
            return self.broken(state(hs, kept), "client write error", e);
        }
        if self.client_ready.readable {
            if let Err(e) = hs.read(&mut self.client, &mut self.client_ready) {
                return self.broken(state(hs, kept), "client read error", e);
            }
        }
        let next = hs.parse(
            ctx.auth,
            &mut self.outbox,
            (self.handle.id, self.client_addr),
        );
        // Replies the parse queued (method, auth status) go out now.
        if let Err(e) = self.flush_outbox() {
            return self.broken(state(hs, kept), "client write error", e);
        }
        match next {
            // The buffer filled before the client's bytes ran out, and the
            // parse made room: read on, or no new edge would ever come.
            handshake::Next::Wait if self.client_ready.readable && !hs.eof() => {
                (state(hs, kept), Flow::Next)
            }
            handshake::Next::Wait => (state(hs, kept), Flow::Stop(Progress::Idle)),
            handshake::Next::ClientClosed => {
                self.reason = if kept.is_some() {
                    "done (client closed its kept-alive connection)"
                } else {
                    "client closed during handshake"
                };
                (state(hs, kept), Flow::Stop(Progress::Close))
            }
            handshake::Next::TooLong => {
                self.reason = "handshake too long";
                (state(hs, kept), Flow::Stop(Progress::Close))
            }
            handshake::Next::Refused(reason) => {
                if let Some(kept) = kept {
                    close_kept(ctx, *kept);
                }
                self.reason = reason;
                (self.enter_closing(ctx), Flow::Next)
            }
            handshake::Next::Socks(request, pipelined) => {
                if let Some(kept) = kept {
                    close_kept(ctx, *kept);
                }
                self.socks_request(ctx, request, pipelined)
            }
            handshake::Next::Http(request, pipelined) => {
                self.http_request(ctx, request, pipelined, kept)
            }
        }
    }

    pub(in crate::conn) fn socks_request(
        &mut self,
        ctx: &mut Ctx<'_>,
        request: SocksRequest,
        pipelined: Vec<u8>,
    ) -> Step {
        let SocksRequest {
            version,
            command,
            target,
        } = request;
        let by_name = matches!(target, Target::Name(..));
        ctx.counters
            .request(Request::socks(version, command, by_name));
        let client = Client::Socks(version);
        let pending = Pending {
            client,
            pipelined,
            fwd: None,
            via: None,
            give_up_at: None,
        };
        if command == Command::Connect && !(version == Version::Socks4 && ctx.auth.required()) {
            return self.connect(ctx, pending, target);
        }
        self.target = Some(target);
        match (command, version) {
            (_, Version::Socks4) if ctx.auth.required() => {
                // SOCKS4 carries no password.
                let reason = "SOCKS4 refused: authentication is required";
                self.fail(ctx, client, Reply::NotAllowed, reason, None)
            }
            (Command::UdpAssociate, Version::Socks5) => self.associate(ctx, client),
            (Command::Bind, _) => self.bind(ctx, pending),
            (command, _) => {
                log::debug!(
                    "#{} {}: {command:?} is not supported",
                    self.handle.id,
                    self.client_addr
                );
                let reason = "command not supported";
                self.fail(ctx, client, Reply::CommandNotSupported, reason, None)
            }
        }
    }

    /// Acts on an HTTP proxy request: a CONNECT becomes a tunnel, a forward
    /// request goes to its origin, over the kept-alive upstream connection
    /// when it is the same origin as the previous request.
    pub(in crate::conn) fn http_request(
        &mut self,
        ctx: &mut Ctx<'_>,
        request: HttpRequest,
        pipelined: Vec<u8>,
        kept: Option<Box<KeptAlive>>,
    ) -> Step {
        ctx.counters
            .request(Request::http(request.forward.is_some()));
        let kept = match (kept, &request.forward) {
            (Some(kept), Some(_)) if request.authorized && kept.fwd.origin == request.target => {
                kept
            }
            (other, _) => {
                if let Some(kept) = other {
                    close_kept(ctx, *kept);
                }
                return self.http_request_anew(ctx, request, pipelined);
            }
        };
        let KeptAlive { mut fwd, open } = *kept;
        match (open, request.forward) {
            (Some(mut r), Some(head))
                if !r.upstream.ready.read_closed
                    && !r.upstream.ready.error
                    && !r.relay.down.eof =>
            {
                fwd.next_exchange(head);
                (r.active, r.stalled, fwd.waiting) = (ctx.now, None, None);
                if !pipelined.is_empty() {
                    // (Counted when they were read, before the exchange ended.)
                    let ring = r.relay.up.ring.get_or_insert_with(|| ctx.pool.take());
                    let kept = ring.push(&pipelined);
                    debug_assert_eq!(kept, pipelined.len(), "rings hold a whole head");
                    // In the pipe's own count (not the connection's again).
                    r.relay.up.bytes += kept as u64;
                }
                self.disarm(ctx);
                (State::Forwarding(r, fwd), Flow::Next)
            }
            (open, forward) => {
                if let Some(open) = open {
                    open.close(ctx);
                }
                let request = HttpRequest { forward, ..request };
                self.http_request_anew(ctx, request, pipelined)
            }
        }
    }

    /// An HTTP request with no kept-alive connection to serve it.
    pub(in crate::conn) fn http_request_anew(
        &mut self,
        ctx: &mut Ctx<'_>,
        request: HttpRequest,
        pipelined: Vec<u8>,
    ) -> Step {
        self.local = None;
        if !request.authorized {
            let detail = if request.refused_credentials {
                // As a wrong SOCKS5 password is (rate-limited: a client
                // trying passwords must not flood the log).
                if ctx.notices.failures.allow(ctx.now) {
                    log::info!(
                        "#{} {}: wrong HTTP proxy credentials",
                        self.handle.id,
                        self.client_addr
                    );
                }
                "wrong user name or password"
            } else {
                "this proxy needs a user name and password"
            };
            self.outbox
                .http_error(407, detail, crate::http::PROXY_AUTHENTICATE);
            self.reason = if request.refused_credentials {
                "wrong HTTP proxy credentials"
            } else {
                "HTTP proxy authentication required"
            };
            return (self.enter_closing(ctx), Flow::Next);
        }
        let (client, fwd) = match request.forward {
            None => (Client::HttpConnect, None),
            Some(head) => (
                Client::HttpForward,
                Some(Box::new(Forward::new(request.target.clone(), head))),
            ),
        };
        let pending = Pending {
            client,
            pipelined,
            fwd,
            via: None,
            give_up_at: None,
        };
        self.connect(ctx, pending, request.target)
    }
}
