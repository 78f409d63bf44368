//! Why a flow is (not) decrypted: the decision at SYN and after the
//! ClientHello, the rule that decided, and why each earlier rule did not match —
//! read from the compiled indexes the dataplane decides with (each rule's bit in
//! the source, destination and port bitsets of the flow's segments, and its SNI
//! and JA4 patterns), not from a second matcher.

use std::net::IpAddr;

use crate::compiled::{CompiledPolicy, SynAction};
use crate::model::Action;
pub use tlsgate_api::explain::{Explanation, Skipped, Step};

fn action_text(a: Action) -> &'static str {
    match a {
        Action::Decrypt => "decrypt",
        Action::DoNotDecrypt => "do-not-decrypt",
        Action::Block => "block",
    }
}

fn list(items: &[String]) -> String {
    let shown: Vec<&str> = items.iter().take(8).map(String::as_str).collect();
    let more = if items.len() > 8 { format!(", … {} more", items.len() - 8) } else { String::new() };
    format!("[{}{more}]", shown.join(", "))
}

impl CompiledPolicy {
    /// Explains the decisions for a flow from `src` to `dst:dst_port` whose
    /// ClientHello carries `sni` and whose client has the JA4 `ja4`.
    pub fn explain(
        &self,
        src: IpAddr,
        dst: IpAddr,
        dst_port: u16,
        sni: Option<&str>,
        ja4: Option<&str>,
    ) -> Explanation {
        let name = |i: usize| self.policy().rules.get(i).map_or_else(|| format!("#{i}"), |r| r.name.clone());
        let tls_port = self.is_tls_port(dst_port);
        let syn = self.decide_at_syn(src, dst, dst_port);
        let at_syn = match syn.action {
            SynAction::Decrypt { rule } => {
                Step { action: "decrypt".into(), rule: rule.map(|r| name(r.index())) }
            }
            SynAction::Bypass { rule } => {
                Step { action: "do-not-decrypt".into(), rule: rule.map(|r| name(r.index())) }
            }
            SynAction::Block { rule } => Step { action: "block".into(), rule: rule.map(|r| name(r.index())) },
            _ => Step { action: "read the ClientHello".into(), rule: None },
        };
        let verdict = self.decide_with_hello(src, dst, dst_port, sni, ja4);
        let after_hello =
            Step { action: action_text(verdict.action).into(), rule: verdict.rule.map(|r| name(r.index())) };
        let mut notes = Vec::new();
        if !tls_port {
            notes.push(format!(
                "port {dst_port} is not one of tls_ports: forwarded on the fast path, never decrypted"
            ));
            return Explanation {
                version: self.version(),
                tls_port,
                at_syn,
                after_hello,
                skipped: Vec::new(),
                notes,
            };
        }
        let upto = verdict.rule.map_or(self.rule_count(), |r| r.index());
        let skipped = (0..upto)
            .map(|i| Skipped { rule: name(i), why: self.mismatches(i, src, dst, dst_port, sni, ja4) })
            .collect();
        match syn.action {
            SynAction::Bypass { .. } | SynAction::Block { .. } => {
                notes.push("decided at SYN: never terminated, the ClientHello is never read".into())
            }
            SynAction::Decrypt { .. } => notes.push(
                "decrypt decided at SYN; the ClientHello is still read: ECH (ech = block), a learned exclusion, \
                 a remembered certificate pass or an unreachable signer may still end it otherwise"
                    .into(),
            ),
            _ => {}
        }
        if self.needs_proof(&verdict) {
            let unproved = self.decide_unproved(src, dst, dst_port, ja4);
            notes.push(format!(
                "an SNI exemption holds once the server proves the name (its certificate, on the appliance's own \
                 handshake); unproved, unproved_sni = {} decides: {}{}",
                match self.unproved_sni() {
                    crate::UnprovedSniAction::Block => "block",
                    _ => "decide",
                },
                action_text(unproved.action),
                unproved.rule.map_or(" (default action)".into(), |r| format!(" (rule {})", name(r.index())))
            ));
        }
        if verdict.action == Action::Decrypt && sni.is_none() {
            notes.push("without an SNI the server's certificate is verified for its address".into());
        }
        Explanation { version: self.version(), tls_port, at_syn, after_hello, skipped, notes }
    }

