//! Memory for lookup tables: an array of zeroed, 64-byte-aligned cache lines.
//!
//! ```text
//!   Lines::try_zeroed(n)
//!     ├─ the EAL runs with hugepages ─► rte_zmalloc_socket (the caller's NUMA socket)
//!     ├─ ≥ 2 MiB ─► anonymous memory, 2 MiB aligned, madvise(MADV_HUGEPAGE) before
//!     │             any page is touched (transparent huge pages where the kernel
//!     │             gives them: `enabled` is `always` or `madvise`)
//!     └─ smaller ─► the heap
//! ```
//!
//! A table of a million flows spans 128 MiB: in 4 KiB pages every lookup also
//! misses the TLB; in 2 MiB pages the page walk mostly hits. The lines are plain
//! words (`[u64; 8]`), so the table that lays its entries out in them needs no
//! `unsafe`: any bit pattern is a valid line, and all zeros is what the caller
//! reads as empty.

use std::alloc::Layout;
use std::ffi::c_void;
use std::ptr::NonNull;
use std::sync::atomic::Ordering::SeqCst;

use dpdk_sys as sys;

/// One cache line of a table.
pub type Line = [u64; 8];

const LINE: usize = std::mem::size_of::<Line>();
const HUGE: usize = 2 << 20;

/// Where the lines are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    /// DPDK's hugepage memory.
    DpdkHugepages,
    /// Anonymous memory, 2 MiB aligned, with transparent huge pages asked for
    /// (`madvise` took the advice; whether the kernel gives huge pages depends
    /// on `/sys/kernel/mm/transparent_hugepage/enabled`).
    MappedHugeAdvised,
    /// Anonymous memory (the kernel refused the advice).
    Mapped,
    /// The heap (under 2 MiB).
    Heap,
}

/// A fixed number of zeroed cache lines; see the module.
pub struct Lines {
    ptr: NonNull<Line>,
    len: usize,
    backing: Backing,
    layout: Layout,
}

// SAFETY: `Lines` owns its memory exclusively (like a `Box<[Line]>`); nothing
// else holds the pointer, and `Line` is plain data.
#[allow(unsafe_code)]
unsafe impl Send for Lines {}

impl Lines {
    /// `len` zeroed lines (at least one); `None` when no memory can be had
    /// (nothing is allocated then).
    #[allow(unsafe_code)]
    pub fn try_zeroed(len: usize) -> Option<Lines> {
        let len = len.max(1);
        let bytes = len.checked_mul(LINE)?;
        if bytes > isize::MAX as usize / 2 {
            return None;
        }
        // Both layouts before anything is allocated: nothing below can fail
        // between an allocation and the value that frees it.
        let line_layout = Layout::from_size_align(bytes, LINE).ok()?;
        let huge_layout = Layout::from_size_align(bytes, HUGE).ok()?;
        // Counted before the EAL is looked at: `DpdkBackend::drop` marks the EAL
        // stopped and then leaves it up if any table may be in its memory
        // (sequentially consistent both ways, so one of the two sees the other).
        crate::dpdk::DPDK_TABLES.fetch_add(1, SeqCst);
        if crate::dpdk::eal_running() {
            // SAFETY: the EAL is initialised, and cannot be cleaned up while
            // DPDK_TABLES is non-zero; its heap may be called from any thread.
            let ptr = unsafe {
                if sys::rte_eal_has_hugepages() != 0 {
                    let socket = sys::rte_socket_id() as std::ffi::c_int;
                    sys::rte_zmalloc_socket(c"tlsgate-table".as_ptr(), bytes, LINE as u32, socket)
                } else {
                    std::ptr::null_mut()
                }
            };
            if let Some(ptr) = NonNull::new(ptr.cast::<Line>()) {
                return Some(Lines { ptr, len, backing: Backing::DpdkHugepages, layout: line_layout });
            }
        }
        crate::dpdk::DPDK_TABLES.fetch_sub(1, SeqCst);
        if bytes >= HUGE && bytes.is_multiple_of(HUGE) {
            let mut huge: std::ffi::c_int = 0;
            // SAFETY: plain FFI call; `huge` is a valid out-pointer.
            let raw = unsafe { sys::tg_table_map(bytes, &mut huge) };
            if let Some(ptr) = NonNull::new(raw.cast::<Line>()) {
                let backing = if huge != 0 { Backing::MappedHugeAdvised } else { Backing::Mapped };
                return Some(Lines { ptr, len, backing, layout: huge_layout });
            }
        }
        // SAFETY: the layout has a non-zero size (len ≥ 1).
        let raw = unsafe { std::alloc::alloc_zeroed(line_layout) };
        let ptr = NonNull::new(raw.cast::<Line>())?;
        Some(Lines { ptr, len, backing: Backing::Heap, layout: line_layout })
    }

