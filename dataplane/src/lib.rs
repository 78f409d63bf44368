//! `tlsgate-dataplane`: the appliance's packet path.
#![forbid(unsafe_code)]
pub mod craft;
pub mod parse;
