//! The control plane's configuration file (TOML, default `/etc/tlsgate/control.toml`).
//!
//! ```toml
//! [control]
//! state_dir = "/var/lib/tlsgate"          # trust store, CA, licenses, policy history (0700)
//! socket = "/run/tlsgate/control.sock"    # the operator socket: tlsgatectl (and the console)
//! socket_group = "tlsgate"                # besides root, members may use the operator socket
//! console_user = "tlsgate-console"        # the web console's system user (its uid asks only on an operator's behalf)
//! socket_mode = "0660"
//! dataplane_socket = "/run/tlsgate/dataplane.sock"   # the dataplane's own: 0600, root peers only
//! events_dir = "/run/tlsgate/events"      # the dataplane's event rings (ring-<worker>.ev)
//! log_dir = "/var/log/tlsgate"            # tls_proxy.log, events.jsonl (rotated)
//! max_log_bytes = 10485760
//! log_files_kept = 5
//! events_indexed = 10000                  # recent events kept for queries
//! chains_kept = 256                       # abort chains kept for `trust add --from-event`
//! metrics_listen = "127.0.0.1:9469"       # Prometheus /metrics; "" disables
//! vendor_key = "<base64 Ed25519 public key>"   # licenses are signed with its private half
//! device_id = "..."                       # default: /etc/machine-id
//! pkcs11_keys = ["pkcs11:token=tlsgate;object=ca?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=/etc/tlsgate/hsm.pin"]
//!                                       # the token keys `ca import --pkcs11` may use
//! crl_fetch = true                        # fetch CRLs from the distribution points of verified chains
//! status_check_timeout_ms = 3000          # one CRL fetch (resolve, connect, answer), at most
//! crl_max_bytes = 262144                  # a larger CRL is refused
//! management_networks = ["192.0.2.0/24"]  # never fetched from (nor loopback, link-local, this host)
//! crl_networks = ["10.20.0.0/16"]         # internal networks that may serve CRLs (else: public, port 80)
//!
//! [[control.syslog]]                      # events as OCSF in RFC 5424 syslog over RELP (at least once)
//! name = "siem"
//! target = "192.0.2.50:2514"
//! tls = true                              # optional: RELP in TLS
//! ca = "/etc/tlsgate/siem-ca.pem"
//! spool_max_bytes = 67108864              # the spool under state_dir/syslog/ (an overflow is counted)
//! ```
//!
//! Unknown fields are refused; [`ControlConfig::validate`] names the bad field.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// The whole file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// `[control]`.
    #[serde(default)]
    pub control: ControlConfig,
}

