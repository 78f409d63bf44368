//! The smoltcp device of a splice: one IP packet in per poll, the packets its
//! stack emits out into a worker-wide buffer, routed to a leg by destination; and
//! the TCP timestamps of the flow being stepped.

use std::cell::Cell;

use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant as SInstant;
use smoltcp::wire::IpAddress;
use tlsgate_api::Leg;

/// Largest IP packet the stacks send (the lab's and most links' MTU).
pub const IP_MTU: usize = 1500;

/// A frame the stack produced, as an IP packet with the leg it goes to.
pub struct Emitted {
    /// Destination leg.
    pub leg: Leg,
    /// Start of the packet in the worker's emit buffer.
    pub start: usize,
    /// Length.
    pub len: usize,
}

/// Output of a poll: IP packets in one reused buffer.
#[derive(Default)]
pub struct EmitBuf {
    /// Packet bytes, back to back.
    pub bytes: Vec<u8>,
    /// The packets.
    pub packets: Vec<Emitted>,
}

impl EmitBuf {
    /// Forgets previous packets (keeps the allocation).
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.packets.clear();
    }
}

/// The device a splice's interface polls: `rx` is the packet to receive (at most
/// one per poll), `out` where it transmits.
pub(super) struct SpliceDevice<'a> {
    pub rx: Option<&'a [u8]>,
    pub out: &'a mut EmitBuf,
    /// The client's address: packets to it go inside, all others outside.
    pub client: IpAddress,
}

pub(super) struct Rx<'a>(&'a [u8]);

pub(super) struct Tx<'a> {
    out: &'a mut EmitBuf,
    client: IpAddress,
}

impl phy::RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let start = self.out.bytes.len();
        self.out.bytes.resize(start + len, 0);
        let r = f(&mut self.out.bytes[start..]);
        // Route by destination: the client's address goes inside, all else outside.
        let dst = destination(&self.out.bytes[start..]);
        let leg = if dst == Some(self.client) { Leg::Client } else { Leg::Server };
        self.out.packets.push(Emitted { leg, start, len });
        r
    }
}

fn destination(ip: &[u8]) -> Option<IpAddress> {
    match ip.first()? >> 4 {
        4 if ip.len() >= 20 => Some(IpAddress::v4(ip[16], ip[17], ip[18], ip[19])),
        6 if ip.len() >= 40 => {
            let b: [u8; 16] = ip[24..40].try_into().ok()?;
            Some(IpAddress::Ipv6(b.into()))
        }
        _ => None,
    }
}

impl Device for SpliceDevice<'_> {
    type RxToken<'b>
        = Rx<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = Tx<'b>
    where
        Self: 'b;

    fn receive(&mut self, _t: SInstant) -> Option<(Rx<'_>, Tx<'_>)> {
        let pkt = self.rx.take()?;
        Some((Rx(pkt), Tx { out: self.out, client: self.client }))
    }

    fn transmit(&mut self, _t: SInstant) -> Option<Tx<'_>> {
        Some(Tx { out: self.out, client: self.client })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = IP_MTU;
        caps
    }
}

thread_local! {
    /// The TCP timestamp value (RFC 7323) of the splice being stepped on this
    /// thread: smoltcp asks a plain `fn` for it.
    static TSVAL: Cell<u32> = const { Cell::new(0) };
}

/// Sets the timestamp value of the flow about to be stepped: its offset plus the
/// worker clock's milliseconds.
pub(super) fn set_tsval(offset: u32, now_ms: u64) {
    TSVAL.with(|t| t.set(offset.wrapping_add(now_ms as u32)));
}

/// smoltcp's timestamp generator: the value [`set_tsval`] set for the flow.
pub(super) fn tsval() -> u32 {
    TSVAL.with(Cell::get)
}
