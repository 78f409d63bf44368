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
                not_trusted(st, ca.summary())?;
                let message = format!(
                    "decryption CA imported: {} (SHA-256 {})",
                    ca.summary().subject,
                    ca.fingerprint().to_hex()
                );
                st.ca = Some(CaRecord::with_key(ca.cert_pem(), ca.key_pkcs8_pem()));
                Ok(Change { message, versioned: true })
            }),
            Request::CaImportPkcs11 { uri, cert, common_name } => {
                // Root's configuration names the keys; the request picks one.
                let wanted = match crate::pkcs11::Pkcs11Uri::requested(&uri) {
                    Ok(w) => w,
                    Err(e) => return Response::error(ErrorCode::Invalid, format!("--pkcs11: {e}")),
                };
                let Some(configured) = self
                    .cfg
                    .pkcs11_keys
                    .iter()
                    .find(|k| crate::pkcs11::Pkcs11Uri::configured(k).is_ok_and(|c| c.answers(&wanted)))
                else {
                    return Response::error(
                        ErrorCode::PermissionDenied,
                        format!(
                            "--pkcs11: {} is not in control.pkcs11_keys (the root-owned configuration names \
                             the token keys this process may use, with their library and PIN file)",
                            wanted.short()
                        ),
                    );
                };
                // The token is opened (and its PIN file read) before the state is
                // locked: a slow token holds up no one else.
                let key = match crate::pkcs11::key_for(configured) {
                    Ok(k) => k,
                    Err(e) => return Response::error(ErrorCode::Invalid, format!("--pkcs11: {e}")),
                };
                let now = UnixTime::now();
                let ca = match cert {
                    Some(c) => match b64(&c) {
                        Ok(c) => DecryptionCa::import_with_remote_key(&c, Box::new(key), now),
                        Err(e) => return Response::error(ErrorCode::Invalid, format!("certificate: {e}")),
                    },
                    None => DecryptionCa::generate_with_remote_key(
                        &CaOptions::with_common_name(
                            common_name.unwrap_or_else(|| "tlsgate decryption CA".into()),
                        ),
                        Box::new(key),
                        now,
                    ),
                };
                let ca = match ca {
                    Ok(ca) => ca,
                    Err(e) => {
                        return Response::error(ErrorCode::Invalid, format!("decryption CA refused: {e}"))
                    }
                };
                let configured = configured.clone();
                self.change(uid, move |st, _| {
                    not_trusted(st, ca.summary())?;
                    let message = format!(
                        "decryption CA with its key on PKCS#11 token {:?} (object {:?}, module {}): {} (SHA-256 {})",
                        wanted.token,
                        wanted.object,
                        crate::pkcs11::Pkcs11Uri::configured(&configured)
                            .ok()
                            .and_then(|c| c.module)
                            .unwrap_or_default(),
                        ca.summary().subject,
                        ca.fingerprint().to_hex()
                    );
                    st.ca = Some(CaRecord { cert_pem: ca.cert_pem(), key_pem: String::new(), pkcs11: Some(configured) });
                    Ok(Change { message, versioned: true })
                })
            }
            Request::CaExport { der } => {
                let st = self.state();
                match st.ca.as_ref().map(|c| (c.certificate(), c.cert_pem.clone())) {
                    None => Response::error(
                        ErrorCode::NotFound,
                        "no decryption CA: tlsgatectl ca generate (or ca import)",
                    ),
                    Some((Err(e), _)) => {
                        Response::error(ErrorCode::Internal, format!("the decryption CA's certificate: {e}"))
                    }
                    Some((Ok((der_bytes, summary)), pem)) => Response::Ca {
                        info: cert_info("", "decryption-ca", &summary, None),
                        cert: Some(if der { to_b64(&der_bytes) } else { pem }),
                    },
                }
            }
            other => unsupported(other),
        }
    }
}

/// The decryption CA `own` must not be, or be the issuer of, a trust entry: the
/// appliance's own CA must not vouch for servers (every way a CA is set checks
/// this).
fn not_trusted(st: &StateFile, own: &tlsgate_certstore::CertSummary) -> Result<(), No> {
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
    Ok(())
}
