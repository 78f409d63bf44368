//! The policy: show, load, check, diff, rules, commit, rollback, history.

use super::*;

impl Daemon {
    /// Serves this area's requests (dispatched by [`Daemon::handle`]).
    pub(super) fn policy_request(&self, req: Request, uid: u32) -> Response {
        let _ = uid;
        match req {
            Request::PolicyShow { candidate } => {
                let st = self.state();
                let text = if candidate { st.candidate_policy() } else { st.running_policy() };
                Response::Policy {
                    version: st.policies.last().map_or(0, |p| p.version),
                    text: text.to_string(),
                    candidate_differs: st.candidate.is_some(),
                }
            }
            Request::PolicyLoad { text } => self.change(uid, |st, _| {
                let mut store = st.policy_store().map_err(invalid)?;
                store.load_candidate_json(&text).map_err(|e| invalid(format!("policy refused: {e}")))?;
                let lines = store.diff_candidate().lines().len();
                st.set_policies(&store);
                Ok(Change {
                    message: format!(
                        "candidate loaded ({lines} change(s) from the running policy); commit to run it"
                    ),
                    versioned: false,
                })
            }),
            Request::PolicyCheck { text } => match Policy::from_json(&text) {
                Ok(p) => Response::Diff {
                    lines: PolicyDiff::between(
                        &self
                            .state()
                            .policy_store()
                            .map_or_else(|_| Policy::default(), |s| s.running().policy().clone()),
                        &p,
                    )
                    .lines(),
                    warnings: p.warnings(),
                },
                Err(e) => Response::error(ErrorCode::Invalid, format!("policy refused: {e}")),
            },
            Request::PolicyDiff { text } => {
                let st = self.state();
                let store = match st.policy_store() {
                    Ok(s) => s,
                    Err(e) => return Response::error(ErrorCode::Internal, e.to_string()),
                };
                match text {
                    None => Response::Diff {
                        lines: store.diff_candidate().lines(),
                        warnings: store.candidate().warnings(),
                    },
                    Some(t) => match Policy::from_json(&t) {
                        Ok(p) => Response::Diff {
                            lines: PolicyDiff::between(store.running().policy(), &p).lines(),
                            warnings: p.warnings(),
                        },
                        Err(e) => Response::error(ErrorCode::Invalid, format!("policy refused: {e}")),
                    },
                }
            }
            Request::PolicyRuleAdd { rule, above, below } => self.change(uid, |st, _| {
                let rule: Rule = serde_json::from_value(rule).map_err(|e| invalid(format!("rule: {e}")))?;
                let at = match (above, below) {
                    (Some(_), Some(_)) => return Err(invalid("give --above or --below, not both")),
                    (Some(a), None) => Position::Above(a),
                    (None, Some(b)) => Position::Below(b),
                    (None, None) => Position::Top,
                };
                let mut store = st.policy_store().map_err(invalid)?;
                let name = rule.name.clone();
                let mut candidate = store.candidate().clone();
                let index =
                    candidate.insert_rule(rule, &at).map_err(|e| invalid(format!("rule {name}: {e}")))?;
                candidate.validate().map_err(|e| invalid(format!("rule {name}: {e}")))?;
                *store.candidate_mut() = candidate;
                st.set_policies(&store);
                Ok(Change {
                    message: format!(
                        "rule {name} added to the candidate at position {}; commit to run it",
                        index + 1
                    ),
                    versioned: false,
                })
            }),
            Request::PolicyRuleRemove { name } => self.change(uid, |st, _| {
                let mut store = st.policy_store().map_err(invalid)?;
                store.candidate_mut().remove_rule(&name).map_err(|e| not_found(e.to_string()))?;
                st.set_policies(&store);
                Ok(Change {
                    message: format!("rule {name} removed from the candidate; commit to run it"),
                    versioned: false,
                })
            }),
            Request::PolicyCommit => self.change(uid, |st, version| {
                let mut store = st.policy_store().map_err(invalid)?;
                let diff = store.diff_candidate().lines();
                if diff.is_empty() {
                    return Ok(Change {
                        message: "nothing to commit: the candidate is the running policy".into(),
                        versioned: false,
                    });
                }
                store.commit_as(version).map_err(|e| invalid(format!("commit refused: {e}")))?;
                st.set_policies(&store);
                Ok(Change { message: format!("policy committed: {}", diff.join("; ")), versioned: true })
            }),
            Request::PolicyRollback { version: to } => {
                self.change(uid, |st, version| {
                    if to >= st.version {
                        return Err(not_found(format!(
                            "version {to} is not an earlier version (the current one is {})",
                            st.version
                        )));
                    }
                    let mut store = st.policy_store().map_err(invalid)?;
                    // The policy that ran at `to`: the newest commit at or before it.
                    let base =
                        store.history().filter(|c| c.version <= to).map(|c| c.version).last().ok_or_else(
                            || not_found(format!("version {to} is older than the policies kept")),
                        )?;
                    store.rollback_as(base, version).map_err(|e| not_found(e.to_string()))?;
                    st.set_policies(&store);
                    Ok(Change {
                        message: format!("policy rolled back to the one of version {to}"),
                        versioned: true,
                    })
                })
            }
            Request::PolicyHistory => Response::History { entries: self.state().audit.clone() },
            Request::PolicyExplain { client, server, port, sni, ja4 } => {
                // The dataplane explains with what it runs (the same compiled
                // policy, its learned exclusions, its admission limits).
                if let Some(link) = self.link() {
                    let req = Request::PolicyExplain { client, server, port, sni, ja4 };
                    return link.call(req, DATAPLANE_TIMEOUT);
                }
                let st = self.state();
                let compiled =
                    Policy::from_json(st.running_policy()).map_err(|e| e.to_string()).and_then(|p| {
                        tlsgate_policy::CompiledPolicy::compile(p, st.version).map_err(|e| e.to_string())
                    });
                match compiled {
                    Ok(p) => {
                        let mut e = p.explain(client, server, port, sni.as_deref(), ja4.as_deref());
                        e.notes.push(
                            "the dataplane is not connected: explained from the committed policy; learned \
                             exclusions and admission are unknown"
                                .into(),
                        );
                        Response::Explained(e)
                    }
                    Err(e) => Response::error(ErrorCode::Internal, format!("the committed policy: {e}")),
                }
            }
            other => unsupported(other),
        }
    }
}
