//! The state file: link capacities learned in earlier runs, so that the
//! first download after a restart is spread well from its first connection.
//! It lives beside the log file (`capacities` in the same directory), is
//! rewritten whole through a temporary file and a rename (a crash leaves the
//! old one or the new one, never half of one), and is only a hint: a
//! missing or unreadable file is said once and ignored. A file that is not
//! one (no header line: a log, a user's file named by mistake) or not a
//! regular file is left alone, never read as corrupt and replaced.
//!
//! The format, one link a line, capacity first so the label may hold spaces:
//!
//! ```text
//! # dispatch: link capacities learned (bytes/s), link label
//! 1200000 l1 10.1.0.2
//! 400000 10.3.0.2
//! ```

use std::fmt;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

/// At most this many links are kept (those seen last first).
pub const MAX_ENTRIES: usize = 64;

/// The file's first line, as written.
pub const HEADER: &str = "# dispatch: link capacities learned (bytes/s), link label";
/// What a first line must begin with for the file to be one (so that a
/// later wording of the rest of [`HEADER`] still reads older files).
const HEADER_PREFIX: &str = "# dispatch: link capacities";

/// One link's learned capacity, by its label (`eth0 192.168.1.5`, or the
/// address alone).
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub label: String,
    pub capacity: f64,
}

/// The least and the most a kept capacity may be, bytes/s: outside, the
/// line is corrupt (1 TB/s is beyond any link).
pub const CAPACITY_RANGE: std::ops::RangeInclusive<f64> = 1.0..=1e12;

/// Why a state file was not used.
#[derive(Debug)]
pub enum LoadError {
    Read(io::Error),
    /// Line `n` (from 1) is not `<bytes/s> <label>`.
    Corrupt(usize),
    /// Text that does not begin with the header: not a state file.
    Foreign,
    /// A directory, a FIFO, a device: not a regular file.
    NotAFile,
}

impl LoadError {
    /// Whether the file must be left alone (not replaced by a save): not
    /// one, or not readable (so not known to be one).
    pub fn not_ours(&self) -> bool {
        match self {
            LoadError::Foreign | LoadError::NotAFile => true,
            LoadError::Read(e) => e.kind() != io::ErrorKind::NotFound,
            LoadError::Corrupt(_) => false,
        }
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Read(e) => write!(f, "{e}"),
            LoadError::Corrupt(n) => write!(f, "line {n} is not `<bytes/s> <link>`"),
            LoadError::Foreign => write!(
                f,
                "not a dispatch state file (its first line is not `{HEADER}`)"
            ),
            LoadError::NotAFile => write!(f, "not a regular file"),
        }
    }
}

/// The file's text for `entries` (those within [`CAPACITY_RANGE`], which
/// alone [`parse`] takes back).
pub fn format(entries: &[Entry]) -> String {
    let mut out = format!("{HEADER}\n");
    let kept = entries
        .iter()
        .filter(|e| CAPACITY_RANGE.contains(&e.capacity));
    for e in kept.take(MAX_ENTRIES) {
        out.push_str(&format!("{:.0} {}\n", e.capacity, e.label));
    }
    out
}

/// The entries in a file's text, which begins with the header (or is
/// blank); blank lines and `#` comments are skipped, as is a comment
/// after an entry (`1200000 eth0 10.0.0.2  # the wired one`: a label
/// never holds ` #`).
pub fn parse(text: &str) -> Result<Vec<Entry>, LoadError> {
    if first_line(text).is_some_and(|l| !l.starts_with(HEADER_PREFIX)) {
        return Err(LoadError::Foreign);
    }
    let mut entries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = without_comment(line).trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let corrupt = || LoadError::Corrupt(n + 1);
        let (rate, label) = line.split_once(' ').ok_or_else(corrupt)?;
        let capacity: f64 = rate.parse().map_err(|_| corrupt())?;
        let label = label.trim();
        if !CAPACITY_RANGE.contains(&capacity) || label.is_empty() {
            return Err(corrupt());
        }
        entries.push(Entry {
            label: label.to_string(),
            capacity,
        });
    }
    entries.truncate(MAX_ENTRIES);
    Ok(entries)
}

