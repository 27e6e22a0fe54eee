//! One whole connection (request, DNS answer, connect, relay, deadlines,
//! close) over real loopback sockets, scripted by the input; the properties
//! are in `src/conn/fuzzing_conn.rs`
//! ([`dispatch::conn::fuzzing_conn::conn_session_alone`]).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    dispatch::conn::fuzzing_conn::conn_session_alone(data);
});
