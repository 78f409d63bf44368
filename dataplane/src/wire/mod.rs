//! Frames on the wire: the parser ([`parse`]: never panics, malformed frames get a
//! reason) and the frame builder ([`build`]: the RST that refuses a blocked SYN,
//! and every frame the tests, benchmarks and generators need).

pub mod build;
pub mod parse;
