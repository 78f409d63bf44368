//! The policy as operators write it (the JSON format) and the edits on it.
//!
//! Every type here is plain data; [`Policy::validate`] checks it and
//! [`crate::CompiledPolicy::compile`] turns it into something fast to decide with.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// What a rule (or the default) does with a TLS flow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Action {
    /// Terminate both legs and inspect the plaintext.
    Decrypt,
    /// Leave the flow alone (a bypass when decided at SYN).
    #[default]
    DoNotDecrypt,
    /// Refuse the flow.
    Block,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Decrypt => "decrypt",
            Action::DoNotDecrypt => "do-not-decrypt",
            Action::Block => "block",
        })
    }
}

/// What happens to TLS the appliance cannot decrypt (see ARCHITECTURE.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum UndecryptableAction {
    /// Pass it through untouched (logged): must be chosen. A server-leg failure
    /// that the appliance's own probe confirms as an unsupported mode (no common
    /// version or suite, a client certificate required) becomes a learned
    /// exclusion: later flows to that server pass for `exclusion_ttl_s`.
    Pass,
    /// Block it (logged): the default, as a decryption appliance fails closed.
    #[default]
    Block,
}

/// What happens to a TCP segment to or from a TLS port whose connection's SYN the
/// dataplane never saw (a connection older than a restart, a lost SYN, or one
/// that avoids the SYN on purpose).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum MidstreamAction {
    /// Dropped (counted): the default; such connections end after a restart, and
    /// clients reconnect.
    #[default]
    Drop,
    /// Answered with a RST (counted): clients learn at once.
    Reset,
    /// Forwarded uninspected (counted): must be chosen.
    Forward,
}

/// What happens to QUIC (UDP to a TLS port, from the inside) that a `decrypt`
/// rule matches by address and port. The appliance decrypts TCP only, and reading
/// a QUIC SNI would mean decrypting its Initial packets (Chromium's hello spans
/// two), so the decision is by address and port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum QuicAction {
    /// Dropped (counted): clients fall back to TCP, where they are decrypted. The
    /// default.
    #[default]
    Block,
    /// Forwarded uninspected (each flow counted): must be chosen.
    Pass,
}

/// What happens to a ClientHello that offers Encrypted ClientHello (ECH). The
/// appliance never accepts ECH: it terminates with the outer SNI, and a client
/// that really used ECH retries without it (RFC 9849's middlebox case). On the
/// wire a real ECH offer and Chromium's GREASE one look alike.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum EchAction {
    /// Decided as any other flow, with the outer SNI (the default).
    #[default]
    Decrypt,
    /// Reset: every ClientHello offering ECH, GREASE included (so every
    /// Chromium). For networks that forbid ECH outright.
    Block,
}

/// What happens to a flow whose SNI matched a do-not-decrypt rule when the server
/// did not prove it owns that name (the appliance's own handshake to it did not get
/// a certificate valid for the name).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum UnprovedSniAction {
    /// Decided as if no SNI rule had matched (usually: decrypted). The default.
    #[default]
    Decide,
    /// Blocked (reset).
    Block,
}

/// What happens when a server's certificate fails one check.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum CertAction {
    /// Abort with the seed's TLS Abort (the default).
    #[default]
    Block,
    /// Decrypt anyway, giving the client a certificate from the untrust CA (which
    /// clients do not trust): the client's own warning decides, inspection goes on.
    Untrust,
    /// Abort this flow, and relay later flows to that server (address, port, SNI)
    /// raw for `undecryptable_memory_s`, each with an event. Must be chosen.
    Pass,
}

