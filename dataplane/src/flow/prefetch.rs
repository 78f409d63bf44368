//! Cache prefetch: the one place in this crate allowed `unsafe`.
//!
//! The flow table asks for each frame's bucket while the burst is classified,
//! and probes it only in the next phase: by then the line is in the cache, and
//! the misses of a whole burst overlap instead of coming one after the other.
//! The hint is a CPU instruction (`core::arch`), not a call through the DPDK shim,
//! where every call costs more than the miss it would hide.

#![allow(unsafe_code)]

use tlsgate_drivers::lines::Line;

/// Asks the CPU to bring `line` into all cache levels; returns at once.
#[inline(always)]
pub fn line(line: &Line) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is a hint: it never faults, reads nothing the program
    // can observe and writes nothing. The pointer comes from a live reference, so
    // it is in bounds; SSE (and so PREFETCHT0) is part of the x86_64 baseline.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
            (line as *const Line).cast::<i8>(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = line;
}
