//! The process heap under DuckDB: glibc's malloc, tuned so that the buffers one window frees
//! are reused by the next instead of going back to the kernel and faulting in again.
//!
//! Two things return them otherwise. glibc trims the heap whenever its free top exceeds
//! `M_TRIM_THRESHOLD`, and DuckDB calls `malloc_trim(0)` whenever what it freed since its last
//! call could take the process past its memory limit, which on a long run is every few
//! windows. `malloc_trim` releases every free page of every arena, and the next window faults
//! them all in again: a third of kompactor's kernel time. [`tune`] raises the threshold, and
//! this module's `malloc_trim` (the executable's definition wins over glibc's) passes
//! DuckDB's calls on to glibc only when the heap holds more free memory than that threshold,
//! so the process still gives back anything beyond it.
//!
//! Everything here is a no-op where the C library is not glibc, or without the default
//! `glibc-heap` feature. `mallinfo2` (glibc 2.33+) is looked up at run time, so the binary
//! builds and runs on older glibc too, where DuckDB's trims simply go through.

use crate::units::MemoryBudget;

/// Sets glibc's allocator up for a process that merges with a memory budget of `budget`.
///
/// Allocations up to 32 MiB come from the heap (glibc's own upper bound for its adaptive
/// threshold), and up to an eighth of `budget` (16 to 128 MiB) of free heap is kept for reuse,
/// by glibc and by DuckDB's calls to `malloc_trim`. Process-wide.
pub fn tune(budget: MemoryBudget) {
    #[cfg(all(target_os = "linux", target_env = "gnu", feature = "glibc-heap"))]
    glibc::tune(budget);
    #[cfg(not(all(target_os = "linux", target_env = "gnu", feature = "glibc-heap")))]
    let _ = budget;
}

/// How many `malloc_trim` calls were kept from releasing the heap so far.
pub fn trims_skipped() -> u64 {
    #[cfg(all(target_os = "linux", target_env = "gnu", feature = "glibc-heap"))]
    return glibc::SKIPPED.load(std::sync::atomic::Ordering::Relaxed);
    #[cfg(not(all(target_os = "linux", target_env = "gnu", feature = "glibc-heap")))]
    0
}

/// Gives the free pages of every arena of the heap back to the kernel (glibc's
/// `malloc_trim(0)`, whatever [`tune`] keeps); a no-op where the C library is not glibc.
///
/// For after a step whose threads freed much of what they allocated: glibc keeps what a
/// thread frees in that thread's arena, counted in the process's memory, for that thread
/// alone to reuse.
pub fn release_free() {
    #[cfg(all(target_os = "linux", target_env = "gnu", feature = "glibc-heap"))]
    if let Some(trim) = glibc::glibc_malloc_trim() {
        // SAFETY: glibc's malloc_trim may be called from any thread at any time.
        unsafe { trim(0) };
    }
    #[cfg(all(target_os = "linux", target_env = "gnu", not(feature = "glibc-heap")))]
    // SAFETY: as above.
    unsafe {
        libc::malloc_trim(0)
    };
}

#[cfg(all(target_os = "linux", target_env = "gnu", feature = "glibc-heap"))]
mod glibc {
    use super::MemoryBudget;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::sync::OnceLock;

    /// Free heap bytes a `malloc_trim` leaves alone; 0 (glibc's behaviour) until `tune`.
    pub(super) static KEEP_FREE: AtomicUsize = AtomicUsize::new(0);
    pub(super) static SKIPPED: AtomicU64 = AtomicU64::new(0);

    pub(super) fn tune(budget: MemoryBudget) {
        const MIB: u64 = 1 << 20;
        let keep = (budget.0 / 8).clamp(16 * MIB, 128 * MIB);
        // SAFETY: mallopt only changes allocator parameters, under glibc's own locks.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, (32 * MIB) as libc::c_int);
            libc::mallopt(libc::M_TRIM_THRESHOLD, keep as libc::c_int);
        }
        KEEP_FREE.store(keep as usize, Ordering::Relaxed);
    }

    type TrimFn = unsafe extern "C" fn(libc::size_t) -> libc::c_int;
    type InfoFn = unsafe extern "C" fn() -> libc::mallinfo2;

    /// The address of a C library symbol, looked up once; 0 when absent.
    fn symbol(cache: &OnceLock<usize>, handle: *mut libc::c_void, name: &std::ffi::CStr) -> usize {
        // SAFETY: dlsym with a NUL-terminated name only looks a symbol up.
        *cache.get_or_init(|| unsafe { libc::dlsym(handle, name.as_ptr()) as usize })
    }

    /// glibc's own `malloc_trim`, which this module's definition hides from the linker.
    pub(super) fn glibc_malloc_trim() -> Option<TrimFn> {
        static REAL: OnceLock<usize> = OnceLock::new();
        let addr = symbol(&REAL, libc::RTLD_NEXT, c"malloc_trim");
        // SAFETY: a non-null `malloc_trim` from the C library has exactly this signature.
        (addr != 0).then(|| unsafe { std::mem::transmute::<usize, TrimFn>(addr) })
    }

    /// Free bytes in the heap, from `mallinfo2` when this glibc has it (2.33+).
    fn free_heap() -> Option<usize> {
        static INFO: OnceLock<usize> = OnceLock::new();
        // glibc's RTLD_DEFAULT is the null handle (the libc crate leaves it out for glibc).
        let addr = symbol(&INFO, std::ptr::null_mut(), c"mallinfo2");
        // SAFETY: a non-null `mallinfo2` has exactly this signature; it only reads the
        // arenas' statistics, under their locks.
        (addr != 0).then(|| unsafe { std::mem::transmute::<usize, InfoFn>(addr)() }.fordblks)
    }

    /// Releases free heap memory to the kernel, as glibc's `malloc_trim` does, but only when
    /// the heap holds more free memory than `tune` keeps; returns 1 if memory was released.
    ///
    /// # Safety
    /// None beyond glibc's: callable from any thread at any time.
    #[no_mangle]
    pub unsafe extern "C" fn malloc_trim(pad: libc::size_t) -> libc::c_int {
        if free_heap().is_some_and(|free| free <= KEEP_FREE.load(Ordering::Relaxed)) {
            SKIPPED.fetch_add(1, Ordering::Relaxed);
            return 0;
        }
        match glibc_malloc_trim() {
            // SAFETY: glibc's malloc_trim takes any pad.
            Some(trim) => unsafe { trim(pad) },
            None => 0,
        }
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu", feature = "glibc-heap"))]
mod tests {
    use super::*;

    #[test]
    fn duckdbs_trims_keep_the_budgeted_free_heap_and_pass_the_rest_on() {
        // The test binary links this module's malloc_trim in place of glibc's, as the
        // kompactor binaries do, so a call through the C declaration reaches it. (Other
        // tests' DuckDB sessions may call it meanwhile, hence the inequality.)
        tune(MemoryBudget(1 << 30));
        let before = trims_skipped();
        // SAFETY: malloc_trim may be called at any time.
        assert_eq!(unsafe { libc::malloc_trim(0) }, 0);
        assert!(trims_skipped() > before, "malloc_trim was not intercepted");

        // Keeping nothing, every call goes on to glibc.
        glibc::KEEP_FREE.store(0, std::sync::atomic::Ordering::Relaxed);
        let before = trims_skipped();
        // SAFETY: as above.
        unsafe { libc::malloc_trim(0) };
        assert_eq!(
            trims_skipped(),
            before,
            "a trim beyond the kept memory was skipped"
        );
        tune(MemoryBudget(1 << 30));
    }
}
