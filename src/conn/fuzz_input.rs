//! What the connection fuzz targets share: the input read as a script, a
//! byte at a time, and bytes that tell where they came from.

/// The fuzz input, read a byte at a time; zeros once it runs out.
pub struct Input<'a>(std::slice::Iter<'a, u8>);

impl Input<'_> {
    pub fn new(data: &[u8]) -> Input<'_> {
        Input(data.iter())
    }

    /// Whether it has run out.
    pub fn done(&self) -> bool {
        self.0.len() == 0
    }

    pub fn byte(&mut self) -> u8 {
        self.0.next().copied().unwrap_or(0)
    }

    pub fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[usize::from(self.byte()) % from.len()]
    }

    pub fn one_in(&mut self, n: u8) -> bool {
        self.byte() % n == n - 1
    }

    /// A body or chunk size: mostly small, up to about 56 KiB (past a ring).
    pub fn size(&mut self) -> usize {
        match self.byte() {
            b @ 0..200 => usize::from(b),
            b => usize::from(b - 200) * 1024 + usize::from(self.byte()),
        }
    }
}

/// `len` bytes that tell where they came from: order and mix-ups show.
pub fn pattern(len: usize, seed: usize) -> Vec<u8> {
    pattern_at(0, len, seed)
}

/// Bytes `start..start + len` of [`pattern`]'s stream for `seed`, without
/// making the ones before them.
pub fn pattern_at(start: usize, len: usize, seed: usize) -> Vec<u8> {
    (start..start + len)
        .map(|i| ((seed * 37 + i) % 251) as u8)
        .collect()
}

/// Replays a connection fuzz target's committed seeds
/// (`fuzz/corpus/<target>/seed-*`) and every crash it found
/// (`fuzz/regressions/<target>/*`) through `run`, naming the input that
/// fails; at least `min` of them must be there.
#[cfg(test)]
pub fn replay_committed(target: &str, min: usize, run: impl Fn(&[u8])) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for e in entries {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            // What a local fuzzing run added is not committed: seeds only.
            if dir == "corpus" && !name.starts_with("seed-") {
                continue;
            }
            let data = std::fs::read(&path).unwrap();
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&data)));
            assert!(ran.is_ok(), "{} fails", path.display());
            n += 1;
        }
    }
    assert!(n >= min, "expected the committed {target} seeds, found {n}");
}