/// `[control]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// The state directory.
    pub state_dir: PathBuf,
    /// The control socket.
    pub socket: PathBuf,
    /// A group whose members may use the socket besides root.
    pub socket_group: Option<String>,
    /// The socket's mode, octal.
    pub socket_mode: String,
    /// The dataplane's socket (0600; only a root peer may say hello on it).
    pub dataplane_socket: PathBuf,
    /// Where the dataplane's event rings are.
    pub events_dir: PathBuf,
    /// Where `tls_proxy.log` and `events.jsonl` go.
    pub log_dir: PathBuf,
    /// A log file is rotated past this size.
    pub max_log_bytes: u64,
    /// Rotated files kept per log.
    pub log_files_kept: usize,
    /// Recent events kept for queries.
    pub events_indexed: usize,
    /// Abort chains kept.
    pub chains_kept: usize,
    /// Prometheus listen address ("" disables).
    pub metrics_listen: String,
    /// The vendor's Ed25519 public key (base64) that signs licenses.
    pub vendor_key: Option<String>,
    /// This appliance's device id (licenses name it); default `/etc/machine-id`.
    pub device_id: Option<String>,
    /// The token keys `ca import --pkcs11` may use: full `pkcs11:` URIs with an
    /// absolute `module-path` and a `pin-source` file (none by default: an
    /// operator's request names one of them, never a library, a token PIN or a
    /// file of its choosing).
    pub pkcs11_keys: Vec<String>,
    /// Fetch CRLs from the distribution points of the chains the dataplane verified.
    pub crl_fetch: bool,
    /// The revocation status check's time limit: one CRL fetch, name resolution,
    /// connection and the whole answer included.
    pub status_check_timeout_ms: u64,
    /// The largest CRL kept (DER bytes). All CRLs together stay under half the
    /// link's frame limit, as they travel in the snapshot.
    pub crl_max_bytes: usize,
    /// Networks CRLs are never fetched from (the appliance's management
    /// networks), besides loopback, link-local, multicast and this host's own
    /// addresses.
    pub management_networks: Vec<String>,
    /// Internal (not globally routable) networks that may serve CRLs, on any
    /// port: an enterprise CA's. Elsewhere CRLs come from globally routable
    /// addresses on port 80 only.
    pub crl_networks: Vec<String>,
    /// Syslog collectors (RELP): each event goes to each, at least once.
    pub syslog: Vec<crate::syslog::Collector>,
    /// The system user `tlsgate-console` runs as. Its uid may only check logins
    /// and ask, on behalf of a named operator account, for what the console's
    /// pages do (no accounts, no CA, no key logs); none: the console cannot
    /// connect.
    pub console_user: Option<String>,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            state_dir: "/var/lib/tlsgate".into(),
            socket: "/run/tlsgate/control.sock".into(),
            socket_group: None,
            console_user: None,
            socket_mode: "0660".into(),
            dataplane_socket: "/run/tlsgate/dataplane.sock".into(),
            events_dir: "/run/tlsgate/events".into(),
            log_dir: "/var/log/tlsgate".into(),
            max_log_bytes: 10 << 20,
            log_files_kept: 5,
            events_indexed: 10_000,
            chains_kept: 256,
            metrics_listen: "127.0.0.1:9469".into(),
            vendor_key: None,
            device_id: None,
            pkcs11_keys: Vec::new(),
            crl_fetch: true,
            status_check_timeout_ms: 3000,
            crl_max_bytes: 256 << 10,
            management_networks: Vec::new(),
            crl_networks: Vec::new(),
            syslog: Vec::new(),
        }
    }
}

impl ControlConfig {
    /// Reads and validates a file; the error names the file and the field.
    pub fn load(path: &Path) -> Result<ControlConfig> {
        let text = std::fs::read_to_string(path).map_err(Error::file(path))?;
        Self::from_toml(&text).map_err(|e| e.in_file(path))
    }

    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<ControlConfig> {
        let file: ConfigFile = toml::from_str(text)?;
        file.control.validate()?;
        Ok(file.control)
    }

