//! Holds N connections open through a running dispatch and reports how much
//! resident memory the proxy process gained per connection.
//!
//! ```text
//! cargo run --release --example idle_conns -- <proxy addr> <proxy pid> [N] [MODE]
//! ```
//!
//! MODE `relayed` (the default): each connection does a SOCKS5 CONNECT to a
//! local server, exchanges 1 KiB each way (so it has used rings once, as a
//! BitTorrent peer that went quiet), then stays idle. MODE `partial-socks`:
//! each client sends the first byte of a SOCKS5 greeting and stops there;
//! `partial-http`: the first 40 bytes of an HTTP proxy request head (run
//! the proxy with a long `--handshake-timeout`). Linux only: it reads
//! `/proc/<pid>/status`.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proxy process");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let proxy: SocketAddr = args.get(1).expect("proxy address").parse().unwrap();
    let pid: u32 = args.get(2).expect("proxy pid").parse().unwrap();
    let n: usize = args.get(3).map_or(9_900, |s| s.parse().unwrap());
    let mode = args.get(4).map_or("relayed", String::as_str);
    let limit = dispatch::sys::raise_nofile_limit().unwrap();
    eprintln!("open files limit here: {limit:?}");

    // The far end: echoes the 1 KiB ping, then holds the socket.
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let target = listener.local_addr().unwrap();
    let (held_tx, held_rx) = mpsc::channel();
    thread::spawn(move || {
        for s in listener.incoming() {
            let mut s = s.unwrap();
            let mut buf = [0u8; 1024];
            s.read_exact(&mut buf).unwrap();
            s.write_all(&buf).unwrap();
            held_tx.send(s).unwrap();
        }
    });

    thread::sleep(Duration::from_millis(200));
    let before = rss_kib(pid);
    let SocketAddr::V4(t) = target else {
        unreachable!()
    };
    let mut request = vec![5, 1, 0, 5, 1, 0, 1];
    request.extend_from_slice(&t.ip().octets());
    request.extend_from_slice(&t.port().to_be_bytes());
    let mut clients = Vec::with_capacity(n);
    let mut servers = Vec::with_capacity(n);
    let partial: &[u8] = match mode {
        "relayed" => b"",
        "partial-socks" => &[5],
        "partial-http" => b"GET http://example.test/index.html HTTP/1",
        other => panic!("unknown mode {other}: relayed, partial-socks or partial-http"),
    };
    for i in 0..n {
        if !partial.is_empty() {
            let mut s = match TcpStream::connect(proxy) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("connection {i}: {e}; stopping there");
                    break;
                }
            };
            s.write_all(partial).unwrap();
            clients.push(s);
            continue;
        }
        let mut s = match TcpStream::connect(proxy) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("connection {i}: {e}; stopping there");
                break;
            }
        };
        s.write_all(&request).unwrap();
        let mut reply = [0u8; 12];
        s.read_exact(&mut reply).unwrap();
        assert_eq!(reply[3], 0, "connection {i} refused: {reply:?}");
        let ping = [i as u8; 1024];
        s.write_all(&ping).unwrap();
        let mut pong = [0u8; 1024];
        s.read_exact(&mut pong).unwrap();
        assert_eq!(ping, pong);
        clients.push(s);
        servers.push(held_rx.recv().unwrap());
    }
    thread::sleep(Duration::from_millis(500));
    let after = rss_kib(pid);
    let held = clients.len();
    println!(
        "{held} {mode} connections: proxy RSS {before} KiB -> {after} KiB, {:.2} KiB per connection",
        (after.saturating_sub(before)) as f64 / held as f64
    );
}
