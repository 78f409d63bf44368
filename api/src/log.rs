//! `tls_proxy.log`: the lines of an event in the seed's shapes, with our own
//! error text inside (never imitated OpenSSL error codes).
//!
//! ```text
//! 2014-02-05 05:21:42,189 INFO TLS_Proxy - SSL alert message received from server (0x228 = "fatal : handshake failure") in Session: x2fd1f6
//! 2014-02-05 05:21:42,189 ERROR TLS_Proxy - TLS problem (<our text>) while connecting to server for Session: x2fd1f6
//! ```
//!
//! Both the control plane (the normal consumer of the event rings) and a
//! dataplane running without it write these lines.

use crate::event::{alert_name, text, ALERT_NONE};
use crate::{EventKind, EventRecord, Leg};

/// The `tls_proxy.log` lines of an event, in the seed's shapes with our own error
/// text inside.
pub fn log_lines(r: &EventRecord) -> Vec<(&'static str, String)> {
    let session = r.session_label();
    let mut out = Vec::new();
    match r.kind() {
        Ok(EventKind::Abort) => {
            if r.verify_code != 0 {
                out.push((
                    "INFO",
                    format!(
                        "Certificate verification failure: {} (code {}, depth {})",
                        text(&r.verify_text),
                        r.verify_code,
                        r.verify_depth
                    ),
                ));
                out.push(("INFO", format!("Subject: {}", text(&r.server_cert_subject))));
                out.push(("INFO", format!("Issuer: {}", text(&r.server_cert_issuer))));
            }
            if r.alert_received != ALERT_NONE {
                let name = alert_name(r.alert_received).unwrap_or("unknown").replace('_', " ");
                out.push((
                    "INFO",
                    format!(
                        "SSL alert message received from server (0x{:x} = \"fatal : {name}\") in Session: {session}",
                        0x200 | u16::from(r.alert_received)
                    ),
                ));
            }
            if !text(&r.ja4).is_empty() {
                out.push(("INFO", format!("Client fingerprint JA4 {} in Session: {session}", text(&r.ja4))));
            }
            let leg = if r.leg == Leg::Client as u8 { "client" } else { "server" };
            out.push((
                "ERROR",
                format!("TLS problem ({}) while connecting to {leg} for Session: {session}", r.error_text()),
            ));
        }
        Ok(kind) if r.verify_code != 0 => {
            out.push((
                "WARN",
                format!(
                    "Certificate verification failure ignored (validation is off): {} (code {}, depth {}) in Session: {session}",
                    text(&r.verify_text),
                    r.verify_code,
                    r.verify_depth
                ),
            ));
            out.push(("WARN", format!("Subject: {}", text(&r.server_cert_subject))));
            out.push(("WARN", format!("Issuer: {}", text(&r.server_cert_issuer))));
            out.push(("INFO", summary_line(r, kind)));
        }
        Ok(kind @ (EventKind::Decrypted | EventKind::NotDecrypted)) => {
            out.push(("INFO", summary_line(r, kind)))
        }
        Ok(kind) => {
            out.push(("INFO", format!("{} ({})", summary_line(r, kind), r.error_text())));
        }
        Err(_) => {}
    }
    out
}

fn summary_line(r: &EventRecord, kind: EventKind) -> String {
    let mut line = format!(
        "Session: {} {} {} -> {} sni {} rule {} bytes {}/{}",
        r.session_label(),
        kind.name(),
        r.src(),
        r.dst(),
        text(&r.sni),
        text(&r.rule),
        r.bytes_up,
        r.bytes_down
    );
    if !text(&r.ja4).is_empty() {
        line.push_str(" ja4 ");
        line.push_str(text(&r.ja4));
    }
    line
}

/// `2014-02-05 05:21:42,189` (UTC).
pub fn stamp(unix_ns: u64) -> String {
    let secs = unix_ns / 1_000_000_000;
    let ms = (unix_ns / 1_000_000) % 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02},{ms:03}", rem / 3600, (rem / 60) % 60, rem % 60)
}

/// The lines of an event with their time stamp, each ending in a newline.
pub fn format_lines(r: &EventRecord) -> String {
    let mut out = String::new();
    for (level, line) in log_lines(r) {
        out.push_str(&format!("{} {level} TLS_Proxy - {line}\n", stamp(r.time_ns)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::set_text;
    use crate::{Cause, Outcome, Phase, VerifyReason};

    #[test]
    fn stamps_like_the_seed() {
        // 2014-02-05 05:21:42.189 UTC, the seed's first log line.
        assert_eq!(stamp(1_391_577_702_189_000_000), "2014-02-05 05:21:42,189");
        assert_eq!(stamp(0), "1970-01-01 00:00:00,000");
    }

    #[test]
    fn seed_problem_lines() {
        let mut r = EventRecord::new(EventKind::Abort);
        r.set_outcome(&Outcome::new(
            EventKind::Abort,
            Leg::Server,
            Phase::ServerHandshake,
            Cause::AlertReceived(40),
        ));
        r.session_id = 0x2fd1f6;
        let lines = log_lines(&r);
        assert_eq!(
            lines[0].1,
            "SSL alert message received from server (0x228 = \"fatal : handshake failure\") in Session: x2fd1f6"
        );
        assert_eq!(lines[1].0, "ERROR");
        assert!(lines[1].1.starts_with(
            "TLS problem (the server sent a fatal alert: handshake_failure) while connecting to server"
        ));
        let mut r = EventRecord::new(EventKind::Abort);
        let cause = Cause::Certificate { reason: VerifyReason::DepthZeroSelfSignedCert, depth: 0 };
        r.set_outcome(&Outcome::new(EventKind::Abort, Leg::Server, Phase::ServerHandshake, cause));
        set_text(&mut r.server_cert_subject, "/unstructuredName=ciscoasa");
        set_text(&mut r.server_cert_issuer, "/unstructuredName=ciscoasa");
        let lines = log_lines(&r);
        assert_eq!(
            lines[0].1,
            "Certificate verification failure: self signed certificate (code 18, depth 0)"
        );
        assert_eq!(lines[1].1, "Subject: /unstructuredName=ciscoasa");
        assert_eq!(lines[2].1, "Issuer: /unstructuredName=ciscoasa");
    }
}
