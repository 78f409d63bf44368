//! `dpdk-sys`: tlsgate's own, deliberately narrow FFI to the system DPDK.
//!
//! ```text
//!  tlsgate-drivers (safe Rust: Eal, Port, Mbuf)
//!        │  extern "C"
//!        ├──────────────► libdpdk (rte_eal_init, rte_eth_dev_*, rte_pktmbuf_pool_create …)
//!        └──► shim/shim.c ─► DPDK `static inline` functions (rx/tx burst, mbuf alloc/free)
//! ```
//!
//! * DPDK is found with `pkg-config libdpdk` (Debian's `libdpdk-dev`, 22.11); the build
//!   stops with one line naming `scripts/install-deps.sh` when it is missing.
//! * Only the functions tlsgate calls are declared, by hand. Functions whose arguments
//!   are large DPDK structs are wrapped in the shim with flat structs of our own
//!   ([`TgPortInfo`], [`TgPortStats`]), so no DPDK layout is mirrored here except the
//!   first fields of `rte_mbuf` ([`RteMbufHead`]), which the shim pins with
//!   `_Static_assert`s.
//! * Why not the crates.io `dpdk-sys`: it is a 2018 binding that bundles DPDK 17.x
//!   and does not build against a current DPDK; bindgen over the full headers takes
//!   ~50 s per clean build and needs libclang. A hand-written, checked surface of a few
//!   dozen functions is smaller than either.
//!
//! Everything here is `unsafe` to call; `tlsgate-drivers`' DPDK backend is the only
//! user and documents each call with a `// SAFETY:` note.

#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_int, c_uint, c_void};

/// The DPDK release this crate was built against (`pkg-config --modversion libdpdk`).
pub const DPDK_VERSION: &str = env!("DPDK_VERSION");

/// Headroom DPDK reserves before packet data in each mbuf (`RTE_PKTMBUF_HEADROOM`).
pub const PKTMBUF_HEADROOM: u16 = 128;

/// Largest `lcore_id` DPDK hands out plus one (`RTE_MAX_LCORE`).
pub const RTE_MAX_LCORE: c_uint = 128;

/// `LCORE_ID_ANY`: returned by `rte_lcore_id()` on a thread that is not an EAL lcore.
pub const LCORE_ID_ANY: c_uint = u32::MAX;

/// Opaque `struct rte_mempool`.
#[repr(C)]
pub struct rte_mempool {
    _private: [u8; 0],
}

/// The first cache line of `struct rte_mbuf` as DPDK 22.11 lays it out (x86-64,
/// `RTE_IOVA_AS_PA`). Only the fields tlsgate reads are named; `shim.c` asserts their
/// offsets at compile time.
#[repr(C)]
pub struct RteMbufHead {
    pub buf_addr: *mut u8,
    pub buf_iova: u64,
    pub data_off: u16,
    pub refcnt: u16,
    pub nb_segs: u16,
    pub port: u16,
    pub ol_flags: u64,
    pub packet_type: u32,
    pub pkt_len: u32,
    pub data_len: u16,
    pub vlan_tci: u16,
    pub hash: u64,
    pub vlan_tci_outer: u16,
    pub buf_len: u16,
    pub pool: *mut rte_mempool,
}

/// Opaque `struct rte_mbuf`; cast to [`RteMbufHead`] to read its first fields.
pub type rte_mbuf = RteMbufHead;

/// `struct rte_eth_xstat_name`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct rte_eth_xstat_name {
    pub name: [c_char; 64],
}

/// `struct rte_eth_xstat`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct rte_eth_xstat {
    pub id: u64,
    pub value: u64,
}

/// `struct rte_ether_addr`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct rte_ether_addr {
    pub addr_bytes: [u8; 6],
}

/// `struct tg_port_info` of the shim.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TgPortInfo {
    pub driver: [c_char; 32],
    pub max_rx_queues: u16,
    pub max_tx_queues: u16,
    pub rss_offloads: u64,
    pub hash_key_size: u8,
}

/// `struct tg_port_stats` of the shim (from `rte_eth_stats`).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct TgPortStats {
    pub ipackets: u64,
    pub opackets: u64,
    pub ibytes: u64,
    pub obytes: u64,
    pub imissed: u64,
    pub ierrors: u64,
    pub oerrors: u64,
    pub rx_nombuf: u64,
}

/// `lcore_function_t`.
pub type lcore_function_t = unsafe extern "C" fn(arg: *mut c_void) -> c_int;

/// `SKIP_MAIN` for [`rte_get_next_lcore`].
pub const SKIP_MAIN: c_int = 1;

