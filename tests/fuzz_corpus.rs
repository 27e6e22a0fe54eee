//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/seed-*`) and every
//! crash ever found (`fuzz/regressions/<target>/*`) through the same property
//! checks the fuzz targets run, on the stable toolchain, so CI covers them
//! without nightly or cargo-fuzz. Each input is also replayed byte by byte,
//! the harshest chunking.

#[path = "../fuzz/src/lib.rs"]
mod props;

use std::path::{Path, PathBuf};

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut found = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            // The corpus directory also holds what a local fuzzing run found;
            // only the committed seeds are replayed (see .gitignore).
            if dir == "corpus" && !name.starts_with("seed-") {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            found.push((path, bytes));
        }
    }
    found.sort();
    found
}

/// Runs `check` on each input, naming the input that failed.
fn replay(target: &str, min: usize, check: impl Fn(&[u8])) {
    let inputs = inputs(target);
    assert!(
        inputs.len() >= min,
        "{target}: expected at least {min} committed inputs, found {}",
        inputs.len()
    );
    for (path, bytes) in &inputs {
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(bytes)));
        if let Err(e) = run {
            std::panic::resume_unwind(Box::new(format!(
                "{}: {}",
                path.display(),
                e.downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| e.downcast_ref::<&str>().copied())
                    .unwrap_or("panic")
            )));
        }
    }
}

#[test]
fn socks_parse_corpus_holds_the_properties() {
    replay("socks_parse", 24, |data| {
        props::check_socks(data);
        // The same message, one byte per read.
        let (_, msg) = props::split_input(data);
        props::check_socks(&props::make_input(&[1], msg));
    });
}

#[test]
fn http_parse_corpus_holds_the_properties() {
    replay("http_parse", 10, |data| {
        props::check_http(data);
        let (_, msg) = props::split_input(data);
        props::check_http(&props::make_input(&[1], msg));
    });
}

#[test]
fn udp_parse_corpus_holds_the_properties() {
    replay("udp_parse", 5, props::check_udp);
}

#[test]
fn auth_parse_corpus_holds_the_properties() {
    replay("auth_parse", 5, props::check_auth);
}

#[test]
fn addr_spec_corpus_holds_the_properties() {
    replay("addr_spec", 8, props::check_addr_spec);
}

#[test]
fn upstream_parse_corpus_holds_the_properties() {
    replay("upstream_parse", 10, |data| {
        props::check_upstream(data);
        props::check_upstream_parsers(data.get(2..).unwrap_or(&[]));
        // The same replies, one byte per read.
        if data.len() >= 2 {
            let mut bytewise = data.to_vec();
            bytewise[1] = 1;
            props::check_upstream(&bytewise);
        }
    });
}

#[test]
fn the_chunking_layout_is_what_the_docs_say() {
    // Chunks of 2 then 3 bytes, repeated, over a 7-byte message.
    let input = props::make_input(&[2, 3], b"abcdefg");
    assert_eq!(
        props::split_input(&input),
        (vec![2, 5, 7, 7], &b"abcdefg"[..])
    );
    // No lengths: the whole message at once.
    assert_eq!(props::split_input(&[0, 5, 1, 0]), (vec![3], &[5, 1, 0][..]));
    // Only empty reads: they are kept (each must answer `Partial`), then the rest.
    assert_eq!(props::split_input(&[2, 0, 0, 5]), (vec![0, 0, 1], &[5][..]));
    assert_eq!(props::split_input(&[]), (vec![0], &[][..]));
}
