//! The DPDK backend: EAL start-up from configuration, port and queue setup, the mbuf
//! pool, zero-copy bursts, lcore launch, link status and (extended) statistics.
//!
//! This module, `lines` (DPDK memory for tables) and `dpdk-sys` are the only places
//! with `unsafe` code for DPDK. Every block carries a `// SAFETY:` note.
//!
//! * EAL arguments come verbatim from the configuration: on an appliance a PCI
//!   allow-list and hugepages; in the lab, tests and CI
//!   `--no-huge -m … --no-pci --vdev=net_af_packet0,iface=… --file-prefix=<unique>`.
//!   `rte_eal_init` can run once per process, so [`DpdkBackend::new`] refuses a
//!   second call.
//! * One RX and one TX queue per EAL lcore on each port; worker `w` runs on the
//!   `w`-th lcore (the main lcore is worker 0) and owns queue `w` of both ports.
//! * With more than one queue, RSS is requested with a symmetric key (a repeated
//!   `0x6d5a`), so both directions of a flow hash alike on NICs that support it.
//!   Virtual devices (af_packet, pcap, null, ring) have no RSS: the dataplane then
//!   steers in software.

#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use dpdk_sys as sys;
use serde::Deserialize;

use crate::{port_role, Backend, Burst, Error, Frame, PortMonitor, PortStats, Queues};

/// The `[dpdk]` section of the dataplane configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpdkConfig {
    /// EAL arguments as on a DPDK command line, program name excluded.
    pub eal_args: Vec<String>,
    /// Device name of the inside port (`net_af_packet0`, `0000:03:00.0`).
    pub inside: String,
    /// Device name of the outside port.
    pub outside: String,
    /// Mbufs in the pool; must exceed the RX and TX descriptors of all queues.
    #[serde(default = "default_mbufs")]
    pub mbufs: u32,
    /// Per-lcore mbuf cache.
    #[serde(default = "default_mbuf_cache")]
    pub mbuf_cache: u32,
    /// Data room per mbuf, headroom (128) included.
    #[serde(default = "default_data_room")]
    pub mbuf_data_room: u16,
    /// RX descriptors per queue.
    #[serde(default = "default_desc")]
    pub rx_desc: u16,
    /// TX descriptors per queue.
    #[serde(default = "default_desc")]
    pub tx_desc: u16,
    /// Ask the NIC for symmetric RSS when there is more than one queue.
    #[serde(default = "default_true")]
    pub rss: bool,
}

fn default_mbufs() -> u32 {
    16383
}
fn default_mbuf_cache() -> u32 {
    256
}
fn default_data_room() -> u16 {
    2048 + sys::PKTMBUF_HEADROOM
}
fn default_desc() -> u16 {
    1024
}
fn default_true() -> bool {
    true
}

impl DpdkConfig {
    /// Checks what can be checked before EAL start-up; the error names the field.
    pub fn validate(&self) -> Result<(), Error> {
        if self.eal_args.is_empty() {
            return Err(Error::Invalid(
                "dpdk.eal_args: empty (at least the lcore list, e.g. [\"-l\", \"0\"])".into(),
            ));
        }
        if self.inside.is_empty() || self.outside.is_empty() {
            return Err(Error::Invalid("dpdk.inside / dpdk.outside: a device name is required".into()));
        }
        if self.inside == self.outside {
            return Err(Error::Invalid(format!(
                "dpdk.outside: same device as dpdk.inside ({})",
                self.inside
            )));
        }
        if self.mbuf_data_room <= sys::PKTMBUF_HEADROOM + 64 {
            return Err(Error::Invalid(format!(
                "dpdk.mbuf_data_room: {} leaves no room for a frame after the {}-byte headroom",
                self.mbuf_data_room,
                sys::PKTMBUF_HEADROOM
            )));
        }
        if !self.rx_desc.is_power_of_two() || !self.tx_desc.is_power_of_two() {
            return Err(Error::Invalid("dpdk.rx_desc / dpdk.tx_desc: must be powers of two".into()));
        }
        if self.mbuf_cache > 512 || self.mbuf_cache > self.mbufs / 2 {
            return Err(Error::Invalid(format!(
                "dpdk.mbuf_cache: {} too large (at most 512 and mbufs/2)",
                self.mbuf_cache
            )));
        }
        Ok(())
    }