    /// Why rule `index` does not match, condition by condition (empty: it matches).
    fn mismatches(
        &self,
        index: usize,
        src: IpAddr,
        dst: IpAddr,
        dst_port: u16,
        sni: Option<&str>,
        ja4: Option<&str>,
    ) -> Vec<String> {
        let rule = &self.policy().rules[index];
        let (s, d, p) = self.dimension_bits(index, src, dst, dst_port);
        let mut why = Vec::new();
        if !s {
            why.push(format!("source {src} is not in {}", list(rule.source.as_deref().unwrap_or_default())));
        }
        if !d {
            why.push(format!(
                "destination {dst} is not in {}",
                list(rule.destination.as_deref().unwrap_or_default())
            ));
        }
        if !p {
            let ports: Vec<String> = rule.ports.iter().flatten().map(ToString::to_string).collect();
            why.push(format!("port {dst_port} is not in {}", list(&ports)));
        }
        if let Some(names) = &rule.sni {
            match sni {
                None => why.push(format!("no SNI (the rule needs one of {})", list(names))),
                Some(n) if !self.sni_matches(index, n) => {
                    why.push(format!("SNI {n} matches none of {}", list(names)))
                }
                _ => {}
            }
        }
        if let Some(prints) = &rule.ja4 {
            match ja4 {
                None => why.push(format!("no JA4 given (the rule needs one of {})", list(prints))),
                Some(j) if !prints.iter().any(|p| p == j) => {
                    why.push(format!("JA4 {j} is none of {}", list(prints)))
                }
                _ => {}
            }
        }
        if why.is_empty() {
            why.push("matches (a rule that decides no earlier: this should not happen)".into());
        }
        why
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Policy;

    const POLICY: &str = r#"{
      "rules": [
        { "name": "Block-8443", "destination": ["198.18.0.2"], "ports": [8443], "action": "block" },
        { "name": "Bypass-Bank", "sni": ["bank.tg.test", "*.bank.tg.test"], "action": "do-not-decrypt" },
        { "name": "Finance", "source": ["10.0.0.0/8"], "action": "do-not-decrypt" },
        { "name": "Old-Clients", "ja4": ["t12d1207h1_0f2cb44170f4_5c4c70b73fa0"], "action": "block" },
        { "name": "Decrypt-All", "action": "decrypt" }
      ],
      "settings": { "tls_ports": [443, 8443] }
    }"#;

    fn compiled() -> CompiledPolicy {
        CompiledPolicy::compile(Policy::from_json(POLICY).unwrap(), 7).unwrap()
    }

    #[test]
    fn says_why_each_earlier_rule_did_not_match() {
        let p = compiled();
        let (client, server) = ("198.18.0.1".parse().unwrap(), "198.18.0.2".parse().unwrap());
        let e = p.explain(
            client,
            server,
            443,
            Some("server.tg.test"),
            Some("t13d1517h2_8daaf6152771_cb7bf5808d99"),
        );
        assert_eq!(e.version, 7);
        assert_eq!(e.at_syn, Step { action: "read the ClientHello".into(), rule: None });
        assert_eq!(e.after_hello, Step { action: "decrypt".into(), rule: Some("Decrypt-All".into()) });
        let why: Vec<(&str, &str)> = e.skipped.iter().map(|s| (s.rule.as_str(), s.why[0].as_str())).collect();
        assert_eq!(
            why,
            [
                ("Block-8443", "port 443 is not in [8443]"),
                ("Bypass-Bank", "SNI server.tg.test matches none of [bank.tg.test, *.bank.tg.test]"),
                ("Finance", "source 198.18.0.1 is not in [10.0.0.0/8]"),
                ("Old-Clients", "JA4 t13d1517h2_8daaf6152771_cb7bf5808d99 is none of [t12d1207h1_0f2cb44170f4_5c4c70b73fa0]"),
            ]
        );
        // The same decisions as the matcher's.
        assert_eq!(
            p.decide_with_hello(client, server, 443, Some("server.tg.test"), None).action,
            Action::Decrypt
        );
    }

    #[test]
    fn sni_exemptions_name_their_proof_and_other_ports_are_never_decrypted() {
        let p = compiled();
        let (client, server) = ("198.18.0.1".parse().unwrap(), "198.18.0.2".parse().unwrap());
        let e = p.explain(client, server, 443, Some("www.bank.tg.test"), None);
        assert_eq!(e.after_hello, Step { action: "do-not-decrypt".into(), rule: Some("Bypass-Bank".into()) });
        assert!(
            e.notes.iter().any(|n| n.contains("proves the name") && n.contains("decrypt (rule Decrypt-All)")),
            "{:?}",
            e.notes
        );
        let e = p.explain(client, server, 8443, None, None);
        assert_eq!(e.at_syn, Step { action: "block".into(), rule: Some("Block-8443".into()) });
        assert!(e.skipped.is_empty() && e.notes[0].contains("decided at SYN"), "{e:?}");
        let e = p.explain(client, server, 80, None, None);
        assert!(!e.tls_port && e.notes[0].contains("not one of tls_ports"), "{e:?}");
        let e = p.explain("10.1.2.3".parse().unwrap(), server, 443, None, None);
        assert_eq!(e.after_hello.rule.as_deref(), Some("Finance"));
        assert_eq!(e.skipped[1].why, ["no SNI (the rule needs one of [bank.tg.test, *.bank.tg.test])"]);
    }
}
