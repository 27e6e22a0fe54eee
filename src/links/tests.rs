//! Unit tests of [`super`] (links.rs).

use super::*;

fn spec(ip: &str, weight: u32, iface: Option<&str>) -> LinkSpec {
    LinkSpec {
        ip: ip.parse().unwrap(),
        weight: NonZeroU32::new(weight).unwrap(),
        iface: iface.map(String::from),
        follow: iface.is_some(),
    }
}

fn links(specs: Vec<LinkSpec>) -> Links {
    Links::new(specs, &[], false)
}

const V4: &str = "192.0.2.1";

fn target() -> IpAddr {
    V4.parse().unwrap()
}

fn picks(l: &mut Links, n: usize, now: Instant) -> Vec<usize> {
    (0..n).map(|_| l.pick(target(), 0, now).unwrap()).collect()
}

#[test]
fn picks_by_weight_within_the_family() {
    let mut l = links(vec![
        spec("10.0.0.1", 2, None),
        spec("fd00::1", 1, None),
        spec("10.0.0.2", 1, None),
    ]);
    assert_eq!(picks(&mut l, 6, Instant::now()), [0, 2, 0, 0, 2, 0]);
    assert_eq!(
        l.pick("2001:db8::1".parse().unwrap(), 0, Instant::now()),
        Some(1)
    );
}

#[test]
fn tried_links_are_skipped() {
    let mut l = links(vec![spec("10.0.0.1", 1, None), spec("10.0.0.2", 1, None)]);
    let now = Instant::now();
    assert_eq!(l.pick(target(), 0b01, now), Some(1));
    assert_eq!(l.pick(target(), 0b10, now), Some(0));
    assert_eq!(l.pick(target(), 0b11, now), None);
}

#[test]
fn three_failures_in_a_row_mark_a_link_down() {
    let mut l = links(vec![spec("10.0.0.1", 1, None), spec("10.0.0.2", 1, None)]);
    let now = Instant::now();
    l.failed(1, &"timed out", now);
    l.failed(1, &"timed out", now);
    assert_eq!(l.get(1).state(), State::Up);
    l.failed(1, &"timed out", now);
    assert!(matches!(l.get(1).state(), State::Down { .. }));
    assert_eq!(picks(&mut l, 4, now), [0, 0, 0, 0]);
    assert_eq!(l.get(1).stats.failures, 3);
}

#[test]
fn a_success_resets_the_failure_count() {
    let mut l = links(vec![spec("10.0.0.1", 1, None)]);
    let now = Instant::now();
    l.failed(0, &"x", now);
    l.failed(0, &"x", now);
    l.connected(0);
    l.failed(0, &"x", now);
    l.failed(0, &"x", now);
    assert_eq!(l.get(0).state(), State::Up);
}

#[test]
fn down_link_gets_one_trial_after_backoff_then_comes_back() {
    let mut l = links(vec![spec("10.0.0.1", 1, None), spec("10.0.0.2", 1, None)]);
    let t0 = Instant::now();
    for _ in 0..3 {
        l.failed(1, &"x", t0);
    }
    let later = t0 + FIRST_BACKOFF;
    assert_eq!(l.pick(target(), 0, later), Some(1), "the trial");
    assert!(matches!(l.get(1).state(), State::Trial { .. }));
    assert_eq!(picks(&mut l, 3, later), [0, 0, 0], "one trial at a time");
    l.connected(1);
    assert_eq!(l.get(1).state(), State::Up);
    let both = picks(&mut l, 4, later);
    assert_eq!(both.iter().filter(|&&i| i == 1).count(), 2);
}

#[test]
fn failed_trial_doubles_the_backoff_up_to_the_limit() {
    let mut l = links(vec![spec("10.0.0.1", 1, None), spec("10.0.0.2", 1, None)]);
    let mut now = Instant::now();
    for _ in 0..3 {
        l.failed(1, &"x", now);
    }
    let mut expected = FIRST_BACKOFF;
    for _ in 0..6 {
        now += expected;
        assert_eq!(l.pick(target(), 0, now), Some(1));
        l.failed(1, &"x", now);
        expected = (expected * 2).min(MAX_BACKOFF);
        assert_eq!(
            l.get(1).state(),
            State::Down {
                retry_at: now + expected,
                backoff: expected
            }
        );
    }
}

