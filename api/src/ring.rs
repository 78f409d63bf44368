//! The event ring: a single-producer/single-consumer queue of [`EventRecord`]s in
//! a memory-mapped file, one per dataplane worker.
//!
//! ```text
//!   worker N ──try_push──► /run/tlsgate/events.N ──pop──► tlsgate-control
//!   (Producer, never blocks)   (shared file mapping)      (Consumer)
//! ```
//!
//! The file outlives both processes: records pushed while no consumer runs wait
//! in it (until the ring is full; then pushes are dropped and counted), and a
//! consumer that restarts resumes where the last one stopped, because the read
//! index lives in the file too.
//!
//! # Layout (host byte order, version [`RING_LAYOUT_VERSION`])
//!
//! ```text
//!   offset   0  magic "TGEVRING" · layout version u32 · record size u32 · capacity u32
//!   offset  64  head     u64  next index to write        (producer-owned)
//!   offset 128  tail     u64  next index to read         (consumer-owned)
//!               reported u64  drops already reported     (consumer-owned)
//!   offset 192  dropped  u64  pushes refused, ring full  (producer-owned)
//!   offset 256  capacity × EventRecord (1152 bytes each); index i is in slot i % capacity
//! ```
//!
//! Indices only grow (a u64 does not wrap in practice); `head - tail` records are
//! waiting. The producer writes slot `head` and then publishes it with a release
//! store of `head + 1`; the consumer loads `head` with acquire, copies slot
//! `tail` out and then frees it with a release store of `tail + 1`. Each index
//! has a single writer, so no compare-and-swap is needed, and each owner's lines
//! are separate 64-byte cache lines.
//!
//! # Roles and files
//!
//! [`Producer::create`] reuses an existing file whose header matches this build
//! and the requested capacity, keeping its unread records; otherwise it builds a
//! new file beside it and renames it into place, so a reader never maps a
//! half-initialised or shrinking file. A consumer still holding the replaced file
//! notices through [`Consumer::is_replaced`] and reopens. On Linux each role takes
//! an open-file-description lock on one byte of the file (producer byte 0,
//! consumer byte 1), so a second producer or consumer of the same ring is refused
//! with [`Error::RingBusy`] rather than corrupting it; the locks go away with the
//! process. The file is expected on a local filesystem (normally the tmpfs
//! `/run`); it is preallocated so that writing to the mapping cannot fail for
//! lack of space.
//!
//! # Why `unsafe` is allowed here
//!
//! This is the one module of the crate that may use `unsafe` (the crate root
//! denies it). Sharing memory with another process means viewing mapped bytes as
//! the atomic header and copying records in and out through raw pointers; two
//! `libc` calls lock and preallocate the file. Every block carries a `// SAFETY:`
//! comment. The mapping is only ever touched through raw pointers and atomics,
//! never through a `&[u8]`, since the other process writes it concurrently.

#![allow(unsafe_code)]

use std::fs::{self, File, OpenOptions};
use std::io;
use std::mem::size_of;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicU32, AtomicU64};

use memmap2::MmapRaw;

use crate::event::EventRecord;
use crate::Error;

/// First eight bytes of every ring file.
pub const RING_MAGIC: [u8; 8] = *b"TGEVRING";

/// Version of the header and record layout; bump on any change to either.
pub const RING_LAYOUT_VERSION: u32 = 3;

/// Largest capacity (records) a ring may have: 1 GiB of records.
pub const MAX_CAPACITY: u32 = 1 << 20;

const HEADER_SIZE: usize = size_of::<Header>();
const RECORD_SIZE: usize = EventRecord::SIZE;
const PRODUCER_LOCK_BYTE: i64 = 0;
const CONSUMER_LOCK_BYTE: i64 = 1;

/// One 64-byte cache line.
#[repr(C, align(64))]
struct Line<T>(T);

#[repr(C)]
struct Ident {
    magic: AtomicU64,
    layout_version: AtomicU32,
    record_size: AtomicU32,
    capacity: AtomicU32,
}

#[repr(C)]
struct ConsumerOwned {
    tail: AtomicU64,
    reported: AtomicU64,
}

