//! The security audit log, `log_dir/audit.log`: one JSON line per act that
//! touches key custody or the link, whether allowed or refused, that is not a
//! configuration version of its own (those are in `policy history`).
//!
//! ```text
//! {"time":1764961234,"uid":1000,"pid":4242,"action":"dataplane_hello","result":"refused","detail":"on the operator socket"}
//! ```
//!
//! Rotated like the other logs (`max_log_bytes`, `log_files_kept`). A write that
//! fails is logged and does not stop the act it records.

use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use serde::Serialize;

use crate::events::LogFile;

/// Whether the act was carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Done.
    Allowed,
    /// Refused.
    Refused,
}

/// One line.
#[derive(Debug, Serialize)]
struct Line<'a> {
    time: u64,
    uid: u32,
    pid: i32,
    action: &'a str,
    result: Outcome,
    detail: &'a str,
}

/// The audit log.
pub struct AuditLog {
    file: Mutex<LogFile>,
}

impl AuditLog {
    /// `dir/audit.log`.
    pub fn open(dir: PathBuf, max_bytes: u64, kept: usize) -> AuditLog {
        AuditLog { file: Mutex::new(LogFile::new(dir.join("audit.log"), max_bytes, kept)) }
    }

    /// Appends a line (and a log line at warn level when refused).
    pub fn record(&self, uid: u32, pid: i32, action: &str, result: Outcome, detail: &str) {
        let time =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        match result {
            Outcome::Refused => tracing::warn!(uid, pid, action, detail, "refused (audited)"),
            Outcome::Allowed => tracing::info!(uid, pid, action, detail, "audited"),
        }
        let line = Line { time, uid, pid, action, result, detail };
        let Ok(mut text) = serde_json::to_string(&line) else { return };
        text.push('\n');
        let mut f = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = f.write(&text) {
            tracing::error!(error = %e, "audit.log: write failed");
        }
    }
}