    /// Mbufs the queues of `workers` workers can hold at once.
    fn mbufs_needed(&self, workers: usize) -> u64 {
        let per_queue = u64::from(self.rx_desc) + u64::from(self.tx_desc);
        // 2 ports; each worker also holds a few bursts in flight and its lcore cache.
        2 * per_queue * workers as u64
            + workers as u64 * (u64::from(self.mbuf_cache) + 8 * crate::BURST as u64)
    }
}

static EAL_STARTED: AtomicBool = AtomicBool::new(false);
/// The EAL is initialised and not cleaned up: its heap may be used ([`crate::lines`]).
static EAL_RUNNING: AtomicBool = AtomicBool::new(false);
/// Tables in the EAL's memory, or being allocated there ([`crate::lines`]): while
/// any is, the EAL is not cleaned up.
pub(crate) static DPDK_TABLES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Whether the EAL runs now (initialised, not yet cleaned up).
pub(crate) fn eal_running() -> bool {
    EAL_RUNNING.load(Ordering::SeqCst)
}

fn rte_error() -> String {
    // SAFETY: tg_errno reads DPDK's per-thread rte_errno; rte_strerror returns a
    // pointer to a static or thread-local NUL-terminated string.
    unsafe {
        let e = sys::tg_errno();
        CStr::from_ptr(sys::rte_strerror(e)).to_string_lossy().into_owned()
    }
}

fn errno_text(rc: c_int) -> String {
    // SAFETY: as in rte_error; rte_strerror accepts any errno value.
    unsafe { CStr::from_ptr(sys::rte_strerror(-rc)).to_string_lossy().into_owned() }
}

/// An mbuf holding one frame. Frees itself on drop; handed to TX by pointer.
#[repr(transparent)]
pub struct Mbuf(NonNull<sys::rte_mbuf>);

// SAFETY: an Mbuf is the only handle to its rte_mbuf (rx_burst hands ownership over,
// tx_burst takes it back), and DPDK mempools accept frees from any thread, so moving
// it to another thread is sound.
unsafe impl Send for Mbuf {}

impl Mbuf {
    fn head(&self) -> &sys::RteMbufHead {
        // SAFETY: the pointer came from DPDK (rx burst) and stays valid until this Mbuf
        // is dropped or sent; RteMbufHead mirrors the mbuf's first fields (offsets are
        // asserted in shim.c).
        unsafe { self.0.as_ref() }
    }
}

impl Frame for Mbuf {
    #[inline]
    fn data(&self) -> &[u8] {
        let h = self.head();
        // SAFETY: buf_addr + data_off points at data_len initialised bytes inside the
        // mbuf's buffer (DPDK's invariant for a received segment); the slice lives no
        // longer than &self.
        unsafe {
            std::slice::from_raw_parts(h.buf_addr.add(usize::from(h.data_off)), usize::from(h.data_len))
        }
    }

    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in data(); &mut self guarantees exclusive access to the buffer.
        unsafe {
            let h = self.0.as_mut();
            std::slice::from_raw_parts_mut(h.buf_addr.add(usize::from(h.data_off)), usize::from(h.data_len))
        }
    }
}

impl Drop for Mbuf {
    fn drop(&mut self) {
        // SAFETY: we own the mbuf (see Send); it is freed exactly once, here.
        unsafe { sys::tg_pktmbuf_free(self.0.as_ptr()) }
    }
}

/// Queue `q` of both ports, held by worker `q`.
pub struct DpdkQueues {
    queue: u16,
    ports: [u16; 2],
    pool: NonNull<sys::rte_mempool>,
}

// SAFETY: the pool pointer refers to the process-wide mempool, which lives as long as
// the EAL and accepts allocations from any lcore; the rest is plain data.
unsafe impl Send for DpdkQueues {}

impl Queues for DpdkQueues {
    type Frame = Mbuf;