/// The file's first 256 bytes. Every field is atomic: the other process may be
/// writing any of them.
#[repr(C)]
struct Header {
    ident: Line<Ident>,
    head: Line<AtomicU64>,
    consumer: Line<ConsumerOwned>,
    dropped: Line<AtomicU64>,
}

const _: () = assert!(HEADER_SIZE == 256 && std::mem::align_of::<Header>() == 64);
const _: () = assert!(std::mem::align_of::<EventRecord>() <= 64 && RECORD_SIZE % 64 == 0);

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::RingIo { path: path.to_owned(), op, source }
}

/// A mapped ring file; what both roles share.
struct Ring {
    path: PathBuf,
    file: File,
    map: MmapRaw,
    /// Records; a power of two, valid once `validate` succeeded.
    capacity: u64,
}

impl Ring {
    /// Maps all of `file` (opened read-write), which must hold at least a header.
    fn map(path: &Path, file: File) -> Result<Ring, Error> {
        let len = file.metadata().map_err(io_err(path, "stat"))?.len();
        if len < HEADER_SIZE as u64 {
            let what = format!("file is {len} bytes, shorter than the {HEADER_SIZE}-byte header");
            return Err(Error::RingBadHeader { path: path.to_owned(), what });
        }
        let map = MmapRaw::map_raw(&file).map_err(io_err(path, "mmap"))?;
        Ok(Ring { path: path.to_owned(), file, map, capacity: 0 })
    }

    fn header(&self) -> &Header {
        // SAFETY: the mapping starts page-aligned (≥ 64, Header's alignment) and
        // is at least HEADER_SIZE long (checked in `map`); the reference lives no
        // longer than `self`, which owns the mapping. Header consists only of
        // atomics, valid for any bit pattern and meant to be shared and written
        // concurrently (here: by the other process) through `&`.
        unsafe { &*self.map.as_ptr().cast::<Header>() }
    }

    /// Checks the header against this build and the file size; sets `capacity`.
    fn validate(&mut self) -> Result<(), String> {
        let id = &self.header().ident.0;
        // Acquire pairs with the release store of the magic made last on creation.
        let magic = id.magic.load(Acquire).to_ne_bytes();
        if magic != RING_MAGIC {
            return Err(format!(
                "bad magic \"{}\" (expected \"TGEVRING\"): not an event ring",
                magic.escape_ascii()
            ));
        }
        let version = id.layout_version.load(Relaxed);
        if version != RING_LAYOUT_VERSION {
            return Err(format!("layout version {version}, this build reads version {RING_LAYOUT_VERSION}"));
        }
        let record_size = id.record_size.load(Relaxed);
        if record_size as usize != RECORD_SIZE {
            return Err(format!("record size {record_size} bytes, this build's records are {RECORD_SIZE}"));
        }
        let capacity = id.capacity.load(Relaxed);
        if !capacity.is_power_of_two() || capacity > MAX_CAPACITY {
            return Err(format!("capacity {capacity} is not a power of two from 1 to {MAX_CAPACITY}"));
        }
        let want = HEADER_SIZE + capacity as usize * RECORD_SIZE;
        if self.map.len() != want {
            return Err(format!("file is {} bytes, a ring of {capacity} records is {want}", self.map.len()));
        }
        // Tail first: it only grows, and head - tail <= capacity at every moment.
        let tail = self.header().consumer.0.tail.load(Acquire);
        let head = self.header().head.0.load(Acquire);
        if tail > head || head - tail > u64::from(capacity) {
            return Err(format!("corrupt indices: head {head}, tail {tail}, capacity {capacity}"));
        }
        self.capacity = u64::from(capacity);
        Ok(())
    }

    /// Pointer to the slot of index `index`.
    fn slot(&self, index: u64) -> *mut EventRecord {
        let offset = HEADER_SIZE + (index & (self.capacity - 1)) as usize * RECORD_SIZE;
        // SAFETY: `validate` checked that the mapping is exactly HEADER_SIZE +
        // capacity × RECORD_SIZE bytes and the slot number is < capacity, so the
        // offset stays inside the mapping.
        unsafe { self.map.as_mut_ptr().add(offset).cast() }
    }