/// The action for each server-certificate check (PAN-OS's decryption profile).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CertificateActions {
    /// Expired or not yet valid.
    pub expired: CertAction,
    /// Untrusted issuer or incomplete chain (self-signed, unknown CA).
    pub untrusted_issuer: CertAction,
    /// Not valid for the requested name or address.
    pub hostname_mismatch: CertAction,
    /// Signed with a weak algorithm (MD5, SHA-1).
    pub weak: CertAction,
    /// Revoked: listed by a CRL of its issuer, or by the OCSP response the server
    /// stapled (OpenSSL's code 23).
    pub revoked: CertAction,
    /// Revocation status unknown: no valid OCSP staple and no fresh CRL of the
    /// issuer (code 3 when refused). `allow` (the default) decrypts as if good.
    pub unknown_status: UnknownStatusAction,
}

/// What happens when a server certificate's revocation status is unknown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum UnknownStatusAction {
    /// Decrypt as if the status were good (the default: most servers staple
    /// nothing, and CRLs arrive only after the control plane fetched them).
    #[default]
    Allow,
    /// Decrypt, giving the client a certificate from the untrust CA.
    Untrust,
    /// Abort with the TLS Abort, verify reason "unable to get certificate CRL (code 3)".
    Block,
}

impl UnknownStatusAction {
    /// The certificate action it amounts to when the status is unknown (`None`:
    /// not checked at all).
    pub fn as_cert_action(self) -> Option<CertAction> {
        match self {
            UnknownStatusAction::Allow => None,
            UnknownStatusAction::Untrust => Some(CertAction::Untrust),
            UnknownStatusAction::Block => Some(CertAction::Block),
        }
    }
}

/// A port or inclusive port range: `443`, `"443"` or `"8000-8080"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum PortSpec {
    /// A JSON number (validated to 0..=65535).
    Number(i64),
    /// A JSON string: one port or `first-last`.
    Text(String),
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortSpec::Number(n) => write!(f, "{n}"),
            PortSpec::Text(text) => f.write_str(text),
        }
    }
}

/// A named set of addresses: each entry an address, a CIDR or a range `first-last`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddressObject {
    /// Unique among objects and groups; starts with a letter or '_'.
    pub name: String,
    /// `"10.0.0.1"`, `"10.0.0.0/8"`, `"10.0.0.1-10.0.0.9"`, `"2001:db8::/32"`, ...
    pub addresses: Vec<String>,
}

/// A named set of objects, groups and address literals.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddressGroup {
    /// Unique among objects and groups; starts with a letter or '_'.
    pub name: String,
    /// Object or group names, or address literals.
    pub members: Vec<String>,
}

/// One decryption rule. An absent condition matches anything; all present ones must match.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Unique among rules.
    pub name: String,
    /// Client addresses: object/group names or address literals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Vec<String>>,
    /// Server addresses: object/group names or address literals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<Vec<String>>,
    /// Server (destination) ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<PortSpec>>,
    /// SNI patterns; a rule with one never matches a flow without SNI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<Vec<String>>,
    /// JA4 fingerprints of the client's ClientHello; a rule with one never
    /// matches a flow whose ClientHello was not read. A fingerprint is what the
    /// client claims: it may block or decrypt on its own, and exempt from
    /// decryption only with `source`, `destination` or `sni`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ja4: Option<Vec<String>>,
    /// What the rule does.
    pub action: Action,
}

impl Rule {
    /// A rule with no conditions (it matches everything).
    pub fn new(name: &str, action: Action) -> Rule {
        Rule {
            name: name.to_string(),
            source: None,
            destination: None,
            ports: None,
            sni: None,
            ja4: None,
            action,
        }
    }
}

