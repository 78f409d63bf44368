//! `tlsgate-control`: the control-plane daemon (foreground).
//!
//! ```text
//! tlsgate-control [--config /etc/tlsgate/control.toml] [--check-config]
//! ```

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tlsgate_control::config::ControlConfig;
use tlsgate_control::daemon::Daemon;
use tlsgate_control::{metrics, server};

/// The tlsgate control plane: state directory, control socket, event log, metrics.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Configuration file (TOML).
    #[arg(short, long, default_value = "/etc/tlsgate/control.toml")]
    config: PathBuf,
    /// Check the configuration (and the state directory) and exit.
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
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let cfg = if args.config.exists() || args.check_config {
        ControlConfig::load(&args.config).map_err(anyhow::Error::msg)?
    } else {
        tracing::warn!(config = %args.config.display(), "no configuration file: defaults");
        ControlConfig::from_toml("").map_err(anyhow::Error::msg)?
    };
    if args.check_config {
        let d = Daemon::open(cfg).map_err(anyhow::Error::msg)?;
        println!(
            "{}: configuration OK; state in {} at configuration version {}",
            args.config.display(),
            d.cfg.state_dir.display(),
            d.version()
        );
        return Ok(());
    }
    let daemon = Arc::new(Daemon::open(cfg).map_err(anyhow::Error::msg)?);
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, daemon.stop.clone()).context("installing signal handlers")?;
    }
    let listeners = server::bind(&daemon).map_err(anyhow::Error::msg)?;
    tracing::info!(
        socket = %daemon.cfg.socket.display(),
        dataplane_socket = %daemon.cfg.dataplane_socket.display(),
        state = %daemon.cfg.state_dir.display(),
        version = daemon.version(),
        device = %daemon.device_id,
        "tlsgate-control serving"
    );
    let drain = daemon.events.spawn_drain(daemon.stop.clone()).context("event drain thread")?;
    tlsgate_control::syslog::spawn(&daemon.forwarders, &daemon.stop);
    {
        let d = daemon.clone();
        std::thread::Builder::new().name("tg-periodic".into()).spawn(move || {
            let mut sampled = std::time::Instant::now();
            while !d.stop.load(Ordering::Relaxed) {
                d.check_licenses();
                if sampled.elapsed() >= Duration::from_secs(60) {
                    // Coverage history for `coverage --since` (nothing without a dataplane).
                    let _ = d.sample_coverage();
                    sampled = std::time::Instant::now();
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })?;
    }
    if !daemon.cfg.metrics_listen.is_empty() {
        let l = std::net::TcpListener::bind(&daemon.cfg.metrics_listen)
            .with_context(|| format!("control.metrics_listen {}", daemon.cfg.metrics_listen))?;
        tracing::info!(listen = %daemon.cfg.metrics_listen, "Prometheus /metrics");
        let d = daemon.clone();
        std::thread::Builder::new().name("tg-metrics".into()).spawn(move || metrics::serve(d, l))?;
    }
    server::serve(daemon.clone(), listeners);
    tracing::info!("stopping: last events drained");
    let _ = drain.join();
    server::unbind(&daemon);
    Ok(())
}