    fn bad(&self, what: String) -> Error {
        Error::RingBadHeader { path: self.path.clone(), what }
    }
}

/// Takes the role's byte lock on the file (Linux; elsewhere roles are by
/// convention only).
fn lock_role(file: &File, path: &Path, byte: i64, role: &'static str) -> Result<(), Error> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: `flock` is a plain C struct; all-zero is a valid value of it.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = libc::F_WRLCK as libc::c_short;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        fl.l_start = byte;
        fl.l_len = 1;
        // SAFETY: the descriptor is open for the whole call (borrowed from
        // `file`) and `fl` is a valid, initialised flock that fcntl only reads.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) } == -1 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EAGAIN | libc::EACCES) => Error::RingBusy { path: path.to_owned(), role },
                _ => Error::RingIo { path: path.to_owned(), op: "lock", source: e },
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, path, byte, role);
    Ok(())
}

/// Allocates the file's blocks so stores into the mapping cannot hit a full
/// filesystem (that would be SIGBUS, not an error).
fn preallocate(file: &File, path: &Path, len: u64) -> Result<(), Error> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: plain system call on a descriptor borrowed from `file`, open
        // for the whole call; no memory is passed.
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len as libc::off_t) };
        if rc != 0 {
            return Err(io_err(path, "preallocate")(io::Error::from_raw_os_error(rc)));
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, path, len);
    Ok(())
}

/// The writing end of a ring; one per worker, never blocks.
pub struct Producer {
    ring: Ring,
}

impl Producer {
    /// Opens the ring at `path` for writing, creating it if needed.
    ///
    /// An existing file with this build's layout and `capacity` records is reused
    /// with its unread records; any other file there is replaced (its records are
    /// lost). Fails with [`Error::RingBusy`] if another producer has the ring.
    pub fn create(path: impl AsRef<Path>, capacity: u32) -> Result<Producer, Error> {
        let path = path.as_ref();
        if !capacity.is_power_of_two() || capacity > MAX_CAPACITY {
            return Err(Error::RingCapacity { path: path.to_owned(), capacity });
        }
        match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => {
                lock_role(&file, path, PRODUCER_LOCK_BYTE, "producer")?;
                if let Ok(mut ring) = Ring::map(path, file) {
                    if ring.validate().is_ok() && ring.capacity == u64::from(capacity) {
                        return Ok(Producer { ring });
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(path, "open")(e)),
        }

        // Build the new file beside the old one and rename it into place.
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".new-{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let len = (HEADER_SIZE + capacity as usize * RECORD_SIZE) as u64;
        // 0640: records hold client addresses and SNIs.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o640)
            .open(&tmp)
            .map_err(io_err(&tmp, "create"))?;
        let made = (|| {
            file.set_len(len).map_err(io_err(&tmp, "set_len"))?;
            preallocate(&file, &tmp, len)?;
            lock_role(&file, path, PRODUCER_LOCK_BYTE, "producer")?;
            let mut ring = Ring::map(path, file)?;
            let id = &ring.header().ident.0;
            id.layout_version.store(RING_LAYOUT_VERSION, Relaxed);
            id.record_size.store(RECORD_SIZE as u32, Relaxed);
            id.capacity.store(capacity, Relaxed);
            id.magic.store(u64::from_ne_bytes(RING_MAGIC), Release);
            ring.validate().map_err(|what| ring.bad(what))?;
            fs::rename(&tmp, path).map_err(io_err(path, "rename"))?;
            Ok(Producer { ring })
        })();
        if made.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        made
    }

    /// Appends a copy of `record`. Never blocks: when the ring is full the record
    /// is dropped, the drop counted, and `false` returned.
    pub fn try_push(&mut self, record: &EventRecord) -> bool {
        let h = self.ring.header();
        let head = h.head.0.load(Relaxed); // only this producer stores it
                                           // Acquire: the consumer's copy out of a slot happens before we reuse it.
        let tail = h.consumer.0.tail.load(Acquire);
        if head.wrapping_sub(tail) >= self.ring.capacity {
            h.dropped.0.fetch_add(1, Relaxed);
            return false;
        }
        // SAFETY: the slot is aligned (page-aligned mapping + 256 + n × 1024, ≥
        // EventRecord's alignment 8) and in bounds (`slot`). It is not readable by
        // the consumer, which only reads indices in [tail, head), and
        // head - tail < capacity means index `head` does not share a slot with
        // any of them; the consumer finished with this slot before its release
        // store of `tail`, which our acquire load saw. We are the only producer
        // (`&mut self`, and on Linux the producer lock), so nobody else writes it.
        unsafe { self.ring.slot(head).write(*record) };
        // Release: publishes the record before the new head.
        h.head.0.store(head + 1, Release);
        true
    }

    /// Pushes refused because the ring was full, over the file's life.
    pub fn dropped(&self) -> u64 {
        self.ring.header().dropped.0.load(Relaxed)
    }

    /// Records the ring holds.
    pub fn capacity(&self) -> u32 {
        self.ring.capacity as u32
    }

    /// The ring file.
    pub fn path(&self) -> &Path {
        &self.ring.path
    }
}

/// The reading end of a ring (the control plane).
pub struct Consumer {
    ring: Ring,
}

impl Consumer {
    /// Opens an existing ring for reading. Refuses a file whose header does not
    /// match this build (the error names the file and the mismatch) and, on
    /// Linux, a ring that already has a consumer.
    pub fn open(path: impl AsRef<Path>) -> Result<Consumer, Error> {
        let path = path.as_ref();
        let file = OpenOptions::new().read(true).write(true).open(path).map_err(io_err(path, "open"))?;
        lock_role(&file, path, CONSUMER_LOCK_BYTE, "consumer")?;
        let mut ring = Ring::map(path, file)?;
        ring.validate().map_err(|what| ring.bad(what))?;
        Ok(Consumer { ring })
    }

