//! Arbitrary text to the command line's `ADDRESS[/WEIGHT]` parser; the
//! properties are in `fuzz/src/lib.rs` ([`dispatch_fuzz::check_addr_spec`]).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| dispatch_fuzz::check_addr_spec(data));