extern "C" {
    // --- shim.c (static inline functions and flat-struct wrappers) ---
    pub fn tg_rx_burst(port: u16, queue: u16, pkts: *mut *mut rte_mbuf, n: u16) -> u16;
    pub fn tg_tx_burst(port: u16, queue: u16, pkts: *mut *mut rte_mbuf, n: u16) -> u16;
    pub fn tg_pktmbuf_free(m: *mut rte_mbuf);
    pub fn tg_pktmbuf_free_bulk(m: *mut *mut rte_mbuf, n: c_uint);
    pub fn tg_pktmbuf_alloc(mp: *mut rte_mempool) -> *mut rte_mbuf;
    pub fn tg_errno() -> c_int;
    pub fn tg_lcore_id() -> c_uint;
    pub fn tg_tsc_hz() -> u64;
    pub fn tg_rdtsc() -> u64;
    pub fn tg_port_info(port: u16, out: *mut TgPortInfo) -> c_int;
    pub fn tg_port_configure(
        port: u16,
        nb_rxq: u16,
        nb_txq: u16,
        rss: c_int,
        rss_key: *mut u8,
        rss_key_len: u8,
        rss_hf_out: *mut u64,
    ) -> c_int;
    pub fn tg_port_link(port: u16, speed_mbps: *mut u32, up: *mut c_int) -> c_int;
    pub fn tg_port_stats(port: u16, out: *mut TgPortStats) -> c_int;
    pub fn tg_table_map(len: usize, huge: *mut c_int) -> *mut c_void;
    pub fn tg_table_unmap(p: *mut c_void, len: usize);

    // --- libdpdk ---
    pub fn rte_eal_init(argc: c_int, argv: *mut *mut c_char) -> c_int;
    pub fn rte_eal_cleanup() -> c_int;
    pub fn rte_strerror(errnum: c_int) -> *const c_char;
    pub fn rte_lcore_count() -> c_uint;
    pub fn rte_get_main_lcore() -> c_uint;
    pub fn rte_get_next_lcore(i: c_uint, skip_main: c_int, wrap: c_int) -> c_uint;
    pub fn rte_eal_remote_launch(f: lcore_function_t, arg: *mut c_void, worker_id: c_uint) -> c_int;
    pub fn rte_eal_wait_lcore(worker_id: c_uint) -> c_int;
    pub fn rte_socket_id() -> c_uint;
    pub fn rte_eal_has_hugepages() -> c_int;
    pub fn rte_zmalloc_socket(kind: *const c_char, size: usize, align: c_uint, socket: c_int) -> *mut c_void;
    pub fn rte_free(ptr: *mut c_void);

    pub fn rte_pktmbuf_pool_create(
        name: *const c_char,
        n: c_uint,
        cache_size: c_uint,
        priv_size: u16,
        data_room_size: u16,
        socket_id: c_int,
    ) -> *mut rte_mempool;
    pub fn rte_mempool_avail_count(mp: *const rte_mempool) -> c_uint;

    pub fn rte_eth_dev_count_avail() -> u16;
    pub fn rte_eth_dev_get_port_by_name(name: *const c_char, port_id: *mut u16) -> c_int;
    pub fn rte_eth_dev_get_name_by_port(port_id: u16, name: *mut c_char) -> c_int;
    pub fn rte_eth_dev_socket_id(port_id: u16) -> c_int;
    pub fn rte_eth_rx_queue_setup(
        port_id: u16,
        rx_queue_id: u16,
        nb_rx_desc: u16,
        socket_id: c_uint,
        rx_conf: *const c_void,
        mb_pool: *mut rte_mempool,
    ) -> c_int;
    pub fn rte_eth_tx_queue_setup(
        port_id: u16,
        tx_queue_id: u16,
        nb_tx_desc: u16,
        socket_id: c_uint,
        tx_conf: *const c_void,
    ) -> c_int;
    pub fn rte_eth_dev_start(port_id: u16) -> c_int;
    pub fn rte_eth_dev_stop(port_id: u16) -> c_int;
    pub fn rte_eth_dev_close(port_id: u16) -> c_int;
    pub fn rte_eth_promiscuous_enable(port_id: u16) -> c_int;
    pub fn rte_eth_macaddr_get(port_id: u16, mac_addr: *mut rte_ether_addr) -> c_int;
    pub fn rte_eth_xstats_get_names(
        port_id: u16,
        xstats_names: *mut rte_eth_xstat_name,
        size: c_uint,
    ) -> c_int;
    pub fn rte_eth_xstats_get(port_id: u16, xstats: *mut rte_eth_xstat, n: c_uint) -> c_int;
}
