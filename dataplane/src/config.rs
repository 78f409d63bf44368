//! The dataplane's configuration file (TOML).
//!
//! ```toml
//! [dataplane]
//! lab = true                    # back off when idle (2-core lab); production busy-polls
//! malformed = "drop"            # or "forward"
//! stats_interval_s = 10         # periodic stats line on stderr; 0 = off
//! status_socket = "/run/tlsgate/dataplane.sock"
//! steering = "auto"             # auto | software | hardware
//!
//! [flows]
//! max_per_worker = 1000000
//! at_capacity = "fail-open"     # or "fail-closed"
//! [flows.timeouts]              # seconds
//! tcp_syn = 30
//! tcp_established = 3600
//!
//! driver = "dpdk"               # (top level) dpdk | pcap
//! [dpdk]
//! eal_args = ["-l", "0", "--no-huge", "-m", "256", "--no-pci", "--file-prefix=tg"]
//! inside = "net_af_packet0"
//! outside = "net_af_packet1"
//! ```
//!
//! Unknown fields are refused; [`Config::validate`] names the bad field.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tlsgate_drivers::dpdk::DpdkConfig;
use tlsgate_drivers::pcap::PcapConfig;

use crate::flow::{AtCapacity, Timeouts};
use crate::intercept::tls::TlsConfig;
use crate::intercept::InterceptConfig;
use crate::Error;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Packet I/O backend.
    pub driver: Driver,
    /// Worker behaviour.
    #[serde(default)]
    pub dataplane: DataplaneConfig,
    /// Flow table.
    #[serde(default)]
    pub flows: FlowsConfig,
    /// Intercepted (terminated) flows.
    #[serde(default)]
    pub intercept: InterceptConfig,
    /// What a new intercepted flow may cost: quotas, memory budget, first byte.
    #[serde(default)]
    pub admission: crate::intercept::admission::AdmissionConfig,
    /// TLS interception of intercepted flows (absent: plain TCP splices).
    pub tls: Option<TlsConfig>,
    /// The decryption policy (absent: `intercept.ports` selects flows).
    pub policy: Option<PolicyConfig>,
    /// Events of intercepted flows (absent: none are written, unless a control
    /// plane is configured: then `/run/tlsgate/events`).
    pub events: Option<crate::events::EventsConfig>,
    /// The control plane (absent: policy, CA and trust come from local files).
    pub control: Option<ControlLinkConfig>,
    /// DPDK backend (when `driver = "dpdk"`).
    pub dpdk: Option<DpdkConfig>,
    /// Capture-file backend (when `driver = "pcap"`).
    pub pcap: Option<PcapConfig>,
    /// Where `capture start` writes, and how much.
    #[serde(default)]
    pub capture: crate::capture::CaptureConfig,
}

/// `[control]`: the control plane this dataplane connects to. It sends the
/// policy, CA, trust store and cipher profile; the dataplane sends its abort
/// chains and answers stats and capture requests. The events rings are read by
/// the control plane (from `[events] dir`, which must be its `events_dir`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlLinkConfig {
    /// The control plane's dataplane socket (`control.dataplane_socket`, not the
    /// operator socket: a hello there is refused).
    #[serde(default = "default_control_socket")]
    pub socket: PathBuf,
}

fn default_control_socket() -> PathBuf {
    "/run/tlsgate/dataplane.sock".into()
}

/// `[policy]`: the decryption policy of a dataplane without a control plane (or
/// until its first snapshot).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// The policy in its JSON format (`docs/policy.md`).
    pub file: PathBuf,
}

/// Which backend drives the ports.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Driver {
    /// DPDK (NICs or virtual devices).
    Dpdk,
    /// Capture files.
    Pcap,
}

/// What to do with a malformed frame.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum MalformedAction {
    /// Count and drop (default).
    #[default]
    Drop,
    /// Count and forward unchanged (a transparent wire that parses what it can).
    Forward,
}

/// How frames reach the worker that owns their flow.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SteeringMode {
    /// Hardware when the NIC was configured for symmetric RSS, else software.
    #[default]
    Auto,
    /// Always hash in software and hand frames over.
    Software,
    /// Trust the NIC's RSS.
    Hardware,
}

