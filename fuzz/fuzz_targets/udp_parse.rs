//! Arbitrary datagrams to the UDP ASSOCIATE header parser; the properties
//! are in `fuzz/src/lib.rs` ([`dispatch_fuzz::check_udp`]).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| dispatch_fuzz::check_udp(data));
