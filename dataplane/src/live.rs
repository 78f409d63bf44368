//! The configuration the workers run, and how they switch to a new one.
//!
//! ```text
//!  control link / start-up ──LiveCell::set(Live)──► generation += 1
//!  worker poll: generation changed? ──► take the new Arc<Live> (between bursts)
//! ```
//!
//! A worker reads one relaxed atomic per poll; only when the generation moved does
//! it lock the cell for the new `Arc`. Flows already decided keep what they were
//! decided under (a splice holds its policy and version); new flows take the new
//! configuration. A TLS state whose material (CA, trust, profile, validation) did
//! not change is the same `Arc` in the new `Live`, so its caches survive commits
//! that only touch the policy.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tlsgate_policy::CompiledPolicy;

use crate::intercept::tls::TlsShared;

/// One configuration.
#[derive(Default)]
pub struct Live {
    /// The configuration version (stamped on the events of the flows it decides;
    /// 0: nothing from the control plane yet and no local policy).
    pub version: u64,
    /// The decryption policy (none: `intercept.ports` selects, else nothing is
    /// intercepted).
    pub policy: Option<Arc<CompiledPolicy>>,
    /// TLS interception material (none: no decryption).
    pub tls: Option<Arc<TlsShared>>,
}

/// Where workers find the configuration.
pub struct LiveCell {
    generation: AtomicU64,
    current: Mutex<Arc<Live>>,
}

impl LiveCell {
    /// A cell holding `live`.
    pub fn new(live: Live) -> Arc<LiveCell> {
        Arc::new(LiveCell { generation: AtomicU64::new(1), current: Mutex::new(Arc::new(live)) })
    }

    /// Replaces the configuration; workers take it at their next poll.
    pub fn set(&self, live: Live) {
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(live);
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Moves on every [`LiveCell::set`].
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The configuration now.
    pub fn current(&self) -> Arc<Live> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}
