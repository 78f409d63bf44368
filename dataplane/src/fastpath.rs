//! The fast path: classify each frame, track its flow, forward it unchanged.
//!
//! ```text
//!  burst ─► phase 1 classify (per frame): parse ─► key/hash ─► owner ≠ me ─► steer (hand over)
//!                                              └─► malformed ─► count, drop (or forward)
//!           phase 2 track (the whole burst, lookups back to back):
//!                     flow table ─ tracked ─► Forward
//!                                ├ new TCP ─► intercept::admit ─► Forward | Intercept | Block
//!                                └ intercepted ─► its splice (one lookup: the flow holds it)
//!           phase 3 act (in arrival order): forward to the other port | splice | RST | drop
//! ```
//!
//! Phase 1 prefetches each frame's line of the flow table (one cache line per
//! flow, `flow::table`), and phase 2 runs the lookups of the burst in a tight loop:
//! with a million flows each lookup misses the cache, and the misses of a burst
//! overlap instead of being paid one after the other.
//!
//! Bump-in-the-wire: a forwarded frame leaves by the other port byte for byte
//! unchanged (MACs, VLAN tags, TTL). Nothing here locks, allocates or logs per
//! packet. What the parser read travels with the frame ([`Seg`]), so the intercept
//! path parses nothing again.

use tlsgate_drivers::{Frame, Queues};

use crate::config::MalformedAction;
use crate::counters::idx;
use crate::flow::{FlowKey, Side, SpliceId, Track};
use crate::intercept::{AtSyn, Refusal};
use crate::steer::{owner, HandoverBurst};
use crate::wire::parse::{parse, proto, tcp_flags};
use crate::worker::Worker;
use tlsgate_policy::MidstreamAction;

/// What the fast path read of a TCP or UDP segment, carried with its frame.
#[derive(Debug, Clone, Copy)]
pub struct Seg {
    /// Symmetric flow key.
    pub key: FlowKey,
    /// Hash of the key.
    pub hash: u64,
    /// Sender.
    pub side: Side,
    /// TCP flags (0 for UDP).
    pub flags: u8,
    /// Offset of the IP header in the frame.
    pub l3: u16,
    /// Offset of the transport header.
    pub l4: u16,
    /// End of the IP packet in the frame (Ethernet padding excluded).
    pub l3_end: u16,
    /// Bytes of transport payload.
    pub payload: u16,
}

impl Seg {
    /// A SYN without ACK or RST: the opening of a connection.
    pub fn is_syn(&self) -> bool {
        self.flags & (tcp_flags::SYN | tcp_flags::ACK | tcp_flags::RST) == tcp_flags::SYN
    }
}

/// What the fast path decided for a frame.
#[derive(Clone, Copy)]
pub enum Class {
    /// Forward without tracking (not IP, ICMP, other protocols, forwarded malformed).
    Forward,
    /// An IP fragment: forward untracked.
    Fragment,
    /// Drop (already counted).
    Drop,
    /// A SYN the policy blocks (the rule's index, `None`: the default action):
    /// answered with a RST.
    Block(Seg, Option<u32>),
    /// A segment of an intercepted flow: to its splice (`new`: this SYN makes it,
    /// in the slot reserved for it).
    Intercept {
        /// The segment.
        seg: Seg,
        /// Its splice.
        id: SpliceId,
        /// The flow's first segment.
        new: bool,
    },
    /// A segment of an intercepted flow that has ended (late): dropped.
    Tombstone,
    /// Answered with a RST: a SYN over an admission limit (`over_limit =
    /// "reset"`), or a segment to a TLS port without a SYN seen (`midstream =
    /// "reset"`).
    Refuse(Seg, Refusal),
    /// TCP/UDP: look the flow up.
    Track(Seg),
}

/// A classified frame: within a burst, and as handed to the owner worker.
pub struct Item<F> {
    /// The frame.
    pub frame: F,
    /// The port it came in on.
    pub port: u8,
    /// What the fast path decided.
    pub class: Class,
}

