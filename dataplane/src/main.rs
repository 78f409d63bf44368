//! `tlsgate-dataplane`: the appliance's packet path as a process.
//!
//! ```text
//! tlsgate-dataplane --config /etc/tlsgate/dataplane.toml [--check-config]
//!                   [--duration SECS] [--warmup SECS] [--summary]
//! tlsgate-dataplane status [--socket PATH] [--json]
//! ```

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tlsgate_dataplane::config::{Config, Driver};
use tlsgate_dataplane::run::{run, RunOptions, Summary};
use tlsgate_drivers::dpdk::DpdkBackend;
use tlsgate_drivers::pcap::PcapBackend;

/// The tlsgate dataplane: a DPDK bump-in-the-wire between an inside and an outside
/// port.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Configuration file (TOML).
    #[arg(short, long, default_value = "/etc/tlsgate/dataplane.toml")]
    config: PathBuf,
    /// Check the configuration file and exit (0: valid).
    #[arg(long)]
    check_config: bool,
    /// Stop after this many seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// Start the measurement window of the summary this many seconds after start.
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// Print a one-line JSON summary (rates over the window, counters) at exit.
    #[arg(long)]
    summary: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Generate a decryption CA (ECDSA P-256, CA:TRUE pathlen 0) into two PEM files;
    /// the key file is created with mode 0600. Refuses to overwrite.
    GenCa {
        /// Certificate file to write (give it to clients to trust).
        #[arg(long)]
        cert: PathBuf,
        /// Key file to write (PKCS#8).
        #[arg(long)]
        key: PathBuf,
        /// Common name.
        #[arg(long, default_value = "tlsgate decryption CA")]
        name: String,
    },
    /// Ask a running dataplane for its counters through its status socket.
    Status {
        /// Status socket of the running dataplane.
        #[arg(long, default_value = "/run/tlsgate/dataplane.sock")]
        socket: PathBuf,
        /// Print the raw JSON response.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TLSGATE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    match &args.command {
        Some(Command::Status { socket, json }) => return status(socket, *json),
        Some(Command::GenCa { cert, key, name }) => return gen_ca(cert, key, name),
        None => {}
    }
    let cfg = Config::load(&args.config)?;
    if args.check_config {
        println!("{}: configuration OK (driver {:?})", args.config.display(), cfg.driver);
        return Ok(());
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    let opts = RunOptions {
        duration: args.duration.map(Duration::from_secs_f64),
        warmup: Duration::from_secs_f64(args.warmup),
        ..RunOptions::default()
    };
    let summary = match cfg.driver {
        Driver::Dpdk => {
            let dpdk = cfg.dpdk.as_ref().expect("validated");
            let backend = DpdkBackend::new(dpdk)?;
            run(backend, &cfg, stop, &opts).map_err(anyhow::Error::msg)?
        }
        Driver::Pcap => {
            let backend = PcapBackend::new(cfg.pcap.as_ref().expect("validated"))?;
            // The message names the cause already: no "Caused by" list under it.
            run(backend, &cfg, stop, &opts).map_err(anyhow::Error::msg)?
        }
    };
    report(&summary, args.summary);
    Ok(())
}

fn report(s: &Summary, json: bool) {
    eprintln!(
        "stopped: {} frames received, {} sent, {} dropped; {:.3} Mpps sent over {:.1} s",
        s.totals.rx,
        s.totals.tx,
        s.totals.drops,
        s.tx_mpps(),
        s.seconds
    );
    if json {
        let v = serde_json::json!({
            "seconds": s.seconds,
            "rx": s.rx,
            "tx": s.tx,
            "tx_mpps": s.tx_mpps(),
            "stats": s.stats,
        });
        println!("{v}");
    }
}

fn status(socket: &std::path::Path, json: bool) -> anyhow::Result<()> {
    use tlsgate_api::{Body, Frame, Request, Response};
    let mut conn = std::os::unix::net::UnixStream::connect(socket)
        .with_context(|| format!("connecting to {} (is the dataplane running?)", socket.display()))?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    tlsgate_api::write_frame(&mut conn, &Frame::request(1, Request::Stats))?;
    let frame = match tlsgate_api::FrameReader::new(conn).read_frame()? {
        tlsgate_api::framing::Read::Frame(f) => *f,
        tlsgate_api::framing::Read::Invalid { error, .. } => return Err(error.into()),
        tlsgate_api::framing::Read::Eof => {
            anyhow::bail!("{}: the dataplane closed the connection", socket.display())
        }
    };
    if json {
        print!("{}", frame.encode());
        return Ok(());
    }
    let s = match frame.body {
        Body::Response(Response::Stats(s)) => s,
        other => anyhow::bail!("unexpected answer: {other:?}"),
    };
    // Tables for people are `tlsgatectl stats`' (through the control plane);
    // here, the counters as indented JSON.
    println!("{}", serde_json::to_string_pretty(&s)?);
    Ok(())
}

fn gen_ca(cert: &std::path::Path, key: &std::path::Path, name: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    use tlsgate_certstore::{pki_types::UnixTime, CaOptions, DecryptionCa};
    for p in [cert, key] {
        anyhow::ensure!(!p.exists(), "{} exists; not overwriting a CA", p.display());
    }
    let ca = DecryptionCa::generate(&CaOptions::with_common_name(name), UnixTime::now())?;
    let mut k = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(key)
        .with_context(|| format!("creating {}", key.display()))?;
    k.write_all(ca.key_pkcs8_pem().as_bytes())?;
    std::fs::write(cert, ca.cert_pem()).with_context(|| format!("writing {}", cert.display()))?;
    println!(
        "decryption CA {} ({}) written to {} and {}",
        ca.summary().subject,
        ca.fingerprint(),
        cert.display(),
        key.display()
    );
    Ok(())
}
