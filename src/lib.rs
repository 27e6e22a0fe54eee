//! dispatch: a SOCKS proxy that spreads outgoing connections over several
//! local addresses (network links), by learned capacity or by smooth
//! weighted round robin.
//!
//! The modules, from the wire inwards:
//!
//! | module      | owns                                                          | I/O? |
//! |-------------|---------------------------------------------------------------|------|
//! | `socks`     | SOCKS5/4/4a messages: parse requests, emit replies            | no   |
//! | `upstream_proto` | proxy links: their URLs, our handshake with them     | no   |
//! | `http`      | HTTP proxy requests: heads, body framing, rewrite, own replies | no   |
//! | `auth`      | credentials, Basic headers, client address ranges             | no   |
//! | `ring`      | fixed-capacity byte ring and the free list rings come from    | no   |
//! | `splice`    | kernel pipes a relay splices through (Linux), and their pool  | pipes |
//! | `wrr`       | smooth weighted round robin                                   | no   |
//! | `balance`   | learned link capacities and the least-load choice            | no   |
//! | `learned`   | the state file that keeps learned capacities across restarts | yes  |
//! | `eyeballs`  | Happy Eyeballs: address order, attempt delay, family memory   | no   |
//! | `links`     | the links: selection per family, health, addresses, counters  | no   |
//! | `conn`      | one client connection's state machine and its relay           | sockets given to it |
//! | `reactor`   | the mio event loop: accept, route events, deadlines, DNS      | yes  |
//! | `dns`       | names: hosts file, lookups in flight, a pool that wakes the loop | yes |
//! | `net`       | outgoing sockets: bind to a local address, connect, errors    | yes  |
//! | `sys`       | the few platform-specific calls, behind `cfg`                 | yes  |
//! | `report`    | the links' live table and summary lines, as text             | no   |
//! | `iface`     | interface discovery and the `dispatch list` table             | yes  |
//! | `cli`       | command-line syntax (clap)                                    | no   |
//! | `cli_docs`  | completion scripts and the man page, from `cli`'s definition  | no   |
//! | `config`    | command line -> validated configuration (checks the system)   | yes  |
//! | `logging`   | log to stdout (`-d`) or to a size-capped file                 | yes  |
//! | `metrics`   | counters, their Prometheus/JSON text, the `--metrics` endpoint | its sockets |

pub mod auth;
pub mod balance;
pub mod cli;
pub mod cli_docs;
pub mod config;
pub mod conn;
pub mod dns;
pub mod evidence;
pub mod eyeballs;
pub mod http;
pub mod iface;
pub mod learned;
pub mod links;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod reach;
pub mod reactor;
pub mod report;
pub mod ring;
pub mod socks;
pub mod splice;
pub mod sys;
pub mod udp_table;
pub mod upstream_proto;
pub mod wrr;
