//! Logging: debug logs to stdout with `-d`, otherwise a size-capped log file
//! at the platform's usual place (stderr when that cannot be opened).

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use log::{LevelFilter, Log, Metadata, Record};

/// Past this size the log file is moved to `<name>.1` and a new one begun.
const MAX_LOG_BYTES: u64 = 10 * 1024 * 1024;

/// Where log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Stdout,
    File(PathBuf),
    Stderr,
}

/// The port whose instance logs to plain `dispatch.log`; an instance on
/// another port has its own file, so instances never share one.
pub const DEFAULT_PORT: u16 = 1080;

/// Installs the global logger. Call once, before anything logs. Without
/// `debug`, lines go to `file`, else to the platform's place for the
/// instance listening on `port` (see [`log_path`]).
pub fn init(debug: bool, file: Option<PathBuf>, port: u16) -> Destination {
    if debug {
        let logger = simple_logger::SimpleLogger::new()
            .with_level(LevelFilter::Debug)
            .env()
            // Local time needs the UTC offset, which `time` refuses to read
            // once threads exist.
            .with_utc_timestamps();
        let _ = logger.init();
        return Destination::Stdout;
    }
    let level = level_from(std::env::var("RUST_LOG").ok().as_deref());
    let path = file.or_else(|| log_path(|key| std::env::var_os(key), port));
    let file = match path {
        Some(path) => RotatingFile::open(path.clone(), MAX_LOG_BYTES)
            .map_err(|e| format!("cannot open {}: {e}", path.display())),
        None => Err("no home directory to put it in".to_string()),
    };
    let (sink, destination, failure): (Box<dyn Write + Send>, _, _) = match file {
        Ok(file) => {
            let path = file.path.clone();
            (Box::new(file), Destination::File(path), None)
        }
        Err(err) => (Box::new(io::stderr()), Destination::Stderr, Some(err)),
    };
    if log::set_boxed_logger(Box::new(LineLogger {
        level,
        sink: Mutex::new(sink),
    }))
    .is_ok()
    {
        log::set_max_level(level);
    }
    if let Some(err) = failure {
        log::warn!("no log file ({err}); logging to stderr");
    }
    flush_on_panic();
    destination
}

/// Puts a panic in the log and writes out the buffered lines before it.
fn flush_on_panic() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        log::error!("{info}");
        log::logger().flush();
        previous(info);
    }));
}

/// `RUST_LOG` as a plain level name; anything else means info.
fn level_from(value: Option<&str>) -> LevelFilter {
    value
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(LevelFilter::Info)
}

/// The log file of the instance on `port` when none is given, from the
/// environment.
pub fn default_file(port: u16) -> Option<PathBuf> {
    log_path(|key| std::env::var_os(key), port)
}

/// The log file's path for this platform and the instance on `port`
/// (`dispatch.log` on the default port, `dispatch-PORT.log` on another),
/// reading the environment through `var`.
fn log_path(var: impl Fn(&str) -> Option<OsString>, port: u16) -> Option<PathBuf> {
    let absolute = |key: &str| var(key).map(PathBuf::from).filter(|p| p.is_absolute());
    let dir = if cfg!(windows) {
        absolute("LOCALAPPDATA")?.join("dispatch").join("logs")
    } else if cfg!(target_os = "macos") {
        absolute("HOME")?.join("Library/Logs/dispatch")
    } else {
        match absolute("XDG_STATE_HOME") {
            Some(state) => state.join("dispatch"),
            None => absolute("HOME")?.join(".local/state/dispatch"),
        }
    };
    Some(dir.join(if port == DEFAULT_PORT {
        "dispatch.log".to_string()
    } else {
        format!("dispatch-{port}.log")
    }))
}

/// Writes `timestamp LEVEL message` lines, each flushed at once: the file
/// is followed with `tail -F` while dispatch runs, and info lines are few
/// (transitions, a summary a minute, rate-limited failures).
struct LineLogger {
    level: LevelFilter,
    sink: Mutex<Box<dyn Write + Send>>,
}

impl Log for LineLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format!(
            "{} {:<5} {}\n",
            utc_timestamp(SystemTime::now()),
            record.level(),
            record.args()
        );
        // A poisoned lock only means another thread panicked mid-line.
        let mut sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        // A full disk must not take the proxy down: drop the line.
        let _ = sink.write_all(line.as_bytes());
        let _ = sink.flush();
    }

    fn flush(&self) {
        let _ = self.sink.lock().unwrap_or_else(|e| e.into_inner()).flush();
    }
}

/// An append-only file that, past `limit` bytes, is renamed to `<path>.1`
/// (replacing the previous one) and started afresh: at most ~2×limit on disk.
struct RotatingFile {
    path: PathBuf,
    /// `None` after a failed reopen; lines are dropped until one succeeds.
    file: Option<BufWriter<File>>,
    size: u64,
    limit: u64,
}