#[test]
fn abandoned_trial_is_retried_by_the_next_connection() {
    let mut l = links(vec![spec("10.0.0.1", 1, None), spec("10.0.0.2", 1, None)]);
    let t0 = Instant::now();
    for _ in 0..3 {
        l.failed(1, &"x", t0);
    }
    let later = t0 + FIRST_BACKOFF;
    assert_eq!(l.pick(target(), 0, later), Some(1));
    l.abandoned(1, later);
    assert_eq!(l.pick(target(), 0, later), Some(1));
}

#[test]
fn all_down_still_tries_the_one_that_comes_back_first() {
    let mut l = links(vec![spec("10.0.0.1", 1, None), spec("10.0.0.2", 1, None)]);
    let now = Instant::now();
    for _ in 0..3 {
        l.failed(0, &"x", now);
    }
    for _ in 0..3 {
        l.failed(1, &"x", now + Duration::from_secs(1));
    }
    assert_eq!(l.pick(target(), 0, now), Some(0));
}

#[test]
fn refusal_by_the_target_ends_a_trial_as_up() {
    let mut l = links(vec![spec("10.0.0.1", 1, None)]);
    let t0 = Instant::now();
    for _ in 0..3 {
        l.failed(0, &"x", t0);
    }
    assert_eq!(l.pick(target(), 0, t0 + FIRST_BACKOFF), Some(0));
    l.reached(0);
    assert_eq!(l.get(0).state(), State::Up);
}

fn iface(name: &str, index: u32, addrs: &[&str]) -> Interface {
    Interface {
        name: name.into(),
        index,
        addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        default_route: [true, true],
        ..Interface::default()
    }
}

#[test]
fn named_link_follows_its_interface_address() {
    let mut l = Links::new(
        vec![spec("10.3.0.2", 1, Some("l3"))],
        &[iface("l3", 7, &["10.3.0.2"])],
        true,
    );
    assert_eq!(
        l.get(0).device(),
        Some(&Device {
            name: "l3".into(),
            index: 7
        })
    );
    let now = Instant::now();
    l.apply_interfaces(&[iface("l3", 7, &["10.3.0.7"])], now);
    assert_eq!(l.get(0).ip(), Some("10.3.0.7".parse().unwrap()));
    assert_eq!(l.get(0).state(), State::Up);
    // Gone, then back with a new index.
    l.apply_interfaces(&[], now);
    assert_eq!(l.get(0).ip(), None);
    assert!(matches!(l.get(0).state(), State::Down { .. }));
    assert_eq!(
        l.pick(target(), 0, now + MAX_BACKOFF),
        None,
        "no address, no pick"
    );
    l.apply_interfaces(&[iface("l3", 9, &["10.3.0.8"])], now);
    assert_eq!(l.get(0).ip(), Some("10.3.0.8".parse().unwrap()));
    assert_eq!(l.get(0).state(), State::Up);
    assert_eq!(l.get(0).device().unwrap().index, 9);
}

#[test]
fn link_given_by_address_does_not_follow() {
    let mut l = links(vec![LinkSpec {
        follow: false,
        ..spec("10.3.0.2", 1, Some("l3"))
    }]);
    l.apply_interfaces(&[iface("l3", 7, &["10.3.0.7"])], Instant::now());
    assert_eq!(l.get(0).ip(), Some("10.3.0.2".parse().unwrap()));
}

#[test]
fn labels_name_interface_and_address() {
    let l = links(vec![
        spec("10.2.0.2", 1, Some("l2")),
        spec("10.0.0.1", 1, None),
    ]);
    assert_eq!(l.get(0).label(), "l2 10.2.0.2");
    assert_eq!(l.get(1).label(), "10.0.0.1");
}

#[test]
fn link_reports_its_weight_and_family() {
    let l = links(vec![spec("10.0.0.1", 3, None), spec("fd00::1", 2, None)]);
    assert_eq!(l.get(0).weight().get(), 3);
    assert_eq!(l.get(1).weight().get(), 2);
    assert!(!l.get(0).is_ipv6());
    assert!(l.get(1).is_ipv6());
}

