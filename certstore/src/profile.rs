//! Cipher-suite profiles: what the appliance offers on both legs.
//!
//! Without the `strong-crypto` license (the seed's "K9") only [`CipherProfile::Base`]
//! is offered: TLS 1.3 with AES-128-GCM, and TLS 1.2 with ECDHE and AES-128-GCM (a
//! TLS 1.3 client is not downgraded). A TLS 1.2 server that accepts none of it (one
//! that takes only AES-256-GCM suites) answers with a `handshake_failure` alert,
//! exactly as in the seed's first problem. [`CipherProfile::Strong`] adds
//! AES-256-GCM and ChaCha20-Poly1305, in TLS 1.3 and 1.2.
//! Licenses are loaded by the control plane; until then the profile is a
//! configuration switch ([`CipherProfile::for_license`]).

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// A cipher-suite profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum CipherProfile {
    /// TLS_AES_128_GCM_SHA256 (TLS 1.3), ECDHE-ECDSA-AES128-GCM-SHA256 and
    /// ECDHE-RSA-AES128-GCM-SHA256 (TLS 1.2).
    #[default]
    Base,
    /// Base plus AES-256-GCM and ChaCha20-Poly1305 (TLS 1.3 and TLS 1.2),
    /// AES-128-GCM preferred.
    Strong,
}

impl CipherProfile {
    /// The profile a license allows: `Strong` with the strong-crypto feature.
    pub const fn for_license(strong_crypto: bool) -> Self {
        if strong_crypto {
            Self::Strong
        } else {
            Self::Base
        }
    }

    /// `base` or `strong`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Base => "base",
            Self::Strong => "strong",
        }
    }

    /// IANA names of the suites offered, in preference order.
    pub fn suite_names(self) -> Vec<String> {
        crate::tls::suites(self).iter().map(|s| format!("{:?}", s.suite())).collect()
    }
}

impl fmt::Display for CipherProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CipherProfile {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "base" => Ok(Self::Base),
            "strong" => Ok(Self::Strong),
            other => {
                Err(Error::Tls(format!("unknown cipher profile {other:?}: expected \"base\" or \"strong\"")))
            }
        }
    }
}
