//! A [`Snapshot`] as text: the Prometheus text exposition format (version
//! 0.0.4) for `GET /metrics`, and JSON for `GET /status`. Pure: snapshot
//! in, text out.
//!
//! Every family is written once, with its `# HELP` and `# TYPE` lines, its
//! samples together after them, in a fixed order; counters end in
//! `_total`; label values are escaped (`\\`, `\"`, `\n`).

use std::fmt::{Display, Write as _};

use serde_json::{json, Value};

use super::{Snapshot, DNS_LIMIT};

/// The content type of [`prometheus`]'s text.
pub const PROMETHEUS_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The content type of [`json`]'s text.
pub const JSON_TYPE: &str = "application/json";

/// Writes families one after the other.
struct Text {
    out: String,
}

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

/// A label value as the format wants it: backslash, double quote and line
/// feed escaped.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// HELP text: backslash and line feed escaped.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

fn family_of(ipv6: bool) -> &'static str {
    if ipv6 {
        "ipv6"
    } else {
        "ipv4"
    }
}

/// A float as the format reads it (Go's `ParseFloat`): `0.25`, `1200000`.
fn float(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else if v.is_nan() {
        "NaN".into()
    } else if v > 0.0 {
        "+Inf".into()
    } else {
        "-Inf".into()
    }
}

/// `GET /metrics`.
pub fn prometheus(s: &Snapshot) -> String {
    let mut t = Text { out: String::new() };
    t.family(
        "dispatch_info",
        "gauge",
        "The running dispatch, by version and how it balances (always 1).",
    );
    t.sample(
        "dispatch_info",
        &[("version", s.version), ("balance", s.balance.name())],
        1,
    );
    let start = s
        .started
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    t.family(
        "dispatch_start_time_seconds",
        "gauge",
        "When the proxy started, in seconds since the Unix epoch.",
    );
    t.sample(
        "dispatch_start_time_seconds",
        &[],
        float(start.as_secs_f64()),
    );

    links(&mut t, s);
    totals(&mut t, s);

    let name = "dispatch_requests_total";
    t.family(
        name,
        "counter",
        "Requests clients made, by protocol and command.",
    );
    for (r, n) in s.counters.requests() {
        let (protocol, command) = r.labels();
        t.sample(name, &[("protocol", protocol), ("command", command)], n);
    }
    let name = "dispatch_error_replies_total";
    t.family(
        name,
        "counter",
        "Error answers the proxy gave clients: SOCKS reply codes, HTTP statuses.",
    );
    for (e, n) in s.counters.error_replies() {
        let (protocol, code, reason) = e.labels();
        let labels = [("protocol", protocol), ("code", &code), ("reason", &reason)];
        t.sample(name, &labels, n);
    }
    let name = "dispatch_limit_hits_total";
    t.family(
        name,
        "counter",
        "Clients or requests turned away by a limit.",
    );
    for (l, n) in s.counters.limits() {
        t.sample(name, &[("limit", l.label())], n);
    }
    t.sample(name, &[("limit", DNS_LIMIT)], s.dns.refused);

    dns(&mut t, s);
    t.out
}