#[test]
fn can_reach_only_families_with_a_link() {
    let v6: IpAddr = "2001:db8::1".parse().unwrap();
    let only_v4 = links(vec![spec("10.0.0.1", 1, None)]);
    assert!(only_v4.can_reach(target()));
    assert!(!only_v4.can_reach(v6));
    let only_v6 = links(vec![spec("fd00::1", 1, None)]);
    assert!(!only_v6.can_reach(target()));
    assert!(only_v6.can_reach(v6));
    assert!(!links(vec![]).can_reach(target()));
}

#[test]
fn datagrams_take_up_links_by_weight_within_the_family() {
    let mut l = links(vec![
        spec("10.0.0.1", 2, None),
        spec("fd00::1", 1, None),
        spec("10.0.0.2", 1, None),
    ]);
    let v4: Vec<_> = (0..6)
        .map(|_| l.pick_for_datagrams(target(), Instant::now()).unwrap())
        .collect();
    assert_eq!(v4, [0, 2, 0, 0, 2, 0]);
    assert_eq!(
        l.pick_for_datagrams("2001:db8::1".parse().unwrap(), Instant::now()),
        Some(1)
    );
    let mut no_v6 = links(vec![spec("10.0.0.1", 1, None)]);
    assert_eq!(
        no_v6.pick_for_datagrams("2001:db8::1".parse().unwrap(), Instant::now()),
        None
    );
}

#[test]
fn datagrams_skip_a_down_link_and_start_no_trial() {
    let mut l = links(vec![spec("10.0.0.1", 1, None), spec("10.0.0.2", 1, None)]);
    let t0 = Instant::now();
    for _ in 0..3 {
        l.failed(1, &"x", t0);
    }
    let down = l.get(1).state();
    for _ in 0..4 {
        assert_eq!(l.pick_for_datagrams(target(), Instant::now()), Some(0));
    }
    assert_eq!(l.get(1).state(), down, "no trial from datagrams");
}

#[test]
fn datagrams_fall_back_to_a_down_link_of_the_family() {
    // The IPv6 link comes first and is up; the only IPv4 one is down.
    let mut l = links(vec![spec("fd00::1", 1, None), spec("10.0.0.1", 1, None)]);
    let now = Instant::now();
    for _ in 0..3 {
        l.failed(1, &"x", now);
    }
    assert_eq!(l.pick_for_datagrams(target(), Instant::now()), Some(1));
}

#[test]
fn a_failure_requests_one_interface_refresh() {
    let mut l = links(vec![spec("10.0.0.1", 1, None)]);
    assert!(!l.take_refresh_request(), "none before a failure");
    l.connected(0);
    l.reached(0);
    assert!(!l.take_refresh_request(), "successes ask for none");
    l.failed(0, &"x", Instant::now());
    assert!(l.take_refresh_request());
    assert!(!l.take_refresh_request(), "taken once");
}

#[test]
fn closed_counts_open_connections_down_to_zero() {
    let mut l = links(vec![spec("10.0.0.1", 1, None)]);
    l.connected(0);
    l.connected(0);
    l.closed(0);
    assert_eq!((l.get(0).stats.open, l.get(0).stats.total), (1, 2));
    l.closed(0);
    l.closed(0);
    assert_eq!(l.get(0).stats.open, 0, "never below zero");
}

#[test]
fn interface_without_address_puts_its_link_down_for_the_first_backoff() {
    let mut l = links(vec![spec("10.3.0.2", 1, Some("l3"))]);
    let now = Instant::now();
    l.apply_interfaces(&[iface("l3", 7, &[])], now);
    assert_eq!(l.get(0).ip(), None);
    assert_eq!(
        l.get(0).state(),
        State::Down {
            retry_at: now + FIRST_BACKOFF,
            backoff: FIRST_BACKOFF
        }
    );
}

fn uplinks_mode(specs: Vec<LinkSpec>, excluded: &[&str]) -> Links {
    links(specs).following(Follow {
        uplinks: Some(excluded.iter().map(|s| s.to_string()).collect()),
        named: vec![],
    })
}

fn up_links(l: &Links) -> Vec<String> {
    l.iter()
        .filter(|k| k.ip().is_some())
        .map(Link::label)
        .collect()
}

