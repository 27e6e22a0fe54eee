//! The association's side of its legs through upstream proxies (see
//! [`super::super::udp_upstream`]): placing destinations and names on
//! them, sending a client's datagram as it came, passing replies back, and
//! forgetting what was placed on a leg that ended.

use std::net::SocketAddr;
use std::time::Instant;

use super::super::ctx::Ctx;
use super::super::io::{attempt, Outcome};
use super::super::token::Handle;
use super::{pick_link, refuse, Assoc, Name};
use crate::links::Links;
use crate::metrics::Limit;
use crate::net;
use crate::socks::{self, Dest, Status};
use crate::upstream_proto::Scheme;

impl Assoc {
    /// The legs through links in `ended` ended: what was placed there is
    /// forgotten, to be placed again by the next datagram.
    pub(super) fn forget_links(&mut self, ctx: &mut Ctx<'_>, conn: Handle, ended: u64) {
        let links = &mut *ctx.links;
        self.routes.remove_where(
            |_, route| ended & (1 << route.link) != 0,
            |dest, route, was_live| {
                if was_live {
                    links.pin(usize::from(route.link), false);
                }
                log::debug!("#{} UDP {dest}: its link's association ended", conn.id);
            },
        );
        self.names.remove_where(
            |_, name| matches!(*name, Name::Via(l) if ended & (1 << l) != 0),
            |_, _, _| {},
        );
    }
}

/// A link for a new destination: with proxy links, the route is picked
/// first over the proxies that carry UDP and the interfaces as a whole
/// (as for a connection); among the interfaces, [`pick_link`].
pub(super) fn place(ctx: &mut Ctx<'_>, dest: SocketAddr) -> Option<usize> {
    if ctx.links.has_proxies() {
        let interfaces = ctx.links.can_reach(dest.ip());
        let without = ctx.links.without_udp();
        if let Some(proxy) =
            ctx.links
                .pick_route(without, interfaces, Some(dest.is_ipv6()), ctx.now)?
        {
            return Some(proxy);
        }
    }
    pick_link(ctx, dest)
}

/// A `socks5h://` link for a new name, when the route picked for it is
/// one: the name then goes on unresolved. `None`: resolve it here.
pub(super) fn place_name(links: &mut Links, now: Instant) -> Option<usize> {
    let without = links.without_udp();
    let socks5h = |i: usize| {
        without & (1 << i) == 0
            && links
                .get(i)
                .as_proxy()
                .is_some_and(|p| p.url.scheme == Scheme::Socks5h)
    };
    if !(0..links.iter().count()).any(socks5h) {
        return None;
    }
    let link = links.pick_route(without, true, None, now)??;
    let is_socks5h = links.get(link).as_proxy()?.url.scheme == Scheme::Socks5h;
    is_socks5h.then_some(link)
}

/// A datagram to a new name, in `ctx.udp_buf[..n]` (payload from `start`):
/// the name is placed on `socks5h://` link `link` and the datagram sent as
/// it came. Returns the payload bytes sent.
pub(super) fn via_name(
    assoc: &mut Assoc,
    ctx: &mut Ctx<'_>,
    conn: Handle,
    key: &[u8],
    link: usize,
    (n, start): (usize, usize),
) -> usize {
    let via = Name::Via(u8::try_from(link).expect("at most 64 links"));
    let Ok(gone) = assoc.names.insert(key.into(), via, ctx.now) else {
        ctx.counters.limit(Limit::UdpDestinations);
        refuse(assoc, conn, ctx.timeouts.udp_destinations, "names");
        return 0;
    };
    assoc.forget_name(gone.map(|g| g.value));
    if assoc.legs.ensure(ctx, conn, link).is_err() {
        assoc.names.remove(key);
        return 0;
    }
    send_whole(assoc, ctx, link, n, start)
}

/// Sends the client's datagram `ctx.udp_buf[..n]` as it came (its header
/// names the destination) through link `link`'s upstream.
pub(super) fn send_whole(
    assoc: &mut Assoc,
    ctx: &mut Ctx<'_>,
    link: usize,
    n: usize,
    start: usize,
) -> usize {
    ctx.udp_buf[..2].fill(0); // RSV
    assoc.legs.send(ctx, link, 0..n, n - start)
}

/// A datagram from link `link`'s upstream relay is in `ctx.udp_buf[..n]`,
/// its header naming the source (payload from `start`): it goes to the
/// client as it is, and keeps the source live.
pub(super) fn from_upstream(
    assoc: &mut Assoc,
    ctx: &mut Ctx<'_>,
    link: usize,
    n: usize,
    start: usize,
) -> usize {
    if let Ok(Status::Complete(h, _)) = socks::parse_udp_header(&ctx.udp_buf[..n]) {
        if let Dest::Addr(from) = h.dest {
            if let Some(route) = assoc.routes.touch_live(&net::canonical(from), ctx.now) {
                if usize::from(route.link) == link {
                    ctx.links
                        .answered(link, &mut route.seen, n - start, ctx.now);
                }
            }
        }
    }
    let Some(client) = assoc.client_addr() else {
        return 0;
    };
    ctx.udp_buf[..2].fill(0); // RSV
    let datagram = &ctx.udp_buf[..n];
    match attempt(|| assoc.relay.send_to(datagram, client)) {
        Outcome::Continue(_) => {
            ctx.links.datagram_down(link, (n - start) as u64);
            n - start
        }
        _ => 0,
    }
}
