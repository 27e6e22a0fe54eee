//! The connection in UDP ASSOCIATE and BIND: setting each up and running
//! it until it ends.

use super::super::*;

impl Conn {
    pub(in crate::conn) fn associate(&mut self, ctx: &mut Ctx<'_>, client: Client) -> Step {
        // The port the client says it will send from, when it knows it.
        let client_port = match &self.target {
            Some(Target::Addr(a)) if a.port() != 0 => Some(a.port()),
            Some(Target::Name(_, port)) if *port != 0 => Some(*port),
            _ => None,
        };
        let opened = match self.client.local_addr() {
            Ok(local) => Assoc::open(ctx, self.handle, local, self.client_addr, client_port),
            Err(e) => Err(udp::Refusal::Relay(e)),
        };
        match opened {
            Ok(assoc) => {
                self.local = assoc.relay_addr();
                self.outbox
                    .reply(client, Reply::Succeeded, self.local, None);
                self.disarm(ctx);
                (State::Associated(Box::new(assoc)), Flow::Next)
            }
            Err(udp::Refusal::Full) => {
                let reason = "too many UDP associations";
                self.fail(ctx, client, Reply::GeneralFailure, reason, None)
            }
            Err(udp::Refusal::ClientFull) => {
                let reason = "too many UDP associations from this client";
                self.fail(ctx, client, Reply::GeneralFailure, reason, None)
            }
            Err(udp::Refusal::Relay(e)) => {
                let reason = "cannot open UDP relay";
                self.fail(ctx, client, Reply::GeneralFailure, reason, Some(e))
            }
        }
    }

    /// Relays datagrams; the association ends with its control connection.
    pub(in crate::conn) fn associated(&mut self, ctx: &mut Ctx<'_>, mut assoc: Box<Assoc>) -> Step {
        if let Err(e) = self.flush_outbox() {
            return self.broken(State::Associated(assoc), "client write error", e);
        }
        match udp::drain_control(&mut self.client, &mut self.client_ready) {
            udp::Control::Open => {}
            udp::Control::Closed => {
                self.reason = "control connection closed";
                return (State::Associated(assoc), Flow::Stop(Progress::Close));
            }
            udp::Control::Failed(e) => {
                let what = "control connection error";
                return self.broken(State::Associated(assoc), what, e);
            }
        }
        let (busy, up, down) = assoc.run(ctx, self.handle);
        self.bytes_up += up;
        self.bytes_down += down;
        // Wake when the oldest destination goes idle. A deadline already
        // armed stays, even if that destination was used since: waking
        // early only finds nothing to forget, and keeps the timer heap to
        // one entry per idle time rather than one per datagram.
        // (An earlier one replaces it: a leg's handshake timing out.)
        if let Some(at) = assoc.next_expiry(ctx.timeouts.connect) {
            if self.deadline.is_none_or(|d| at < d) {
                self.arm_at(ctx, at);
            }
        }
        let progress = if busy || self.client_ready.readable {
            Progress::Yield
        } else {
            Progress::Idle
        };
        (State::Associated(assoc), Flow::Stop(progress))
    }

    pub(in crate::conn) fn bind(&mut self, ctx: &mut Ctx<'_>, pending: Pending) -> Step {
        let client = pending.client;
        match Binding::start(ctx, self.handle, self.target.as_ref()) {
            Ok(b) => {
                self.local = b.local_addr();
                self.outbox
                    .reply(client, Reply::Succeeded, self.local, None);
                self.arm(ctx, ctx.timeouts.bind);
                (State::Binding(b, pending), Flow::Next)
            }
            Err(bind::Refusal::NoLink) => self.missing_family(ctx, client),
            Err(bind::Refusal::Listen(e)) => {
                let reason = "cannot listen for BIND";
                self.fail(ctx, client, Reply::GeneralFailure, reason, Some(e))
            }
        }
    }

    pub(in crate::conn) fn binding(
        &mut self,
        ctx: &mut Ctx<'_>,
        mut b: Binding,
        pending: Pending,
    ) -> Step {
        if let Err(e) = self.flush_outbox() {
            return self.broken(State::Binding(b, pending), "client write error", e);
        }
        // The client closing while we wait ends the BIND.
        if self.client_ready.read_closed {
            self.reason = "client closed during BIND";
            return (State::Binding(b, pending), Flow::Stop(Progress::Close));
        }
        match b.poll(ctx, self.handle) {
            bind::Next::Wait => (State::Binding(b, pending), Flow::Stop(Progress::Idle)),
            bind::Next::Accepted(upstream, peer) => {
                self.relay_with(ctx, pending, upstream, Some(peer))
            }
            bind::Next::Failed(e) => {
                b.close(ctx);
                let reason = "BIND accept failed";
                self.fail(ctx, pending.client, Reply::GeneralFailure, reason, Some(e))
            }
        }
    }
}
