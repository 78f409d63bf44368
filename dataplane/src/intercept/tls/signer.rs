//! Forged leaves signed outside the packet path: the decryption CA's key stays
//! with the control plane, the dataplane holds only the CA's certificate and each
//! worker's leaf key.
//!
//! ```text
//!  worker: forge cache miss ──submit(name, server chain, leaf public key)──► outbox (bounded)
//!        flow waits (AwaitingLeaf)                                              │
//!  link thread: outbox ──SignLeaves{≤64}──► tlsgate-control: verifies the chain again,
//!               builds and signs the leaf, logs it ──SignedLeaves──► inbox of the worker
//!  worker: inbox ──► forge cache ──► the waiting flow answers its client
//! ```
//!
//! A full outbox (the signer is slow or gone) refuses at once; when the link is
//! lost every request in flight is answered with an error; a flow whose leaf does
//! not come is aborted (`signer_unavailable`). Names already cached keep working.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use crossbeam_queue::ArrayQueue;
use tlsgate_api::{LeafRequest, SignedLeaf, MAX_SIGN_BATCH};

/// Requests waiting for the link thread.
const OUTBOX: usize = 1024;
/// Answers waiting for a worker.
const INBOX: usize = 1024;
/// Bytes of requests in one batch (a frame is at most 1 MiB).
const BATCH_BYTES: usize = 512 * 1024;
/// One request's bytes at most (name, chain, key); a larger one is refused here.
const REQUEST_BYTES: usize = 128 * 1024;

/// The queues between the workers and the link thread.
pub struct SignerLink {
    outbox: ArrayQueue<(usize, LeafRequest)>,
    inboxes: Vec<ArrayQueue<SignedLeaf>>,
    /// Requests sent and not answered: id → worker.
    in_flight: Mutex<HashMap<u64, usize>>,
    next_id: AtomicU64,
    connected: AtomicBool,
    /// Verified chains that name CRL distribution points, for the control
    /// plane's CRL fetcher: (name, chain base64 DER, URLs).
    crl_points: ArrayQueue<CrlPoints>,
    /// Server certificates (SHA-256) looked at for distribution points: when,
    /// and whether the server had proved it holds the key.
    crl_seen: Mutex<HashMap<[u8; 32], (std::time::Instant, bool)>>,
}

/// A chain with CRL distribution points to report: name, chain (base64 DER),
/// URLs, proven.
pub type CrlPoints = (String, Vec<String>, Vec<String>, bool);

/// A proven chain is reported again after this long (the control plane keeps
/// the points it names as in use), an unproven one after [`UNPROVEN_AGAIN`].
const PROVEN_AGAIN: std::time::Duration = std::time::Duration::from_secs(3600);
const UNPROVEN_AGAIN: std::time::Duration = std::time::Duration::from_secs(60);

/// Chains with distribution points waiting for the link thread.
const CRL_POINTS: usize = 64;
/// Server certificates remembered as reported (then forgotten all at once).
const CRL_SEEN: usize = 16_384;

impl SignerLink {
    /// For `workers` workers.
    pub fn new(workers: usize) -> Self {
        SignerLink {
            outbox: ArrayQueue::new(OUTBOX),
            inboxes: (0..workers.max(1)).map(|_| ArrayQueue::new(INBOX)).collect(),
            in_flight: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            connected: AtomicBool::new(false),
            crl_points: ArrayQueue::new(CRL_POINTS),
            crl_seen: Mutex::new(HashMap::new()),
        }
    }

