//! A script of what a client and a target do (send, read, EOF, reset,
//! window changes, spurious wake-ups) played against one relay over
//! in-memory streams; the properties are in `src/conn/fuzzing.rs`
//! ([`dispatch::conn::fuzzing::relay_session`]).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| dispatch::conn::fuzzing::relay_session(data));