    /// Takes the oldest unread record, if any.
    pub fn pop(&mut self) -> Option<EventRecord> {
        let h = self.ring.header();
        let tail = h.consumer.0.tail.load(Relaxed); // only this consumer stores it
                                                    // Acquire: pairs with the producer's release store of head.
        let head = h.head.0.load(Acquire);
        let waiting = head.wrapping_sub(tail);
        if waiting == 0 || waiting > self.ring.capacity {
            return None; // empty (or a corrupt head: read nothing)
        }
        // SAFETY: the slot is aligned and in bounds (see `try_push`). tail < head
        // <= tail + capacity, so the producer wrote this slot and published it
        // with its release store of `head`, which our acquire load saw; it will
        // not write the slot again until it sees our store of tail + 1 below. We
        // are the only consumer (`&mut self`, and on Linux the consumer lock).
        // Any bytes are a valid EventRecord (Pod).
        let record = unsafe { self.ring.slot(tail).read() };
        // Release: our copy is done before the producer may reuse the slot.
        h.consumer.0.tail.store(tail + 1, Release);
        Some(record)
    }

    /// The oldest unread record, left in the ring: a consumer that must not lose
    /// it if it stops before it has stored it elsewhere reads it with `peek`,
    /// stores it, then calls [`Consumer::advance`] (at least once delivery).
    pub fn peek(&self) -> Option<EventRecord> {
        let h = self.ring.header();
        let tail = h.consumer.0.tail.load(Relaxed); // only this consumer stores it
                                                    // Acquire: pairs with the producer's release store of head.
        let head = h.head.0.load(Acquire);
        let waiting = head.wrapping_sub(tail);
        if waiting == 0 || waiting > self.ring.capacity {
            return None;
        }
        // SAFETY: as in `pop`: the slot is aligned and in bounds, published by the
        // producer's release store of `head` that our acquire load saw, and the
        // producer does not write it again before our store of tail + 1 (which
        // only `advance`/`pop` make). Any bytes are a valid EventRecord (Pod).
        Some(unsafe { self.ring.slot(tail).read() })
    }

