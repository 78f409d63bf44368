//! `tlsgatectl`: the operator's command line (see `tlsgate_control::cli`).

fn main() {
    std::process::exit(tlsgate_control::cli::main());
}