/// The capacity learned for a link labelled `label`: the same label, else
/// the same interface with an address of the same family (its address
/// changed since: a new DHCP lease).
pub fn lookup(entries: &[Entry], label: &str) -> Option<f64> {
    if let Some(e) = entries.iter().find(|e| e.label == label) {
        return Some(e.capacity);
    }
    let (iface, ip) = label.split_once(' ')?;
    let v6 = ip.contains(':');
    entries
        .iter()
        .find(|e| {
            e.label
                .split_once(' ')
                .is_some_and(|(i, a)| i == iface && a.contains(':') == v6)
        })
        .map(|e| e.capacity)
}

/// `now` (the links' own, first) with the `earlier` entries of links not
/// among them: a link absent today keeps what was learned of it.
pub fn merge(now: Vec<Entry>, earlier: &[Entry]) -> Vec<Entry> {
    let mut all = now;
    for e in earlier {
        if !all.iter().any(|n| n.label == e.label) {
            all.push(e.clone());
        }
    }
    all.truncate(MAX_ENTRIES);
    all
}

/// The default place: beside the log file (`log_file`, or the platform's
/// default one for `port`), named as the log is for the instance on
/// `port` (`capacities`, or `capacities-PORT` off the default port), so
/// that instances on different ports never share one; a log itself named
/// so (`--log-file dir/capacities`, or a link to it) gets `capacities.state`
/// beside it. `None` when there is no place for the log either (no home directory).
pub fn default_path(log_file: Option<&Path>, port: u16) -> Option<PathBuf> {
    let log = match log_file {
        Some(file) => file.to_path_buf(),
        None => crate::logging::default_file(port)?,
    };
    let name = if port == crate::logging::DEFAULT_PORT {
        "capacities".to_string()
    } else {
        format!("capacities-{port}")
    };
    let path = log.parent().unwrap_or(Path::new(".")).join(&name);
    if same_file(&path, &log) {
        return Some(path.with_file_name(format!("{name}.state")));
    }
    Some(path)
}

/// Whether the file at `path` is a state file (a regular file whose first
/// line is the header): never to be used as a log.
pub fn is_state_file(path: &Path) -> bool {
    use std::io::Read;
    // Only a regular file is opened: opening a FIFO would block.
    if !fs::metadata(path).is_ok_and(|m| m.is_file()) {
        return false;
    }
    let Ok(file) = fs::File::open(path) else {
        return false;
    };
    let mut head = Vec::new();
    let _ = file.take(1024).read_to_end(&mut head);
    first_line(&String::from_utf8_lossy(&head)).is_some_and(|l| l.starts_with(HEADER_PREFIX))
}

/// The first line with text, trimmed.
fn first_line(text: &str) -> Option<&str> {
    text.lines().map(str::trim).find(|l| !l.is_empty())
}

/// `line` up to a `#` that follows a space or tab (a label never holds
/// one).
fn without_comment(line: &str) -> &str {
    let at = line
        .char_indices()
        .find(|&(i, c)| c == '#' && line[..i].ends_with([' ', '\t']));
    at.map_or(line, |(i, _)| &line[..i])
}

/// Whether the file at `path` exists and is read-only (no write permission
/// for anyone): the user froze it; its capacities are read, never replaced.
pub fn is_frozen(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().readonly())
}

/// Reads the state file (a missing one is `Read` with `NotFound`); only a
/// regular file is opened (a FIFO would block the start), and text that is
/// not UTF-8 is not one.
pub fn load(path: &Path) -> Result<Vec<Entry>, LoadError> {
    let meta = fs::metadata(path).map_err(LoadError::Read)?;
    if !meta.is_file() {
        return Err(LoadError::NotAFile);
    }
    let bytes = fs::read(path).map_err(LoadError::Read)?;
    let text = String::from_utf8(bytes).map_err(|_| LoadError::Foreign)?;
    parse(&text)
}

/// Where a save should write for `path`: the file a symbolic link points
/// to, followed through links (relative ones from the link's directory),
/// whether it exists yet or not (the rename would replace the link itself);
/// else `path`.
pub fn resolve(path: &Path) -> PathBuf {
    let mut at = path.to_path_buf();
    for _ in 0..32 {
        match fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => match fs::read_link(&at) {
                Ok(target) => {
                    at = match at.parent() {
                        Some(dir) => dir.join(target),
                        None => target,
                    };
                }
                Err(_) => break,
            },
            _ => break,
        }
    }
    at
}