#[test]
fn an_uplink_that_appears_joins_and_takes_its_share() {
    let t = Instant::now();
    let mut l = uplinks_mode(vec![spec("10.0.0.1", 1, Some("eth0"))], &[]);
    let eth0 = iface("eth0", 1, &["10.0.0.1"]);
    let mut wlan0 = iface("wlan0", 2, &["10.0.1.1", "fe80::1"]);
    wlan0.default_route = [true, false];
    l.apply_interfaces(&[eth0, wlan0], t);
    assert_eq!(up_links(&l), ["eth0 10.0.0.1", "wlan0 10.0.1.1"]);
    let picked: Vec<usize> = picks(&mut l, 4, t);
    assert_eq!(picked.iter().filter(|&&i| i == 1).count(), 2, "{picked:?}");
}

#[test]
fn a_bridge_without_a_default_route_never_joins() {
    let t = Instant::now();
    let mut l = uplinks_mode(vec![spec("10.0.0.1", 1, Some("eth0"))], &[]);
    let mut docker0 = iface("docker0", 3, &["172.17.0.1"]);
    docker0.default_route = [false, false];
    l.apply_interfaces(&[iface("eth0", 1, &["10.0.0.1"]), docker0], t);
    assert_eq!(up_links(&l), ["eth0 10.0.0.1"]);
}

#[test]
fn an_excluded_uplink_never_joins() {
    let t = Instant::now();
    let mut l = uplinks_mode(vec![spec("10.0.0.1", 1, Some("eth0"))], &["wlan0"]);
    l.apply_interfaces(
        &[
            iface("eth0", 1, &["10.0.0.1"]),
            iface("wlan0", 2, &["10.0.1.1"]),
        ],
        t,
    );
    assert_eq!(up_links(&l), ["eth0 10.0.0.1"]);
}

#[test]
fn an_uplink_that_loses_its_default_route_leaves_and_comes_back() {
    let t = Instant::now();
    let mut l = uplinks_mode(
        vec![
            spec("10.0.0.1", 1, Some("eth0")),
            spec("10.0.1.1", 1, Some("wlan0")),
        ],
        &[],
    );
    l.links[1].stats.total = 7;
    let eth0 = iface("eth0", 1, &["10.0.0.1"]);
    let mut wlan0 = iface("wlan0", 2, &["10.0.1.1"]);
    wlan0.default_route = [false, false];
    l.apply_interfaces(&[eth0.clone(), wlan0.clone()], t);
    assert_eq!(up_links(&l), ["eth0 10.0.0.1"]);
    assert_eq!(
        picks(&mut l, 3, t),
        [0, 0, 0],
        "no new connection through it"
    );
    assert_eq!(l.get(1).stats.total, 7, "its counters stay");
    wlan0.default_route = [true, true];
    l.apply_interfaces(&[eth0.clone(), wlan0], t);
    assert_eq!(up_links(&l), ["eth0 10.0.0.1", "wlan0 10.0.1.1"]);
    // Gone altogether, then back: the same link, not a new one.
    l.apply_interfaces(std::slice::from_ref(&eth0), t);
    l.apply_interfaces(&[eth0, iface("wlan0", 9, &["10.0.1.1"])], t);
    assert_eq!(l.iter().count(), 2);
    assert_eq!(up_links(&l).len(), 2);
}

#[test]
fn a_named_interface_that_appears_after_start_gets_its_links() {
    let t = Instant::now();
    let mut l = links(vec![]).following(Follow {
        uplinks: None,
        named: vec![("usb0".into(), NonZeroU32::new(3).unwrap())],
    });
    assert!(l.pick(target(), 0, t).is_none());
    // Named interfaces need no default route.
    let mut usb0 = iface("usb0", 4, &["10.0.2.1", "2001:db8::2"]);
    usb0.default_route = [false, false];
    l.apply_interfaces(&[usb0], t);
    assert_eq!(up_links(&l), ["usb0 10.0.2.1", "usb0 2001:db8::2"]);
    assert_eq!(l.get(0).weight().get(), 3);
    assert_eq!(l.pick(target(), 0, t), Some(0));
}

#[test]
fn flaps_are_logged_twice_a_minute_then_counted() {
    let t = Instant::now();
    let mut f = Flaps::default();
    let logged: Vec<bool> = (0..5).map(|_| f.note(t).0).collect();
    assert_eq!(logged, [true, true, false, false, false]);
    let (log_it, unlogged) = f.note(t + Flaps::WINDOW);
    assert!(log_it);
    assert_eq!(unlogged, 3, "the held-back changes are said once");
}
