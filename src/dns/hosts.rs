//! Names answered without asking a nameserver: address literals,
//! `localhost` and its subdomains (RFC 6761), and the hosts file.
//!
//! The hosts file is read at start and again when its modification time or
//! size changes, looked at no more often than [`Hosts::CHECK_EVERY`], so a
//! lookup costs no system call. With `ip netns exec` the namespace's own
//! `/etc/netns/NAME/hosts` is bind-mounted on `/etc/hosts`, so reading
//! `/etc/hosts` is right there too.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

/// Name (lower case) → its addresses, in the order the file lists them.
pub type Table = HashMap<String, Vec<IpAddr>>;

/// Parses hosts-file text: `ADDRESS NAME [ALIAS...]` per line, `#` starts a
/// comment. Lines whose address does not parse (a zone index such as
/// `fe80::1%eth0`, a typo) are skipped. A name listed on several lines gets
/// every address, each once.
pub fn parse(text: &str) -> Table {
    let mut table = Table::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut fields = line.split_whitespace();
        let Some(Ok(ip)) = fields.next().map(str::parse::<IpAddr>) else {
            continue;
        };
        for name in fields {
            let addrs = table.entry(name.to_ascii_lowercase()).or_default();
            if !addrs.contains(&ip) {
                addrs.push(ip);
            }
        }
    }
    table
}

/// The name as the hosts file and the `localhost` rule see it: lower case,
/// without one trailing dot.
fn normal(host: &str) -> String {
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

/// Answers `host` from `table` or the fixed rules, or `None` if a
/// nameserver must be asked.
pub fn answer(host: &str, table: &Table) -> Option<Vec<IpAddr>> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Some(vec![ip]);
    }
    let name = normal(host);
    if let Some(addrs) = table.get(&name) {
        return Some(addrs.clone());
    }
    if name == "localhost" || name.ends_with(".localhost") {
        return Some(vec![
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ]);
    }
    None
}

/// The hosts file's table, kept current.
pub struct Hosts {
    path: PathBuf,
    table: Table,
    /// Modification time and size when last read.
    stamp: Option<(SystemTime, u64)>,
    checked: Option<Instant>,
}

impl Hosts {
    /// How often, at most, the file is looked at again.
    pub const CHECK_EVERY: Duration = Duration::from_secs(2);

    /// Reads `path` now; a missing or unreadable file is an empty table.
    pub fn load(path: PathBuf, now: Instant) -> Hosts {
        let mut hosts = Hosts {
            path,
            table: Table::new(),
            stamp: None,
            checked: None,
        };
        hosts.refresh(now);
        hosts
    }

    /// Re-reads the file if it changed, when [`Hosts::CHECK_EVERY`] has
    /// passed since the last look.
    pub fn refresh(&mut self, now: Instant) {
        if self
            .checked
            .is_some_and(|t| now.saturating_duration_since(t) < Self::CHECK_EVERY)
        {
            return;
        }
        self.checked = Some(now);
        let stamp = std::fs::metadata(&self.path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())));
        if stamp == self.stamp {
            return;
        }
        self.stamp = stamp;
        self.table = match std::fs::read_to_string(&self.path) {
            Ok(text) => parse(&text),
            Err(e) => {
                if stamp.is_some() {
                    log::warn!("cannot read {}: {e}", self.path.display());
                }
                Table::new()
            }
        };
        log::debug!("read {}: {} names", self.path.display(), self.table.len());
    }

    pub fn table(&self) -> &Table {
        &self.table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parse_takes_names_and_aliases_and_skips_comments_and_junk() {
        let table = parse(
            "# a comment\n\
             127.0.0.1\tlocalhost\n\
             ::1 localhost ip6-localhost   # trailing comment\n\
             192.0.2.7 Files.Test alias.test\n\
             fe80::1%eth0 zoned.test\n\
             not-an-ip broken.test\n\
             10.0.0.1\n\
             \n\
             192.0.2.8 files.test\n\
             192.0.2.7 files.test\n",
        );
        assert_eq!(table["localhost"], vec![ip("127.0.0.1"), ip("::1")]);
        assert_eq!(table["ip6-localhost"], vec![ip("::1")]);
        assert_eq!(table["files.test"], vec![ip("192.0.2.7"), ip("192.0.2.8")]);
        assert_eq!(table["alias.test"], vec![ip("192.0.2.7")]);
        assert!(!table.contains_key("zoned.test"));
        assert!(!table.contains_key("broken.test"));
        assert_eq!(table.len(), 4);
    }

    #[test]
    fn answer_covers_literals_hosts_and_localhost_only() {
        let table = parse("192.0.2.7 files.test\n127.0.0.2 localhost\n");
        assert_eq!(answer("192.0.2.9", &table), Some(vec![ip("192.0.2.9")]));
        assert_eq!(
            answer("[2001:db8::1]", &table),
            Some(vec![ip("2001:db8::1")])
        );
        assert_eq!(answer("FILES.test.", &table), Some(vec![ip("192.0.2.7")]));
        // The file's own localhost line wins over the fixed rule.
        assert_eq!(answer("localhost", &table), Some(vec![ip("127.0.0.2")]));
        let both = Some(vec![ip("127.0.0.1"), ip("::1")]);
        assert_eq!(answer("a.b.LocalHost", &table), both);
        assert_eq!(answer("localhost", &Table::new()), both);
        assert_eq!(answer("notlocalhost", &table), None);
        assert_eq!(answer("example.test", &table), None);
    }

    #[test]
    fn refresh_rereads_a_changed_file_no_more_often_than_allowed() {
        let path = std::env::temp_dir().join(format!("dispatch-hosts-{}", std::process::id()));
        std::fs::write(&path, "192.0.2.1 one.test\n").unwrap();
        let t = Instant::now();
        let mut hosts = Hosts::load(path.clone(), t);
        assert!(hosts.table().contains_key("one.test"));
        // A different size, so the change shows even within one mtime tick.
        std::fs::write(&path, "192.0.2.2 two.test\n192.0.2.3 three.test\n").unwrap();
        hosts.refresh(t + Hosts::CHECK_EVERY / 2);
        assert!(hosts.table().contains_key("one.test"), "looked too early");
        hosts.refresh(t + Hosts::CHECK_EVERY);
        assert!(hosts.table().contains_key("two.test"));
        assert!(!hosts.table().contains_key("one.test"));
        std::fs::remove_file(&path).unwrap();
        hosts.refresh(t + Hosts::CHECK_EVERY * 2);
        assert!(hosts.table().is_empty(), "a removed file answers nothing");
    }
}
