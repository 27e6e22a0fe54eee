//! Closing after a final reply (an error, a refusal, the end of an HTTP
//! exchange): once the reply is out, EOF is sent, and what the client still
//! sends is read and dropped until its own EOF, so closing does not turn
//! into a reset that destroys the reply before the client reads it. Not
//! without end: [`LINGER`] at most, and [`LINGER_DISCARD_MAX`] bytes.

use std::time::Duration;

use super::io::{read, Outcome, Ready, Stream};

/// How long a closing connection waits for the client's EOF.
pub const LINGER: Duration = Duration::from_secs(2);

/// At most this much is read and thrown away while lingering.
pub const LINGER_DISCARD_MAX: usize = 64 * 1024;

#[derive(Debug, Default)]
pub struct Linger {
    /// EOF was sent.
    shut: bool,
    discarded: usize,
}

/// What lingering came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Wait,
    /// The client closed too (or its socket failed).
    Done,
    /// The client kept sending: cut it off.
    Flooded,
}

impl Linger {
    /// Call once the final reply is written.
    pub fn run(&mut self, client: &mut impl Stream, ready: &mut Ready) -> Next {
        if !self.shut {
            self.shut = true;
            client.shutdown_write();
        }
        let mut sink = [0u8; 4096];
        while ready.readable {
            if self.discarded >= LINGER_DISCARD_MAX {
                return Next::Flooded;
            }
            match read(client, &mut sink) {
                Outcome::Continue(n) => self.discarded += n,
                Outcome::WouldBlock => ready.readable = false,
                Outcome::Closed | Outcome::Reset(_) | Outcome::Error(_) => return Next::Done,
            }
        }
        Next::Wait
    }
}
