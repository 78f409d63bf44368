//! `tlsgate-control`: the control plane of the appliance.
//!
//! ```text
//!   tlsgatectl ──┐                      ┌── state_dir/state.json (atomic: tmp, fsync, rename)
//!                ▼                      │
//!   control socket (Unix, 0660, peer credentials) ──► Daemon ─┼── snapshots ──► dataplane link
//!                ▲                      │                ◄── chains, answers
//!   dataplane ───┘ (one two-way link)   ├── events: rings ──► tls_proxy.log, events.jsonl, index
//!                                       └── /metrics (Prometheus)
//! ```
//!
//! Modules:
//! * [`config`] — `/etc/tlsgate/control.toml`.
//! * [`error`]: the crate's one error type, [`Error`].
//! * [`state`]: the state directory and its atomic writer; [`failpoint`] stops the
//!   daemon between its steps in tests.
//! * [`daemon`]: what each request does; versions, audit, snapshots.
//! * [`server`]: the control socket; [`link`]: the dataplane's connection.
//! * [`events`]: the event-ring consumer, logs, index, kept chains.
//! * [`metrics`] — Prometheus.
//! * [`cli`]: `tlsgatectl`'s commands and tables.
//! * [`vendor`]: `tlsgate-vendor`, the vendor's license tool (not installed on appliances).
//!
//! The protocol types are in [`tlsgate_api`]; operator documentation is in
//! `docs/operations.md` and `docs/control-socket.md`.

#![forbid(unsafe_code)]

pub mod audit;
pub mod cli;
pub mod config;
pub mod crl;
pub mod daemon;
pub mod error;
pub mod events;
pub mod failpoint;
pub mod hellos;
pub mod link;
pub mod metrics;
pub mod pkcs11;
pub mod server;
pub mod signer;
pub mod state;
pub mod syslog;
pub mod vendor;

pub use error::{Error, Result};
