//! `tlsgate-console --config /etc/tlsgate/console.toml`: the operator's web
//! console (docs/operations.md).

use std::path::PathBuf;

use clap::Parser;

/// The operator's web console, over HTTPS on the management address.
#[derive(Parser, Debug)]
#[command(name = "tlsgate-console", version)]
struct Args {
    /// The configuration file (`[console] listen = "ADDR:PORT"` at least).
    #[arg(long, default_value = "/etc/tlsgate/console.toml", env = "TLSGATE_CONSOLE_CONFIG")]
    config: PathBuf,
    /// Check the configuration (and the management certificate: readable, or
    /// made now) and exit.
    #[arg(long)]
    check_config: bool,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TLSGATE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let cfg = tlsgate_console::ConsoleConfig::load(&args.config)?;
    let (cert, key) = tlsgate_console::management_cert(&cfg)?;
    let fingerprint = tlsgate_console::fingerprint(&cert);
    if args.check_config {
        tlsgate_certstore::service_server_config(cert.as_bytes(), key.as_bytes())?;
        println!(
            "{}: ok (listen {}); management certificate SHA-256 {fingerprint}",
            args.config.display(),
            cfg.listen
        );
        return Ok(());
    }
    tracing::info!(sha256 = %fingerprint, "management certificate (compare with what the browser shows)");
    let console = tlsgate_console::Console::new(cfg);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("tg-console")
        .enable_all()
        .build()?
        .block_on(tlsgate_console::serve(console, cert, key))
}
