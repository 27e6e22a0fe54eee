//! One whole connection (request, DNS answer, connect, relay, deadlines,
//! close) over real loopback sockets, scripted by the input; the properties
//! are in `src/conn/fuzzing_conn/`
//! ([`dispatch::conn::fuzzing_conn::conn_session_alone`]).
#![no_main]

use libfuzzer_sys::fuzz_target;

// The harness reads /proc (descriptors, the epoll's watch list): Linux only.
fuzz_target!(|data: &[u8]| {
    #[cfg(target_os = "linux")]
    dispatch::conn::fuzzing_conn::conn_session_alone(data);
    #[cfg(not(target_os = "linux"))]
    let _ = data;
});