    /// Cross-field checks; the message names the field.
    pub fn validate(&self) -> Result<()> {
        self.mode()?;
        if self.max_log_bytes < 4096 {
            return Err(Error::config("max_log_bytes", "at least 4096"));
        }
        if self.log_files_kept == 0 || self.log_files_kept > 100 {
            return Err(Error::config(
                "log_files_kept",
                format!("{} is outside 1..=100", self.log_files_kept),
            ));
        }
        if self.events_indexed == 0 || self.events_indexed > 1_000_000 {
            return Err(Error::config(
                "events_indexed",
                format!("{} is outside 1..=1000000", self.events_indexed),
            ));
        }
        if self.chains_kept == 0 || self.chains_kept > 100_000 {
            return Err(Error::config("chains_kept", format!("{} is outside 1..=100000", self.chains_kept)));
        }
        if !self.metrics_listen.is_empty() && self.metrics_listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(Error::config(
                "metrics_listen",
                format!("{:?} is not an address:port (\"\" disables)", self.metrics_listen),
            ));
        }
        if let Some(k) = &self.vendor_key {
            tlsgate_certstore::VendorKey::from_base64(k)
                .map_err(|e| Error::config("vendor_key", e.to_string()))?;
        }
        if let Some(d) = &self.device_id {
            if d.trim().is_empty() {
                return Err(Error::config("device_id", "empty"));
            }
        }
        for (field, p) in [
            ("state_dir", &self.state_dir),
            ("socket", &self.socket),
            ("dataplane_socket", &self.dataplane_socket),
            ("events_dir", &self.events_dir),
            ("log_dir", &self.log_dir),
        ] {
            if !p.is_absolute() {
                return Err(Error::config(field, format!("{} is not an absolute path", p.display())));
            }
        }
        for (i, k) in self.pkcs11_keys.iter().enumerate() {
            let field = format!("control.pkcs11_keys[{i}]");
            let u = crate::pkcs11::Pkcs11Uri::configured(k)
                .map_err(|e| Error::config(field.clone(), e.to_string()))?;
            // The library and the PIN file, and every directory above them:
            // owned by root, writable by it only (nobody else may replace them).
            let module = u.module.as_deref().unwrap_or_default();
            crate::pkcs11::trusted_path(std::path::Path::new(module))
                .map_err(|e| Error::config(field.clone(), format!("module-path {module}: {e}")))?;
            if let Some(crate::pkcs11::PinSpec::Source(p)) = &u.pin {
                crate::pkcs11::trusted_path(p)
                    .map_err(|e| Error::config(field.clone(), format!("pin-source {}: {e}", p.display())))?;
            }
        }
        if !(100..=60_000).contains(&self.status_check_timeout_ms) {
            return Err(Error::config(
                "status_check_timeout_ms",
                format!("{} is outside 100..=60000", self.status_check_timeout_ms),
            ));
        }
        if !(1024..=crate::crl::MAX_TOTAL_BYTES).contains(&self.crl_max_bytes) {
            return Err(Error::config(
                "crl_max_bytes",
                format!("{} is outside 1024..={}", self.crl_max_bytes, crate::crl::MAX_TOTAL_BYTES),
            ));
        }
        for (field, list) in
            [("management_networks", &self.management_networks), ("crl_networks", &self.crl_networks)]
        {
            for (i, n) in list.iter().enumerate() {
                crate::crl::Network::parse(n)
                    .map_err(|e| Error::config(format!("control.{field}[{i}]"), e))?;
            }
        }
        for (i, c) in self.syslog.iter().enumerate() {
            c.validate().map_err(|e| Error::config(format!("control.syslog[{i}]"), e))?;
            if self.syslog[..i].iter().any(|o| o.name == c.name) {
                return Err(Error::config(
                    format!("control.syslog[{i}]"),
                    format!("name {:?} twice", c.name),
                ));
            }
        }
        if self.dataplane_socket == self.socket {
            return Err(Error::config(
                "dataplane_socket",
                format!(
                    "{} is also control.socket; the dataplane needs a socket of its own",
                    self.socket.display()
                ),
            ));
        }
        Ok(())
    }

    /// The socket mode.
    pub fn mode(&self) -> Result<u32> {
        u32::from_str_radix(self.socket_mode.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| {
                Error::config(
                    "socket_mode",
                    format!("{:?} is not an octal mode like \"0660\"", self.socket_mode),
                )
            })
    }

    /// The device id: the configured one, else `/etc/machine-id`.
    pub fn device_id(&self) -> Result<String> {
        if let Some(d) = &self.device_id {
            return Ok(d.trim().to_string());
        }
        let text = std::fs::read_to_string("/etc/machine-id").map_err(Error::MachineId)?;
        let id = text.trim().to_string();
        if id.is_empty() {
            return Err(Error::MachineIdEmpty);
        }
        Ok(id)
    }

    /// The vendor key, if configured.
    pub fn vendor_key(&self) -> Option<tlsgate_certstore::VendorKey> {
        self.vendor_key.as_deref().and_then(|k| tlsgate_certstore::VendorKey::from_base64(k).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors_naming_the_field() {
        let c = ControlConfig::from_toml("").unwrap();
        assert_eq!(c.socket, PathBuf::from("/run/tlsgate/control.sock"));
        assert_eq!(c.mode().unwrap(), 0o660);
        for (text, needle) in [
            ("[control]\nsocket_mode = \"rw\"\n", "control.socket_mode"),
            ("[control]\nmax_log_bytes = 1\n", "control.max_log_bytes"),
            ("[control]\nmetrics_listen = \"nowhere\"\n", "control.metrics_listen"),
            ("[control]\nvendor_key = \"AAAA\"\n", "control.vendor_key"),
            ("[control]\nstate_dir = \"relative\"\n", "control.state_dir"),
            ("[control]\ndataplane_socket = \"/run/tlsgate/control.sock\"\n", "control.dataplane_socket"),
            ("[control]\nsockett = \"/x\"\n", "sockett"),
        ] {
            let err = ControlConfig::from_toml(text).unwrap_err();
            let err = err.to_string();
            assert!(err.contains(needle), "{needle:?} not in {err:?}");
        }
    }
}
