//! Feeds arbitrary bytes to every SOCKS parser, whole and in chunks taken
//! from the input, and checks properties, not just the absence of panics:
//! - a parser never claims more bytes than it was given;
//! - feeding a growing prefix gives the same answer as feeding it all at once
//!   (the first prefix that completes or fails is the whole-input answer);
//! - a parsed request, written back by `Request::emit`, parses to itself.
#![no_main]

use dispatch::socks::{self, consts, ParseError, Status};
use libfuzzer_sys::fuzz_target;

fn check<T: PartialEq + std::fmt::Debug>(
    data: &[u8],
    cuts: &[usize],
    parse: impl Fn(&[u8]) -> Result<Status<T>, ParseError>,
) {
    let whole = parse(data);
    if let Ok(Status::Complete(_, n)) = &whole {
        assert!(*n <= data.len() && *n > 0);
    }
    // Growing prefixes, as reads would deliver them.
    let mut seen_final = false;
    for &cut in cuts.iter().chain(std::iter::once(&data.len())) {
        let r = parse(&data[..cut]);
        match r {
            Ok(Status::Partial) => assert!(!seen_final, "partial after a final answer"),
            Ok(Status::Complete(ref m, n)) => {
                assert!(n <= cut);
                // A complete message is complete at any longer length too.
                match &whole {
                    Ok(Status::Complete(w, wn)) => assert!(w == m && *wn == n),
                    other => panic!("prefix complete but whole gives {other:?}"),
                }
                seen_final = true;
            }
            Err(e) => {
                assert_eq!(whole.as_ref().err(), Some(&e), "prefix error differs from whole");
                seen_final = true;
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, data)) = data.split_first() else { return };
    // Chunk boundaries derived from the first byte.
    let step = usize::from(seed % 16) + 1;
    let cuts: Vec<usize> = (0..data.len()).step_by(step).collect();
    check(data, &cuts, socks::parse_greeting);
    check(data, &cuts, socks::parse_request);
    check(data, &cuts, socks::parse_socks4);
    for parse in [socks::parse_request, socks::parse_socks4] {
        if let Ok(Status::Complete(req, _)) = parse(data) {
            let mut out = [0u8; consts::MAX_REQUEST_LEN + 256];
            let n = req.emit(&mut out);
            assert_eq!(parse(&out[..n]), Ok(Status::Complete(req, n)));
        }
    }
});
