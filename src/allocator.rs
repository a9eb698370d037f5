//! The process allocator (mimalloc, chosen in `main`) and the one thing the rest of the code
//! asks of it.

/// Returns to the system the memory freed since the last call, now rather than after
/// mimalloc's purge delay (a second). A table build at 10,000 policies frees tens of MiB of
/// temporaries; without this, a burst of changes keeps them resident, and resident memory is
/// what a container's memory limit counts. It takes a few milliseconds at that size (4 ms median
/// in `benches/controller_scale.rs`), so it runs after each table is live, never on the
/// request path.
pub fn release_freed_memory() {
    // SAFETY: `mi_collect` takes no pointers and may be called from any thread at any time;
    // when mimalloc is not the global allocator (unit tests) it only tidies its own empty heap.
    unsafe { libmimalloc_sys::mi_collect(true) }
}
