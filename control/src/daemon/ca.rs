//! The decryption CA: generate, import (key file or PKCS#11 token), export.

use super::*;

impl Daemon {
    /// Serves this area's requests (dispatched by [`Daemon::handle`]).
    pub(super) fn ca_request(&self, req: Request, uid: u32) -> Response {
        let _ = uid;
        match req {
            Request::CaGenerate { common_name } => self.change(uid, |st, _| {
                let name = common_name.unwrap_or_else(|| "tlsgate decryption CA".into());
                let ca = DecryptionCa::generate(&CaOptions::with_common_name(name), UnixTime::now())
                    .map_err(|e| No(ErrorCode::Internal, format!("generating the CA: {e}")))?;
                let message = format!(
                    "decryption CA generated: {} (SHA-256 {}); clients must trust it: tlsgatectl ca export",
                    ca.summary().subject,
                    ca.fingerprint().to_hex()
                );
                st.ca = Some(CaRecord::with_key(ca.cert_pem(), ca.key_pkcs8_pem()));
                Ok(Change { message, versioned: true })
            }),
            Request::CaImport { cert, key } => self.change(uid, |st, _| {
                let cert = b64(&cert).map_err(|e| invalid(format!("certificate: {e}")))?;
                let key = b64(&key).map_err(|e| invalid(format!("key: {e}")))?;
                let ca = DecryptionCa::import(&cert, &key, UnixTime::now())
                    .map_err(|e| invalid(format!("decryption CA refused: {e}")))?;
                // The decryption CA must not be trusted for servers: a trust entry that
                // is this CA, or that it issued, is removed first.
                let own = ca.summary();
                for r in &st.trust {
                    let Some(s) = b64(&r.der).ok().and_then(|d| summarize(&d).ok()) else { continue };
                    if s.fingerprint == own.fingerprint || s.issuer == own.subject {
                        return Err(invalid(format!(
                            "decryption CA refused: trust entry {:?} ({}) is {} it; remove it first \
                             (tlsgatectl trust remove {:?}): the appliance's own CA must not vouch for servers",
                            r.name,
                            s.subject,
                            if s.fingerprint == own.fingerprint { "" } else { "issued by" },
                            r.name
                        )));
                    }
                }
                let message = format!(
                    "decryption CA imported: {} (SHA-256 {})",
                    ca.summary().subject,
                    ca.fingerprint().to_hex()
                );
                st.ca = Some(CaRecord::with_key(ca.cert_pem(), ca.key_pkcs8_pem()));
                Ok(Change { message, versioned: true })
            }),
            Request::CaImportPkcs11 { uri, cert, common_name } => self.change(uid, |st, _| {
                let parsed = crate::pkcs11::Pkcs11Uri::parse(&uri).map_err(|e| invalid(format!("--pkcs11: {e}")))?;
                if !self.cfg.pkcs11_modules.iter().any(|m| m.as_os_str() == parsed.module.as_str()) {
                    return Err(No(
                        ErrorCode::PermissionDenied,
                        format!(
                            "--pkcs11: module-path {} is not in control.pkcs11_modules (the root-owned \
                             configuration lists the PKCS#11 libraries this process may load)",
                            parsed.module
                        ),
                    ));
                }
                let key = crate::pkcs11::key_for(&uri).map_err(|e| invalid(format!("--pkcs11: {e}")))?;
                let now = UnixTime::now();
                let ca = match cert {
                    Some(c) => {
                        let c = b64(&c).map_err(|e| invalid(format!("certificate: {e}")))?;
                        DecryptionCa::import_with_remote_key(&c, Box::new(key), now)
                    }
                    None => DecryptionCa::generate_with_remote_key(
                        &CaOptions::with_common_name(common_name.unwrap_or_else(|| "tlsgate decryption CA".into())),
                        Box::new(key),
                        now,
                    ),
                }
                .map_err(|e| invalid(format!("decryption CA refused: {e}")))?;
                let message = format!(
                    "decryption CA with its key on PKCS#11 token {:?} (object {:?}): {} (SHA-256 {})",
                    parsed.token,
                    parsed.object,
                    ca.summary().subject,
                    ca.fingerprint().to_hex()
                );
                st.ca = Some(CaRecord { cert_pem: ca.cert_pem(), key_pem: String::new(), pkcs11: Some(uri) });
                Ok(Change { message, versioned: true })
            }),
            Request::CaExport { der } => match self.state().decryption_ca() {
                None => Response::error(
                    ErrorCode::NotFound,
                    "no decryption CA: tlsgatectl ca generate (or ca import)",
                ),
                Some(ca) => Response::Ca {
                    info: cert_info("", "decryption-ca", ca.summary(), None),
                    cert: Some(if der { to_b64(ca.cert_der().as_ref()) } else { ca.cert_pem() }),
                },
            },
            other => unsupported(other),
        }
    }
}