    /// Marks the record [`Consumer::peek`] returned as read; false when the ring
    /// was empty.
    pub fn advance(&mut self) -> bool {
        let h = self.ring.header();
        let tail = h.consumer.0.tail.load(Relaxed);
        let waiting = h.head.0.load(Acquire).wrapping_sub(tail);
        if waiting == 0 || waiting > self.ring.capacity {
            return false;
        }
        // Release: our copy is done before the producer may reuse the slot.
        h.consumer.0.tail.store(tail + 1, Release);
        true
    }

    /// Records waiting to be read.
    pub fn pending(&self) -> u64 {
        let h = self.ring.header();
        h.head.0.load(Acquire).wrapping_sub(h.consumer.0.tail.load(Relaxed)).min(self.ring.capacity)
    }

    /// Pushes the producer refused because the ring was full, over the file's life.
    pub fn dropped(&self) -> u64 {
        self.ring.header().dropped.0.load(Relaxed)
    }

    /// Drops not yet reported: the growth of [`Consumer::dropped`] since the last
    /// call, by this or an earlier consumer of the file (the count reported so
    /// far is kept in the file, so a restart neither repeats nor loses a gap).
    pub fn take_gap(&mut self) -> u64 {
        let h = self.ring.header();
        let dropped = h.dropped.0.load(Relaxed);
        let reported = h.consumer.0.reported.swap(dropped, Relaxed);
        dropped.wrapping_sub(reported)
    }

    /// Whether the file at the ring's path is no longer the one this consumer
    /// mapped (a producer with another layout or capacity replaced it, or it was
    /// removed): reopen to follow it.
    pub fn is_replaced(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        match (fs::metadata(&self.ring.path), self.ring.file.metadata()) {
            (Ok(now), Ok(ours)) => now.dev() != ours.dev() || now.ino() != ours.ino(),
            _ => true,
        }
    }

    /// Records the ring holds.
    pub fn capacity(&self) -> u32 {
        self.ring.capacity as u32
    }

    /// The ring file.
    pub fn path(&self) -> &Path {
        &self.ring.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;

    fn temp_path(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tlsgate-ring-unit-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        let _ = fs::remove_file(&p);
        p
    }

    fn record(n: u64) -> EventRecord {
        let mut r = EventRecord::new(EventKind::Passed);
        r.event_id = n;
        r
    }

    #[test]
    fn header_is_laid_out_as_documented() {
        let p = temp_path("layout");
        let prod = Producer::create(&p, 4).unwrap();
        let bytes = fs::read(&p).unwrap();
        assert_eq!(bytes.len(), 256 + 4 * 1152);
        assert_eq!(&bytes[..8], b"TGEVRING");
        assert_eq!(u32::from_ne_bytes(bytes[8..12].try_into().unwrap()), RING_LAYOUT_VERSION);
        assert_eq!(u32::from_ne_bytes(bytes[12..16].try_into().unwrap()), 1152);
        assert_eq!(u32::from_ne_bytes(bytes[16..20].try_into().unwrap()), 4);
        drop(prod);
        let _ = fs::remove_file(&p);
    }

    #[test]
    fn pushes_fill_slots_in_order_and_wrap() {
        let p = temp_path("slots");
        let mut prod = Producer::create(&p, 2).unwrap();
        let mut cons = Consumer::open(&p).unwrap();
        for n in 0..5 {
            assert!(prod.try_push(&record(n)));
            assert_eq!(cons.pending(), 1);
            assert_eq!(cons.pop().map(|r| r.event_id), Some(n));
        }
        assert_eq!(cons.pop(), None);
        let _ = fs::remove_file(&p);
    }

    #[test]
    fn bad_capacity_is_refused() {
        let p = temp_path("cap");
        for cap in [0, 3, MAX_CAPACITY * 2] {
            let e = Producer::create(&p, cap).err().unwrap();
            assert!(matches!(e, Error::RingCapacity { .. }), "{e}");
            assert!(e.to_string().contains(&*p.to_string_lossy()), "{e}");
        }
    }
}
