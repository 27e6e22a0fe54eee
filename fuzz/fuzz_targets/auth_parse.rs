//! Arbitrary text to the auth file, credential, HTTP Basic and address range
//! parsers; the properties are in `fuzz/src/lib.rs`
//! ([`dispatch_fuzz::check_auth`]).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| dispatch_fuzz::check_auth(data));