impl<Q: Queues> Worker<Q> {
    /// Phase 1: counts and classifies a frame from the wire on `port`; hands it to
    /// its owner (returns `None`) when another worker owns its flow.
    #[inline]
    pub(crate) fn classify(&mut self, frame: Q::Frame, port: usize) -> Option<Item<Q::Frame>> {
        let len = frame.data().len() as u64;
        self.io.c[idx::RX_PKTS + port] += 1;
        self.io.c[idx::RX_BYTES + port] += len;
        let p = match parse(frame.data()) {
            Ok(p) => p,
            Err(reason) => {
                self.io.c[idx::MALFORMED_BASE + reason as usize] += 1;
                let class = if self.settings.malformed == MalformedAction::Forward {
                    self.io.c[idx::MALFORMED_FORWARDED] += 1;
                    Class::Forward
                } else {
                    Class::Drop
                };
                return Some(Item { frame, port: port as u8, class });
            }
        };
        if !p.is_ip() {
            // ARP, LLDP, …: a bump-in-the-wire passes them on.
            return Some(Item { frame, port: port as u8, class: Class::Forward });
        }
        self.io.capture(frame.data(), port, false);
        let (key, side) = FlowKey::of_frame(&p, frame.data());
        let hash = self.flows.hash(&key);
        let class = if p.fragment && p.proto == proto::TCP {
            // A TCP fragment (an IPv6 atomic fragment is parsed as a whole packet):
            // later fragments carry no port, so nothing could decide on them.
            self.io.c[idx::DROP_TCP_FRAGMENT] += 1;
            Class::Drop
        } else if p.fragment {
            // The first fragment of a UDP datagram holds its ports: QUIC the policy
            // blocks is dropped there (later fragments are useless without it).
            match (p.proto == proto::UDP && !p.later_fragment, udp_ports(&p, frame.data())) {
                (true, Some((sport, dport))) => {
                    let (src, _, dst, _) = key.endpoints(side);
                    let blocked = if port == tlsgate_drivers::INSIDE {
                        self.intercept.quic_decision(src, dst, dport, &self.live, &mut self.io)
                    } else {
                        self.intercept.quic_decision(dst, src, sport, &self.live, &mut self.io)
                    };
                    if blocked {
                        self.io.c[idx::DROP_QUIC] += 1;
                        Class::Drop
                    } else {
                        Class::Fragment
                    }
                }
                _ => Class::Fragment,
            }
        } else if p.proto == proto::TCP || p.proto == proto::UDP {
            Class::Track(Seg {
                key,
                hash,
                side,
                flags: p.tcp_flags,
                l3: p.l3_offset,
                l4: p.l4_offset,
                l3_end: p.l3_end,
                payload: p.l3_end.saturating_sub(p.payload_offset),
            })
        } else {
            Class::Forward
        };
        let item = Item { frame, port: port as u8, class };
        if self.settings.software_steering {
            // Fragments and untracked protocols are steered too, by the same hash
            // (fragments: the address pair), so a flow's packets keep their order.
            let to = owner(hash, self.steer.workers());
            if to != self.id {
                self.steer.hand_over(to, item, &mut self.io.c);
                return None;
            }
        }
        if let Class::Track(_) = item.class {
            // Phase 2 probes this line: ask for it now, so the misses of the
            // whole burst overlap.
            self.flows.prefetch(hash);
        }
        Some(item)
    }

    /// Phases 2 and 3 for classified frames of flows this worker owns.
    #[inline]
    pub(crate) fn track_and_forward(&mut self, items: &mut HandoverBurst<Q::Frame>, now_ms: u64) {
        for item in items.iter_mut() {
            if let Class::Track(seg) = item.class {
                item.class = self.track(seg, usize::from(item.port), now_ms);
            }
        }
        for item in items.drain(..) {
            let port = usize::from(item.port);
            match item.class {
                Class::Forward => self.io.forward(item.frame, port),
                Class::Fragment => {
                    self.io.c[idx::UNTRACKED_FRAGMENTS] += 1;
                    self.io.forward(item.frame, port);
                }
                Class::Intercept { seg, id, new } => {
                    let frame = item.frame;
                    self.intercept.segment(
                        &mut self.io,
                        &mut self.flows,
                        frame,
                        &seg,
                        id,
                        new,
                        &self.live,
                        now_ms,
                    );
                }
                Class::Block(seg, rule) => {
                    let frame = item.frame;
                    self.intercept.block(&mut self.io, frame, &seg, port, Refusal::Policy(rule), &self.live);
                }
                Class::Refuse(seg, why) => {
                    self.intercept.block(&mut self.io, item.frame, &seg, port, why, &self.live)
                }
                Class::Tombstone => {
                    // Both legs are closed; a late segment must not take the fast
                    // path (the legs had their own sequence numbers).
                    self.io.c[idx::DROP_TOMBSTONE] += 1;
                }
                Class::Drop | Class::Track(_) => drop(item.frame),
            }
        }
    }