    /// Where the lines are.
    pub fn backing(&self) -> Backing {
        self.backing
    }

    /// Asks the CPU to bring line `i` into all cache levels; returns at once.
    /// A table prefetches the lines of a whole burst before it probes any, so
    /// their misses overlap. The hint is a CPU instruction (`core::arch`), not a
    /// call through the DPDK shim, where every call costs more than the miss.
    #[inline(always)]
    #[allow(unsafe_code)]
    pub fn prefetch(&self, i: usize) {
        let line: &Line = &self[i];
        #[cfg(target_arch = "x86_64")]
        // SAFETY: PREFETCHT0 is a hint: it never faults, reads nothing the program
        // can observe and writes nothing. The pointer comes from a live reference
        // (bounds-checked above); SSE, and so PREFETCHT0, is in the x86_64 baseline.
        unsafe {
            core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
                (line as *const Line).cast::<i8>(),
            );
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = line;
    }
}

impl std::ops::Deref for Lines {
    type Target = [Line];

    #[inline(always)]
    #[allow(unsafe_code)]
    fn deref(&self) -> &[Line] {
        // SAFETY: `ptr` points to `len` initialised (zeroed, then written only
        // through this type) lines that this value owns; DPDK memory stays mapped
        // while it lives (DPDK_TABLES keeps the EAL up).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for Lines {
    #[inline(always)]
    #[allow(unsafe_code)]
    fn deref_mut(&mut self) -> &mut [Line] {
        // SAFETY: as in `deref`, and `&mut self` makes the borrow exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Lines {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        match self.backing {
            Backing::DpdkHugepages => {
                // SAFETY: the memory came from rte_zmalloc_socket and is freed once;
                // the EAL is still up (DPDK_TABLES counts this table until after).
                unsafe { sys::rte_free(self.ptr.as_ptr().cast::<c_void>()) };
                crate::dpdk::DPDK_TABLES.fetch_sub(1, SeqCst);
            }
            // SAFETY: mapped by tg_table_map with this length, unmapped once.
            Backing::MappedHugeAdvised | Backing::Mapped => unsafe {
                sys::tg_table_unmap(self.ptr.as_ptr().cast::<c_void>(), self.layout.size())
            },
            // SAFETY: allocated by alloc_zeroed with this layout, freed once.
            Backing::Heap => unsafe { std::alloc::dealloc(self.ptr.as_ptr().cast::<u8>(), self.layout) },
        }
    }
}

impl std::fmt::Debug for Lines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lines").field("len", &self.len).field("backing", &self.backing).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_zeroed_aligned_and_writable() {
        for n in [1, 3, 4096, 40_000, 32_768, 131_072] {
            let mut l = Lines::try_zeroed(n).expect("memory");
            l.prefetch(n - 1);
            assert_eq!(l.len(), n);
            assert_eq!(l.as_ptr() as usize % 64, 0);
            assert!(l.iter().all(|line| line.iter().all(|w| *w == 0)));
            l[0][0] = 7;
            l[n - 1][7] = 42;
            assert_eq!((l[0][0], l[n - 1][7]), (7, 42));
            if (n * 64).is_multiple_of(HUGE) {
                // Mapped, 2 MiB aligned (no EAL in unit tests).
                assert_eq!(l.as_ptr() as usize % HUGE, 0);
                assert!(matches!(l.backing(), Backing::MappedHugeAdvised | Backing::Mapped), "{l:?}");
            } else {
                assert_eq!(l.backing(), Backing::Heap);
            }
        }
    }
}
