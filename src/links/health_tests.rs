//! Link health from evidence: [`Links::broken`] and [`Links::failed`], and
//! which links can reach a target ([`Links::reach`]).

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Instant;

use super::*;
use crate::iface::Net;

fn links(ips: &[&str]) -> Links {
    let specs = ips
        .iter()
        .map(|ip| LinkSpec {
            ip: ip.parse().unwrap(),
            weight: NonZeroU32::MIN,
            iface: None,
            follow: false,
        })
        .collect();
    Links::new(specs, &[], false)
}

#[test]
fn a_link_the_system_cannot_send_through_is_down_at_once() {
    let mut l = links(&["10.0.0.1", "10.0.0.2"]);
    let now = Instant::now();
    l.broken(1, &"network unreachable", now);
    assert_eq!(
        l.get(1).state(),
        State::Down {
            retry_at: now + FIRST_BACKOFF,
            backoff: FIRST_BACKOFF
        }
    );
    assert_eq!(l.get(1).stats.failures, 1);
    assert!(l.take_refresh_request(), "its address may be gone");
    l.broken(1, &"again", now + FIRST_BACKOFF / 2);
    assert_eq!(
        l.get(1).state(),
        State::Down {
            retry_at: now + FIRST_BACKOFF,
            backoff: FIRST_BACKOFF
        },
        "a down link stays as it is"
    );
}

#[test]
fn a_broken_trial_doubles_the_backoff() {
    let mut l = links(&["10.0.0.1", "10.0.0.2"]);
    let t0 = Instant::now();
    l.broken(1, &"x", t0);
    let later = t0 + FIRST_BACKOFF;
    let target = "192.0.2.1".parse().unwrap();
    assert_eq!(l.pick(target, 0, later), Some(1), "the trial");
    l.broken(1, &"x", later);
    assert_eq!(
        l.get(1).state(),
        State::Down {
            retry_at: later + FIRST_BACKOFF * 2,
            backoff: FIRST_BACKOFF * 2
        }
    );
}

#[test]
fn silence_others_reached_takes_three_marks_in_a_row() {
    let mut l = links(&["10.0.0.1", "10.0.0.2"]);
    let now = Instant::now();
    l.failed(0, &"no answer", now);
    l.failed(0, &"no answer", now);
    assert_eq!(l.get(0).state(), State::Up);
    l.failed(0, &"no answer", now);
    assert!(matches!(l.get(0).state(), State::Down { .. }));
}

fn with_lan() -> Links {
    let eth0 = Interface {
        name: "eth0".into(),
        index: 2,
        addrs: vec!["192.168.1.5".parse().unwrap()],
        nets: vec![Net {
            addr: "192.168.1.5".parse().unwrap(),
            prefix: 24,
        }],
        default_route: [true, false],
    };
    let specs = vec![
        LinkSpec {
            ip: "192.168.1.5".parse().unwrap(),
            weight: NonZeroU32::MIN,
            iface: Some("eth0".into()),
            follow: true,
        },
        LinkSpec {
            ip: "100.64.0.9".parse().unwrap(),
            weight: NonZeroU32::MIN,
            iface: Some("wwan0".into()),
            follow: true,
        },
    ];
    Links::new(specs, &[eth0], false)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn reach_uses_the_interfaces_given_at_start_and_follows_new_ones() {
    let mut l = with_lan();
    assert_eq!(l.reach(addr("192.168.1.20:631")), Reach::Only(0b01));
    assert_eq!(l.reach(addr("127.0.0.1:80")), Reach::Direct);
    assert_eq!(l.reach(addr("192.0.2.1:80")), Reach::Any);
    l.apply_interfaces(&[], Instant::now());
    assert_eq!(
        l.reach(addr("192.168.1.20:631")),
        Reach::Any,
        "the LAN is gone"
    );
}

#[test]
fn this_machine_can_be_reached_without_a_link_of_its_family() {
    let l = links(&["10.0.0.1"]);
    assert!(l.can_reach("::1".parse().unwrap()), "loopback, directly");
    assert!(!l.can_reach("2001:db8::1".parse().unwrap()));
}

#[test]
fn with_links_on_loopback_this_machine_needs_one_of_its_family() {
    let l = links(&["127.0.0.2"]);
    assert!(l.can_reach("127.0.0.1".parse().unwrap()));
    assert!(
        !l.can_reach("::1".parse().unwrap()),
        "no IPv6 link on loopback"
    );
}
