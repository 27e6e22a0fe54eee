//! Name resolution under a nameserver that never answers (issue 11: "a name
//! never waits behind another name"). Root only: everything runs inside a
//! network namespace the test makes, whose resolv.conf, hosts and
//! nsswitch.conf are the test's own (`ip netns exec` bind-mounts them), so
//! no query can leave it.
//!
//! The namespace's nameserver is a small responder in Python on
//! 127.0.0.1:53: it answers names under `ok.test` and swallows every other
//! query, so one server both hangs and works, deterministically (a second
//! `nameserver` line would only be tried after the first timed out).

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

/// Answers A queries for `a.ok.test` (127.0.0.6) and for names it was told
/// on stdin (`answer NAME` → 127.0.0.8); other names under `ok.test` get
/// NXDOMAIN, AAAA queries for known names no data. Queries for names
/// outside `ok.test` are never answered. Prints `Q NAME QTYPE` per query.
const PY_DNS: &str = r#"
import socket, struct, sys, threading
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 53))
known = {"a.ok.test": "127.0.0.6"}
def commands():
    for line in sys.stdin:
        f = line.split()
        if len(f) == 2 and f[0] == "answer":
            known[f[1]] = "127.0.0.8"
            print("ANSWERING", f[1], flush=True)
threading.Thread(target=commands, daemon=True).start()
print("READY", flush=True)
while True:
    data, peer = s.recvfrom(4096)
    if len(data) < 17:
        continue
    i, labels = 12, []
    while i < len(data) and data[i] != 0:
        n = data[i]
        labels.append(data[i + 1:i + 1 + n].decode("ascii", "replace"))
        i += 1 + n
    qtype = struct.unpack(">H", data[i + 1:i + 3])[0]
    name = ".".join(labels).lower()
    print("Q", name, qtype, flush=True)
    if not (name == "ok.test" or name.endswith(".ok.test")):
        continue
    ip = known.get(name)
    flags = 0x8180 if ip else 0x8183
    ancount = 1 if ip and qtype == 1 else 0
    reply = data[:2] + struct.pack(">HHHHH", flags, 1, ancount, 0, 0) + data[12:i + 5]
    if ancount:
        reply += b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + socket.inet_aton(ip)
    s.sendto(reply, peer)
"#;

/// SOCKS5 CONNECTs by name, all sent before any reply is read. Arguments:
/// proxy ip, port, then `SRC,NAME,PORT` per request (SRC: the client's
/// source address). Prints `SENT` once every request is out, then
/// `REPLY NAME REP SECS` as each reply comes (REP in hex, `none` if the
/// proxy closed first; SECS since that request was sent).
const PY_CLIENTS: &str = r#"
import selectors, socket, sys, time
host, port = sys.argv[1], int(sys.argv[2])
sel = selectors.DefaultSelector()
waiting = {}
for spec in sys.argv[3:]:
    src, name, dport = spec.split(",")
    s = socket.socket()
    s.bind((src, 0))
    s.settimeout(10)
    s.connect((host, port))
    s.sendall(b"\x05\x01\x00")
    if s.recv(2) != b"\x05\x00":
        print("ERROR greeting", name, flush=True)
        sys.exit(1)
    n = name.encode()
    s.sendall(b"\x05\x01\x00\x03" + bytes([len(n)]) + n + int(dport).to_bytes(2, "big"))
    s.setblocking(False)
    waiting[s] = [name, time.monotonic(), b""]
    sel.register(s, selectors.EVENT_READ)
print("SENT", flush=True)
end = time.monotonic() + 60
while waiting and time.monotonic() < end:
    for key, _ in sel.select(timeout=1):
        s = key.fileobj
        w = waiting[s]
        try:
            data = s.recv(2 - len(w[2]))
        except BlockingIOError:
            continue
        except OSError:
            data = b""
        w[2] += data
        if len(w[2]) >= 2 or not data:
            rep = "%02x" % w[2][1] if len(w[2]) >= 2 else "none"
            print("REPLY %s %s %.3f" % (w[0], rep, time.monotonic() - w[1]), flush=True)
            sel.unregister(s)
            s.close()
            del waiting[s]
for w in waiting.values():
    print("REPLY %s timeout 60" % w[0], flush=True)
"#;

/// What a CONNECT to a resolved loopback address on port 9 (nothing
/// listens) gets: the name resolved, the connection was refused.
const RESOLVED: &str = "05";
/// Host unreachable: the name did not resolve (or was refused a lookup).
const UNRESOLVED: &str = "04";
const CONNECT_TIMEOUT: f64 = 5.0;
/// What "at once" means here: far below the connect timeout, which is what
/// a name stuck behind the hanging ones would take.
const AT_ONCE: f64 = 2.0;