    fn alloc(&mut self, len: usize) -> Option<Mbuf> {
        // SAFETY: allocation from a live pool; a non-null result is a fresh mbuf we
        // own, reset by DPDK (data_off = headroom, one segment, zero length). We set
        // its lengths only after checking they fit the buffer.
        unsafe {
            let m = NonNull::new(sys::tg_pktmbuf_alloc(self.pool.as_ptr()))?;
            let mut mbuf = Mbuf(m);
            let h = mbuf.0.as_mut();
            if usize::from(h.buf_len) < usize::from(h.data_off) + len || len > usize::from(u16::MAX) {
                return None; // dropping `mbuf` frees it
            }
            h.data_len = len as u16;
            h.pkt_len = len as u32;
            Some(mbuf)
        }
    }

    #[inline]
    fn rx_burst(&mut self, port: usize, out: &mut Burst<Mbuf>) {
        let len = out.len();
        let room = out.capacity() - len;
        if room == 0 {
            return;
        }
        // SAFETY: Mbuf is repr(transparent) over a non-null rte_mbuf pointer, so the
        // spare capacity of `out` is `room` slots of `*mut rte_mbuf`; DPDK writes at
        // most `room` valid pointers and returns how many, which we then own.
        unsafe {
            let slots = out.as_mut_ptr().add(len).cast::<*mut sys::rte_mbuf>();
            let n = sys::tg_rx_burst(self.ports[port], self.queue, slots, room as u16);
            out.set_len(len + usize::from(n));
        }
    }

    #[inline]
    fn tx_burst(&mut self, port: usize, frames: &mut Burst<Mbuf>) -> usize {
        let len = frames.len();
        if len == 0 {
            return 0;
        }
        // SAFETY: the first `len` slots hold owned mbuf pointers (repr(transparent));
        // DPDK takes ownership of the first `sent` of them. We then shift the unsent
        // tail to the front and shorten the vector, so no sent mbuf is dropped (freed)
        // by us and no unsent one is lost.
        unsafe {
            let base = frames.as_mut_ptr();
            let sent = usize::from(sys::tg_tx_burst(
                self.ports[port],
                self.queue,
                base.cast::<*mut sys::rte_mbuf>(),
                len as u16,
            ));
            if sent < len {
                std::ptr::copy(base.add(sent), base, len - sent);
            }
            frames.set_len(len - sent);
            sent
        }
    }
}

struct PortInfo {
    id: u16,
    device: String,
    role: &'static str,
    xstat_names: Vec<String>,
}

struct DpdkMonitor {
    ports: Vec<PortInfo>,
}

impl PortMonitor for DpdkMonitor {
    fn port_stats(&self) -> Vec<PortStats> {
        self.ports
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut st = sys::TgPortStats::default();
                let (mut speed, mut up) = (0u32, 0 as c_int);
                // SAFETY: plain out-parameter calls on a started port; DPDK's stats and
                // link queries may be made from any thread.
                unsafe {
                    sys::tg_port_stats(p.id, &mut st);
                    sys::tg_port_link(p.id, &mut speed, &mut up);
                }
                let mut xstats = std::collections::BTreeMap::new();
                if !p.xstat_names.is_empty() {
                    let mut vals = vec![sys::rte_eth_xstat::default(); p.xstat_names.len()];
                    // SAFETY: vals has room for as many entries as the names we read.
                    let n = unsafe { sys::rte_eth_xstats_get(p.id, vals.as_mut_ptr(), vals.len() as u32) };
                    if n > 0 {
                        for x in vals.iter().take(n as usize) {
                            if x.value != 0 {
                                if let Some(name) = p.xstat_names.get(x.id as usize) {
                                    xstats.insert(name.clone(), x.value);
                                }
                            }
                        }
                    }
                }
                PortStats {
                    port: i as u32,
                    role: p.role.to_string(),
                    device: p.device.clone(),
                    link_up: up != 0,
                    speed_mbps: speed,
                    ipackets: st.ipackets,
                    opackets: st.opackets,
                    ibytes: st.ibytes,
                    obytes: st.obytes,
                    imissed: st.imissed,
                    rx_nombuf: st.rx_nombuf,
                    ierrors: st.ierrors,
                    oerrors: st.oerrors,
                    xstats,
                }
            })
            .collect()
    }
}

