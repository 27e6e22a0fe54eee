//! Tokens: which connection, of which generation, and which of its sockets
//! an event is for.
//!
//! A token is `key << 24 | generation << 8 | side` on 64-bit targets (40
//! bits of key, 16 of generation); on 32-bit ones the generation has 4
//! bits, so a stale event slips through once in 16 reuses there. The
//! slab reuses keys: a connection closed while events for its sockets are
//! still queued in the same `poll` batch may see its key taken by a new
//! connection before those events are handled. The generation, taken from
//! the connection's id, lets the reactor drop such stale events.

use mio::Token;

/// Which of a connection's sockets a token names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    /// The outgoing TCP socket (or a BIND listener).
    Upstream,
    /// The UDP socket a UDP ASSOCIATE client sends its datagrams to.
    UdpRelay,
    /// The outgoing UDP socket of an association through link `n` (for a
    /// proxy link, the socket that talks to the upstream's UDP relay).
    UdpOut(u8),
    /// The TCP control connection of an association's UDP ASSOCIATE with
    /// the upstream of proxy link `n`.
    UdpControl(u8),
    /// A second connect attempt racing the first (Happy Eyeballs).
    Racer,
}

const SIDE_BITS: u32 = 8;
/// The side code of [`Side::Racer`], past every `UdpOut` and `UdpControl`
/// (at most 64 links each).
const RACER: usize = 255;
/// The first side code of [`Side::UdpControl`], past every `UdpOut`.
const CONTROL: usize = 3 + 64;
const GEN_BITS: u32 = if usize::BITS >= 64 { 16 } else { 4 };
const GEN_MASK: usize = (1 << GEN_BITS) - 1;

/// A connection as the loop knows it: its slab key and its id (unique over
/// the process's life).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handle {
    pub key: usize,
    pub id: u64,
}

impl Handle {
    /// The token for one of this connection's sockets.
    pub fn token(self, side: Side) -> Token {
        let code = match side {
            Side::Client => 0,
            Side::Upstream => 1,
            Side::UdpRelay => 2,
            Side::UdpOut(n) => 3 + n as usize,
            Side::UdpControl(n) => CONTROL + n as usize,
            Side::Racer => RACER,
        };
        Token((self.key << (GEN_BITS + SIDE_BITS)) | (generation(self.id) << SIDE_BITS) | code)
    }

    /// Whether an event with this token is for this connection, not for
    /// an earlier one that had its key.
    pub fn owns(self, token: Token) -> bool {
        let (key, generation_bits, _) = split(token);
        key == self.key && generation_bits == generation(self.id)
    }
}

fn generation(id: u64) -> usize {
    id as usize & GEN_MASK
}

fn split(token: Token) -> (usize, usize, usize) {
    (
        token.0 >> (GEN_BITS + SIDE_BITS),
        (token.0 >> SIDE_BITS) & GEN_MASK,
        token.0 & ((1 << SIDE_BITS) - 1),
    )
}

/// The slab key and side a token names. Check the connection found under
/// the key with [`Handle::owns`].
pub fn from_token(token: Token) -> (usize, Side) {
    let (key, _, code) = split(token);
    let side = match code {
        0 => Side::Client,
        1 => Side::Upstream,
        2 => Side::UdpRelay,
        RACER => Side::Racer,
        n if n >= CONTROL => Side::UdpControl((n - CONTROL) as u8),
        n => Side::UdpOut((n - 3) as u8),
    };
    (key, side)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIDES: [Side; 8] = [
        Side::Racer,
        Side::Client,
        Side::Upstream,
        Side::UdpRelay,
        Side::UdpOut(0),
        Side::UdpOut(63),
        Side::UdpControl(0),
        Side::UdpControl(63),
    ];

    #[test]
    fn tokens_round_trip() {
        for key in [0usize, 1, 2, 12345] {
            for id in [1u64, 2, 65535, 65536, 1 << 40] {
                let h = Handle { key, id };
                for side in SIDES {
                    let t = h.token(side);
                    assert_eq!(from_token(t), (key, side));
                    assert!(h.owns(t));
                }
            }
        }
    }

    #[test]
    fn a_reused_key_does_not_own_the_old_connections_tokens() {
        let old = Handle { key: 7, id: 41 };
        let new = Handle { key: 7, id: 42 };
        for side in SIDES {
            assert!(!new.owns(old.token(side)), "{side:?}");
            assert!(!old.owns(new.token(side)), "{side:?}");
        }
    }

    #[test]
    fn reserved_tokens_name_no_key_a_slab_reaches() {
        let (key, _) = from_token(Token(usize::MAX));
        assert_eq!(key, usize::MAX >> (GEN_BITS + SIDE_BITS));
    }
}