    /// A chain that verified for `name` (worker side): its CRL distribution
    /// points go to the control plane, which fetches them (the dataplane never
    /// does). `proven`: the handshake completed (the server holds the key);
    /// otherwise a chain refused only for an unknown revocation status. Once
    /// per server certificate and hour (a minute when unproven); nothing
    /// without a control plane.
    pub fn note_verified_chain(
        &self,
        name: &str,
        chain: &[tlsgate_certstore::pki_types::CertificateDer<'_>],
        proven: bool,
    ) {
        let Some(leaf) = chain.first() else { return };
        if !self.connected.load(Ordering::Relaxed) {
            return;
        }
        let sha = tlsgate_certstore::Fingerprint::of(leaf.as_ref()).0;
        let now = std::time::Instant::now();
        {
            let mut seen = self.crl_seen.lock().unwrap_or_else(PoisonError::into_inner);
            let again = if proven { PROVEN_AGAIN } else { UNPROVEN_AGAIN };
            if let Some(&(at, was_proven)) = seen.get(&sha) {
                if (was_proven || !proven) && now.duration_since(at) < again {
                    return;
                }
            }
            if seen.len() >= CRL_SEEN {
                seen.clear();
            }
            seen.insert(sha, (now, proven));
        }
        let urls: Vec<String> =
            chain.iter().flat_map(|c| tlsgate_certstore::crl_distribution_points(c.as_ref())).collect();
        if urls.is_empty() {
            return;
        }
        use base64::Engine as _;
        let b64 =
            chain.iter().map(|c| base64::engine::general_purpose::STANDARD.encode(c.as_ref())).collect();
        if self.crl_points.push((name.to_owned(), b64, urls, proven)).is_err() {
            // Full: looked at again on its next handshake.
            self.crl_seen.lock().unwrap_or_else(PoisonError::into_inner).remove(&sha);
        }
    }

    /// The next chain with distribution points to report (link side).
    pub fn take_crl_points(&self) -> Option<CrlPoints> {
        self.crl_points.pop()
    }

    /// Asks for a leaf (worker side); its ticket, or why not at once.
    pub fn submit(
        &self,
        worker: usize,
        name: String,
        chain: Vec<String>,
        public_key: String,
    ) -> Result<u64, &'static str> {
        if !self.connected.load(Ordering::Relaxed) {
            return Err("the control plane (the signer) is not connected");
        }
        if name.len() + public_key.len() + chain.iter().map(String::len).sum::<usize>() > REQUEST_BYTES {
            return Err("the server's chain is too large to send to the signer");
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.outbox
            .push((worker, LeafRequest { id, name, chain, public_key }))
            .map_err(|_| "the signer is overloaded (its queue is full)")?;
        Ok(id)
    }

    /// Why a request would not be answered now, if so: the link is down, or the
    /// queue is three quarters full.
    pub fn unavailable(&self) -> Option<&'static str> {
        if !self.connected.load(Ordering::Relaxed) {
            Some("the control plane (the signer) is not connected")
        } else if self.outbox.len() >= OUTBOX * 3 / 4 {
            Some("the signer is overloaded (its queue is filling up)")
        } else {
            None
        }
    }

    /// An answer for `worker`, if one came.
    pub fn take(&self, worker: usize) -> Option<SignedLeaf> {
        self.inboxes.get(worker)?.pop()
    }

