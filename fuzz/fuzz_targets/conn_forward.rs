//! One kept-alive HTTP forward-proxy connection: one to three exchanges
//! generated well-formed from the input, played by a script of what the
//! client and the origin do, through the handshake's head parser and
//! `Forward::run` over in-memory streams; the properties are in
//! `src/conn/fuzzing_forward/`
//! ([`dispatch::conn::fuzzing_forward::forward_session`]).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| dispatch::conn::fuzzing_forward::forward_session(data));