/// A started DPDK backend: EAL up, both ports configured and started.
pub struct DpdkBackend {
    workers: usize,
    lcores: Vec<u32>,
    monitor: Arc<DpdkMonitor>,
    pool: NonNull<sys::rte_mempool>,
    queues_taken: bool,
    symmetric_rss: bool,
    /// Kept alive for the EAL's lifetime: DPDK may keep pointers into argv.
    _argv: Vec<CString>,
}

impl DpdkBackend {
    /// Starts the EAL with `cfg.eal_args` and sets up both ports with one queue per
    /// lcore. Can succeed once per process.
    pub fn new(cfg: &DpdkConfig) -> Result<Self, Error> {
        cfg.validate().map_err(|e| Error::Config(e.to_string()))?;
        if EAL_STARTED.swap(true, Ordering::SeqCst) {
            return Err(Error::Eal("the EAL can be initialised once per process".into()));
        }
        let mut argv_owned = vec![CString::new("tlsgate-dataplane").expect("no NUL")];
        for a in &cfg.eal_args {
            argv_owned.push(
                CString::new(a.as_str())
                    .map_err(|_| Error::Config(format!("dpdk.eal_args: {a:?} contains NUL")))?,
            );
        }
        let mut argv: Vec<*mut c_char> = argv_owned.iter().map(|s| s.as_ptr() as *mut c_char).collect();
        // SAFETY: argv holds argc valid NUL-terminated strings that outlive the EAL
        // (stored in the backend); EAL may reorder the pointer array, which is ours.
        let rc = unsafe { sys::rte_eal_init(argv.len() as c_int, argv.as_mut_ptr()) };
        if rc < 0 {
            // SAFETY: reads DPDK's per-thread rte_errno.
            let detail = if unsafe { sys::tg_errno() } == 0 {
                "see the EAL: lines above (is another DPDK process using the same --file-prefix?)".to_string()
            } else {
                rte_error()
            };
            return Err(Error::Eal(detail));
        }
        EAL_RUNNING.store(true, Ordering::SeqCst);

        // Lcores: main first, then the others in order.
        // SAFETY: EAL is initialised; these only read its lcore configuration.
        let lcores = unsafe {
            let mut v = vec![sys::rte_get_main_lcore()];
            let mut i = sys::rte_get_next_lcore(u32::MAX, sys::SKIP_MAIN, 0);
            while i < sys::RTE_MAX_LCORE {
                v.push(i);
                i = sys::rte_get_next_lcore(i, sys::SKIP_MAIN, 0);
            }
            v
        };
        let workers = lcores.len();
        let needed = cfg.mbufs_needed(workers);
        if u64::from(cfg.mbufs) <= needed {
            return Err(Error::Config(format!(
                "dpdk.mbufs: {} mbufs cannot fill {} workers x 2 ports x ({} RX + {} TX descriptors); at least {} needed",
                cfg.mbufs,
                workers,
                cfg.rx_desc,
                cfg.tx_desc,
                needed + 1
            )));
        }

        let ids = [find_port(&cfg.inside, 0)?, find_port(&cfg.outside, 1)?];
        // SAFETY: EAL is initialised; the name is a valid C string.
        let pool = unsafe {
            let name = CString::new("tg_mbufs").expect("no NUL");
            sys::rte_pktmbuf_pool_create(
                name.as_ptr(),
                cfg.mbufs,
                cfg.mbuf_cache,
                0,
                cfg.mbuf_data_room,
                sys::rte_socket_id() as c_int,
            )
        };
        if pool.is_null() {
            return Err(Error::Config(format!(
                "dpdk.mbufs: cannot create a pool of {} mbufs of {} bytes: {} (with --no-huge, raise EAL -m)",
                cfg.mbufs,
                cfg.mbuf_data_room,
                rte_error()
            )));
        }

        let mut ports = Vec::new();
        let pool = NonNull::new(pool).expect("checked above");
        let mut symmetric = workers > 1;
        for (i, &id) in ids.iter().enumerate() {
            let rss_hf = setup_port(id, workers as u16, cfg, pool.as_ptr())?;
            if rss_hf == 0 {
                symmetric = false;
            }
            ports.push(PortInfo {
                id,
                device: if i == 0 { cfg.inside.clone() } else { cfg.outside.clone() },
                role: port_role(i),
                xstat_names: xstat_names(id),
            });
        }
        tracing::info!(
            workers,
            ?lcores,
            symmetric_rss = symmetric,
            version = sys::DPDK_VERSION,
            "DPDK ports started"
        );
        Ok(DpdkBackend {
            workers,
            lcores,
            monitor: Arc::new(DpdkMonitor { ports }),
            pool,
            queues_taken: false,
            symmetric_rss: symmetric,
            _argv: argv_owned,
        })
    }
}

