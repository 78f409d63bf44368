//! `tlsgate-dataplane`: the appliance's packet path.
//!
//! ```text
//!   inside port ──┐                                    ┌── outside port
//!                 ▼                                    ▼
//!   ┌──────────── worker w (one per lcore, queue w of both ports) ───────────┐
//!   │ parse ─► symmetric FlowKey + hash ─► owner(hash)? ─┬─ me: flow table ──┼─► other port
//!   │                                                    └─ other: hand over │   (unchanged)
//!   └────────────────────────────────────────────────────────────────────────┘
//!        counters ─► published every 5 ms ─► stats line, status socket (tlsgate-api)
//! ```
//!
//! Rooms, from frame to tx (`docs/architecture.md` charts the data path):
//! * [`wire`]: the frame parser and builder.
//! * [`fastpath`]: classify, track, forward; [`flow`]: the flow table;
//!   [`steer`]: software steering between workers.
//! * [`intercept`]: admission of new TCP flows, the smoltcp splices
//!   ([`intercept::tcp`]), TLS on them ([`intercept::tls`]: hello, server leg, client
//!   leg, relay), how each flow ended ([`intercept::outcome`]).
//! * [`io`]: a worker's TX bursts, counters and captures; [`worker`]: the poll
//!   loop that runs the rooms.
//! * [`events`]: event records built from outcomes, into the rings;
//!   [`capture`]: pcapng captures.
//! * [`counters`], [`status`]: counters and the status channel.
//! * [`live`]: the configuration the workers run (policy, TLS material, version),
//!   switched between bursts; [`link`]: the link to `tlsgate-control` that sets it.
//! * [`clock`]: time and randomness, passed in (virtual time in the simulation).
//! * [`config`], [`run`]: configuration file and process orchestration.

#![forbid(unsafe_code)]

pub mod capture;
pub mod clock;
pub mod config;
pub mod counters;
mod error;
pub mod events;
pub mod fastpath;
pub mod flow;
pub mod intercept;
pub mod io;
pub mod link;
pub mod live;
pub mod run;
pub mod status;
pub mod steer;
pub mod wire;
pub mod worker;

pub use error::{Error, Result};
