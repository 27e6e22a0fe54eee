//! Building the configuration from a command line, against a made-up
//! machine's interfaces and a bind test that needs no sockets.

use super::*;
use crate::cli::WeightedAddr;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn machine() -> Vec<Interface> {
    let iface = |name: &str, addrs: &[&str]| Interface {
        name: name.into(),
        index: 0,
        addrs: addrs.iter().map(|a| ip(a)).collect(),
        default_route: [true, true],
        ..Interface::default()
    };
    vec![
        iface("lo", &["127.0.0.1", "::1"]),
        iface("eth0", &["192.168.1.5", "fe80::1", "2001:db8::5"]),
        iface("wlan0", &["10.0.0.7"]),
        iface("tun0", &["fe80::9"]),
    ]
}

/// Binds whatever the machine above has, plus all of 127/8.
fn fake_bind(ip: IpAddr) -> io::Result<()> {
    let local = machine().iter().any(|i| i.addrs.contains(&ip));
    if local || ip.is_loopback() {
        Ok(())
    } else {
        Err(io::ErrorKind::AddrNotAvailable.into())
    }
}

fn args(addresses: &[&str]) -> StartArgs {
    StartArgs {
        ip: ip("127.0.0.1"),
        port: 0,
        handshake_timeout: Duration::from_millis(500),
        connect_timeout: Duration::from_secs(3),
        bind_timeout: Duration::from_secs(120),
        idle_timeout: Duration::from_secs(7440),
        stall_timeout: Duration::from_secs(300),
        response_timeout: Duration::from_secs(120),
        drain_timeout: Duration::from_secs(30),
        max_client_connections: 16384,
        max_client_associations: 64,
        udp_idle_timeout: Duration::from_secs(120),
        udp_max_destinations: 4096,
        no_bind_device: false,
        exclude: vec![],
        quiet: false,
        auth: vec![],
        auth_file: None,
        allow: vec![],
        balance: None,
        state_file: None,
        no_state_file: false,
        log_file: None,
        metrics: None,
        addresses: addresses
            .iter()
            .map(|a| a.parse::<WeightedAddr>().unwrap())
            .collect(),
    }
}

fn build_from(addresses: &[&str]) -> Result<Config, ConfigError> {
    build(&args(addresses), &machine(), fake_bind)
}

#[test]
fn learning_is_the_default_unless_a_weight_is_written() {
    let strategy = |addresses: &[&str], flag: Option<cli::Balance>| {
        let mut a = args(addresses);
        a.balance = flag;
        build(&a, &machine(), fake_bind).unwrap().balance
    };
    assert_eq!(strategy(&[], None), Strategy::Learn);
    assert_eq!(strategy(&["eth0"], None), Strategy::Learn);
    assert_eq!(strategy(&["eth0/1"], None), Strategy::Weights);
    assert_eq!(
        strategy(&["eth0/7"], Some(cli::Balance::Learn)),
        Strategy::Learn
    );
    assert_eq!(
        strategy(&["eth0"], Some(cli::Balance::Weights)),
        Strategy::Weights
    );
}

#[test]
fn the_state_file_can_be_moved_or_left_out() {
    let mut a = args(&[]);
    a.state_file = Some(PathBuf::from("/x/caps"));
    let path = build(&a, &machine(), fake_bind).unwrap().state_file;
    assert_eq!(path, Some(PathBuf::from("/x/caps")));
    a.log_file = Some(PathBuf::from("/x/caps"));
    let e = build(&a, &machine(), fake_bind).unwrap_err();
    assert!(matches!(e, ConfigError::StateFileIsLog(_)), "{e}");
    // Named differently, the same file.
    a.log_file = Some(PathBuf::from("caps"));
    a.state_file = Some(PathBuf::from("./caps"));
    let e = build(&a, &machine(), fake_bind).unwrap_err();
    assert!(matches!(e, ConfigError::StateFileIsLog(_)), "{e}");
    a.no_state_file = true;
    a.state_file = None;
    assert_eq!(build(&a, &machine(), fake_bind).unwrap().state_file, None);
}

/// A proxy link that is this dispatch itself is refused: it would make
/// one request into connections without end.
#[test]
fn a_proxy_link_to_this_very_dispatch_is_refused() {
    let mut a = args(&["socks5h://127.0.0.1:1080"]);
    a.port = 1080;
    let e = build(&a, &machine(), fake_bind).unwrap_err();
    assert!(matches!(e, ConfigError::ProxyIsSelf(_)), "{e}");
    a.ip = ip("0.0.0.0");
    a.addresses = args(&["socks5://10.0.0.7:1080"]).addresses;
    let e = build(&a, &machine(), fake_bind).unwrap_err();
    assert!(matches!(e, ConfigError::ProxyIsSelf(_)), "{e}");
    // Another port, or another machine's address, is another proxy.
    a.addresses = args(&["socks5://127.0.0.1:1081"]).addresses;
    assert!(build(&a, &machine(), fake_bind).is_ok());
    a.ip = ip("127.0.0.1");
    a.addresses = args(&["socks5://127.0.0.2:1080"]).addresses;
    assert!(build(&a, &machine(), fake_bind).is_ok());
}

