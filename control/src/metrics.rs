//! Prometheus `/metrics` (text format, the `prometheus` crate) on
//! `control.metrics_listen` (default 127.0.0.1:9469).
//!
//! Each scrape asks the dataplane for its counters (2 s at most; without an
//! answer the dataplane's series are left out and `tlsgate_dataplane_connected`
//! says 0) and adds the control plane's own: configuration version, license state
//! and expiry, decryption CA expiry, events and their results.

use std::net::TcpListener;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use std::collections::BTreeMap;

use prometheus::{CounterVec, Encoder, GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};
use tlsgate_api::{DataplaneStats, Request, Response};

use crate::daemon::Daemon;

struct Families {
    registry: Registry,
}

/// A family of the dataplane's table, as registered.
#[derive(Clone)]
enum Series {
    Counter(CounterVec),
    Gauge(GaugeVec),
}

impl Series {
    fn set(&self, labels: &[&str], v: f64) {
        match self {
            Series::Counter(c) => c.with_label_values(labels).inc_by(v),
            Series::Gauge(g) => g.with_label_values(labels).set(v),
        }
    }
}

impl Families {
    fn counter(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
        self.registry.register(Box::new(c.clone())).expect("unique metric");
        c
    }

    fn float_counter(&self, name: &str, help: &str, labels: &[&str]) -> CounterVec {
        let c = CounterVec::new(Opts::new(name, help), labels).expect("valid metric");
        self.registry.register(Box::new(c.clone())).expect("unique metric");
        c
    }

    fn float_gauge(&self, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
        let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
        self.registry.register(Box::new(g.clone())).expect("unique metric");
        g
    }

    fn gauge(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
        self.registry.register(Box::new(g.clone())).expect("unique metric");
        g
    }
}

/// The exposition text of one scrape.
pub fn render(daemon: &Daemon) -> String {
    let stats = daemon.link().and_then(|l| match l.call(Request::Stats, Duration::from_secs(2)) {
        Response::Stats(s) => Some(s),
        _ => None,
    });
    render_with(daemon, stats.as_ref())
}

