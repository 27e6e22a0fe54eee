//! A connection's outgoing socket once it is connected (or accepted, for
//! BIND), and the link it left by.

use mio::net::TcpStream;

use super::ctx::Ctx;
use super::io::{forget, Ready};

pub struct Upstream {
    pub stream: TcpStream,
    pub ready: Ready,
    pub link: usize,
}

impl Upstream {
    /// Closes the socket and tells the link its connection ended.
    pub fn close(mut self, ctx: &mut Ctx<'_>) {
        forget(ctx.registry, &mut self.stream);
        ctx.links.closed(self.link);
    }
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Upstream(link {})", self.link)
    }
}
