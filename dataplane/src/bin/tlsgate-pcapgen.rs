//! `tlsgate-pcapgen`: writes a capture of valid TCP frames for benchmarks and replay.
//!
//! ```text
//! tlsgate-pcapgen --flows 1000 --frames 1000000 [--size 64] [--first 0] OUT.pcap
//! ```
//!
//! Flow `i` is 198.18.x.y:(1024 + i % 60000) → 198.19.x.y:443; `--first` shifts
//! `i` (one file per queue with flows of their own, `make bench-scale`). The first frame of
//! each flow is its SYN (so the dataplane creates the flow); later frames are ACKs
//! with payload cycling over the flows. With `--frames` equal to `--flows`, every
//! frame is a SYN and every flow appears once per pass.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use clap::Parser;
use tlsgate_dataplane::wire::build::Spec;
use tlsgate_dataplane::wire::parse::{parse, tcp_flags};
use tlsgate_drivers::pcapfile::PcapWriter;

#[derive(Parser)]
#[command(about = "Write a pcap of valid TCP frames over N flows")]
struct Args {
    /// Distinct flows.
    #[arg(long, default_value_t = 1000)]
    flows: u32,
    /// Frames in the file (at least --flows).
    #[arg(long, default_value_t = 1_000_000)]
    frames: u32,
    /// Frame size in bytes (60..=1514).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Number of the first flow (flows `first..first + flows`).
    #[arg(long, default_value_t = 0)]
    first: u32,
    /// Output file.
    out: PathBuf,
}

fn endpoints(i: u32) -> (IpAddr, u16, IpAddr) {
    // 198.18.0.0/15: client side 198.18.*.*, server side 198.19.*.*, per flow.
    let host = i / 60000;
    let c = Ipv4Addr::new(198, 18, (host >> 8) as u8, host as u8);
    let s = Ipv4Addr::new(198, 19, ((i >> 8) & 0xff) as u8, (i & 0xff) as u8);
    (IpAddr::V4(c), 1024 + (i % 60000) as u16, IpAddr::V4(s))
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    anyhow::ensure!(a.flows > 0 && a.frames >= a.flows, "--frames must be at least --flows (> 0)");
    anyhow::ensure!((60..=1514).contains(&a.size), "--size must be within 60..=1514");
    anyhow::ensure!(
        a.first.checked_add(a.flows).is_some_and(|end| end <= 1 << 24),
        "--first + --flows must be at most 2^24"
    );
    // Ethernet 14 + IPv4 20 + TCP 20 = 54 bytes of headers; the rest is payload.
    let payload = vec![0x5a; a.size.saturating_sub(54)];
    let mut w = PcapWriter::create(&a.out)?;
    for n in 0..a.frames {
        let i = n % a.flows;
        let (c, cport, s) = endpoints(a.first + i);
        let syn = n < a.flows;
        let mut spec = Spec::tcp(c, cport, s, 443, if syn { tcp_flags::SYN } else { tcp_flags::ACK });
        if !syn {
            spec = spec.with_payload(&payload);
            spec.seq = 1001 + n;
            spec.ack = 5001;
        }
        let mut f = spec.build();
        f.resize(a.size.max(f.len()), 0);
        debug_assert!(parse(&f).is_ok());
        w.write_frame(u64::from(n) * 1000, &f)?;
    }
    w.flush()?;
    println!("{}: {} frames of {} bytes over {} flows", a.out.display(), a.frames, a.size, a.flows);
    Ok(())
}