/// `[dataplane]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataplaneConfig {
    /// Lab mode: workers sleep briefly when idle.
    pub lab: bool,
    /// Malformed frames.
    pub malformed: MalformedAction,
    /// Seconds between stats lines (0: none).
    pub stats_interval_s: u64,
    /// Unix socket answering status requests (none when absent).
    pub status_socket: Option<PathBuf>,
    /// Steering mode.
    pub steering: SteeringMode,
    /// Bursts each worker's hand-over queue holds.
    pub handover_depth: usize,
}

impl Default for DataplaneConfig {
    fn default() -> Self {
        DataplaneConfig {
            lab: false,
            malformed: MalformedAction::Drop,
            stats_interval_s: 10,
            status_socket: None,
            steering: SteeringMode::Auto,
            handover_depth: 512,
        }
    }
}

/// `[flows]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlowsConfig {
    /// Flow-table capacity of each worker.
    pub max_per_worker: usize,
    /// Action for new flows at capacity.
    pub at_capacity: AtCapacity,
    /// The whole table at start (`max_per_worker` flows' worth) instead of
    /// doubling as flows arrive: no pause for a rehash under load (tens of ms
    /// at a million flows), for 128 MiB per worker per million flows, resident
    /// as the flows touch it.
    pub preallocate: bool,
    /// Idle timeouts.
    pub timeouts: Timeouts,
}

impl Default for FlowsConfig {
    fn default() -> Self {
        FlowsConfig {
            max_per_worker: 1_000_000,
            at_capacity: AtCapacity::FailOpen,
            preallocate: false,
            timeouts: Timeouts::default(),
        }
    }
}