/// The exposition text for `stats` (the dataplane's counters, when it answered).
pub fn render_with(daemon: &Daemon, stats: Option<&DataplaneStats>) -> String {
    let f = Families { registry: Registry::new() };
    let status = daemon.handle(Request::Status, 0);
    let Response::Status(st) = status else { return String::new() };

    f.gauge(
        "tlsgate_dataplane_connected",
        "Whether a dataplane is connected to the control plane (1) or not (0).",
        &[],
    )
    .with_label_values(&[])
    .set(i64::from(stats.is_some()));
    f.gauge("tlsgate_config_version", "The control plane's configuration version.", &[])
        .with_label_values(&[])
        .set(st.config_version as i64);
    f.gauge("tlsgate_dataplane_config_version", "The configuration version the dataplane runs.", &[])
        .with_label_values(&[])
        .set(st.dataplane_version as i64);
    f.gauge(
        "tlsgate_strong_crypto",
        "Whether the strong cipher profile is in force (a valid strong-crypto license).",
        &[],
    )
    .with_label_values(&[])
    .set(i64::from(st.profile == "strong"));
    let (ca_expiry, licenses) = daemon.expiries();
    let ca = f.gauge(
        "tlsgate_decryption_ca_expiry_timestamp_seconds",
        "notAfter of the decryption CA certificate (unix time).",
        &[],
    );
    if let Some(t) = ca_expiry {
        ca.with_label_values(&[]).set(t);
    }
    let lic_valid =
        f.gauge("tlsgate_license_valid", "Whether a license is valid now (1) or not (0).", &["serial"]);
    let lic_exp = f.gauge(
        "tlsgate_license_expiry_timestamp_seconds",
        "notAfter of a license (unix time).",
        &["serial"],
    );
    for (serial, not_after, valid) in licenses {
        lic_valid.with_label_values(&[&serial]).set(i64::from(valid));
        lic_exp.with_label_values(&[&serial]).set(not_after);
    }
    let crls = f.gauge(
        "tlsgate_crl_distribution_points",
        "CRL distribution points the control plane follows, by state (cached, pending, failed).",
        &["state"],
    );
    for state in ["cached", "pending", "failed"] {
        crls.with_label_values(&[state]).set(st.crls.iter().filter(|c| c.state == state).count() as i64);
    }
    if !daemon.forwarders.is_empty() {
        use std::sync::atomic::Ordering::Relaxed;
        let spooled = f.counter(
            "tlsgate_syslog_spooled_total",
            "Events spooled for a syslog collector.",
            &["collector"],
        );
        let delivered = f.counter(
            "tlsgate_syslog_delivered_total",
            "Events a syslog collector acknowledged (RELP).",
            &["collector"],
        );
        let dropped = f.counter(
            "tlsgate_syslog_spool_dropped_total",
            "Events not forwarded: the collector's spool was full.",
            &["collector"],
        );
        let pending =
            f.gauge("tlsgate_syslog_spool_bytes", "Bytes spooled and not yet acknowledged.", &["collector"]);
        let up = f.gauge(
            "tlsgate_syslog_connected",
            "Whether a RELP session with the collector is open.",
            &["collector"],
        );
        for fw in &daemon.forwarders {
            let n = [fw.collector.name.as_str()];
            spooled.with_label_values(&n).inc_by(fw.counters.spooled.load(Relaxed));
            delivered.with_label_values(&n).inc_by(fw.counters.delivered.load(Relaxed));
            dropped.with_label_values(&n).inc_by(fw.counters.dropped.load(Relaxed));
            pending.with_label_values(&n).set(fw.pending_bytes() as i64);
            up.with_label_values(&n).set(i64::from(fw.counters.connected.load(Relaxed)));
        }
    }
    f.counter("tlsgate_events_logged_total", "Events written to the event log by this control plane.", &[])
        .with_label_values(&[])
        .inc_by(daemon.events.logged());
    f.counter("tlsgate_event_ring_drops_total", "Events lost because a dataplane event ring was full.", &[])
        .with_label_values(&[])
        .inc_by(daemon.events.lost());
    let ev = daemon.events.counters();
    let results = f.counter(
        "tlsgate_tls_flows_total",
        "Intercepted flows by how they ended (decrypted, abort, passed, not_decrypted, blocked, reset, timeout).",
        &["result"],
    );
    for (kind, n) in &ev.by_kind {
        results.with_label_values(&[kind]).inc_by(*n);
    }
    let aborts = f.counter(
        "tlsgate_tls_handshake_failures_total",
        "TLS aborts by the leg that failed and the reason (verify text, alert, timeout, ...).",
        &["leg", "reason"],
    );
    for ((leg, reason), n) in &ev.aborts {
        aborts.with_label_values(&[leg, reason]).inc_by(*n);
    }

    if let Some(s) = stats {
        dataplane(&f, s);
        let counts = tlsgate_api::coverage::Counts::of(s);
        let flows = f.counter(
            "tlsgate_coverage_flows_total",
            "TLS flows by what became of them: decrypted, or why not (policy_at_syn, policy_sni, learned_exclusion, undecryptable, admission_limit, certificate_action, failure, signer_unavailable, no_decryption_ca, inbound).",
            &["reason"],
        );
        for (r, n) in tlsgate_api::coverage::REASONS.iter().zip(&counts.flows) {
            flows.with_label_values(&[r.name]).inc_by(*n);
        }
        f.counter(
            "tlsgate_coverage_midstream_segments_total",
            "Segments of TCP to or from a TLS port without a SYN seen (forwarded, dropped or reset).",
            &[],
        )
        .with_label_values(&[])
        .inc_by(counts.midstream_segments);
        f.counter(
            "tlsgate_coverage_quic_datagrams_total",
            "QUIC datagrams to a TLS port a decrypt rule matched (dropped so clients fall back to TCP, or passed).",
            &[],
        )
        .with_label_values(&[])
        .inc_by(counts.quic_datagrams);
    }
    let mut out = Vec::new();
    let _ = TextEncoder::new().encode(&f.registry.gather(), &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// The dataplane's series: every counter of the table
/// ([`tlsgate_api::counters::COUNTERS`]) in its family, per worker; the
/// malformed-frame drops under `tlsgate_drops_total{reason}`; rule hits; ports.
fn dataplane(f: &Families, s: &DataplaneStats) {
    use tlsgate_api::counters::{families, Kind, COUNTERS};
    let mut vecs: BTreeMap<&'static str, Series> = BTreeMap::new();
    let mut family = |fam: &'static tlsgate_api::counters::Family| -> Series {
        vecs.entry(fam.name)
            .or_insert_with(|| {
                let labels: &[&str] = if fam.label.is_empty() { &["worker"] } else { &["worker", fam.label] };
                match fam.kind {
                    Kind::Counter => Series::Counter(f.float_counter(fam.name, fam.help, labels)),
                    Kind::Gauge => Series::Gauge(f.float_gauge(fam.name, fam.help, labels)),
                }
            })
            .clone()
    };
    let drops = family(&families::DROPS);
    let rules =
        f.counter("tlsgate_policy_rule_hits_total", "Decisions per policy rule.", &["worker", "rule"]);
    for w in &s.workers {
        let wk = w.worker.to_string();
        for c in COUNTERS.iter() {
            if std::ptr::eq(c.family, &families::DROPS) {
                continue; // below, with the parser's reasons
            }
            let v = w.get(c.name) as f64 / c.family.scale;
            let labels: Vec<&str> = if c.label.is_empty() { vec![&wk] } else { vec![&wk, c.label] };
            family(c.family).set(&labels, v);
        }
        for (reason, n) in &w.drops {
            drops.set(&[&wk, reason], *n as f64);
        }
        for (rule, n) in &w.rule_hits {
            rules.with_label_values(&[&wk, rule]).inc_by(*n);
        }
    }
    let pk = |n: &str, h: &str| f.counter(n, h, &["port", "device"]);
    let ipk = pk("tlsgate_port_rx_packets_total", "Frames the NIC received (DPDK ipackets).");
    let opk = pk("tlsgate_port_tx_packets_total", "Frames the NIC sent (DPDK opackets).");
    let missed =
        pk("tlsgate_port_imissed_total", "Frames the NIC dropped for full RX queues (DPDK imissed).");
    let nombuf = pk("tlsgate_port_rx_nombuf_total", "RX mbuf allocation failures (DPDK rx_nombuf).");
    let errors = pk("tlsgate_port_errors_total", "Erroneous frames received plus failed transmissions.");
    let link = f.gauge("tlsgate_port_link_up", "Whether a port's link is up.", &["port", "device"]);
    for p in &s.ports {
        let l = [p.role.as_str(), p.device.as_str()];
        ipk.with_label_values(&l).inc_by(p.ipackets);
        opk.with_label_values(&l).inc_by(p.opackets);
        missed.with_label_values(&l).inc_by(p.imissed);
        nombuf.with_label_values(&l).inc_by(p.rx_nombuf);
        errors.with_label_values(&l).inc_by(p.ierrors + p.oerrors);
        link.with_label_values(&l).set(i64::from(p.link_up));
    }
}

/// Connections served at once; more wait (in the listen backlog) for a slot.
pub const MAX_CONNECTIONS: usize = 512;
/// A request's head may not exceed this.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// A request's headers must arrive within this (slowloris).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection lives at most this long (a keep-alive scraper reconnects).
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// Serves `/metrics` on `listener` until the daemon stops: axum's router over
/// hyper's HTTP/1 server, each connection a task (a slow client holds only its
/// own), a request head of at most [`MAX_HEAD_BYTES`] due within
/// [`HEADER_TIMEOUT`], at most [`MAX_CONNECTIONS`] at once.
pub fn serve(daemon: Arc<Daemon>, listener: TcpListener) {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("tg-metrics")
        .enable_io()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "/metrics: no runtime");
            return;
        }
    };
    rt.block_on(accept_loop(daemon, listener));
}

async fn accept_loop(daemon: Arc<Daemon>, listener: TcpListener) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    if listener.set_nonblocking(true).is_err() {
        return;
    }
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(scrape))
        .fallback(|| async { (axum::http::StatusCode::NOT_FOUND, "tlsgate-control serves /metrics\n") })
        .with_state(daemon.clone());
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    while !daemon.stop.load(Ordering::Relaxed) {
        let Ok(accepted) = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await else {
            continue;
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        // Full: this connection waits for a slot (slow ones free theirs within
        // HEADER_TIMEOUT), and so do the ones behind it, in the backlog.
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT).max_buf_size(MAX_HEAD_BYTES);
            let conn = http.serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
        });
    }
}

async fn scrape(
    axum::extract::State(daemon): axum::extract::State<Arc<Daemon>>,
) -> impl axum::response::IntoResponse {
    // render() may wait up to 2 s on the dataplane: off the runtime's threads.
    let body = tokio::task::spawn_blocking(move || render(&daemon)).await.unwrap_or_default();
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body)
}
