//! How the producer's allocator (mimalloc, set in `main.rs`) gives memory back.
//!
//! mimalloc keeps freed pages for a second (ten for whole arenas) and commits arenas eagerly. Under overload the
//! producer frees request bodies and encoded batches as fast as it takes them, so those kept pages were most of
//! its peak: 364 MiB at 10x overload. Measured here (BENCHMARKS.md), with arenas committed as used:
//! - purge at once: 214 MiB, but one-event requests cost 20% more CPU (madvise and TLB shootdowns per request);
//! - purge after 20 ms: 233 MiB, with the CPU of one-event and 100-event requests as with the defaults;
//! - purge after 100 ms: 280 MiB. glibc's malloc: 182 MiB, at 10% more CPU per event.

// The only unsafe code in Sluice: mimalloc's option calls have no safe wrapper, and both are plain reads and
// stores of an option slot that mimalloc documents as callable at any time.
#![allow(unsafe_code)]

use libmimalloc_sys as mi;

/// Index of `mi_option_arena_eager_commit` in mimalloc v3's `mi_option_t` (libmimalloc-sys builds v3).
const ARENA_EAGER_COMMIT: mi::mi_option_t = 4;
/// Index of `mi_option_purge_delay` in mimalloc v3's `mi_option_t`.
const PURGE_DELAY: mi::mi_option_t = 15;

/// How long freed memory is kept for reuse before it goes back to the OS.
const PURGE_AFTER_MS: std::ffi::c_long = 20;

/// Gives freed memory back after [`PURGE_AFTER_MS`] and commits arenas only as they are used, unless the operator set either
/// through mimalloc's own variables (`MIMALLOC_PURGE_DELAY`, `MIMALLOC_ARENA_EAGER_COMMIT`). Call before serving.
pub fn return_memory_soon() {
    for (option, var, value) in [
        (PURGE_DELAY, "MIMALLOC_PURGE_DELAY", PURGE_AFTER_MS),
        (ARENA_EAGER_COMMIT, "MIMALLOC_ARENA_EAGER_COMMIT", 0),
    ] {
        if std::env::var_os(var).is_none() {
            // SAFETY: setting an option is a plain store mimalloc allows at any time, from any thread.
            unsafe { mi::mi_option_set(option, value) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The indices are mimalloc's enum order, which a libmimalloc-sys upgrade could move: their defaults
    /// (1000 ms and 2, documented in mimalloc's options.c) say they still name these options.
    #[test]
    fn the_option_indices_still_name_these_options() {
        // SAFETY: reading an option is always allowed.
        let (delay, eager) = unsafe {
            (
                mi::mi_option_get(PURGE_DELAY),
                mi::mi_option_get(ARENA_EAGER_COMMIT),
            )
        };
        assert_eq!(
            (delay, eager),
            (1000, 2),
            "mimalloc's defaults moved: check the indices"
        );
    }
}
