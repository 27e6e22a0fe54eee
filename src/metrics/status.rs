//! `dispatch status`: fetch `/status` from a running proxy's `--metrics`
//! endpoint and print its links as a table. The fetch is a blocking HTTP/1.0
//! GET with timeouts; the table is [`table`]'s, pure.

use std::fmt::{self, Write as _};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

use crate::balance::Strategy;
use crate::report::{self, bytes};

/// The endpoint `dispatch status` asks when not told (the port to give
/// `start --metrics` for it to find the proxy).
pub const DEFAULT_PORT: u16 = 9180;
const TIMEOUT: Duration = Duration::from_secs(5);
/// The longest status document read.
const MAX_BODY: u64 = 16 << 20;

/// Why the status could not be shown.
#[derive(Debug)]
pub enum StatusError {
    /// Nothing listens there.
    Refused(SocketAddr),
    /// The connection or the read failed otherwise (or timed out).
    Io(SocketAddr, io::Error),
    /// Something answered, but not a dispatch status.
    Bad(SocketAddr, String),
}

impl fmt::Display for StatusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatusError::Refused(addr) => write!(
                f,
                "nothing listens on {addr}: is dispatch running with `--metrics {addr}`? \
                 (give `dispatch status --metrics ADDR` to ask another address)"
            ),
            StatusError::Io(addr, e) => write!(f, "cannot read the status from {addr}: {e}"),
            StatusError::Bad(addr, why) => {
                write!(
                    f,
                    "{addr} did not answer as dispatch's metrics endpoint: {why}"
                )
            }
        }
    }
}

impl std::error::Error for StatusError {}

/// `GET /status` from `addr`: the JSON document.
pub fn fetch(addr: SocketAddr) -> Result<Value, StatusError> {
    let io_err = |e: io::Error| match e.kind() {
        io::ErrorKind::ConnectionRefused => StatusError::Refused(addr),
        _ => StatusError::Io(addr, e),
    };
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(io_err)?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(io_err)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(io_err)?;
    stream
        .write_all(b"GET /status HTTP/1.0\r\nAccept: application/json\r\n\r\n")
        .map_err(io_err)?;
    let mut bytes = Vec::new();
    stream
        .take(MAX_BODY)
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    parse_response(&bytes).map_err(|why| StatusError::Bad(addr, why))
}

/// The JSON body of a `200` response.
fn parse_response(bytes: &[u8]) -> Result<Value, String> {
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no HTTP response head")?;
    let head = String::from_utf8_lossy(&bytes[..split]);
    let status_line = head.lines().next().unwrap_or("");
    if status_line.split_whitespace().nth(1) != Some("200") {
        return Err(format!("it said {status_line:?}"));
    }
    serde_json::from_slice(&bytes[split + 4..]).map_err(|e| format!("not JSON: {e}"))
}

/// The status as text: a line about the proxy, one row a link, the totals.
pub fn table(status: &Value) -> String {
    let num = |v: &Value| v.as_u64().unwrap_or(0);
    let mut out = String::new();
    let uptime = num(&status["uptime_seconds"]);
    let balancing = status["balance"]
        .as_str()
        .and_then(Strategy::from_name)
        .map_or(String::new(), |s| format!(", {}", s.describe()));
    let _ = writeln!(
        out,
        "dispatch {} on {}, up {}{balancing}",
        status["version"].as_str().unwrap_or("?"),
        status["listen"].as_str().unwrap_or("?"),
        duration(uptime)
    );
    let header = [
        "LINK", "FAMILY", "STATE", "OPEN", "TOTAL", "FAILED", "UP", "DOWN", "LEARNED",
    ];
    let rows: Vec<[String; 9]> = status["links"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|l| {
            let learned = report::capacity(l["capacity_bytes_per_second"].as_f64());
            [
                l["link"].as_str().unwrap_or("?").to_string(),
                l["family"].as_str().unwrap_or("?").to_string(),
                l["state"].as_str().unwrap_or("?").to_string(),
                num(&l["connections_open"]).to_string(),
                num(&l["connections_total"]).to_string(),
                num(&l["failures"]).to_string(),
                bytes(num(&l["bytes_up"])),
                bytes(num(&l["bytes_down"])),
                learned,
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(header.map(String::from)).chain(rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            let _ = match i {
                0..=2 => write!(line, "{cell:<w$}  "),
                _ => write!(line, "{cell:>w$}  "),
            };
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    let t = &status["totals"];
    let _ = writeln!(
        out,
        "total: {} open, {} connections, up {}, down {}",
        num(&t["connections_open"]),
        num(&t["connections_total"]),
        bytes(num(&t["bytes_up"])),
        bytes(num(&t["bytes_down"])),
    );
    out
}

/// `45 s`, `12 min 5 s`, `3 h 20 min`, `2 d 4 h`.
fn duration(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min {} s", secs / 60, secs % 60),
        3600..86400 => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
        _ => format!("{} d {} h", secs / 86400, secs % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_table_has_a_row_a_link_and_the_totals() {
        let status = json!({
            "version": "0.1.0",
            "listen": "127.0.0.1:1080",
            "uptime_seconds": 3725,
            "balance": "learn",
            "links": [
                {"link": "eth0 10.0.0.2", "family": "ipv4", "state": "up",
                 "connections_open": 3, "connections_total": 41, "failures": 0,
                 "bytes_up": 1200, "bytes_down": 999_995,
                 "capacity_bytes_per_second": 999_992.0},
                {"link": "wlan0 -", "family": "ipv6", "state": "down",
                 "connections_open": 0, "connections_total": 2, "failures": 2,
                 "bytes_up": 0, "bytes_down": 0, "capacity_bytes_per_second": null},
            ],
            "totals": {"connections_open": 3, "connections_total": 43,
                       "bytes_up": 1200, "bytes_down": 999_995},
        });
        assert_eq!(
            table(&status),
            "dispatch 0.1.0 on 127.0.0.1:1080, up 1 h 2 min, balancing by learned capacity\n\
             LINK           FAMILY  STATE  OPEN  TOTAL  FAILED      UP     DOWN    LEARNED\n\
             eth0 10.0.0.2  ipv4    up        3     41       0  1.2 kB  1.00 MB  1.00 MB/s\n\
             wlan0 -        ipv6    down      0      2       2     0 B      0 B          -\n\
             total: 3 open, 43 connections, up 1.2 kB, down 1.00 MB\n"
        );
    }

    #[test]
    fn only_a_200_with_json_is_a_status() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"a\":1}";
        assert_eq!(parse_response(ok).unwrap()["a"], 1);
        let e = parse_response(b"HTTP/1.1 404 Not Found\r\n\r\nno").unwrap_err();
        assert!(e.contains("404"), "{e}");
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n\r\n<html>").is_err());
    }
}
