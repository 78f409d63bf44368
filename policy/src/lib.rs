//! `tlsgate-policy`: the decryption policy of the appliance.
//!
//! What it will hold (interception issue): network objects and groups (addresses,
//! CIDRs, ranges; IPv4 and IPv6), port sets, SNI patterns, an ordered list of
//! decryption rules (first match wins; `decrypt`, `do-not-decrypt`, `block`), the
//! decryption settings, a JSON format validated with errors that name the rule and
//! field, candidate/commit/rollback with configuration versions, and compiled
//! matching.
//!
//! It knows nothing of packets or drivers: the dataplane hands it addresses, ports
//! and SNI and gets a verdict back.
//!
//! Nothing is implemented yet. Until then the dataplane forwards every flow on its
//! fast path (the foundation issue's bump-in-the-wire), which is what a policy whose
//! only rule is `do-not-decrypt` would decide.

#![forbid(unsafe_code)]
