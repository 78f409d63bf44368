//! `tlsgate-vendor`: the vendor's own tool, kept off the appliance. It holds the
//! vendor's private key (which operators never need) and issues licenses offline.
//!
//! ```text
//! tlsgate-vendor license keygen --out vendor.key        # prints the public key for control.vendor_key
//! tlsgate-vendor license issue --key vendor.key --device ID --serial TG-0001 \
//!     --feature strong-crypto [--not-before T] [--not-after T | --days N] [--out FILE]
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::error::{Error, Result};

/// The vendor tool.
#[derive(Parser, Debug)]
#[command(
    name = "tlsgate-vendor",
    version,
    about = "tlsgate vendor tool: license keys and licenses (offline)"
)]
pub struct VendorCli {
    /// What to do.
    #[command(subcommand)]
    pub command: VendorCmd,
}

/// `tlsgate-vendor ...`
#[derive(Subcommand, Debug)]
pub enum VendorCmd {
    /// Licenses.
    #[command(subcommand)]
    License(LicenseVendorCmd),
}

/// `tlsgate-vendor license ...`
#[derive(Subcommand, Debug)]
pub enum LicenseVendorCmd {
    /// Issue a license signed with the vendor's private key.
    Issue {
        /// The vendor's private key (PKCS#8 PEM, DER or base64).
        #[arg(long)]
        key: PathBuf,
        /// The appliance's device id (`tlsgatectl status` shows it).
        #[arg(long)]
        device: String,
        /// Serial number.
        #[arg(long)]
        serial: String,
        /// A feature (repeatable), e.g. strong-crypto.
        #[arg(long = "feature")]
        features: Vec<String>,
        /// Valid from (RFC 3339; default: now).
        #[arg(long)]
        not_before: Option<String>,
        /// Valid until (RFC 3339); or give --days.
        #[arg(long)]
        not_after: Option<String>,
        /// Valid for this many days from not-before.
        #[arg(long, default_value_t = 365)]
        days: i64,
        /// Write the license here (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Make a vendor key pair (private key file; prints the public key for
    /// `control.vendor_key`).
    Keygen {
        /// The private key file to write (mode 0600).
        #[arg(long)]
        out: PathBuf,
    },
}

/// Runs a command; the text to print.
pub fn run(cli: &VendorCli) -> Result<String> {
    match &cli.command {
        VendorCmd::License(LicenseVendorCmd::Issue {
            key,
            device,
            serial,
            features,
            not_before,
            not_after,
            days,
            out,
        }) => issue(
            key,
            device,
            serial,
            features,
            not_before.as_deref(),
            not_after.as_deref(),
            *days,
            out.as_deref(),
        ),
        VendorCmd::License(LicenseVendorCmd::Keygen { out }) => keygen(out),
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(Error::file(path))
}

fn write_out(out: Option<&Path>, bytes: &[u8]) -> Result<()> {
    match out {
        None => Ok(std::io::stdout().write_all(bytes)?),
        Some(p) => std::fs::write(p, bytes).map_err(Error::file(p)),
    }
}

/// A refused option.
fn arg(arg: &'static str, reason: impl std::fmt::Display) -> Error {
    Error::Arg { arg, reason: reason.to_string() }
}

/// `license issue`: signs a license; the text to print (empty when it went to
/// standard output).
#[allow(clippy::too_many_arguments)]
pub fn issue(
    key: &Path,
    device: &str,
    serial: &str,
    features: &[String],
    not_before: Option<&str>,
    not_after: Option<&str>,
    days: i64,
    out: Option<&Path>,
) -> Result<String> {
    let signer = tlsgate_certstore::VendorSigner::from_key_file(&read(key)?)
        .map_err(|e| Error::from(e).in_file(key))?;
    let fmt = &time::format_description::well_known::Rfc3339;
    let start = match not_before {
        Some(t) => time::OffsetDateTime::parse(t, fmt).map_err(|e| arg("--not-before", e))?,
        None => {
            time::OffsetDateTime::now_utc().replace_nanosecond(0).unwrap_or(time::OffsetDateTime::now_utc())
        }
    };
    let end = match not_after {
        Some(t) => time::OffsetDateTime::parse(t, fmt).map_err(|e| arg("--not-after", e))?,
        None => start + time::Duration::days(days),
    };
    let payload = tlsgate_certstore::LicensePayload {
        serial: serial.to_string(),
        device_id: device.to_string(),
        features: features.to_vec(),
        not_before: start.format(fmt)?,
        not_after: end.format(fmt)?,
    };
    let text = signer.issue(&payload)?;
    write_out(out, text.as_bytes())?;
    Ok(out.map_or(String::new(), |p| {
        format!("license {serial} for device {device} written to {}\n", p.display())
    }))
}

/// `license keygen`: writes a new private key (never over an existing file);
/// the text to print names the public key.
pub fn keygen(out: &Path) -> Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let (signer, der) = tlsgate_certstore::VendorSigner::generate()?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(Error::file(out))?;
    f.write_all(tlsgate_certstore::pkcs8_pem(&der).as_bytes())?;
    Ok(format!(
        "vendor private key written to {}\nvendor public key (control.vendor_key): {}\n",
        out.display(),
        signer.public_key().to_base64()
    ))
}

/// The whole program: exit status 0, or 1 with the error.
pub fn main() -> i32 {
    let cli = VendorCli::parse();
    match run(&cli) {
        Ok(text) => {
            print!("{text}");
            0
        }
        Err(e) => {
            eprintln!("tlsgate-vendor: {e}");
            1
        }
    }
}
