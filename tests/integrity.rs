//! Every byte arrives, in order, in both directions at once: one big
//! transfer and many concurrent ones. Both ends send a deterministic
//! pseudo-random stream and verify the other's by regenerating it.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The server's stream is the client's seed with these bits flipped.
const SERVER_XOR: u64 = 0x5A5A_0F0F_F0F0_A5A5;
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(90);

type Results = Arc<Mutex<Vec<Result<(), String>>>>;

/// Reads a 16-byte header (seed, length: u64 LE), then concurrently sends
/// `length` bytes of stream `seed ^ SERVER_XOR` (then half-closes) and
/// verifies that exactly `length` bytes of stream `seed` arrive before EOF.
fn stream_server(chunk: usize) -> (Server, Results) {
    let results: Results = Arc::default();
    let r = results.clone();
    let server = Server::start("127.0.0.1:0", move |mut s, _| {
        s.set_read_timeout(Some(TRANSFER_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(TRANSFER_TIMEOUT)).unwrap();
        let outcome = (|| {
            let mut head = [0u8; 16];
            s.read_exact(&mut head)
                .map_err(|e| format!("server: reading header: {e}"))?;
            let seed = u64::from_le_bytes(head[..8].try_into().unwrap());
            let len = u64::from_le_bytes(head[8..].try_into().unwrap());
            let mut w = s.try_clone().unwrap();
            let writer = thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    send_stream(&mut w, seed ^ SERVER_XOR, len, chunk)
                        .map_err(|e| format!("server: sending: {e}"))?;
                    w.shutdown(Shutdown::Write)
                        .map_err(|e| format!("server: shutdown: {e}"))
                })
                .unwrap();
            let got = recv_stream(&mut s, seed, len, chunk).map_err(|e| format!("server: {e}"));
            let sent = writer
                .join()
                .map_err(|_| "server writer panicked".to_string())?;
            got.and(sent)
        })();
        r.lock().unwrap().push(outcome);
    });
    (server, results)
}

/// Client side of one transfer through the proxy.
fn transfer(
    proxy: SocketAddr,
    target: SocketAddr,
    seed: u64,
    len: u64,
    chunk: usize,
) -> Result<(), String> {
    let mut s = client(proxy);
    socks5_greet(&mut s);
    s.write_all(&socks5_request(0x01, &target.into()))
        .map_err(|e| format!("client: request: {e}"))?;
    let reply = read_reply5(&mut s).map_err(|e| format!("client: reply: {e}"))?;
    if reply.rep != rep::SUCCEEDED {
        return Err(format!("client: CONNECT failed: {:02x?}", reply.raw));
    }
    s.set_read_timeout(Some(TRANSFER_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(TRANSFER_TIMEOUT)).unwrap();
    let mut w: TcpStream = s.try_clone().unwrap();
    let writer = thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || {
            let mut head = seed.to_le_bytes().to_vec();
            head.extend_from_slice(&len.to_le_bytes());
            w.write_all(&head)
                .map_err(|e| format!("client: header: {e}"))?;
            send_stream(&mut w, seed, len, chunk).map_err(|e| format!("client: sending: {e}"))?;
            w.shutdown(Shutdown::Write)
                .map_err(|e| format!("client: shutdown: {e}"))
        })
        .unwrap();
    let got =
        recv_stream(&mut s, seed ^ SERVER_XOR, len, chunk).map_err(|e| format!("client: {e}"));
    let sent = writer
        .join()
        .map_err(|_| "client writer panicked".to_string())?;
    got.and(sent)
}

fn wait_results(results: &Results, n: usize) -> Vec<Result<(), String>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = results.lock().unwrap().clone();
        if v.len() >= n || Instant::now() >= deadline {
            return v;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The pipes a process holds now (Linux).
fn pipes_held(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|l| l.to_string_lossy().starts_with("pipe:"))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn one_connection_64_mib_each_way_concurrently_spliced() {
    one_connection_64_mib_each_way_concurrently(Relay::Splice);
}

#[test]
fn one_connection_64_mib_each_way_concurrently_through_rings() {
    one_connection_64_mib_each_way_concurrently(Relay::Rings);
}

fn one_connection_64_mib_each_way_concurrently(relay: Relay) {
    const LEN: u64 = 64 << 20;
    const CHUNK: usize = 1 << 20;
    let (server, results) = stream_server(CHUNK);
    let proxy = start_relaying(relay, &["127.0.0.2"]);
    let (pid, idle_pipes) = (proxy.pid, pipes_held(proxy.pid));
    // Watch the pipes it holds while the transfer runs.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watch = {
        let done = done.clone();
        thread::spawn(move || {
            let mut most = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                most = most.max(pipes_held(pid));
                thread::sleep(Duration::from_millis(5));
            }
            most
        })
    };
    let t = Instant::now();
    let outcome = transfer(proxy.addr, server.addr, 0x1234_5678_9ABC_DEF0, LEN, CHUNK);
    eprintln!("64 MiB each way ({relay:?}): {:?}", t.elapsed());
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let most_pipes = watch.join().unwrap() - idle_pipes;
    assert_eq!(outcome, Ok(()));
    let server_side = wait_results(&results, 1);
    assert_eq!(server_side, vec![Ok(())]);
    if cfg!(target_os = "linux") {
        match relay {
            // One pipe each way while bytes are in flight.
            Relay::Splice => assert!(most_pipes >= 2, "{most_pipes} pipes: not spliced"),
            Relay::Rings => assert_eq!(most_pipes, 0, "pipes with splice off"),
        }
    }
    // Idle again: the pipes were given back (kept for reuse at most).
    thread::sleep(Duration::from_millis(100));
    assert!(
        pipes_held(pid) - idle_pipes <= 4,
        "pipes held after the transfer"
    );
    proxy.finish();
}