/// Decryption settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecryptionSettings {
    /// Destination ports treated as TLS; everything else is bypassed. Default `[443]`.
    pub tls_ports: Vec<PortSpec>,
    /// What happens to undecryptable TLS. Default `block`.
    pub undecryptable: UndecryptableAction,
    /// What happens to TCP to or from a TLS port without a SYN seen. Default `drop`.
    pub midstream: MidstreamAction,
    /// What happens to QUIC (UDP to a TLS port) a `decrypt` rule matches by
    /// address and port. Default `block`.
    pub quic: QuicAction,
    /// What happens to a ClientHello offering ECH. Default `decrypt` (with the
    /// outer SNI).
    pub ech: EchAction,
    /// Whether server certificates are verified. Default `true`; `false` is for labs
    /// and is reported by [`Policy::warnings`].
    pub certificate_validation: bool,
    /// What each failed certificate check leads to. Default `block` for all.
    pub certificate_actions: CertificateActions,
    /// Seconds a server-leg failure is remembered (flows to it then pass). Default 3600.
    pub undecryptable_memory_s: u64,
    /// Seconds a learned exclusion lasts (a server that supports no mode the
    /// appliance offers, confirmed by its own probe). Default 43200 (12 h).
    pub exclusion_ttl_s: u64,
    /// What an unproved SNI of a do-not-decrypt rule gets. Default `decide`.
    pub unproved_sni: UnprovedSniAction,
    /// Seconds a proof (or a failed one) of a server's name is kept. Default 3600.
    pub probe_ttl_s: u64,
}

impl Default for DecryptionSettings {
    fn default() -> DecryptionSettings {
        DecryptionSettings {
            tls_ports: vec![PortSpec::Number(443)],
            undecryptable: UndecryptableAction::Block,
            midstream: MidstreamAction::Drop,
            quic: QuicAction::Block,
            ech: EchAction::Decrypt,
            certificate_validation: true,
            certificate_actions: CertificateActions::default(),
            undecryptable_memory_s: 3600,
            exclusion_ttl_s: 43_200,
            unproved_sni: UnprovedSniAction::Decide,
            probe_ttl_s: 3600,
        }
    }
}

/// A whole decryption policy: objects, groups, ordered rules (first match wins), the
/// default action and the settings. `Policy::default()` has no rules and decides
/// `do-not-decrypt`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Named address sets.
    #[serde(default)]
    pub objects: Vec<AddressObject>,
    /// Named sets of objects, groups and literals.
    #[serde(default)]
    pub groups: Vec<AddressGroup>,
    /// The rules, first match wins.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// What happens when no rule matches. Default `do-not-decrypt`.
    #[serde(default)]
    pub default_action: Action,
    /// Decryption settings.
    #[serde(default)]
    pub settings: DecryptionSettings,
}

/// Where an inserted or moved rule goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Position {
    /// First.
    Top,
    /// Last.
    Bottom,
    /// Just above the named rule.
    Above(String),
    /// Just below the named rule.
    Below(String),
}

impl Policy {
    /// Parses and validates JSON. Nothing else changes on error: a failed load leaves
    /// whatever policy the caller holds as it was.
    pub fn from_json(text: &str) -> Result<Policy, Error> {
        let policy: Policy = serde_json::from_str(text)?;
        policy.validate()?;
        Ok(policy)
    }

    /// The policy as pretty-printed JSON (the format [`Policy::from_json`] reads).
    pub fn to_json(&self) -> String {
        // Only strings, numbers, bools and sequences: serialising cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks names, references, literals and settings; the error names the place and field.
    pub fn validate(&self) -> Result<(), Error> {
        crate::resolve::resolve(self).map(|_| ()).map_err(Error::from)
    }

    /// Things an operator should be told loudly about a valid policy.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings: Vec<String> = Vec::new();
        if !self.settings.certificate_validation {
            warnings.push(
                "certificate validation is disabled: decrypted flows trust any server certificate".into(),
            );
        }
        if self.settings.undecryptable == UndecryptableAction::Pass {
            warnings.push(
                "undecryptable is pass: TLS the appliance cannot read is relayed uninspected, and servers its own \
                 probe finds support no mode it offers are excluded for exclusion_ttl_s"
                    .into(),
            );
        }
        let a = &self.settings.certificate_actions;
        for (check, action) in [
            ("expired", a.expired),
            ("untrusted_issuer", a.untrusted_issuer),
            ("hostname_mismatch", a.hostname_mismatch),
            ("weak", a.weak),
            ("revoked", a.revoked),
        ] {
            if action == CertAction::Pass {
                warnings.push(format!(
                    "certificate_actions.{check} is pass: after such a failure, flows to that server are \
                     relayed uninspected for undecryptable_memory_s"
                ));
            }
        }
        warnings
    }