fn links(t: &mut Text, s: &Snapshot) {
    let per_link =
        |t: &mut Text, name: &str, kind: &str, help: &str, value: &dyn Fn(usize) -> u64| {
            t.family(name, kind, help);
            for (i, l) in s.links.iter().enumerate() {
                let labels = [("link", l.link.as_str()), ("family", family_of(l.ipv6))];
                t.sample(name, &labels, value(i));
            }
        };
    let l = &s.links;
    per_link(
        t,
        "dispatch_link_up",
        "gauge",
        "1 while the link is up, 0 while down or on trial.",
        &|i| u64::from(l[i].state == "up"),
    );
    t.family(
        "dispatch_link_state",
        "gauge",
        "The link's state: 1 for the one it is in (up, down, trial).",
    );
    for link in l {
        for state in ["up", "down", "trial"] {
            let labels = [
                ("link", link.link.as_str()),
                ("family", family_of(link.ipv6)),
                ("state", state),
            ];
            t.sample(
                "dispatch_link_state",
                &labels,
                u64::from(link.state == state),
            );
        }
    }
    per_link(
        t,
        "dispatch_link_connections_open",
        "gauge",
        "Connections (and UDP associations) open through the link.",
        &|i| l[i].stats.open,
    );
    per_link(
        t,
        "dispatch_link_connections_total",
        "counter",
        "Connections (and UDP associations) made through the link.",
        &|i| l[i].stats.total,
    );
    per_link(
        t,
        "dispatch_link_failures_total",
        "counter",
        "Connects through the link that failed.",
        &|i| l[i].stats.failures,
    );
    let name = "dispatch_link_bytes_total";
    t.family(
        name,
        "counter",
        "Bytes the link carried: up (sent to targets) and down (received from them), \
         TCP and UDP.",
    );
    for link in l {
        for (dir, v) in [("up", link.stats.bytes_up), ("down", link.stats.bytes_down)] {
            let labels = [
                ("link", link.link.as_str()),
                ("family", family_of(link.ipv6)),
                ("direction", dir),
            ];
            t.sample(name, &labels, v);
        }
    }
    let name = "dispatch_link_datagrams_total";
    t.family(name, "counter", "UDP datagrams relayed through the link.");
    for link in l {
        for (dir, v) in [("up", link.stats.udp_up), ("down", link.stats.udp_down)] {
            let labels = [
                ("link", link.link.as_str()),
                ("family", family_of(link.ipv6)),
                ("direction", dir),
            ];
            t.sample(name, &labels, v);
        }
    }
    let name = "dispatch_link_capacity_bytes_per_second";
    t.family(
        name,
        "gauge",
        "The capacity learned for the link (links with one only).",
    );
    for link in l {
        if let Some(c) = link.capacity {
            let labels = [
                ("link", link.link.as_str()),
                ("family", family_of(link.ipv6)),
            ];
            t.sample(name, &labels, float(c));
        }
    }
    let name = "dispatch_link_connect_seconds";
    t.family(
        name,
        "gauge",
        "Smoothed time a connect through the link takes (links with one measured).",
    );
    for link in l {
        if let Some(rtt) = link.connect_rtt {
            let labels = [
                ("link", link.link.as_str()),
                ("family", family_of(link.ipv6)),
            ];
            t.sample(name, &labels, float(rtt.as_secs_f64()));
        }
    }
}

fn totals(t: &mut Text, s: &Snapshot) {
    t.family(
        "dispatch_connections_open",
        "gauge",
        "Client connections open now.",
    );
    t.sample("dispatch_connections_open", &[], s.connections_open);
    t.family(
        "dispatch_connections_total",
        "counter",
        "Client connections accepted.",
    );
    t.sample("dispatch_connections_total", &[], s.connections_total);
    t.family(
        "dispatch_udp_associations_open",
        "gauge",
        "UDP associations open now.",
    );
    t.sample("dispatch_udp_associations_open", &[], s.associations_open);
    let (up, down) = s.bytes();
    let name = "dispatch_bytes_total";
    t.family(name, "counter", "Bytes every link carried, up and down.");
    t.sample(name, &[("direction", "up")], up);
    t.sample(name, &[("direction", "down")], down);
}

fn dns(t: &mut Text, s: &Snapshot) {
    let d = &s.dns;
    let name = "dispatch_dns_lookups_total";
    t.family(
        name,
        "counter",
        "Names looked up, by what answered: local (literal, localhost, hosts file), \
         system (getaddrinfo), joined (a lookup of the name in flight), \
         negative-cache (a failure of the last seconds), refused (the client's cap).",
    );
    for (by, n) in [
        ("local", d.local),
        ("system", d.system),
        ("joined", d.joined),
        ("negative-cache", d.negative),
        ("refused", d.refused),
    ] {
        t.sample(name, &[("answered_by", by)], n);
    }
    t.family(
        "dispatch_dns_failures_total",
        "counter",
        "System lookups that failed or expired in the queue.",
    );
    t.sample("dispatch_dns_failures_total", &[], d.failed);
    let name = "dispatch_dns_lookup_duration_seconds";
    t.family(name, "histogram", "How long system lookups took.");
    let bucket = format!("{name}_bucket");
    for (le, n) in d.latency.cumulative() {
        let le = le.map_or_else(|| "+Inf".to_string(), float);
        t.sample(&bucket, &[("le", &le)], n);
    }
    t.sample(&format!("{name}_sum"), &[], float(d.latency.sum_seconds()));
    t.sample(&format!("{name}_count"), &[], d.latency.count());
}

