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

use prometheus::{Encoder, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};
use tlsgate_api::{DataplaneStats, Request, Response};

use crate::daemon::Daemon;

struct Families {
    registry: Registry,
}

impl Families {
    fn counter(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
        self.registry.register(Box::new(c.clone())).expect("unique metric");
        c
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
    }
    let mut out = Vec::new();
    let _ = TextEncoder::new().encode(&f.registry.gather(), &mut out);
    String::from_utf8(out).unwrap_or_default()
}

fn dataplane(f: &Families, s: &DataplaneStats) {
    let port_name = |i: usize| if i == 0 { "inside" } else { "outside" };
    let rx_p =
        f.counter("tlsgate_rx_packets_total", "Frames received by a worker, per port.", &["worker", "port"]);
    let rx_b =
        f.counter("tlsgate_rx_bytes_total", "Bytes received by a worker, per port.", &["worker", "port"]);
    let tx_p =
        f.counter("tlsgate_tx_packets_total", "Frames sent by a worker, per port.", &["worker", "port"]);
    let tx_b = f.counter("tlsgate_tx_bytes_total", "Bytes sent by a worker, per port.", &["worker", "port"]);
    let drops =
        f.counter("tlsgate_drops_total", "Frames dropped by a worker, by reason.", &["worker", "reason"]);
    let active = f.gauge("tlsgate_flows_active", "Flows in a worker's flow table.", &["worker"]);
    let created = f.counter("tlsgate_flows_created_total", "Flows a worker created.", &["worker"]);
    let untracked = f.counter(
        "tlsgate_flows_untracked_total",
        "Frames forwarded without a flow: midstream TCP, table full (fail-open), fragments.",
        &["worker", "why"],
    );
    let intercepted =
        f.gauge("tlsgate_intercepted_flows_active", "Intercepted (terminated) flows alive.", &["worker"]);
    let verdicts = f.counter(
        "tlsgate_flow_verdicts_total",
        "Decisions on new TCP flows and TLS flows: intercepted, decrypted, not_decrypted, passed, blocked, aborted.",
        &["worker", "verdict"],
    );
    let decrypted = f.counter(
        "tlsgate_decrypted_bytes_total",
        "Plaintext bytes relayed by ended intercepted flows (up: client to server).",
        &["worker", "direction"],
    );
    let probes = f.counter(
        "tlsgate_probes_total",
        "The appliance's own handshakes with servers (SNI proofs, confirmations of exclusions), by result.",
        &["worker", "result"],
    );
    let unproved = f.counter(
        "tlsgate_sni_unproved_total",
        "Flows whose SNI matched a do-not-decrypt rule that the server did not prove.",
        &["worker"],
    );
    let forge = f.counter(
        "tlsgate_forge_cache_lookups_total",
        "Forged-certificate cache lookups.",
        &["worker", "result"],
    );
    let rules =
        f.counter("tlsgate_policy_rule_hits_total", "Decisions per policy rule.", &["worker", "rule"]);
    let busy = f.counter(
        "tlsgate_worker_busy_seconds_total",
        "Time of a worker's loop iterations that found work.",
        &["worker"],
    );
    for w in &s.workers {
        let wk = w.worker.to_string();
        for i in 0..2 {
            rx_p.with_label_values(&[&wk, port_name(i)]).inc_by(w.rx_packets[i]);
            rx_b.with_label_values(&[&wk, port_name(i)]).inc_by(w.rx_bytes[i]);
            tx_p.with_label_values(&[&wk, port_name(i)]).inc_by(w.tx_packets[i]);
            tx_b.with_label_values(&[&wk, port_name(i)]).inc_by(w.tx_bytes[i]);
        }
        for (reason, n) in &w.drops {
            drops.with_label_values(&[&wk, reason]).inc_by(*n);
        }
        active.with_label_values(&[&wk]).set(w.flows_active as i64);
        created.with_label_values(&[&wk]).inc_by(w.flows_created);
        for (why, n) in [
            ("midstream", w.untracked_midstream),
            ("table_full", w.untracked_table_full),
            ("fragment", w.untracked_fragments),
        ] {
            untracked.with_label_values(&[&wk, why]).inc_by(n);
        }
        let g = |k: &str| w.intercept.get(k).copied().unwrap_or(0);
        intercepted.with_label_values(&[&wk]).set(g("active") as i64);
        for (verdict, key) in [
            ("intercepted", "created"),
            ("decrypted", "tls_decrypted"),
            ("not_decrypted", "tls_not_decrypted"),
            ("passed", "tls_passed"),
            ("passed_remembered", "tls_passed_remembered"),
            ("passed_excluded", "tls_passed_excluded"),
            ("blocked_at_syn", "policy_blocked"),
            ("blocked_after_hello", "tls_blocked"),
            ("aborted", "tls_aborted"),
        ] {
            verdicts.with_label_values(&[&wk, verdict]).inc_by(g(key));
        }
        for (result, key) in [
            ("started", "probes_started"),
            ("refused", "probes_refused"),
            ("proved", "probes_proved"),
            ("not_proved", "probes_not_proved"),
            ("not_confirmed", "probes_not_confirmed"),
            ("exclusion_learned", "exclusions_learned"),
        ] {
            probes.with_label_values(&[&wk, result]).inc_by(g(key));
        }
        unproved.with_label_values(&[&wk]).inc_by(g("sni_unproved"));
        decrypted.with_label_values(&[&wk, "up"]).inc_by(g("bytes_up"));
        decrypted.with_label_values(&[&wk, "down"]).inc_by(g("bytes_down"));
        forge.with_label_values(&[&wk, "hit"]).inc_by(g("forge_cache_hits"));
        forge.with_label_values(&[&wk, "miss"]).inc_by(g("forge_cache_misses"));
        for (rule, n) in &w.rule_hits {
            rules.with_label_values(&[&wk, rule]).inc_by(*n);
        }
        busy.with_label_values(&[&wk]).inc_by(w.busy_ns / 1_000_000_000);
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
