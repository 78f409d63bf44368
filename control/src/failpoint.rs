//! Fail-points: named places in the state writer where a test can stop the daemon
//! dead (`std::process::abort`: no destructors, no flush), to prove that a crash
//! at any step leaves the previous or the new state, never a torn one.
//!
//! Set `TLSGATE_FAILPOINT=<name>` in the daemon's environment; [`NAMES`] lists
//! them. Without it a fail-point costs one load of a `OnceLock`.

use std::sync::OnceLock;

/// Every fail-point, in the order the state writer passes them.
pub const NAMES: &[&str] = &[
    "state-before-write",
    "state-after-write",
    "state-after-fsync",
    "state-after-rename",
    "state-after-dir-fsync",
];

fn armed() -> Option<&'static str> {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    ARMED.get_or_init(|| std::env::var("TLSGATE_FAILPOINT").ok().filter(|v| !v.is_empty())).as_deref()
}

/// Stops the process here when this fail-point is armed.
pub fn hit(name: &str) {
    debug_assert!(NAMES.contains(&name), "unknown fail-point {name}");
    if armed() == Some(name) {
        eprintln!("tlsgate-control: fail-point {name} reached: aborting");
        std::process::abort();
    }
}