impl RotatingFile {
    fn open(path: PathBuf, limit: u64) -> io::Result<RotatingFile> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let file = append(&path)?;
        let size = file.metadata()?.len();
        Ok(RotatingFile {
            path,
            file: Some(BufWriter::new(file)),
            size,
            limit,
        })
    }

    fn rotate(&mut self) {
        if let Some(mut file) = self.file.take() {
            let _ = file.flush();
        } // closed here: Windows cannot rename an open file
        let mut old = self.path.clone().into_os_string();
        old.push(".1");
        let _ = fs::rename(&self.path, old);
        self.size = 0;
        self.file = append(&self.path).ok().map(BufWriter::new);
    }
}

fn append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.size >= self.limit || self.file.is_none() {
            self.rotate();
        }
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("log file closed"))?;
        let n = file.write(buf)?;
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().map_or(Ok(()), |f| f.flush())
    }
}

/// `2024-05-01T12:34:56.789Z`
fn utc_timestamp(now: SystemTime) -> String {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March-based
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use log::Level;
    use std::time::Duration;

    #[test]
    fn calendar() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(59), (1970, 3, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn timestamps() {
        let at = |ms: u64| utc_timestamp(UNIX_EPOCH + Duration::from_millis(ms));
        assert_eq!(at(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(1_709_251_199_999), "2024-02-29T23:59:59.999Z");
        assert_eq!(at(1_714_566_896_789), "2024-05-01T12:34:56.789Z");
    }

    #[test]
    fn levels() {
        assert_eq!(level_from(None), LevelFilter::Info);
        assert_eq!(level_from(Some("debug")), LevelFilter::Debug);
        assert_eq!(level_from(Some("WARN")), LevelFilter::Warn);
        assert_eq!(level_from(Some("off")), LevelFilter::Off);
        assert_eq!(level_from(Some("dispatch=trace")), LevelFilter::Info);
    }

    #[cfg(unix)]
    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<OsString> {
        move |key| {
            vars.iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[cfg(all(unix, not(target_os = "macos")))]
    #[test]
    fn unix_log_path() {
        let path = log_path(
            env(&[("HOME", "/home/u"), ("XDG_STATE_HOME", "/state")]),
            DEFAULT_PORT,
        );
        assert_eq!(path, Some(PathBuf::from("/state/dispatch/dispatch.log")));
        let path = log_path(
            env(&[("HOME", "/home/u"), ("XDG_STATE_HOME", "relative")]),
            DEFAULT_PORT,
        );
        assert_eq!(
            path,
            Some(PathBuf::from("/home/u/.local/state/dispatch/dispatch.log"))
        );
        assert_eq!(log_path(env(&[]), DEFAULT_PORT), None);
        // Another port, another file: instances never share one.
        let path = log_path(env(&[("XDG_STATE_HOME", "/state")]), 1081);
        assert_eq!(
            path,
            Some(PathBuf::from("/state/dispatch/dispatch-1081.log"))
        );
    }

    #[cfg(target_os = "macos")]
    #[test]
    fn macos_log_path() {
        let path = log_path(env(&[("HOME", "/Users/u")]), DEFAULT_PORT);
        assert_eq!(
            path,
            Some(PathBuf::from("/Users/u/Library/Logs/dispatch/dispatch.log"))
        );
    }

    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("dispatch-test-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn rotates_past_the_limit() {
        let dir = scratch_dir("rotate");
        let path = dir.join("nested").join("dispatch.log");
        let mut file = RotatingFile::open(path.clone(), 10).unwrap();
        file.write_all(b"first 12345\n").unwrap(); // 12 bytes: over the limit
        file.write_all(b"second\n").unwrap(); // rotates first
        file.write_all(b"third\n").unwrap();
        file.flush().unwrap();
        assert_eq!(
            fs::read_to_string(dir.join("nested/dispatch.log.1")).unwrap(),
            "first 12345\n"
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), "second\nthird\n");
        file.write_all(b"fourth\n").unwrap(); // replaces the old .1
        file.flush().unwrap();
        assert_eq!(
            fs::read_to_string(dir.join("nested/dispatch.log.1")).unwrap(),
            "second\nthird\n"
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), "fourth\n");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reopening_counts_the_existing_size() {
        let dir = scratch_dir("reopen");
        let path = dir.join("dispatch.log");
        drop(RotatingFile::open(path.clone(), 1000).unwrap());
        fs::write(&path, "x".repeat(20)).unwrap();
        let mut file = RotatingFile::open(path.clone(), 10).unwrap();
        file.write_all(b"new\n").unwrap();
        file.flush().unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new\n");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn logger_writes_lines_at_its_level() {
        let dir = scratch_dir("logger");
        let path = dir.join("dispatch.log");
        let file = RotatingFile::open(path.clone(), MAX_LOG_BYTES).unwrap();
        let logger = LineLogger {
            level: LevelFilter::Info,
            sink: Mutex::new(Box::new(file)),
        };
        let line = |level, msg: &str| {
            logger.log(
                &Record::builder()
                    .level(level)
                    .args(format_args!("{msg}"))
                    .build(),
            );
        };
        line(Level::Info, "hello");
        line(Level::Debug, "hidden");
        line(Level::Warn, "careful"); // flushes
        let text = fs::read_to_string(&path).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].ends_with("Z INFO  hello"), "{text}");
        assert!(lines[1].ends_with("Z WARN  careful"), "{text}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