    /// The link is up (or went down: every request waiting is answered with an
    /// error, and new ones are refused until it is up again).
    pub fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Relaxed);
        if up {
            // A control plane (maybe a restarted one) hears every chain again.
            self.crl_seen.lock().unwrap_or_else(PoisonError::into_inner).clear();
        }
        if !up {
            let lost: Vec<(u64, usize)> =
                self.in_flight.lock().unwrap_or_else(PoisonError::into_inner).drain().collect();
            let queued = std::iter::from_fn(|| self.outbox.pop()).map(|(w, r)| (r.id, w));
            for (id, worker) in lost.into_iter().chain(queued) {
                self.answer(
                    worker,
                    SignedLeaf { id, cert: None, error: Some("the link to the signer was lost".into()) },
                );
            }
        }
    }

    /// The next batch to send (link side): at most [`MAX_SIGN_BATCH`] requests
    /// and about [`BATCH_BYTES`] (each request is at most [`REQUEST_BYTES`], so
    /// a batch always fits a frame).
    pub fn batch(&self) -> Vec<LeafRequest> {
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut in_flight = self.in_flight.lock().unwrap_or_else(PoisonError::into_inner);
        while out.len() < MAX_SIGN_BATCH && bytes < BATCH_BYTES {
            let Some((worker, req)) = self.outbox.pop() else { break };
            bytes += req.name.len() + req.public_key.len() + req.chain.iter().map(String::len).sum::<usize>();
            in_flight.insert(req.id, worker);
            out.push(req);
        }
        out
    }

    /// The signer's answers (link side), each to its worker.
    pub fn deliver(&self, leaves: Vec<SignedLeaf>) {
        for leaf in leaves {
            let worker = self.in_flight.lock().unwrap_or_else(PoisonError::into_inner).remove(&leaf.id);
            if let Some(w) = worker {
                self.answer(w, leaf);
            }
        }
    }

    /// A batch the signer refused as a whole (link side).
    pub fn refuse(&self, ids: &[u64], why: &str) {
        let leaves =
            ids.iter().map(|&id| SignedLeaf { id, cert: None, error: Some(why.to_string()) }).collect();
        self.deliver(leaves);
    }

    fn answer(&self, worker: usize, leaf: SignedLeaf) {
        if let Some(inbox) = self.inboxes.get(worker) {
            // A worker that does not drain its inbox loses answers: its flows
            // time out (fail closed).
            let _ = inbox.push(leaf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_go_out_in_batches_and_answers_reach_their_worker() {
        let s = SignerLink::new(2);
        assert!(s.submit(0, "a".into(), vec![], "k".into()).is_err(), "not connected");
        s.set_connected(true);
        let a = s.submit(0, "a".into(), vec![], "k".into()).unwrap();
        let b = s.submit(1, "b".into(), vec![], "k".into()).unwrap();
        let batch = s.batch();
        assert_eq!(batch.iter().map(|r| r.id).collect::<Vec<_>>(), vec![a, b]);
        s.deliver(vec![SignedLeaf { id: b, cert: Some("x".into()), error: None }]);
        assert!(s.take(0).is_none());
        assert_eq!(s.take(1).unwrap().id, b);
        // The link goes: what is in flight is answered with an error.
        s.set_connected(false);
        let lost = s.take(0).unwrap();
        assert_eq!((lost.id, lost.cert.is_none()), (a, true));
        assert!(s.submit(0, "c".into(), vec![], "k".into()).is_err());
    }

    /// A server presenting a chain padded to rustls' 64 KiB limit, from many
    /// flows at once: each batch stays within a frame (the link never carries an
    /// oversized one), and a single oversized request is refused at once.
    #[test]
    fn batches_fit_a_frame_whatever_the_chains() {
        let s = SignerLink::new(1);
        s.set_connected(true);
        let padded = vec!["A".repeat(87 * 1024)]; // 64 KiB of DER, in base64
        for _ in 0..40 {
            s.submit(0, "padded.tg.test".into(), padded.clone(), "k".into()).unwrap();
        }
        let mut sent = 0;
        loop {
            let batch = s.batch();
            if batch.is_empty() {
                break;
            }
            sent += batch.len();
            let frame = tlsgate_api::Frame::request(1, tlsgate_api::Request::SignLeaves { leaves: batch });
            assert!(frame.encode().len() <= tlsgate_api::MAX_LINE, "a batch fits a frame");
        }
        assert_eq!(sent, 40);
        let huge = vec!["A".repeat(200 * 1024)];
        assert!(s.submit(0, "huge.tg.test".into(), huge, "k".into()).unwrap_err().contains("too large"));
    }

    #[test]
    fn a_full_outbox_refuses_at_once() {
        let s = SignerLink::new(1);
        s.set_connected(true);
        for _ in 0..OUTBOX {
            s.submit(0, "a".into(), vec![], "k".into()).unwrap();
        }
        assert!(s.submit(0, "a".into(), vec![], "k".into()).unwrap_err().contains("overloaded"));
        assert_eq!(s.batch().len(), MAX_SIGN_BATCH);
    }
}