struct Reply {
    name: String,
    rep: String,
    secs: f64,
}

fn parse_replies(out: &str) -> Vec<Reply> {
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 4 && f[0] == "REPLY").then(|| Reply {
                name: f[1].to_string(),
                rep: f[2].to_string(),
                secs: f[3].parse().unwrap_or(f64::MAX),
            })
        })
        .collect()
}

fn clients_args(proxy: &Proxy, specs: &[String]) -> Vec<String> {
    let mut args = vec![
        "-c".to_string(),
        PY_CLIENTS.to_string(),
        proxy.addr.ip().to_string(),
        proxy.addr.port().to_string(),
    ];
    args.extend(specs.iter().cloned());
    args
}

/// Runs the clients to completion: one reply per request.
fn ask(ns: &Netns, proxy: &Proxy, specs: &[String]) -> Vec<Reply> {
    let args = clients_args(proxy, specs);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = ns.exec("python3", &args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "clients failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replies = parse_replies(&stdout);
    assert_eq!(replies.len(), specs.len(), "a reply per request: {stdout}");
    replies
}

/// One request from `src` for `name`, answered at once with `want`.
fn expect_at_once(ns: &Netns, proxy: &Proxy, src: &str, name: &str, want: &str) {
    let r = &ask(ns, proxy, &[format!("{src},{name},9")])[0];
    eprintln!("{name} from {src}: REP {} after {:.3} s", r.rep, r.secs);
    assert!(
        r.rep == want && r.secs < AT_ONCE,
        "CONNECT {name} from {src}: expected REP {want} at once, got {} after {} s\n\
         --- proxy stdout (tail):\n{}",
        r.rep,
        r.secs,
        tail(&proxy.stdout(), 30)
    );
}

/// The Python nameserver; killed on drop.
struct Nameserver {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Nameserver {
    fn start(ns: &Netns) -> Nameserver {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "python3", "-c", PY_DNS])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the nameserver");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let server = Nameserver {
            child,
            stdin,
            lines,
        };
        server.wait_for(|l| l == "READY", "READY");
        server
    }

    /// Reads its output until `done` says so (bounded: a hang fails).
    fn wait_for(&self, mut done: impl FnMut(&str) -> bool, what: &str) {
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if done(&line) => return,
                Ok(_) => {}
                Err(e) => panic!("nameserver: no {what} within 30 s ({e})"),
            }
        }
    }

    fn answer(&mut self, name: &str) {
        writeln!(self.stdin, "answer {name}").unwrap();
        self.stdin.flush().unwrap();
        self.wait_for(|l| l == format!("ANSWERING {name}"), "ANSWERING");
    }
}

