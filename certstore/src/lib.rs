//! `tlsgate-certstore`: everything about certificates on the appliance.
//!
//! What it will hold (interception and control-plane issues):
//!
//! ```text
//!   trust store ── CA roots (system bundle + imported) ──┐
//!               └─ pinned server certificates (SHA-256) ─┼─► verifier (webpki + OpenSSL-style reasons)
//!   decryption CA ──► forged leaf certificates (rcgen, cached by SNI + chain hash)
//!   licenses ──► cipher-suite profile (`base` / `strong`)
//! ```
//!
//! It knows nothing of packets or drivers. Nothing is implemented yet: the
//! foundation issue only forwards traffic.

#![forbid(unsafe_code)]