fn find_port(name: &str, role: usize) -> Result<u16, Error> {
    let c = CString::new(name).map_err(|_| Error::Config(format!("port name {name:?} contains NUL")))?;
    let mut id = 0u16;
    // SAFETY: valid C string and out-pointer.
    let rc = unsafe { sys::rte_eth_dev_get_port_by_name(c.as_ptr(), &mut id) };
    if rc == 0 {
        return Ok(id);
    }
    let mut available = Vec::new();
    for p in 0..64u16 {
        let mut buf = [0 as c_char; 64];
        // SAFETY: DPDK writes at most RTE_ETH_NAME_MAX_LEN (64) bytes into buf.
        if unsafe { sys::rte_eth_dev_get_name_by_port(p, buf.as_mut_ptr()) } == 0 {
            // SAFETY: DPDK NUL-terminated the name.
            available.push(unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned());
        }
    }
    Err(Error::PortNotFound {
        name: name.to_string(),
        role: port_role(role),
        available: if available.is_empty() { "no ports".into() } else { available.join(", ") },
    })
}

fn setup_port(id: u16, queues: u16, cfg: &DpdkConfig, pool: *mut sys::rte_mempool) -> Result<u64, Error> {
    let fail = |what: &'static str, rc: c_int| Error::Port { what, port: id, reason: errno_text(rc) };
    // SAFETY: plain calls on a probed port id with valid out-pointers; the pool is a
    // live mempool; conf pointers may be NULL (driver defaults).
    unsafe {
        let mut info: sys::TgPortInfo = std::mem::zeroed();
        let rc = sys::tg_port_info(id, &mut info);
        if rc != 0 {
            return Err(fail("rte_eth_dev_info_get", rc));
        }
        if info.max_rx_queues < queues || info.max_tx_queues < queues {
            let driver = CStr::from_ptr(info.driver.as_ptr()).to_string_lossy().into_owned();
            return Err(Error::Config(format!(
                "port {id} ({driver}) has {} RX / {} TX queues, {queues} workers need one each (af_packet: add qpairs={queues} to the vdev)",
                info.max_rx_queues, info.max_tx_queues
            )));
        }
        let mut key = vec![0u8; usize::from(info.hash_key_size)];
        for (i, b) in key.iter_mut().enumerate() {
            *b = if i % 2 == 0 { 0x6d } else { 0x5a };
        }
        let mut rss_hf = 0u64;
        let rc = sys::tg_port_configure(
            id,
            queues,
            queues,
            c_int::from(cfg.rss),
            key.as_mut_ptr(),
            info.hash_key_size,
            &mut rss_hf,
        );
        if rc != 0 {
            return Err(fail("rte_eth_dev_configure", rc));
        }
        let socket = sys::rte_eth_dev_socket_id(id).max(0) as u32;
        for q in 0..queues {
            let rc = sys::rte_eth_rx_queue_setup(id, q, cfg.rx_desc, socket, std::ptr::null(), pool);
            if rc != 0 {
                return Err(fail("rte_eth_rx_queue_setup", rc));
            }
            let rc = sys::rte_eth_tx_queue_setup(id, q, cfg.tx_desc, socket, std::ptr::null());
            if rc != 0 {
                return Err(fail("rte_eth_tx_queue_setup", rc));
            }
        }
        let rc = sys::rte_eth_dev_start(id);
        if rc != 0 {
            return Err(fail("rte_eth_dev_start", rc));
        }
        // Bump-in-the-wire: frames are for other hosts' MACs. Some vdevs do not
        // support promiscuous mode (and need none): ignore that answer.
        let _ = sys::rte_eth_promiscuous_enable(id);
        Ok(rss_hf)
    }
}