/// A loopback interface named is refused (it reaches nothing beyond
/// the machine), as README says; its addresses given as such are not.
#[test]
fn a_loopback_interface_is_refused_by_name_not_by_address() {
    let e = build(&args(&["lo"]), &machine(), fake_bind).unwrap_err();
    assert!(
        matches!(e, ConfigError::LoopbackInterface(ref n) if n == "lo"),
        "{e}"
    );
    assert!(e.to_string().contains("give it (as 127.0.0.2)"), "{e}");
    assert!(build(&args(&["127.0.0.1"]), &machine(), fake_bind).is_ok());
}

/// Dotted digits that are no address are a typo, not an interface that
/// might appear later.
#[test]
fn dotted_digits_that_are_no_address_are_refused() {
    for typo in ["999.1.1.1", "10.0.0", "1.2.3.4.5"] {
        let e = build(&args(&[typo]), &machine(), fake_bind).unwrap_err();
        assert!(matches!(e, ConfigError::NotAnAddress(_)), "{typo}: {e}");
    }
    // A name with a dot and letters is still an interface name.
    assert!(build(&args(&["eth0.100"]), &machine(), fake_bind).is_ok());
}

/// A scoped address is no interface name: link-local is refused as
/// such, a scope on another address is no address.
#[test]
fn a_scoped_address_is_not_taken_for_an_interface() {
    let e = build(&args(&["fe80::1%eth0"]), &machine(), fake_bind).unwrap_err();
    assert!(matches!(e, ConfigError::LinkLocal(_)), "{e}");
    for other in ["2001:db8::1%eth0", "10.0.0.1%eth0"] {
        let e = build(&args(&[other]), &machine(), fake_bind).unwrap_err();
        assert!(matches!(e, ConfigError::NotAnAddress(_)), "{other}: {e}");
    }
}

/// By default the state file is beside the log file, and an instance
/// on another port has its own, as it has its own log.
#[test]
fn the_state_file_is_beside_the_log_and_the_instance_own() {
    let mut a = args(&[]);
    a.port = 1080;
    a.log_file = Some(PathBuf::from("/var/log/mine/d.log"));
    let path = build(&a, &machine(), fake_bind).unwrap().state_file;
    assert_eq!(path, Some(PathBuf::from("/var/log/mine/capacities")));
    a.port = 1081;
    let path = build(&a, &machine(), fake_bind).unwrap().state_file;
    assert_eq!(path, Some(PathBuf::from("/var/log/mine/capacities-1081")));
}

/// A target given as an IP (does not follow its interface).
fn target(addr: &str, weight: u32, iface: Option<&str>) -> LinkSpec {
    LinkSpec {
        ip: ip(addr),
        weight: NonZeroU32::new(weight).unwrap(),
        iface: iface.map(String::from),
        follow: false,
    }
}

/// A target given by interface name (follows its address).
fn named(addr: &str, weight: u32, iface: &str) -> LinkSpec {
    LinkSpec {
        follow: true,
        ..target(addr, weight, Some(iface))
    }
}

#[test]
fn copies_the_plain_fields() {
    let config = build_from(&["127.0.0.1"]).unwrap();
    assert_eq!(config.listen, "127.0.0.1:0".parse().unwrap());
    assert_eq!(config.handshake_timeout, Duration::from_millis(500));
    assert_eq!(config.connect_timeout, Duration::from_secs(3));
    assert!(config.bind_device);
}

#[test]
fn ips_keep_their_weight_and_find_their_interface() {
    let config = build_from(&["192.168.1.5/3", "127.0.0.2", "::1/2"]).unwrap();
    assert_eq!(
        config.targets,
        vec![
            target("192.168.1.5", 3, Some("eth0")),
            target("127.0.0.2", 1, None),
            target("::1", 2, Some("lo")),
        ]
    );
}

#[test]
fn a_name_stands_for_its_usable_addresses() {
    let config = build_from(&["eth0/4", "wlan0"]).unwrap();
    assert_eq!(
        config.targets,
        vec![
            named("192.168.1.5", 4, "eth0"),
            named("2001:db8::5", 4, "eth0"),
            named("10.0.0.7", 1, "wlan0"),
        ]
    );
}

#[test]
fn no_address_means_every_uplink() {
    let config = build_from(&[]).unwrap();
    let ips: Vec<_> = config.targets.iter().map(|t| t.ip).collect();
    assert_eq!(
        ips,
        vec![ip("192.168.1.5"), ip("2001:db8::5"), ip("10.0.0.7")]
    );
    assert!(config.targets.iter().all(|t| t.weight.get() == 1));
    assert_eq!(config.follow.uplinks, Some(vec![]));
}

#[test]
fn no_address_leaves_out_interfaces_without_a_default_route() {
    let mut ifaces = machine();
    ifaces[1].default_route = [true, false]; // eth0: IPv4 only
    ifaces[2].default_route = [false, false]; // wlan0: a bridge, say
    let config = build(&args(&[]), &ifaces, fake_bind).unwrap();
    let ips: Vec<_> = config.targets.iter().map(|t| t.ip).collect();
    assert_eq!(ips, vec![ip("192.168.1.5")]);
}

