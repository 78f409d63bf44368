//! The security audit log, `log_dir/audit.log`: one JSON line per act that
//! touches key custody or the link, whether allowed or refused, that is not a
//! configuration version of its own (those are in `policy history`).
//!
//! ```text
//! {"time":1764961234,"uid":1000,"pid":4242,"action":"dataplane_hello","result":"refused","detail":"on the operator socket"}
//! ```
//!
//! A request the web console makes for a logged-in operator is served under
//! [`as_operator`]: its audit lines and the configuration versions it makes
//! carry the operator's name besides the console's uid.
//!
//! Rotated like the other logs (`max_log_bytes`, `log_files_kept`). A write that
//! fails is logged and does not stop the act it records.

use std::cell::RefCell;
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

thread_local! {
    /// The operator the request being served on this thread is made for.
    static OPERATOR: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Clears the operator when the request ends, panic or not.
struct Reset;

impl Drop for Reset {
    fn drop(&mut self) {
        OPERATOR.with(|o| o.borrow_mut().take());
    }
}

/// Serves `f` for operator `name` (one request; the thread serving it).
pub fn as_operator<T>(name: &str, f: impl FnOnce() -> T) -> T {
    OPERATOR.with(|o| *o.borrow_mut() = Some(name.to_string()));
    let _reset = Reset;
    f()
}

/// The operator the current request is made for, if the console made it.
pub fn operator() -> Option<String> {
    OPERATOR.with(|o| o.borrow().clone())
}

/// One line.
#[derive(Debug, Serialize)]
struct Line<'a> {
    time: u64,
    uid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    operator: Option<String>,
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
        let operator = operator();
        let who = operator.as_deref().unwrap_or("");
        match result {
            Outcome::Refused => tracing::warn!(uid, operator = who, pid, action, detail, "refused (audited)"),
            Outcome::Allowed => tracing::info!(uid, operator = who, pid, action, detail, "audited"),
        }
        let line = Line { time, uid, operator, pid, action, result, detail };
        let Ok(mut text) = serde_json::to_string(&line) else { return };
        text.push('\n');
        let mut f = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = f.write(&text) {
            tracing::error!(error = %e, "audit.log: write failed");
        }
    }
}