/// Whether two paths name one file, existing or not yet: the same file
/// name in the same directory once symbolic links are followed (`./log`
/// and `log`, `a/../log`, a link to it, even before it or its directory
/// is created), or, both existing, one file by two hard links (Unix).
pub fn same_file(a: &Path, b: &Path) -> bool {
    place(a, 0).is_some_and(|x| Some(x) == place(b, 0)) || same_inode(a, b)
}

/// Where a file would be: its directory's real path (what exists
/// canonicalized, what does not taken as written, `..` undoing the
/// component before it), then its name, followed if it is a link. `depth`
/// bounds the links followed through a `..` out of a directory not made
/// yet into existing ones.
fn place(path: &Path, depth: u32) -> Option<PathBuf> {
    let path = std::path::absolute(resolve(path)).ok()?;
    let name = path.file_name()?;
    let parts: Vec<_> = path.parent()?.components().collect();
    let (mut real, rest) = (0..=parts.len())
        .rev()
        .find_map(|k| {
            let prefix: PathBuf = parts[..k].iter().collect();
            Some((fs::canonicalize(prefix).ok()?, &parts[k..]))
        })
        // Nothing exists (a drive not there): all as written.
        .unwrap_or((PathBuf::new(), &parts[..]));
    for part in rest {
        match part {
            Component::ParentDir => {
                real.pop();
            }
            Component::CurDir => {}
            part => real.push(part),
        }
        // Back in a directory that exists (`new/../dir`): it may be a link.
        if let Ok(existing) = fs::canonicalize(&real) {
            real = existing;
        }
    }
    let file = real.join(name);
    let followed = resolve(&file);
    if followed != file && depth < 8 {
        return place(&followed, depth + 1);
    }
    Some(file)
}