fn xstat_names(id: u16) -> Vec<String> {
    // SAFETY: first call with NULL asks for the count; the second fills `n` entries.
    unsafe {
        let n = sys::rte_eth_xstats_get_names(id, std::ptr::null_mut(), 0);
        if n <= 0 {
            return Vec::new();
        }
        let mut names = vec![sys::rte_eth_xstat_name { name: [0; 64] }; n as usize];
        let got = sys::rte_eth_xstats_get_names(id, names.as_mut_ptr(), n as u32);
        names
            .iter()
            .take(got.max(0) as usize)
            .map(|x| CStr::from_ptr(x.name.as_ptr()).to_string_lossy().into_owned())
            .collect()
    }
}

struct LaunchArg<'a> {
    f: &'a (dyn Fn(usize) + Sync),
    worker: usize,
}

unsafe extern "C" fn lcore_trampoline(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the LaunchArg passed by DpdkBackend::launch, which waits for
    // this lcore to finish before the LaunchArg goes out of scope.
    let a = unsafe { &*(arg as *const LaunchArg<'_>) };
    (a.f)(a.worker);
    0
}

impl Backend for DpdkBackend {
    type Queues = DpdkQueues;

    fn name(&self) -> &'static str {
        "dpdk"
    }

    fn workers(&self) -> usize {
        self.workers
    }

    fn take_queues(&mut self) -> Vec<DpdkQueues> {
        assert!(!self.queues_taken, "queues are handed out once");
        self.queues_taken = true;
        let ports = [self.monitor.ports[0].id, self.monitor.ports[1].id];
        (0..self.workers).map(|q| DpdkQueues { queue: q as u16, ports, pool: self.pool }).collect()
    }

    fn monitor(&self) -> Arc<dyn PortMonitor> {
        self.monitor.clone()
    }

    fn symmetric_rss(&self) -> bool {
        self.symmetric_rss
    }

    fn launch<F>(&self, f: F)
    where
        F: Fn(usize) + Sync,
    {
        let args: Vec<LaunchArg<'_>> = (0..self.workers).map(|worker| LaunchArg { f: &f, worker }).collect();
        for (w, lcore) in self.lcores.iter().enumerate().skip(1) {
            // SAFETY: the lcore is an idle EAL worker lcore; args outlives the launch
            // because we wait for every launched lcore below before returning.
            let rc = unsafe {
                sys::rte_eal_remote_launch(
                    lcore_trampoline,
                    &args[w] as *const LaunchArg<'_> as *mut c_void,
                    *lcore,
                )
            };
            assert_eq!(rc, 0, "lcore {lcore} was not idle");
        }
        f(0);
        for lcore in self.lcores.iter().skip(1) {
            // SAFETY: waits for an lcore we launched.
            unsafe { sys::rte_eal_wait_lcore(*lcore) };
        }
    }
}

impl Drop for DpdkBackend {
    fn drop(&mut self) {
        // No table may be put in the EAL's memory from now on; one still there
        // keeps the EAL up (its memory stays mapped until the process exits).
        EAL_RUNNING.store(false, Ordering::SeqCst);
        let tables = DPDK_TABLES.load(Ordering::SeqCst);
        // SAFETY: workers have returned (launch waits), so no queue is in use; ports
        // are stopped and closed once, then the EAL is torn down unless a table
        // still lives in its memory.
        unsafe {
            for p in &self.monitor.ports {
                sys::rte_eth_dev_stop(p.id);
                sys::rte_eth_dev_close(p.id);
            }
            if tables > 0 {
                tracing::warn!(tables, "EAL left up: flow tables still live in its memory");
                return;
            }
            sys::rte_eal_cleanup();
        }
    }
}
