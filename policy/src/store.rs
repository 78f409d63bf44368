//! Candidate, commit, history and rollback.
//!
//! ```text
//!   edits ──► candidate ──commit──► running (version n+1) ──► history (last N)
//!                ▲                                              │
//!                └────────── rollback(v): commit v's content ◄──┘ as version n+2
//! ```

use std::collections::VecDeque;
use std::sync::Arc;

use crate::compiled::CompiledPolicy;
use crate::diff::PolicyDiff;
use crate::error::Error;
use crate::model::Policy;

/// How many committed versions a store keeps by default.
pub const DEFAULT_HISTORY: usize = 50;

/// One committed version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// Its configuration version.
    pub version: u64,
    /// Its content.
    pub policy: Arc<Policy>,
    /// The version whose content it restored, when it was a rollback.
    pub rollback_of: Option<u64>,
}

/// The running policy, the candidate being edited, and the recent history.
/// Every operation that fails leaves the store as it was.
#[derive(Debug)]
pub struct PolicyStore {
    running: Arc<CompiledPolicy>,
    candidate: Policy,
    history: VecDeque<Committed>,
    history_limit: usize,
}

impl PolicyStore {
    /// A store whose running policy is `initial`, committed as version 1.
    pub fn new(initial: Policy) -> Result<PolicyStore, Error> {
        PolicyStore::restore(vec![(1, initial)], DEFAULT_HISTORY)
    }

    /// A store from persisted history (any order); the highest version is running and
    /// also the candidate. At most `history_limit` (at least 1) versions are kept.
    pub fn restore(mut history: Vec<(u64, Policy)>, history_limit: usize) -> Result<PolicyStore, Error> {
        history.sort_by_key(|(version, _)| *version);
        history.dedup_by_key(|(version, _)| *version);
        let history_limit = history_limit.max(1);
        let skip = history.len().saturating_sub(history_limit);
        let history: VecDeque<Committed> = history
            .into_iter()
            .skip(skip)
            .map(|(version, policy)| Committed { version, policy: Arc::new(policy), rollback_of: None })
            .collect();
        let last = history.back().ok_or(Error::EmptyHistory)?;
        let running = Arc::new(CompiledPolicy::compile(Arc::clone(&last.policy), last.version)?);
        let candidate = running.policy().clone();
        Ok(PolicyStore { running, candidate, history, history_limit })
    }

    /// The policy workers decide with.
    pub fn running(&self) -> &Arc<CompiledPolicy> {
        &self.running
    }

    /// The running configuration version.
    pub fn version(&self) -> u64 {
        self.running.version()
    }

    /// The candidate (what the next commit would run).
    pub fn candidate(&self) -> &Policy {
        &self.candidate
    }

    /// The candidate, to edit; see the edit methods of [`Policy`].
    pub fn candidate_mut(&mut self) -> &mut Policy {
        &mut self.candidate
    }

    /// Replaces the candidate with a parsed and validated JSON policy; on error the
    /// candidate is unchanged.
    pub fn load_candidate_json(&mut self, text: &str) -> Result<(), Error> {
        self.candidate = Policy::from_json(text)?;
        Ok(())
    }

    /// Drops the candidate's edits: it becomes the running policy again.
    pub fn discard_candidate(&mut self) {
        self.candidate = self.running.policy().clone();
    }

    /// What a commit would change.
    pub fn diff_candidate(&self) -> PolicyDiff {
        PolicyDiff::between(self.running.policy(), &self.candidate)
    }

    /// Compiles the candidate and makes it the running policy with the next version.
    /// On a validation error nothing changes.
    pub fn commit(&mut self) -> Result<Arc<CompiledPolicy>, Error> {
        let version = self.running.version().saturating_add(1);
        self.commit_as(version)
    }

    /// As [`PolicyStore::commit`], under `version` (a configuration version that
    /// also counts other changes: it must be greater than the running one).
    pub fn commit_as(&mut self, version: u64) -> Result<Arc<CompiledPolicy>, Error> {
        if version <= self.running.version() {
            return Err(Error::StaleVersion { version, running: self.running.version() });
        }
        let policy = Arc::new(self.candidate.clone());
        self.install(policy, None, version)
    }

    /// As [`PolicyStore::rollback`], the restored content committed under `as_version`.
    pub fn rollback_as(&mut self, version: u64, as_version: u64) -> Result<Arc<CompiledPolicy>, Error> {
        if as_version <= self.running.version() {
            return Err(Error::StaleVersion { version: as_version, running: self.running.version() });
        }
        let policy = Arc::clone(&self.committed(version).ok_or(Error::UnknownVersion(version))?.policy);
        let running = self.install(policy, Some(version), as_version)?;
        self.candidate = running.policy().clone();
        Ok(running)
    }

    /// Commits the content of an older `version` as a new version; the candidate
    /// becomes that content too (pending edits are dropped).
    pub fn rollback(&mut self, version: u64) -> Result<Arc<CompiledPolicy>, Error> {
        let next = self.running.version().saturating_add(1);
        self.rollback_as(version, next)
    }

    fn install(
        &mut self,
        policy: Arc<Policy>,
        rollback_of: Option<u64>,
        version: u64,
    ) -> Result<Arc<CompiledPolicy>, Error> {
        let running = Arc::new(CompiledPolicy::compile(Arc::clone(&policy), version)?);
        self.history.push_back(Committed { version, policy, rollback_of });
        while self.history.len() > self.history_limit {
            self.history.pop_front();
        }
        self.running = Arc::clone(&running);
        Ok(running)
    }

    /// The kept versions, oldest first; the last is running.
    pub fn history(&self) -> impl Iterator<Item = &Committed> {
        self.history.iter()
    }

    /// A kept version.
    pub fn committed(&self, version: u64) -> Option<&Committed> {
        self.history.iter().find(|c| c.version == version)
    }

    /// The changes from version `from` to version `to` (both kept).
    pub fn diff_versions(&self, from: u64, to: u64) -> Result<PolicyDiff, Error> {
        let get = |v: u64| self.committed(v).ok_or(Error::UnknownVersion(v));
        Ok(PolicyDiff::between(&get(from)?.policy, &get(to)?.policy))
    }
}