#[cfg(unix)]
fn same_inode(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_inode(_: &Path, _: &Path) -> bool {
    false
}

/// Writes the state file whole: to `<path>.tmp`, then renamed over it.
pub fn save(path: &Path, entries: &[Entry]) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    fs::write(&tmp, format(entries))?;
    // The file replaced keeps its mode (a user's 600 stays 600).
    #[cfg(unix)]
    if let Ok(old) = fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        let mode = old.permissions().mode() & 0o777;
        let _ = fs::set_permissions(&tmp, fs::Permissions::from_mode(mode));
    }
    fs::rename(&tmp, path).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(label: &str, capacity: f64) -> Entry {
        Entry {
            label: label.into(),
            capacity,
        }
    }

    #[test]
    fn format_and_parse_round_trip() {
        let entries = vec![
            entry("l1 10.1.0.2", 1_200_000.0),
            entry("10.3.0.2", 400_000.0),
        ];
        let text = format(&entries);
        assert_eq!(
            text,
            "# dispatch: link capacities learned (bytes/s), link label\n\
             1200000 l1 10.1.0.2\n\
             400000 10.3.0.2\n"
        );
        assert_eq!(parse(&text).unwrap(), entries);
    }

    #[test]
    fn a_corrupt_file_says_which_line() {
        for (text, line) in [
            ("1200000 l1 10.1.0.2\ngarbage\n", 3),
            ("12x l1\n", 2),
            ("-5 l1\n", 2),
            ("NaN l1\n", 2),
            ("inf l1\n", 2),
            ("0.4 l1\n", 2),
            ("1e300 l1\n", 2),
            ("\n# c\n1000 \n", 4),
            ("\u{0}\u{1}binary", 2),
        ] {
            let text = format!("{HEADER}\n{text}");
            match parse(&text) {
                Err(LoadError::Corrupt(n)) => assert_eq!(n, line, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
        assert_eq!(parse("").unwrap(), vec![]);
        assert_eq!(parse("\n  \n").unwrap(), vec![]);
    }

    /// A file named by mistake (the log, a user's file) is not read as a
    /// corrupt state file, which a save would then replace.
    #[test]
    fn a_file_without_the_header_is_not_ours() {
        for text in [
            "2026-12-02T12:00:00Z INFO  [dispatch] listening\n",
            "1200000 l1 10.1.0.2\n",
            "# some other comment\n1200000 l1\n",
        ] {
            let e = parse(text).unwrap_err();
            assert!(
                matches!(e, LoadError::Foreign) && e.not_ours(),
                "{text:?}: {e:?}"
            );
        }
        assert!(!LoadError::Corrupt(2).not_ours());
        assert!(!LoadError::Read(io::ErrorKind::NotFound.into()).not_ours());
        assert!(LoadError::Read(io::ErrorKind::PermissionDenied.into()).not_ours());
        // A later wording of the header still reads.
        assert_eq!(
            parse("# dispatch: link capacities (bytes/s) by link\n5 l1\n").unwrap(),
            vec![entry("l1", 5.0)]
        );
        // What parse refuses is never written.
        assert_eq!(
            format(&[entry("l1", 1e300), entry("l2", 0.4)]),
            format!("{HEADER}\n")
        );
    }

    #[test]
    fn only_a_regular_file_is_read_and_a_link_is_followed() {
        let dir =
            std::env::temp_dir().join(format!("dispatch-learned-links-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("sub")).unwrap();
        let e = load(&dir.join("sub")).unwrap_err();
        assert!(matches!(e, LoadError::NotAFile) && e.not_ours(), "{e:?}");
        let real = dir.join("real");
        save(&real, &[entry("l1", 1000.0)]).unwrap();
        #[cfg(unix)]
        {
            let link = dir.join("link");
            std::os::unix::fs::symlink(&real, &link).unwrap();
            assert_eq!(resolve(&link), real);
            save(&resolve(&link), &[entry("l1", 2000.0)]).unwrap();
            assert!(fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink());
            assert_eq!(load(&link).unwrap(), vec![entry("l1", 2000.0)]);
            // A relative link to a file not made yet, through a second link.
            std::os::unix::fs::symlink("new", dir.join("rel")).unwrap();
            std::os::unix::fs::symlink("rel", dir.join("twice")).unwrap();
            assert_eq!(resolve(&dir.join("twice")), dir.join("new"));
        }
        // Not UTF-8 (a compressed log, say): not known to be ours.
        fs::write(dir.join("bin"), [0x1f, 0x8b, 0xff, 0xfe]).unwrap();
        assert!(load(&dir.join("bin")).unwrap_err().not_ours());
        assert_eq!(resolve(&real), real);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn lookup_by_label_then_by_interface_and_family() {
        let entries = vec![
            entry("eth0 192.168.1.5", 100.0),
            entry("eth0 2001:db8::5", 200.0),
            entry("10.0.0.9", 300.0),
        ];
        assert_eq!(lookup(&entries, "eth0 192.168.1.5"), Some(100.0));
        assert_eq!(
            lookup(&entries, "eth0 192.168.1.77"),
            Some(100.0),
            "new lease"
        );
        assert_eq!(lookup(&entries, "eth0 2001:db8::9"), Some(200.0));
        assert_eq!(lookup(&entries, "10.0.0.9"), Some(300.0));
        assert_eq!(lookup(&entries, "10.0.0.8"), None);
        assert_eq!(lookup(&entries, "wlan0 192.168.1.5"), None);
    }

    #[test]
    fn merge_keeps_links_absent_today() {
        let now = vec![entry("a", 1.0)];
        let earlier = vec![entry("a", 5.0), entry("b", 2.0)];
        assert_eq!(merge(now, &earlier), [entry("a", 1.0), entry("b", 2.0)]);
    }

    #[test]
    fn save_replaces_the_file_whole() {
        let dir = std::env::temp_dir().join(format!("dispatch-learned-{}", std::process::id()));
        let path = dir.join("sub").join("capacities");
        save(&path, &[entry("a", 1.0)]).unwrap();
        save(&path, &[entry("b", 2.0)]).unwrap();
        assert_eq!(load(&path).unwrap(), [entry("b", 2.0)]);
        let missing = load(&dir.join("none"));
        assert!(
            matches!(&missing, Err(LoadError::Read(e)) if e.kind() == io::ErrorKind::NotFound),
            "{missing:?}"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_default_place_is_beside_the_log_and_never_the_log() {
        let at = |log: &str, port| default_path(Some(Path::new(log)), port).unwrap();
        assert_eq!(at("/var/log/d.log", 1080), Path::new("/var/log/capacities"));
        assert_eq!(
            at("/var/log/d.log", 1081),
            Path::new("/var/log/capacities-1081")
        );
        assert_eq!(at("/x/capacities", 1080), Path::new("/x/capacities.state"));
        assert_eq!(at("capacities-9", 9), Path::new("capacities-9.state"));
    }

    /// A log that is a symbolic link to a file named as the state file
    /// would be does not get that file as its state file.
    #[cfg(unix)]
    #[test]
    fn a_log_linked_to_capacities_keeps_its_state_elsewhere() {
        let dir = std::env::temp_dir().join(format!("dispatch-linked-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let log = dir.join("dispatch.log");
        std::os::unix::fs::symlink("capacities", &log).unwrap();
        let state = default_path(Some(&log), 1080).unwrap();
        assert_eq!(state, dir.join("capacities.state"));
        let _ = fs::remove_dir_all(&dir);
    }

    #[cfg(unix)]
    #[test]
    fn a_replaced_file_keeps_its_mode_and_a_read_only_one_is_frozen() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("dispatch-mode-{}", std::process::id()));
        let path = dir.join("capacities");
        save(&path, &[entry("a", 1.0)]).unwrap();
        assert!(!is_frozen(&path));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        save(&path, &[entry("b", 2.0)]).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o444)).unwrap();
        assert!(is_frozen(&path));
        assert!(!is_frozen(&dir.join("none")));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_comment_after_an_entry_is_not_its_label() {
        let text =
            format!("{HEADER}\n1200000 eth0 10.0.0.2  # the wired one\n400000 10.3.0.2\t#\n");
        assert_eq!(
            parse(&text).unwrap(),
            [
                entry("eth0 10.0.0.2", 1_200_000.0),
                entry("10.3.0.2", 400_000.0)
            ]
        );
    }

    #[test]
    fn a_state_file_is_known_by_its_first_line() {
        let dir = std::env::temp_dir().join(format!("dispatch-known-{}", std::process::id()));
        let path = dir.join("capacities");
        save(&path, &[entry("a", 1.0)]).unwrap();
        assert!(is_state_file(&path));
        let log = dir.join("log");
        fs::write(&log, "2026-12-02T10:00:00Z INFO dispatch listening\n").unwrap();
        assert!(!is_state_file(&log));
        fs::write(&log, "").unwrap();
        assert!(!is_state_file(&log), "an empty file may be a log");
        assert!(!is_state_file(&dir.join("none")));
        assert!(!is_state_file(&dir), "a directory");
        // A FIFO is not opened (that would wait for a writer).
        #[cfg(unix)]
        {
            let fifo = dir.join("fifo");
            let made = std::process::Command::new("mkfifo").arg(&fifo).status();
            assert!(made.is_ok_and(|s| s.success()), "mkfifo");
            assert!(!is_state_file(&fifo));
        }
        let _ = fs::remove_dir_all(&dir);
    }

    /// One file by two names is seen before either exists: through `..`
    /// (also in a directory not made yet), and through a symbolic link
    /// (dangling until the log is created); once it exists, through a hard
    /// link too.
    #[test]
    fn one_file_by_two_names_before_it_exists() {
        let dir = std::env::temp_dir().join(format!("dispatch-same-{}", std::process::id()));
        fs::create_dir_all(dir.join("x")).unwrap();
        let log = dir.join("x/log");
        assert!(same_file(&log, &dir.join("x/../x/log")));
        assert!(same_file(&dir.join("new/log"), &dir.join("new/../new/log")));
        assert!(same_file(&dir.join("new/a/../log"), &dir.join("new/log")));
        assert!(same_file(&dir.join("new/../x/log"), &log));
        #[cfg(unix)]
        {
            // Out of a directory not made yet, back through links.
            std::os::unix::fs::symlink("x", dir.join("lnkdir")).unwrap();
            assert!(same_file(&dir.join("new/../lnkdir/log"), &log));
            std::os::unix::fs::symlink("log", dir.join("x/other")).unwrap();
            assert!(same_file(&dir.join("new/../x/other"), &log));
        }
        assert!(!same_file(&dir.join("new/log"), &dir.join("new/a/log")));
        assert!(!same_file(&dir.join("new/log"), &log));
        #[cfg(unix)]
        {
            let link = dir.join("link");
            std::os::unix::fs::symlink("x/log", &link).unwrap();
            assert!(same_file(&link, &log));
        }
        assert!(!same_file(&log, &dir.join("x/state")));
        #[cfg(unix)]
        {
            fs::write(&log, "").unwrap();
            fs::hard_link(&log, dir.join("hard")).unwrap();
            assert!(same_file(&dir.join("hard"), &log));
            fs::write(dir.join("x/state"), "").unwrap();
            assert!(!same_file(&log, &dir.join("x/state")));
        }
        let _ = fs::remove_dir_all(&dir);
    }
}
