//! `tlsgate-vendor`: license keys and licenses, offline (`tlsgate_control::vendor`).

fn main() {
    std::process::exit(tlsgate_control::vendor::main());
}
