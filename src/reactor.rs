//! STUB: being written. API is fixed.
use crate::config::Config;
use std::io;
use std::net::SocketAddr;

/// Asks a running reactor to stop; cheap to clone, safe to call from a signal thread.
#[derive(Clone)]
pub struct Shutdown;
impl Shutdown {
    pub fn trigger(&self) {}
}

/// Totals reported when the reactor stops.
#[derive(Debug, Default, Clone, Copy)]
pub struct Summary {
    pub connections: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
}

pub struct Reactor;
impl Reactor {
    /// Binds the listener (an `AddrInUse` error when the port is taken).
    pub fn new(_config: Config) -> io::Result<Reactor> {
        todo!()
    }
    pub fn local_addr(&self) -> SocketAddr {
        todo!()
    }
    pub fn shutdown_handle(&self) -> Shutdown {
        Shutdown
    }
    /// Runs until [`Shutdown::trigger`]; returns the totals.
    pub fn run(&mut self) -> io::Result<Summary> {
        todo!()
    }
}