#[test]
fn two_hundred_concurrent_connections_1_mib_each_way_spliced() {
    two_hundred_concurrent_connections_1_mib_each_way(Relay::Splice);
}

#[test]
fn two_hundred_concurrent_connections_1_mib_each_way_through_rings() {
    two_hundred_concurrent_connections_1_mib_each_way(Relay::Rings);
}

fn two_hundred_concurrent_connections_1_mib_each_way(relay: Relay) {
    const N: usize = 200;
    const LEN: u64 = 1 << 20;
    const CHUNK: usize = 64 * 1024;
    let (server, results) = stream_server(CHUNK);
    // Round robin, so that the split below is exact (learned balancing
    // would follow the links' loads).
    let proxy = start_relaying(relay, &["--balance", "weights", "127.0.0.2", "127.0.0.3"]);
    let idle_pipes = pipes_held(proxy.pid);
    let t = Instant::now();
    let (paddr, saddr) = (proxy.addr, server.addr);
    let handles: Vec<_> = (0..N)
        .map(|i| {
            thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || transfer(paddr, saddr, 1000 + i as u64, LEN, CHUNK))
                .unwrap()
        })
        .collect();
    let mut failures = Vec::new();
    for (i, h) in handles.into_iter().enumerate() {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(format!("connection {i}: {e}")),
            Err(_) => failures.push(format!("connection {i}: client thread panicked")),
        }
    }
    eprintln!("{N} x 1 MiB each way: {:?}", t.elapsed());
    assert!(
        failures.is_empty(),
        "{} of {N} transfers failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let server_side = wait_results(&results, N);
    let bad: Vec<_> = server_side.iter().filter(|r| r.is_err()).collect();
    assert_eq!(
        server_side.len(),
        N,
        "server finished {} of {N}",
        server_side.len()
    );
    assert!(bad.is_empty(), "server side failures: {bad:?}");
    // Both addresses were used, alternately.
    let peers = server.peers();
    let two = peers
        .iter()
        .filter(|p| p.ip().to_string() == "127.0.0.2")
        .count();
    assert_eq!(two, N / 2, "connections from 127.0.0.2");
    // The burst is over: the spare pipes it left are closed after a few
    // seconds unused (a daemon left running gives its descriptors back).
    // Spares go within two trims (5 s apart, on a 1 s tick): 20 s is ample.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut held = pipes_held(proxy.pid);
    while held > idle_pipes && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(200));
        held = pipes_held(proxy.pid);
    }
    assert_eq!(
        held, idle_pipes,
        "pipe descriptors still held 20 s after the transfers ({relay:?})"
    );
    proxy.finish();
}

#[test]
fn slow_reader_and_tiny_writes_lose_nothing_spliced() {
    slow_reader_and_tiny_writes_lose_nothing(Relay::Splice);
}

#[test]
fn slow_reader_and_tiny_writes_lose_nothing_through_rings() {
    slow_reader_and_tiny_writes_lose_nothing(Relay::Rings);
}

fn slow_reader_and_tiny_writes_lose_nothing(relay: Relay) {
    // Tiny writes: 20,000 one-byte writes up, read back in 7-byte reads.
    // Back-pressure: the target sends 16 MiB as fast as it can while the
    // client reads in small bites with pauses.
    const DOWN: u64 = 16 << 20;
    const UP: u64 = 20_000;
    let (server, results) = stream_server(64 * 1024);
    let proxy = start_relaying(relay, &["127.0.0.2"]);
    let mut s = client(proxy.addr);
    socks5_greet(&mut s);
    s.write_all(&socks5_request(0x01, &server.addr.into()))
        .unwrap();
    let reply = read_reply5(&mut s).unwrap();
    assert_eq!(reply.rep, rep::SUCCEEDED, "{:02x?}", reply.raw);
    s.set_read_timeout(Some(TRANSFER_TIMEOUT)).unwrap();
    let seed = 77u64;
    let mut w = s.try_clone().unwrap();
    let writer = thread::spawn(move || -> std::io::Result<()> {
        // First connection: UP bytes each way, ours as one-byte writes.
        let mut head = seed.to_le_bytes().to_vec();
        head.extend_from_slice(&UP.to_le_bytes());
        w.write_all(&head)?;
        let mut all = vec![0u8; UP as usize];
        Prng::new(seed).fill(&mut all);
        for b in all.chunks(1) {
            w.write_all(b)?;
        }
        w.shutdown(Shutdown::Write)
    });
    recv_stream(&mut s, seed ^ SERVER_XOR, UP, 7).unwrap();
    writer.join().unwrap().unwrap();

    // The slow download.
    let (mut s, _) = socks5_ok(proxy.addr, server.addr);
    s.set_read_timeout(Some(TRANSFER_TIMEOUT)).unwrap();
    let mut head = 5u64.to_le_bytes().to_vec();
    head.extend_from_slice(&DOWN.to_le_bytes());
    s.write_all(&head).unwrap();
    // Second connection: read the 16 MiB download in small bites with
    // pauses, then send our side (the server verifies it at the end).
    let mut v = Verifier::new(5 ^ SERVER_XOR);
    let mut buf = vec![0u8; 16 * 1024];
    let mut reads = 0u32;
    while v.offset < DOWN {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "EOF after {} of {DOWN} bytes", v.offset);
        v.check(&buf[..n]).unwrap();
        reads += 1;
        if reads % 64 == 0 {
            thread::sleep(Duration::from_millis(20));
        }
    }
    send_stream(&mut s, 5, DOWN, 1 << 20).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut s), b"");
    let server_side = wait_results(&results, 2);
    assert_eq!(server_side, vec![Ok(()), Ok(())]);
    proxy.finish();
}
