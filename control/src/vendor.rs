//! `tlsgate-vendor`: the vendor's own tool, kept off the appliance. It holds the
//! vendor's private key (which operators never need) and issues licenses offline.
//!
//! ```text
//! tlsgate-vendor license keygen --out vendor.key        # prints the public key for control.vendor_key
//! tlsgate-vendor license issue --key vendor.key --device ID --serial TG-0001 \
//!     --feature strong-crypto [--not-before T] [--not-after T | --days N] [--out FILE]
//! ```
//!
//! The private key file must be readable by its owner only (like ssh's keys).
//! `--out` makes a new file: it never overwrites one, nor follows a link.

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
        /// Write the license to this new file (never over an existing file or
        /// through a link; default: standard output).
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

/// The private key file's bytes; a file that others than its owner may read
/// (or write, or run) is refused, as ssh refuses such a key.
fn read_key(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let mut f = std::fs::File::open(path).map_err(Error::file(path))?;
    let mode = f.metadata().map_err(Error::file(path))?.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(Error::KeyFileMode { path: path.to_path_buf(), mode });
    }
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).map_err(Error::file(path))?;
    Ok(bytes)
}

/// Writes to standard output, or to a new file: `O_CREAT|O_EXCL|O_NOFOLLOW`, so
/// an existing file (or a link planted where it should go) is refused, never
/// truncated or followed.
fn write_out(out: Option<&Path>, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let Some(p) = out else { return Ok(std::io::stdout().write_all(bytes)?) };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(p)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists || e.raw_os_error() == Some(nix::libc::ELOOP) {
                Error::OutExists(p.to_path_buf())
            } else {
                Error::file(p)(e)
            }
        })?;
    f.write_all(bytes).map_err(Error::file(p))
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
    let signer = tlsgate_certstore::VendorSigner::from_key_file(&read_key(key)?)
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
        None => days
            .checked_mul(86_400)
            .map(time::Duration::seconds)
            .and_then(|d| start.checked_add(d))
            .ok_or_else(|| {
                arg("--days", format!("{days} days from --not-before is past any time a license can name"))
            })?,
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    use super::*;

    /// A fresh directory under the system's temporary directory, with a vendor
    /// key (mode 0600, as keygen writes it).
    fn setup(tag: &str) -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("tg-vendor-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("vendor.key");
        keygen(&key).unwrap();
        (dir, key)
    }

    fn issue_to(key: &Path, days: i64, out: &Path) -> Result<String> {
        issue(key, "dev-1", "TG-T", &["strong-crypto".into()], None, None, days, Some(out))
    }

    #[test]
    fn out_never_overwrites_a_file_nor_follows_a_link() {
        let (dir, key) = setup("out");
        let out = dir.join("a.lic");
        issue_to(&key, 30, &out).unwrap();
        let first = std::fs::read(&out).unwrap();
        // The same file again: refused, kept as it was.
        let e = issue_to(&key, 30, &out).unwrap_err().to_string();
        assert!(e.contains(&out.display().to_string()) && e.contains("exists"), "{e}");
        assert_eq!(std::fs::read(&out).unwrap(), first);
        // A link to a file: refused, the file is not touched.
        let victim = dir.join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let link = dir.join("link.lic");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let e = issue_to(&key, 30, &link).unwrap_err().to_string();
        assert!(e.contains(&link.display().to_string()) && e.contains("link"), "{e}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        // A dangling link: refused, nothing made where it points.
        let dangling = dir.join("dangling.lic");
        std::os::unix::fs::symlink(dir.join("made"), &dangling).unwrap();
        assert!(issue_to(&key, 30, &dangling).is_err());
        assert!(!dir.join("made").exists());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn days_past_any_time_are_refused_not_a_panic() {
        let (dir, key) = setup("days");
        for days in [999_999_999_999, i64::MAX, i64::MIN, -999_999_999] {
            let out = dir.join(format!("{days}.lic"));
            let e = issue_to(&key, days, &out).unwrap_err().to_string();
            assert!(e.starts_with("--days: "), "{days}: {e}");
            assert!(!out.exists());
        }
        issue_to(&key, 3650, &dir.join("ten-years.lic")).unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_key_file_others_may_read_is_refused() {
        let (dir, key) = setup("keymode");
        for mode in [0o644, 0o640, 0o604, 0o660, 0o606] {
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
            let out = dir.join(format!("{mode:o}.lic"));
            let e = issue_to(&key, 30, &out).unwrap_err().to_string();
            assert!(
                e.contains("the key file must be readable by its owner only (mode 0600 or 0400)"),
                "{mode:o}: {e}"
            );
            assert!(e.contains(&key.display().to_string()), "{e}");
            assert!(!out.exists());
        }
        for mode in [0o600, 0o400] {
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
            issue_to(&key, 30, &dir.join(format!("{mode:o}.lic"))).unwrap();
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
