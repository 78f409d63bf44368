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
//! Modules, bottom up:
//! * [`parse`]: frame parser (never panics; malformed frames get a reason).
//! * [`flow`]: flow key, per-worker flow table with TCP state and idle timeouts.
//! * [`worker`]: the poll loop, forwarding and software steering.
//! * [`counters`], [`status`]: counters and the status channel.
//! * [`config`], [`run`]: configuration file and process orchestration.
//! * [`craft`]: builds valid frames for tests, benchmarks and generators.
//! * [`splice`]: the intercept path's TCP splice (smoltcp, one interface per flow);
//!   [`tls`]: TLS interception on it (rustls, forged certificates).
//! * [`live`]: the configuration the workers run (policy, TLS material, version),
//!   switched between bursts; [`control`]: the link to `tlsgate-control` that
//!   sets it.
//! * [`events`]: event records into the rings; [`capture`]: pcapng captures.

#![forbid(unsafe_code)]

pub mod capture;
pub mod config;
pub mod control;
pub mod counters;
pub mod craft;
pub mod events;
pub mod flow;
pub mod live;
pub mod parse;
pub mod run;
pub mod splice;
pub mod status;
pub mod tls;
pub mod worker;