#[test]
fn exclude_drops_an_uplink_and_needs_the_default_mode() {
    let mut a = args(&[]);
    a.exclude = vec!["eth0".into()];
    let config = build(&a, &machine(), fake_bind).unwrap();
    let ips: Vec<_> = config.targets.iter().map(|t| t.ip).collect();
    assert_eq!(ips, vec![ip("10.0.0.7")]);
    assert_eq!(config.follow.uplinks, Some(vec!["eth0".to_string()]));
    let mut a = args(&["wlan0"]);
    a.exclude = vec!["eth0".into()];
    let err = build(&a, &machine(), fake_bind).unwrap_err();
    assert!(matches!(err, ConfigError::ExcludeWithAddresses), "{err}");
}

#[test]
fn no_uplink_yet_starts_with_no_link() {
    let only_lo = &machine()[..1];
    let config = build(&args(&[]), only_lo, fake_bind).unwrap();
    assert!(config.targets.is_empty());
}

#[test]
fn wildcard_multicast_and_link_local_sources_are_refused() {
    for bad in ["0.0.0.0", "::", "224.0.0.1", "255.255.255.255", "ff02::1"] {
        let err = build_from(&[bad]).unwrap_err();
        assert!(matches!(err, ConfigError::NotUnicast(_)), "{bad}: {err}");
    }
    let err = build_from(&["fe80::1"]).unwrap_err();
    assert!(matches!(err, ConfigError::LinkLocal(_)), "{err}");
    assert!(err.to_string().contains("link-local"));
}

#[test]
fn foreign_ip_is_refused() {
    let err = build_from(&["10.9.9.9"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "10.9.9.9 is not an address of this machine; `dispatch list` shows the ones you can use"
    );
}

#[test]
fn other_bind_failures_are_reported() {
    let denied = |_| Err(io::Error::from(io::ErrorKind::PermissionDenied));
    let err = build(&args(&["192.168.1.5"]), &machine(), denied).unwrap_err();
    assert!(matches!(err, ConfigError::Unbindable(..)), "{err}");
}

#[test]
fn interface_not_there_yet_is_waited_for() {
    for name in ["wlan1", "tun0"] {
        let config = build_from(&["eth0", name]).unwrap();
        assert_eq!(config.waiting, vec![name.to_string()], "{name}");
        assert!(config.follow.named.iter().any(|(n, _)| n == name));
        assert_eq!(config.targets.len(), 2, "eth0's two addresses");
    }
}

#[test]
fn duplicates_are_refused() {
    for addresses in [
        &["10.0.0.7", "10.0.0.7/2"][..],
        &["wlan0", "10.0.0.7"],
        &["2001:db8::5", "eth0"],
    ] {
        let err = build_from(addresses).unwrap_err();
        assert!(
            matches!(err, ConfigError::Duplicate(_)),
            "{addresses:?}: {err}"
        );
    }
}

#[test]
fn test_bind_on_loopback() {
    assert!(test_bind(ip("127.0.0.1")).is_ok());
    let foreign = ip("203.0.113.77");
    let ifaces = crate::iface::discover().unwrap();
    if ifaces.iter().any(|i| i.addrs.contains(&foreign)) {
        return; // a documentation address really assigned here: nothing to test
    }
    let err = test_bind(foreign).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AddrNotAvailable);
}
#[test]
fn proxies_mix_with_interfaces_or_stand_alone() {
    let config = build_from(&[
        "eth0",
        "socks5h://al:pw@127.0.0.1:9050/2",
        "http://[::1]:3128",
    ])
    .unwrap();
    assert_eq!(
        config.targets,
        vec![
            named("192.168.1.5", 1, "eth0"),
            named("2001:db8::5", 1, "eth0")
        ]
    );
    let shown: Vec<String> = config
        .proxies
        .iter()
        .map(|p| format!("{} {} {}", p.url, p.addr, p.weight))
        .collect();
    assert_eq!(
        shown,
        [
            "socks5h://al:***@127.0.0.1:9050 127.0.0.1:9050 2",
            "http://[::1]:3128 [::1]:3128 1"
        ]
    );
    assert_eq!(config.balance, Strategy::Weights, "a weight was written");
    // Only proxies: no interface is a link, not even the uplinks.
    let config = build_from(&["socks5://127.0.0.1:1080"]).unwrap();
    assert!(config.targets.is_empty());
    assert_eq!(config.follow, Follow::default());
    assert_eq!(config.proxies.len(), 1);
}

#[test]
fn a_proxy_given_twice_is_refused_redacted() {
    let e =
        build_from(&["socks5://al:pw@127.0.0.1:1080", "socks5://127.0.0.1:1080/2"]).unwrap_err();
    let shown = e.to_string();
    assert!(matches!(e, ConfigError::DuplicateProxy(_)), "{shown}");
    assert!(!shown.contains(":pw@"), "{shown}");
}
