//! What the connection does in each state: the code that changes state,
//! beside [`super::Conn::drive`], which calls it, and the replies and
//! closing helpers in `super` (`conn/mod.rs`). Each file is one part of
//! the state diagram in `conn/mod.rs`.

mod handshake;
mod relaying;
mod udp_bind;