    /// Phase 2 for one segment that came in on `port`: its flow, and for a new TCP
    /// flow the decision.
    #[inline]
    fn track(&mut self, seg: Seg, port: usize, now_ms: u64) -> Class {
        let mut track = self.flows.track(&seg.key, seg.side, seg.hash, seg.flags, now_ms);
        if let Track::Intercepted(Some(id)) = track {
            if seg.is_syn()
                && self.intercept.retire_for_reuse(&mut self.io, &mut self.flows, id, &seg, now_ms)
            {
                // The old splice ended and left a tombstone: the SYN starts a new flow.
                track = self.flows.track(&seg.key, seg.side, seg.hash, seg.flags, now_ms);
            }
        }
        match track {
            Track::Tracked => Class::Forward,
            Track::Intercepted(Some(id)) => Class::Intercept { seg, id, new: false },
            Track::Intercepted(None) => Class::Tombstone,
            Track::Created if seg.key.proto() == proto::TCP => {
                match self.intercept.admit(&seg, port, &self.live, &mut self.io) {
                    AtSyn::Forward => Class::Forward,
                    // Over a limit: no state is kept (a flood must not fill the table);
                    // a retried SYN is decided again.
                    AtSyn::Drop => {
                        self.flows.remove(&seg.key, seg.hash);
                        Class::Drop
                    }
                    AtSyn::Reset => {
                        self.flows.remove(&seg.key, seg.hash);
                        Class::Refuse(seg, Refusal::OverLimit)
                    }
                    AtSyn::Intercept => {
                        // The slot is taken now, so later segments of this burst
                        // find the flow intercepted; the splice is made in phase 3.
                        let id = self.intercept.reserve();
                        self.flows.set_intercepted(&seg.key, seg.hash, id);
                        Class::Intercept { seg, id, new: true }
                    }
                    AtSyn::Block(rule) => {
                        // Later segments of the flow meet a tombstone (a retried SYN
                        // is decided again).
                        self.flows.set_tombstone(&seg.key, seg.hash);
                        Class::Block(seg, rule)
                    }
                }
            }
            Track::Created if seg.key.proto() == proto::UDP => {
                let blocked = if port == tlsgate_drivers::INSIDE {
                    self.intercept.quic_blocked(&seg, &self.live, &mut self.io)
                } else {
                    self.intercept.quic_blocked_from_outside(&seg, &self.live, &mut self.io)
                };
                if blocked {
                    // No state: every packet is decided again (a client gives up
                    // on QUIC after a few Initials and falls back to TCP).
                    self.flows.remove(&seg.key, seg.hash);
                    self.io.c[idx::DROP_QUIC] += 1;
                    Class::Drop
                } else {
                    Class::Forward
                }
            }
            Track::Created => Class::Forward,
            Track::Midstream if self.intercept.tls_port(&seg, &self.live) => {
                match self.intercept.midstream(&self.live) {
                    MidstreamAction::Forward => {
                        self.io.c[idx::UNTRACKED_MIDSTREAM] += 1;
                        Class::Forward
                    }
                    MidstreamAction::Reset => {
                        self.io.c[idx::MIDSTREAM_RESET] += 1;
                        Class::Refuse(seg, Refusal::Midstream)
                    }
                    _ => {
                        self.io.c[idx::DROP_MIDSTREAM] += 1;
                        Class::Drop
                    }
                }
            }
            Track::Midstream => {
                self.io.c[idx::UNTRACKED_MIDSTREAM] += 1;
                Class::Forward
            }
            Track::FullOpen if seg.key.proto() == proto::TCP && self.intercept.tls_port(&seg, &self.live) => {
                // Fail-open never covers TLS ports: a full table must not let them
                // through uninspected.
                self.io.c[idx::DROP_TABLE_FULL] += 1;
                Class::Drop
            }
            Track::FullOpen
                if seg.key.proto() == proto::UDP
                    && if port == tlsgate_drivers::INSIDE {
                        self.intercept.quic_blocked(&seg, &self.live, &mut self.io)
                    } else {
                        self.intercept.quic_blocked_from_outside(&seg, &self.live, &mut self.io)
                    } =>
            {
                // Fail-open never covers QUIC the policy blocks either.
                self.io.c[idx::DROP_QUIC] += 1;
                Class::Drop
            }
            Track::FullOpen => {
                self.io.c[idx::UNTRACKED_TABLE_FULL] += 1;
                Class::Forward
            }
            Track::FullClosed => {
                self.io.c[idx::DROP_TABLE_FULL] += 1;
                Class::Drop
            }
        }
    }
}

/// The ports of a UDP header at the frame's L4 offset (a first fragment has one).
fn udp_ports(p: &crate::wire::parse::Parsed, data: &[u8]) -> Option<(u16, u16)> {
    let at = usize::from(p.l4_offset);
    let h = data.get(at..at + 4)?;
    Some((u16::from_be_bytes([h[0], h[1]]), u16::from_be_bytes([h[2], h[3]])))
}
