//! Arbitrary bytes, in arbitrary chunkings taken from the input, to the HTTP
//! proxy's head parsers and body framing; the properties are in
//! `fuzz/src/lib.rs` ([`dispatch_fuzz::check_http`]).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| dispatch_fuzz::check_http(data));