    /// The rule with this name.
    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }

    fn rule_index(&self, name: &str) -> Result<usize, Error> {
        self.rules.iter().position(|r| r.name == name).ok_or_else(|| Error::UnknownRule(name.into()))
    }

    fn slot(&self, at: &Position) -> Result<usize, Error> {
        match at {
            Position::Top => Ok(0),
            Position::Bottom => Ok(self.rules.len()),
            Position::Above(anchor) => self.rule_index(anchor),
            Position::Below(anchor) => self.rule_index(anchor).map(|i| i + 1),
        }
    }

    /// Inserts a rule; returns its 0-based index. Refuses a duplicate name or an unknown
    /// anchor. The rule's conditions are checked at validation (commit) time.
    pub fn insert_rule(&mut self, rule: Rule, at: &Position) -> Result<usize, Error> {
        if self.rule(&rule.name).is_some() {
            return Err(Error::DuplicateRule(rule.name));
        }
        let index = self.slot(at)?;
        self.rules.insert(index, rule);
        Ok(index)
    }

    /// Removes the named rule and returns it.
    pub fn remove_rule(&mut self, name: &str) -> Result<Rule, Error> {
        let index = self.rule_index(name)?;
        Ok(self.rules.remove(index))
    }

    /// Replaces the rule of the same name in place; returns the old one.
    pub fn replace_rule(&mut self, rule: Rule) -> Result<Rule, Error> {
        let index = self.rule_index(&rule.name)?;
        Ok(std::mem::replace(&mut self.rules[index], rule))
    }

    /// Moves the named rule; returns its new 0-based index.
    pub fn move_rule(&mut self, name: &str, to: &Position) -> Result<usize, Error> {
        if matches!(to, Position::Above(a) | Position::Below(a) if a == name) {
            return Err(Error::SelfAnchor(name.into()));
        }
        self.slot(to)?; // the anchor must exist before anything moves
        let rule = self.remove_rule(name)?;
        let index = self.slot(to)?;
        self.rules.insert(index, rule);
        Ok(index)
    }

    /// Adds an object, or replaces the one of the same name; returns the replaced one.
    pub fn set_object(&mut self, object: AddressObject) -> Option<AddressObject> {
        match self.objects.iter_mut().find(|o| o.name == object.name) {
            Some(slot) => Some(std::mem::replace(slot, object)),
            None => {
                self.objects.push(object);
                None
            }
        }
    }

    /// Removes the named object. Rules still naming it fail validation at commit.
    pub fn remove_object(&mut self, name: &str) -> Result<AddressObject, Error> {
        let index = self.objects.iter().position(|o| o.name == name);
        index.map(|i| self.objects.remove(i)).ok_or_else(|| Error::UnknownObject(name.into()))
    }

    /// Adds a group, or replaces the one of the same name; returns the replaced one.
    pub fn set_group(&mut self, group: AddressGroup) -> Option<AddressGroup> {
        match self.groups.iter_mut().find(|g| g.name == group.name) {
            Some(slot) => Some(std::mem::replace(slot, group)),
            None => {
                self.groups.push(group);
                None
            }
        }
    }

    /// Removes the named group. Rules still naming it fail validation at commit.
    pub fn remove_group(&mut self, name: &str) -> Result<AddressGroup, Error> {
        let index = self.groups.iter().position(|g| g.name == name);
        index.map(|i| self.groups.remove(i)).ok_or_else(|| Error::UnknownObject(name.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(p: &Policy) -> Vec<&str> {
        p.rules.iter().map(|r| r.name.as_str()).collect()
    }

    #[test]
    fn defaults_from_minimal_json() {
        let p = Policy::from_json("{}").unwrap();
        assert_eq!(p.default_action, Action::DoNotDecrypt);
        assert_eq!(p.settings, DecryptionSettings::default());
        assert_eq!(p.settings.tls_ports, vec![PortSpec::Number(443)]);
        assert!(p.warnings().is_empty());
    }

    #[test]
    fn round_trip() {
        let text = r#"{"objects":[{"name":"web","addresses":["10.0.0.1"]}],
            "rules":[{"name":"a","destination":["web"],"ports":[443,"8000-8080"],"sni":["*.x.com"],"action":"block"}],
            "default_action":"decrypt","settings":{"certificate_validation":false}}"#;
        let p = Policy::from_json(text).unwrap();
        assert_eq!(Policy::from_json(&p.to_json()).unwrap(), p);
        assert_eq!(p.warnings().len(), 1);
    }

    #[test]
    fn unknown_fields_refused() {
        for text in [
            r#"{"rulez":[]}"#,
            r#"{"rules":[{"name":"a","action":"decrypt","src":["x"]}]}"#,
            r#"{"settings":{"tls_port":[443]}}"#,
            r#"{"objects":[{"name":"a","addresses":[],"comment":"x"}]}"#,
            r#"{"rules":[{"name":"a","action":"inspect"}]}"#,
        ] {
            let err = Policy::from_json(text).unwrap_err();
            assert!(matches!(err, Error::Json(_)), "{text}: {err}");
        }
    }

    #[test]
    fn edits() {
        let mut p = Policy::default();
        p.insert_rule(Rule::new("b", Action::Decrypt), &Position::Bottom).unwrap();
        p.insert_rule(Rule::new("a", Action::Decrypt), &Position::Above("b".into())).unwrap();
        p.insert_rule(Rule::new("c", Action::Decrypt), &Position::Below("b".into())).unwrap();
        p.insert_rule(Rule::new("top", Action::Block), &Position::Top).unwrap();
        assert_eq!(names(&p), ["top", "a", "b", "c"]);
        assert!(matches!(
            p.insert_rule(Rule::new("a", Action::Block), &Position::Top),
            Err(Error::DuplicateRule(_))
        ));
        assert!(matches!(
            p.insert_rule(Rule::new("z", Action::Block), &Position::Above("nope".into())),
            Err(Error::UnknownRule(_))
        ));
        assert_eq!(p.move_rule("top", &Position::Below("c".into())).unwrap(), 3);
        assert_eq!(names(&p), ["a", "b", "c", "top"]);
        assert_eq!(p.move_rule("c", &Position::Top).unwrap(), 0);
        assert_eq!(p.move_rule("a", &Position::Above("top".into())).unwrap(), 2);
        assert_eq!(names(&p), ["c", "b", "a", "top"]);
        assert!(matches!(p.move_rule("a", &Position::Above("a".into())), Err(Error::SelfAnchor(_))));
        assert!(matches!(p.move_rule("a", &Position::Above("zz".into())), Err(Error::UnknownRule(_))));
        assert_eq!(names(&p), ["c", "b", "a", "top"]);
        assert_eq!(p.remove_rule("b").unwrap().name, "b");
        assert!(matches!(p.remove_rule("b"), Err(Error::UnknownRule(_))));
        let old = p.replace_rule(Rule::new("a", Action::Block)).unwrap();
        assert_eq!((old.action, p.rule("a").unwrap().action), (Action::Decrypt, Action::Block));
    }

    #[test]
    fn object_and_group_edits() {
        let mut p = Policy::default();
        let obj = |a: &str| AddressObject { name: "web".into(), addresses: vec![a.into()] };
        assert!(p.set_object(obj("10.0.0.1")).is_none());
        assert_eq!(p.set_object(obj("10.0.0.2")).unwrap().addresses, ["10.0.0.1"]);
        assert_eq!(p.objects.len(), 1);
        let group = AddressGroup { name: "g".into(), members: vec!["web".into()] };
        assert!(p.set_group(group).is_none());
        assert!(p.remove_group("g").is_ok() && p.remove_object("web").is_ok());
        assert!(matches!(p.remove_object("web"), Err(Error::UnknownObject(_))));
    }
}