impl Config {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| Error::ConfigRead { path: path.display().to_string(), source })?;
        Self::from_toml(&text).map_err(|e| match e {
            Error::ConfigParse { message, .. } => {
                Error::ConfigParse { path: path.display().to_string(), message }
            }
            Error::ConfigInvalid { message, .. } => {
                Error::ConfigInvalid { path: path.display().to_string(), message }
            }
            other => other,
        })
    }

    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Config, Error> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| Error::ConfigParse {
            path: String::new(),
            message: e.to_string().trim().to_string(),
        })?;
        if cfg.control.is_some() && cfg.events.is_none() {
            cfg.events = Some(crate::events::EventsConfig::at("/run/tlsgate/events".into()));
        }
        cfg.validate().map_err(|e| Error::ConfigInvalid { path: String::new(), message: e.to_string() })?;
        Ok(cfg)
    }

    /// Cross-field checks; the message names the field.
    pub fn validate(&self) -> Result<(), Error> {
        match self.driver {
            Driver::Dpdk => self
                .dpdk
                .as_ref()
                .ok_or_else(|| Error::Invalid("driver = \"dpdk\" needs a [dpdk] section".into()))?
                .validate()?,
            Driver::Pcap => {
                let p = self
                    .pcap
                    .as_ref()
                    .ok_or_else(|| Error::Invalid("driver = \"pcap\" needs a [pcap] section".into()))?;
                if p.inside_rx.is_none() && p.outside_rx.is_none() {
                    return Err(Error::Invalid(
                        "pcap: give inside_rx and/or outside_rx (capture files to replay)".into(),
                    ));
                }
            }
        }
        if self.flows.max_per_worker == 0 || self.flows.max_per_worker > 64 << 20 {
            return Err(Error::Invalid(format!(
                "flows.max_per_worker: {} is outside 1..=67108864",
                self.flows.max_per_worker
            )));
        }
        self.flows.timeouts.validate()?;
        self.intercept.validate()?;
        self.admission.validate()?;
        if let Some(t) = &self.tls {
            t.validate()?;
            if self.control.is_none() && (t.ca_cert.is_none() || t.ca_key.is_none()) {
                return Err(Error::Invalid(
                    "tls.ca_cert and tls.ca_key: required without a [control] plane".into(),
                ));
            }
        }
        if self.control.is_some() && !self.intercept.ports.is_empty() {
            return Err(Error::Invalid(
                "intercept.ports: with a [control] plane its policy selects the flows to intercept; \
                        remove intercept.ports"
                    .into(),
            ));
        }
        if let Some(e) = &self.events {
            e.validate()?;
        }
        self.capture.validate()?;
        if self.policy.is_some() && !self.intercept.ports.is_empty() {
            return Err(Error::Invalid(
                "intercept.ports: with a [policy] the policy selects the flows to intercept; \
                        remove intercept.ports"
                    .into(),
            ));
        }
        if self.control.is_some() && self.tls.as_ref().is_some_and(|t| !t.crls.is_empty()) {
            return Err(Error::Invalid(
                "tls.crls: with a control plane its snapshots carry the CRLs (a local list would be \
                 ignored); remove tls.crls"
                    .into(),
            ));
        }
        if self.dataplane.handover_depth < 2 || self.dataplane.handover_depth > 65536 {
            return Err(Error::Invalid(format!(
                "dataplane.handover_depth: {} is outside 2..=65536",
                self.dataplane.handover_depth
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    /// The configurations the repository ships (`make install` copies the
    /// example; `make run` uses the lab's) load and validate.
    #[test]
    fn shipped_configurations_load() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
        let example =
            super::Config::load(&dir.join("appliance.example.toml")).expect("appliance.example.toml");
        assert!(example.flows.preallocate);
        super::Config::load(&dir.join("lab.toml")).expect("lab.toml");
    }

    use super::*;

    const GOOD: &str = r#"
driver = "dpdk"
[dataplane]
lab = true
[dpdk]
eal_args = ["-l", "0", "--no-huge", "--no-pci"]
inside = "net_af_packet0"
outside = "net_af_packet1"
"#;

    #[test]
    fn good_config_parses_with_defaults() {
        let c = Config::from_toml(GOOD).unwrap();
        assert!(c.dataplane.lab);
        assert_eq!(c.flows.max_per_worker, 1_000_000);
        assert_eq!(c.flows.at_capacity, AtCapacity::FailOpen);
        assert_eq!(c.flows.timeouts.tcp_established, 3600);
        assert_eq!(c.dpdk.unwrap().rx_desc, 1024);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (GOOD.replace("lab = true", "lab = true\nlabb = 1"), "labb"),
            (GOOD.replace("net_af_packet1", "net_af_packet0"), "dpdk.outside"),
            (format!("{GOOD}\n[flows]\nmax_per_worker = 0\n"), "flows.max_per_worker"),
            (format!("{GOOD}\n[flows.timeouts]\nudp = 0\n"), "flows.timeouts.udp"),
            (format!("{GOOD}\n[flows]\nat_capacity = \"maybe\"\n"), "at_capacity"),
            (GOOD.replace("driver = \"dpdk\"", "driver = \"pcap\""), "[pcap]"),
            (
                GOOD.replace("eal_args = [\"-l\", \"0\", \"--no-huge\", \"--no-pci\"]", "eal_args = []"),
                "dpdk.eal_args",
            ),
            (format!("{GOOD}\n[intercept]\nports = [443]\n[policy]\nfile = \"p.json\"\n"), "intercept.ports"),
            (format!("{GOOD}\n[intercept]\nbuffer_kib = 1\n"), "intercept.buffer_kib"),
            (format!("{GOOD}\n[intercept]\nbuffer_max_kib = 65536\n"), "intercept.buffer_max_kib"),
            (format!("{GOOD}\n[tls]\nca_cert = \"a\"\nca_key = \"b\"\nprofile = \"weak\"\n"), "tls.profile"),
        ];
        for (text, needle) in cases {
            let err = Config::from_toml(&text).unwrap_err().to_string();
            assert!(err.contains(needle), "{needle:?} not in {err:?}");
        }
    }

    /// `[tls] crls` beside a control plane would be ignored (its snapshots carry
    /// the CRLs): refused, naming the field.
    #[test]
    fn local_crls_beside_a_control_plane_are_refused() {
        let text = format!("{GOOD}[control]\n[tls]\ncrls = [\"/etc/tlsgate/origin.crl\"]\n");
        let e = Config::from_toml(&text).unwrap_err().to_string();
        assert!(e.contains("tls.crls") && e.contains("control plane"), "{e}");
    }
}
