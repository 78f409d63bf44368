//! Test support: the generated PKI, the `openssl` reference, in-memory handshakes.
#![allow(dead_code)]

pub mod handshake;
pub mod openssl;
pub mod pki;