/// `GET /status`: the same as JSON.
pub fn json(s: &Snapshot) -> String {
    let links: Vec<Value> = s
        .links
        .iter()
        .map(|l| {
            json!({
                "link": l.link,
                "family": family_of(l.ipv6),
                "state": l.state,
                "connections_open": l.stats.open,
                "connections_total": l.stats.total,
                "failures": l.stats.failures,
                "bytes_up": l.stats.bytes_up,
                "bytes_down": l.stats.bytes_down,
                "datagrams_up": l.stats.udp_up,
                "datagrams_down": l.stats.udp_down,
                "udp_destinations": l.stats.udp_pinned,
                "capacity_bytes_per_second": l.capacity,
                "connect_seconds": l.connect_rtt.map(|d| d.as_secs_f64()),
            })
        })
        .collect();
    let requests: Vec<Value> = s
        .counters
        .requests()
        .map(|(r, n)| {
            let (protocol, command) = r.labels();
            json!({"protocol": protocol, "command": command, "count": n})
        })
        .collect();
    let errors: Vec<Value> = s
        .counters
        .error_replies()
        .into_iter()
        .map(|(e, n)| {
            let (protocol, code, reason) = e.labels();
            json!({"protocol": protocol, "code": code, "reason": reason, "count": n})
        })
        .collect();
    let mut limits = serde_json::Map::new();
    for (l, n) in s.counters.limits() {
        limits.insert(l.label().into(), n.into());
    }
    limits.insert(DNS_LIMIT.into(), s.dns.refused.into());
    let (up, down) = s.bytes();
    let d = &s.dns;
    let doc = json!({
        "version": s.version,
        "listen": s.listen.to_string(),
        "uptime_seconds": s.uptime.as_secs(),
        "balance": s.balance.name(),
        "links": links,
        "totals": {
            "connections_open": s.connections_open,
            "connections_total": s.connections_total,
            "udp_associations_open": s.associations_open,
            "bytes_up": up,
            "bytes_down": down,
        },
        "requests": requests,
        "error_replies": errors,
        "limit_hits": limits,
        "dns": {
            "lookups": {
                "local": d.local,
                "system": d.system,
                "joined": d.joined,
                "negative-cache": d.negative,
                "refused": d.refused,
            },
            "failures": d.failed,
            "lookup_seconds": {"count": d.latency.count(), "sum": d.latency.sum_seconds()},
        },
    });
    let mut text = doc.to_string();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::Strategy;
    use crate::links::Stats;
    use crate::metrics::{Counters, ErrorReply, LinkRow, Request};
    use crate::socks::Reply;
    use std::collections::HashSet;
    use std::time::{Duration, SystemTime};

    fn snapshot() -> Snapshot {
        let row = |link: &str, ipv6, state| LinkRow {
            link: link.into(),
            ipv6,
            state,
            stats: Stats {
                open: 2,
                total: 7,
                bytes_up: 100,
                bytes_down: 2_000,
                ..Stats::default()
            },
            capacity: None,
            connect_rtt: None,
        };
        let mut counters = Counters::default();
        counters.request(Request::Socks5Connect);
        counters.error_reply(ErrorReply::Socks(Reply::ConnectionRefused));
        counters.error_reply(ErrorReply::Http(502));
        let mut dns = crate::dns::Stats {
            system: 1,
            ..Default::default()
        };
        dns.latency.observe(Duration::from_millis(3));
        let mut snap = Snapshot {
            version: "0.1.0",
            listen: "127.0.0.1:1080".parse().unwrap(),
            started: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            uptime: Duration::from_secs(5),
            balance: Strategy::Learn,
            links: vec![
                row("eth0 10.0.0.2", false, "up"),
                row("wl\"an\\0\n 10.0.1.2", false, "down"),
                row("eth0 2001:db8::2", true, "trial"),
            ],
            connections_open: 4,
            connections_total: 21,
            associations_open: 0,
            counters,
            dns,
        };
        snap.links[0].capacity = Some(1_250_000.5);
        snap.links[0].connect_rtt = Some(Duration::from_millis(20));
        snap
    }

    /// `(name, labels text)` of a sample, or `(name, type)` of a family.
    type Pair = (String, String);

    /// `(name, labels text)` of each sample line, and the families in the
    /// order declared.
    fn parse(text: &str) -> (Vec<Pair>, Vec<Pair>) {
        let mut samples = Vec::new();
        let mut families = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                families.push((name.to_string(), kind.to_string()));
            } else if !line.starts_with('#') {
                let end = line.find(['{', ' ']).unwrap();
                let labels_end = line.rfind(' ').unwrap();
                samples.push((line[..end].to_string(), line[end..labels_end].to_string()));
            }
        }
        (samples, families)
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("a\nb"), "a\\nb");
        let text = prometheus(&snapshot());
        assert!(
            text.contains(r#"dispatch_link_up{link="wl\"an\\0\n 10.0.1.2",family="ipv4"} 0"#),
            "{text}"
        );
        assert_eq!(escape_help("a\\b\nc"), "a\\\\b\\nc");
    }

    #[test]
    fn each_family_is_declared_once_with_its_samples_after_it() {
        let text = prometheus(&snapshot());
        let (samples, families) = parse(&text);
        let names: HashSet<&str> = families.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.len(), families.len(), "a family twice:\n{text}");
        // Each sample belongs to the family declared last before it.
        let mut current = String::new();
        let mut kind = String::new();
        let mut seen_samples = 0;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (n, k) = rest.split_once(' ').unwrap();
                (current, kind) = (n.to_string(), k.to_string());
            } else if !line.starts_with('#') {
                let (name, _) = &samples[seen_samples];
                seen_samples += 1;
                let ok = match kind.as_str() {
                    "histogram" => [
                        format!("{current}_bucket"),
                        format!("{current}_sum"),
                        format!("{current}_count"),
                    ]
                    .contains(name),
                    _ => *name == current,
                };
                assert!(ok, "{name} under {current}:\n{text}");
            }
        }
        for (name, kind) in &families {
            assert!(name.starts_with("dispatch_"), "{name}");
            assert_eq!(kind == "counter", name.ends_with("_total"), "{name} {kind}");
        }
        // No two samples alike (name and labels).
        let unique: HashSet<&(String, String)> = samples.iter().collect();
        assert_eq!(unique.len(), samples.len(), "{text}");
    }

    #[test]
    fn families_come_in_a_fixed_order() {
        let (_, families) = parse(&prometheus(&snapshot()));
        let order: Vec<&str> = families.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(order[0], "dispatch_info");
        let pos = |n: &str| order.iter().position(|&o| o == n).unwrap();
        assert!(pos("dispatch_link_up") < pos("dispatch_connections_open"));
        assert!(pos("dispatch_requests_total") < pos("dispatch_error_replies_total"));
        assert_eq!(order.last(), Some(&"dispatch_dns_lookup_duration_seconds"));
        // The same snapshot gives the same text.
        assert_eq!(prometheus(&snapshot()), prometheus(&snapshot()));
    }

    #[test]
    fn values_follow_the_snapshot() {
        let text = prometheus(&snapshot());
        for want in [
            r#"dispatch_link_bytes_total{link="eth0 10.0.0.2",family="ipv4",direction="up"} 100"#,
            r#"dispatch_link_state{link="eth0 2001:db8::2",family="ipv6",state="trial"} 1"#,
            r#"dispatch_link_capacity_bytes_per_second{link="eth0 10.0.0.2",family="ipv4"} 1250000.5"#,
            r#"dispatch_link_connect_seconds{link="eth0 10.0.0.2",family="ipv4"} 0.02"#,
            r#"dispatch_bytes_total{direction="down"} 6000"#,
            r#"dispatch_requests_total{protocol="socks5",command="connect"} 1"#,
            r#"dispatch_error_replies_total{protocol="socks",code="5",reason="connection refused"} 1"#,
            r#"dispatch_error_replies_total{protocol="http",code="502",reason="Bad Gateway"} 1"#,
            r#"dispatch_limit_hits_total{limit="dns-lookups-per-client"} 0"#,
            r#"dispatch_dns_lookup_duration_seconds_bucket{le="0.001"} 0"#,
            r#"dispatch_dns_lookup_duration_seconds_bucket{le="0.005"} 1"#,
            r#"dispatch_dns_lookup_duration_seconds_bucket{le="+Inf"} 1"#,
            "dispatch_dns_lookup_duration_seconds_count 1",
            "dispatch_start_time_seconds 1700000000",
        ] {
            assert!(text.lines().any(|l| l == want), "no {want}:\n{text}");
        }
        // A link with no learned capacity has no capacity sample.
        assert!(!text.contains(r#"dispatch_link_capacity_bytes_per_second{link="eth0 2001"#));
    }

    #[test]
    fn json_has_the_same_figures() {
        let v: Value = serde_json::from_str(&json(&snapshot())).unwrap();
        assert_eq!(v["links"][1]["link"], "wl\"an\\0\n 10.0.1.2");
        assert_eq!(v["links"][0]["capacity_bytes_per_second"], 1_250_000.5);
        assert_eq!(v["links"][1]["capacity_bytes_per_second"], Value::Null);
        assert_eq!(v["links"][2]["family"], "ipv6");
        assert_eq!(v["totals"]["bytes_down"], 6000);
        assert_eq!(v["totals"]["connections_total"], 21);
        assert_eq!(v["error_replies"][1]["code"], "502");
        assert_eq!(v["limit_hits"]["client-connections"], 0);
        assert_eq!(v["dns"]["lookup_seconds"]["count"], 1);
    }
}
