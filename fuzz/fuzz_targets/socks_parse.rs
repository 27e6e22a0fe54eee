//! Arbitrary bytes, in arbitrary chunkings taken from the input, to every
//! SOCKS parser (greeting, SOCKS5 request, SOCKS4/4a, the first-byte sniff)
//! and to the handshake they make together. The properties checked are in
//! `fuzz/src/lib.rs` ([`dispatch_fuzz::check_socks`]).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| dispatch_fuzz::check_socks(data));