impl Drop for Nameserver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// 100 names hang at a nameserver that never answers them. Meanwhile a
/// literal, `localhost`, a hosts-file name and a name the server does
/// answer all resolve at once; a client with its cap of lookups pending is
/// refused at once; a failed name is answered from the negative cache, then
/// looked up again once the cache forgets it. The hanging names get host
/// unreachable at the connect timeout. A name added to the hosts file is
/// then answered from it.
#[test]
fn r11_no_name_waits_behind_a_hanging_nameserver() {
    if !require_root("r11_no_name_waits_behind_a_hanging_nameserver") {
        return;
    }
    let mut ns = Netns::new("dns");
    ns.isolate_dns();
    let etc = std::path::PathBuf::from("/etc/netns").join(&ns.name);
    // Our own files: a search domain the server answers (so a failed name
    // fails at once, whatever the host's name is), and getaddrinfo asks DNS
    // only: no NSS module that could reach a resolver outside the namespace
    // (nss-resolve talks to the host's systemd-resolved over a Unix
    // socket), and no `files`, so a hosts-file name can only be answered
    // by the proxy itself.
    std::fs::write(
        etc.join("resolv.conf"),
        "nameserver 127.0.0.1\nsearch ok.test\n",
    )
    .unwrap();
    std::fs::write(etc.join("nsswitch.conf"), "hosts: dns\n").unwrap();
    std::fs::write(
        etc.join("hosts"),
        "127.0.0.1 localhost\n127.0.0.5 files.test\n",
    )
    .unwrap();
    let mut server = Nameserver::start(&ns);
    let proxy = Proxy::start_in_netns(&ns, &["--connect-timeout", "5", "127.0.0.1"]);

    // 100 hanging names: 64 (the cap) from 127.0.0.10, 36 from 127.0.0.11.
    let hanging: Vec<String> = (0..100)
        .map(|i| {
            let src = if i < 64 { "127.0.0.10" } else { "127.0.0.11" };
            format!("{src},h{i}.hang.test,9")
        })
        .collect();
    let args = clients_args(&proxy, &hanging);
    let hang = Command::new("ip")
        .args(["netns", "exec", &ns.name, "python3"])
        .args(&args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the hanging clients");
    // Every hanging name is at the nameserver: 100 lookups in flight.
    let mut seen = HashSet::new();
    server.wait_for(
        |l| {
            let name = l.split_whitespace().nth(1).unwrap_or("");
            if l.starts_with("Q h") && name.ends_with(".hang.test") {
                seen.insert(name.to_string());
            }
            seen.len() == 100
        },
        "queries for the 100 hanging names",
    );

    expect_at_once(&ns, &proxy, "127.0.0.12", "127.0.0.7", RESOLVED);
    expect_at_once(&ns, &proxy, "127.0.0.12", "localhost", RESOLVED);
    expect_at_once(&ns, &proxy, "127.0.0.12", "x.localhost", RESOLVED);
    expect_at_once(&ns, &proxy, "127.0.0.12", "files.test", RESOLVED);
    expect_at_once(&ns, &proxy, "127.0.0.12", "a.ok.test", RESOLVED);
    // 127.0.0.10 has its 64 lookups pending: even a working name is refused.
    expect_at_once(&ns, &proxy, "127.0.0.10", "a.ok.test", UNRESOLVED);
    // ...but a name answered without the pool is not a lookup.
    expect_at_once(&ns, &proxy, "127.0.0.10", "files.test", RESOLVED);

    // NXDOMAIN, then the server would answer: the failure is remembered.
    expect_at_once(&ns, &proxy, "127.0.0.12", "nx.ok.test", UNRESOLVED);
    let failed_at = Instant::now();
    server.answer("nx.ok.test");
    expect_at_once(&ns, &proxy, "127.0.0.12", "nx.ok.test", UNRESOLVED);

    // The hanging names time out at the connect deadline, not before.
    let out = hang.wait_with_output().expect("hanging clients");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let replies = parse_replies(&stdout);
    assert_eq!(replies.len(), 100, "{stdout}");
    for r in &replies {
        assert!(
            r.rep == UNRESOLVED && r.secs >= CONNECT_TIMEOUT - 0.1,
            "{}: expected REP {UNRESOLVED} at the {CONNECT_TIMEOUT} s deadline, got {} after {} s",
            r.name,
            r.rep,
            r.secs
        );
    }

    // Once the negative cache forgets it (5 s), the name is asked again.
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let r = &ask(&ns, &proxy, &["127.0.0.12,nx.ok.test,9".to_string()])[0];
        if r.rep == RESOLVED {
            break;
        }
        assert!(
            Instant::now() < end,
            "nx.ok.test still unresolved 20 s after the server began answering it"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        failed_at.elapsed() >= Duration::from_secs(4),
        "the failure was forgotten after {:?}",
        failed_at.elapsed()
    );

    // A name added to the hosts file is answered once the proxy sees the
    // change (it looks every 2 s). The server says NXDOMAIN for it, and
    // getaddrinfo does not read the file here, so only the proxy can.
    let hosts = etc.join("hosts");
    expect_at_once(&ns, &proxy, "127.0.0.12", "late.ok.test", UNRESOLVED);
    let mut text = std::fs::read_to_string(&hosts).unwrap();
    text.push_str("127.0.0.9 late.ok.test\n");
    // Written in place: the namespace's /etc/hosts is a bind mount of this inode.
    std::fs::write(&hosts, text).unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let r = &ask(&ns, &proxy, &["127.0.0.12,late.ok.test,9".to_string()])[0];
        if r.rep == RESOLVED {
            break;
        }
        assert!(
            Instant::now() < end,
            "late.ok.test not answered from the changed hosts file within 10 s"
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    let log = proxy.finish().stdout;
    let threads = log
        .lines()
        .filter_map(|l| {
            l.split("DNS threads now ")
                .nth(1)?
                .trim()
                .parse::<usize>()
                .ok()
        })
        .max();
    eprintln!("DNS threads at most: {threads:?}");
    assert!(
        log.contains("name lookups pending"),
        "the refusal over the cap is logged:\n{}",
        tail(&log, 30)
    );
    drop(server);
}
