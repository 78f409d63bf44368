//! Licenses: load, show, remove; the cipher profile they give.

use super::*;

impl Daemon {
    /// Serves this area's requests (dispatched by [`Daemon::handle`]).
    pub(super) fn license_request(&self, req: Request, uid: u32) -> Response {
        let _ = uid;
        match req {
            Request::LicenseLoad { text } => self.license_load(uid, text),
            Request::LicenseShow => {
                let st = self.state();
                Response::Licenses {
                    device_id: self.device_id.clone(),
                    profile: self.profile(&st).into(),
                    licenses: self.license_infos(&st),
                }
            }
            Request::LicenseRemove { serial } => self.change(uid, |st, _| {
                let before = st.licenses.len();
                st.licenses
                    .retain(|t| parse_license(t.as_bytes()).map_or(true, |l| l.payload().serial != serial));
                if st.licenses.len() == before {
                    return Err(not_found(format!("no license with serial {serial:?}")));
                }
                Ok(Change { message: format!("license {serial} removed"), versioned: true })
            }),
            other => unsupported(other),
        }
    }

    /// The licenses held, each checked (signature, device) with its state now.
    pub(super) fn licenses(&self, st: &StateFile) -> Vec<Result<License>> {
        st.licenses
            .iter()
            .map(|text| {
                let key = self.vendor.as_ref().ok_or(Error::NoVendorKey)?;
                Ok(parse_license(text.as_bytes())
                    .and_then(|l| l.verify_signature_and_device(key, &self.device_id))?)
            })
            .collect()
    }

    /// The cipher profile the licenses give now.
    pub fn profile(&self, st: &StateFile) -> &'static str {
        let now = now_s() as i64;
        let strong = self
            .licenses(st)
            .iter()
            .flatten()
            .any(|l| l.is_valid_at(now) && l.has_feature(FEATURE_STRONG_CRYPTO));
        if strong {
            "strong"
        } else {
            "base"
        }
    }

    /// A license that expired (or became valid) changes the profile the last
    /// snapshot carried: a new version (called once a second).
    pub fn check_licenses(&self) {
        let profile = self.profile(&self.state());
        let sent = *self.snapshot_profile.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(before) = sent else {
            // No snapshot made yet (no dataplane so far): it will carry the profile.
            return;
        };
        if before != profile {
            let message = format!(
                "license state changed: cipher profile {before} → {profile} on both legs{}",
                if profile == "base" {
                    " (the strong-crypto license expired or is not yet valid)"
                } else {
                    ""
                }
            );
            tracing::warn!("{message}");
            self.change(0, |_, _| Ok(Change { message, versioned: true }));
            // Without a dataplane no snapshot was sent: note the profile anyway.
            *self.snapshot_profile.lock().unwrap_or_else(PoisonError::into_inner) = Some(profile);
        }
    }

    pub(super) fn license_infos(&self, st: &StateFile) -> Vec<LicenseInfo> {
        let now = now_s() as i64;
        st.licenses
            .iter()
            .zip(self.licenses(st))
            .map(|(text, checked)| {
                let parsed = parse_license(text.as_bytes()).ok();
                let p = parsed.as_ref().map(|l| l.payload().clone());
                LicenseInfo {
                    serial: p.as_ref().map_or_else(|| "?".into(), |p| p.serial.clone()),
                    features: p.as_ref().map_or_else(Vec::new, |p| p.features.clone()),
                    not_before: p.as_ref().map_or_else(String::new, |p| p.not_before.clone()),
                    not_after: p.as_ref().map_or_else(String::new, |p| p.not_after.clone()),
                    state: match checked {
                        Ok(l) => l.state_at(now).as_str().to_string(),
                        Err(e) => format!("invalid: {e}"),
                    },
                }
            })
            .collect()
    }

    fn license_load(&self, uid: u32, text: String) -> Response {
        let Some(key) = self.vendor.as_ref() else {
            return Response::error(
                ErrorCode::Invalid,
                "license refused: no vendor key is configured (control.vendor_key)",
            );
        };
        let now = now_s() as i64;
        let license = match parse_license(text.as_bytes()).and_then(|l| l.verify(key, &self.device_id, now)) {
            Ok(l) => l,
            Err(e) => return Response::error(ErrorCode::Invalid, format!("license refused: {e}")),
        };
        self.change(uid, |st, _| {
            let serial = license.payload.serial.clone();
            st.licenses
                .retain(|t| parse_license(t.as_bytes()).map_or(true, |l| l.payload().serial != serial));
            st.licenses.push(license.text.clone());
            let strong = license.has_feature(FEATURE_STRONG_CRYPTO);
            Ok(Change {
                message: format!(
                    "license {serial} loaded (features: {}; valid until {}){}",
                    license.payload.features.join(", "),
                    license.payload.not_after,
                    if strong { ": cipher profile strong on both legs" } else { "" }
                ),
                versioned: true,
            })
        })
    }
}
