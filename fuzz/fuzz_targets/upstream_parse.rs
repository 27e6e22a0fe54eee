//! Arbitrary upstream proxy replies to our side of the handshake with a
//! proxy link; the properties are in `fuzz/src/lib.rs`
//! ([`dispatch_fuzz::check_upstream`]).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    dispatch_fuzz::check_upstream(data);
    dispatch_fuzz::check_upstream_parsers(data.get(2..).unwrap_or(&[]));
});
