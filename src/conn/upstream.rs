//! A connection's outgoing socket once it is connected (or accepted, for
//! BIND), and the link it left by.

use mio::net::TcpStream;

use super::ctx::Ctx;
use super::io::{forget, Ready};

pub struct Upstream {
    pub stream: TcpStream,
    pub ready: Ready,
    /// `None` for a target on this machine, reached through no link. (A
    /// byte: there are at most [`crate::links::MAX_LINKS`], and the
    /// connection stays small.)
    link: Option<u8>,
}

impl Upstream {
    pub fn new(stream: TcpStream, ready: Ready, link: Option<usize>) -> Upstream {
        Upstream {
            stream,
            ready,
            link: link.and_then(|l| u8::try_from(l).ok()),
        }
    }

    /// The link it left by, if any.
    pub fn link(&self) -> Option<usize> {
        self.link.map(usize::from)
    }

    /// Closes the socket and tells the link its connection ended.
    pub fn close(mut self, ctx: &mut Ctx<'_>) {
        forget(ctx.registry, &mut self.stream);
        if let Some(l) = self.link() {
            ctx.links.closed(l);
        }
    }
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Upstream(link {:?})", self.link)
    }
}
