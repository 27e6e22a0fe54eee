//! Link health from evidence about the link, and the link that can reach a
//! target (issue 10), on the three-link topology of tests/links.rs (root
//! only; see tests/common/topology.rs).
//!
//! - Dead peers (the router silently drops their SYNs) beside live
//!   transfers take no link down, and each is given up after two links.
//! - A cut link (far end down, or every SYN dropped) is still marked
//!   down within seconds, without a client failing, and comes back.
//! - A server on 127.0.0.1 is reached at once, through no link, by a proxy
//!   with one link; a LAN target goes only through the link on its subnet.

#![cfg(target_os = "linux")]

mod common;

use common::topology::*;
use common::*;
use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Addresses routed into inet, where a blackhole route drops them without
/// a word: peers that never answer.
const DEAD_NET: &str = "10.99.0.0/16";

fn dead_peer(k: usize) -> SocketAddr {
    SocketAddr::from(([10, 99, (k / 250) as u8, (k % 250 + 1) as u8], 6881))
}

/// One SOCKS5 CONNECT from home to `target`: the reply code and the
/// seconds it took.
fn connect_reply(t: &Topology, proxy: SocketAddr, target: SocketAddr) -> Result<(u8, f64), String> {
    in_ns(&t.home_fd, || {
        let mut s = TcpStream::connect_timeout(&proxy, IO_TIMEOUT)
            .map_err(|e| format!("connect to proxy: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(&GREETING)
            .map_err(|e| format!("greeting: {e}"))?;
        let mut m = [0u8; 2];
        std::io::Read::read_exact(&mut s, &mut m).map_err(|e| format!("method: {e}"))?;
        let start = Instant::now();
        s.write_all(&socks5_request(0x01, &Dest::Addr(target)))
            .map_err(|e| format!("request: {e}"))?;
        let reply = read_reply5(&mut s).map_err(|e| format!("reply: {e}"))?;
        Ok((reply.rep, start.elapsed().as_secs_f64()))
    })
}

/// The links each connection's failed attempts to addresses starting with
/// `prefix` went through, by connection id (`#7`).
fn failed_links_by_conn(log: &str, prefix: &str) -> BTreeMap<String, Vec<String>> {
    let mut by: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in failed_attempts(log, None) {
        let Some(at) = line.find(" connect to ") else {
            continue;
        };
        let Some(id) = line[..at].rsplit(' ').next().filter(|w| w.starts_with('#')) else {
            continue;
        };
        let rest = &line[at + " connect to ".len()..];
        if !rest.starts_with(prefix) {
            continue;
        }
        let via = rest
            .split(" through link ")
            .nth(1)
            .or_else(|| rest.split(" from ").nth(1))
            .and_then(|v| v.split(" failed: ").next())
            .unwrap_or("?");
        by.entry(id.to_string()).or_default().push(via.to_string());
    }
    by
}

/// Hundreds of dead peers (SYNs silently dropped by the router), 30 at a
/// time, beside a steady stream of live transfers: every live transfer
/// completes, no link is ever logged down or counted a failure, and each
/// dead peer is answered (TTL expired) after exactly two links' tries.
#[test]
fn dead_peers_take_no_link_down() {
    if !require_root("dead_peers_take_no_link_down") {
        return;
    }
    const DEAD: usize = 210;
    const PARALLEL: usize = 30;
    let t = Topology::new("hs");
    t.inet.ip(&["route", "add", "blackhole", DEAD_NET]);
    let server = t.exchange_server();
    let proxy = t.proxy(&["--connect-timeout", "2", "l1", "l2", "l3"]);
    let started = Instant::now();
    let done = AtomicBool::new(false);
    let (dead, live) = thread::scope(|s| {
        let live = s.spawn(|| {
            let mut seen = Vec::new();
            while !done.load(Ordering::Relaxed) || seen.len() < 12 {
                seen.push(exchange_ok(&t, &proxy, &server, 100_000, 300_000));
                thread::sleep(Duration::from_millis(50));
            }
            seen
        });
        let workers: Vec<_> = (0..PARALLEL)
            .map(|w| {
                let (t, proxy) = (&t, proxy.addr);
                s.spawn(move || {
                    (w..DEAD)
                        .step_by(PARALLEL)
                        .map(|k| (k, connect_reply(t, proxy, dead_peer(k))))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let dead: Vec<_> = workers
            .into_iter()
            .flat_map(|w| w.join().expect("dead-peer worker"))
            .collect();
        done.store(true, Ordering::Relaxed);
        (dead, live.join().expect("live transfers"))
    });
    let secs = started.elapsed().as_secs_f64();
    let log = proxy.stdout();
    let tail30 = || tail(&log, 30);
    let times: Vec<f64> = dead
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .map(|r| r.1)
        .collect();
    let max = times.iter().copied().fold(0.0, f64::max);
    let mean = times.iter().sum::<f64>() / times.len().max(1) as f64;
    eprintln!(
        "swarm: {DEAD} dead peers ({PARALLEL} at a time) and {} live transfers in {secs:.1} s; \
         dead answered after {mean:.2} s on average, {max:.2} s at most",
        live.len()
    );
    for (k, r) in &dead {
        match r {
            Ok((rep, _)) if *rep == rep::TTL_EXPIRED => {}
            other => panic!(
                "dead peer {} should be answered TTL expired: {other:?}\n{}",
                dead_peer(*k),
                tail30()
            ),
        }
    }
    let down = lines_with(&log, " down:");
    assert!(down.is_empty(), "dead peers took links down: {down:#?}");
    let tries = failed_links_by_conn(&log, "10.99.");
    assert_eq!(
        tries.len(),
        DEAD,
        "connections with failed attempts to dead peers"
    );
    for (id, links) in &tries {
        let mut distinct = links.clone();
        distinct.sort();
        distinct.dedup();
        assert!(
            links.len() == 2 && distinct.len() == 2,
            "{id}: a dead peer is tried through exactly two links, got {links:?}"
        );
    }
    let out = proxy.finish();
    for i in 1..=3u8 {
        let label = format!("l{i} {}", home_ip(i));
        let sums = link_summaries(&out.stdout, &label);
        assert!(!sums.is_empty(), "no exit summary for {label}");
        for s in sums {
            assert_eq!(
                (s.state.as_str(), s.failures),
                ("up", 0),
                "dead peers are not link failures: {label} {s:?}"
            );
        }
    }
}

/// How link 2 is cut, and restored.
struct Cut {
    what: &'static str,
    cut: fn(&Topology),
    restore: fn(&Topology),
}

/// Its far end (r2) set down: home's SYNs go nowhere, and after about 3 s
/// the gateway's address does not resolve (host unreachable).
const VETH_DOWN: Cut = Cut {
    what: "r2 down",
    cut: |t| t.inet.ip(&["link", "set", "dev", "r2", "down"]),
    restore: |t| t.inet.ip(&["link", "set", "dev", "r2", "up"]),
};

/// Every TCP packet arriving on r2 dropped by a blackhole rule (ARP is
/// still answered, so the gateway stays resolved): pure silence, nothing
/// comes back, not even an error, until the connect timeout. The rule is
/// put before the local table, which is moved after it.
const DROP_TCP: Cut = Cut {
    what: "TCP blackholed on r2",
    cut: |t| {
        t.inet
            .ip(&["rule", "add", "pref", "100", "lookup", "local"]);
        t.inet.ip(&["rule", "del", "pref", "0"]);
        t.inet.ip(&[
            "rule",
            "add",
            "pref",
            "50",
            "iif",
            "r2",
            "ipproto",
            "tcp",
            "blackhole",
        ]);
    },
    restore: |t| t.inet.ip(&["rule", "del", "pref", "50"]),
};

/// Link 2 cut under the default 10 s connect timeout, with clients coming
/// one after another: it is marked down within a few seconds, because a
/// connection it leaves unanswered is raced through another link after
/// about a second, which then reaches the server. No client fails or
/// waits a connect timeout. Restored, it comes back.
fn cut_link_is_down_within_seconds(tag: &str, how: Cut) {
    let t = Topology::new(tag);
    let server = t.exchange_server();
    let proxy = t.proxy(&["l1", "l2", "l3"]);
    let l2 = home_ip(2);
    exchanges(&t, &proxy, &server, 6);

    (how.cut)(&t);
    let cut = Instant::now();
    let down_line = "link l2 10.2.0.2 down:";
    let mut during: Vec<Exchanged> = Vec::new();
    while !proxy.stdout().contains(down_line) {
        assert!(
            cut.elapsed() < Duration::from_secs(40),
            "{}: no {down_line:?} within 40 s of the cut\n{}",
            how.what,
            tail(&proxy.stdout(), 30)
        );
        let e = exchange_ok(&t, &proxy, &server, 100, 100);
        assert_ne!(e.peer.ip(), l2, "a connection got through the cut link 2");
        during.push(e);
    }
    let took = cut.elapsed().as_secs_f64();
    let connect: Vec<f64> = during.iter().map(|e| e.connect_secs).collect();
    eprintln!(
        "{}: link 2 down {took:.2} s after the cut, {} connections, connect secs {connect:.2?}",
        how.what,
        during.len()
    );
    assert!(
        took < 8.0,
        "{}: link 2 went down {took:.2} s after the cut (want a few seconds); connect secs {connect:.2?}",
        how.what
    );
    assert!(
        connect.iter().all(|&s| s < 5.0),
        "{}: a client waited for a connect timeout: {connect:.2?}",
        how.what
    );
    let log = proxy.stdout();
    let downs = lines_with(&log, " down:");
    assert!(
        downs.iter().all(|l| l.contains(down_line)),
        "only link 2 should go down: {downs:?}"
    );

    (how.restore)(&t);
    let up_line = "link l2 10.2.0.2 up";
    let restored = Instant::now();
    while !proxy.stdout().contains(up_line) {
        assert!(
            restored.elapsed() < Duration::from_secs(60),
            "{}: no {up_line:?} within 60 s of restoring link 2\n{}",
            how.what,
            tail(&proxy.stdout(), 30)
        );
        exchange_ok(&t, &proxy, &server, 100, 100);
        thread::sleep(Duration::from_millis(200));
    }
    let by = count_by_ip(
        exchanges(&t, &proxy, &server, 9)
            .iter()
            .map(|e| e.peer.ip()),
    );
    assert!(
        (2..=4).contains(&count_of(&by, l2)),
        "link 2 is up again and should carry about a third of 9 connections: {by:?}"
    );
    proxy.finish();
}

#[test]
fn a_cut_link_is_down_within_seconds_and_no_client_notices() {
    if !require_root("a_cut_link_is_down_within_seconds_and_no_client_notices") {
        return;
    }
    cut_link_is_down_within_seconds("hc", VETH_DOWN);
}

#[test]
fn a_link_that_drops_every_syn_is_down_within_seconds() {
    if !require_root("a_link_that_drops_every_syn_is_down_within_seconds") {
        return;
    }
    cut_link_is_down_within_seconds("hd", DROP_TCP);
}

/// Checks that a proxy reached `server` `n` times at once, from `from`,
/// with no failed attempt and no link down.
fn reaches_at_once(t: &Topology, proxy: &Proxy, server: &NsServer, n: usize, from: IpAddr) {
    let seen = exchanges(t, proxy, server, n);
    let log = proxy.stdout();
    for e in &seen {
        assert_eq!(
            e.peer.ip(),
            from,
            "source the server saw\n{}",
            tail(&log, 20)
        );
        assert!(
            e.connect_secs < 2.0,
            "connected after {:.3} s, not at once\n{}",
            e.connect_secs,
            tail(&log, 20)
        );
    }
    let failed = failed_attempts(&log, None);
    assert!(failed.is_empty(), "failed attempts: {failed:#?}");
    let down = lines_with(&log, " down:");
    assert!(down.is_empty(), "links went down: {down:#?}");
}

/// A machine with one link (l1; l2 and l3 removed) and a server on
/// 127.0.0.1: `dispatch start` with no address, and with `l1`, connects to
/// it at once, through no link (not device-bound to l1, where it would
/// time out), and l1 is not blamed.
#[test]
fn a_one_link_machine_reaches_its_own_loopback_at_once() {
    if !require_root("a_one_link_machine_reaches_its_own_loopback_at_once") {
        return;
    }
    let t = Topology::new("ho");
    t.home.ip(&["link", "del", "dev", "l2"]);
    t.home.ip(&["link", "del", "dev", "l3"]);
    let server = NsServer::wrap(&t.home_fd, |_| {
        Server::start("127.0.0.1:0", exchange_handler)
    });
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    for args in [&[][..], &["l1"][..]] {
        let proxy = t.proxy(args);
        reaches_at_once(&t, &proxy, &server, 4, lo);
        let out = proxy.finish();
        let label = format!("l1 {}", home_ip(1));
        let sums = link_summaries(&out.stdout, &label);
        assert!(!sums.is_empty(), "{args:?}: no exit summary for {label}");
        for s in sums {
            assert_eq!(
                (s.state.as_str(), s.connections, s.failures),
                ("up", 0, 0),
                "{args:?}: loopback connections do not use l1: {s:?}"
            );
        }
    }
}

/// A LAN on a fourth interface, l4 (10.4.0.0/24, a server on 10.4.0.1 in
/// its own namespace, nothing routes there from inet): given `l1 l2 l3
/// l4`, every connection to the LAN server leaves by l4 at once (not
/// through the others, where it could only fail over); with no address
/// given, l4 (no default route) is no link at all, and the LAN server is
/// reached through none.
#[test]
fn a_lan_target_leaves_only_by_the_link_on_its_subnet() {
    if !require_root("a_lan_target_leaves_only_by_the_link_on_its_subnet") {
        return;
    }
    let t = Topology::new("hn");
    let lan = Netns::new("hnl");
    t.home.ip(&[
        "link", "add", "name", "l4", "type", "veth", "peer", "name", "e0", "netns", &lan.name,
    ]);
    t.home.ip(&["addr", "add", "10.4.0.2/24", "dev", "l4"]);
    lan.ip(&["addr", "add", "10.4.0.1/24", "dev", "e0"]);
    t.home.ip(&["link", "set", "dev", "l4", "up"]);
    lan.ip(&["link", "set", "dev", "e0", "up"]);
    let lan_fd = open_ns(&lan);
    let server = NsServer::wrap(&lan_fd, |_| Server::start("10.4.0.1:0", exchange_handler));
    let l4: IpAddr = "10.4.0.2".parse().unwrap();

    let proxy = t.proxy(&["--connect-timeout", "2", "l1", "l2", "l3", "l4"]);
    reaches_at_once(&t, &proxy, &server, 8, l4);
    let out = proxy.finish();
    for i in 1..=3u8 {
        let label = format!("l{i} {}", home_ip(i));
        for s in link_summaries(&out.stdout, &label) {
            assert_eq!(
                (s.connections, s.failures),
                (0, 0),
                "the LAN is not behind {label}: {s:?}"
            );
        }
    }
    let sums = link_summaries(&out.stdout, "l4 10.4.0.2");
    assert!(
        sums.iter().any(|s| s.connections == 8),
        "l4 carried the 8 LAN connections: {sums:?}"
    );

    let proxy = t.proxy(&["--connect-timeout", "2"]);
    reaches_at_once(&t, &proxy, &server, 4, l4);
    proxy.finish();
}
