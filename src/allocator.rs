//! The process allocator (mimalloc, chosen in `main`) and what the process asks of it and of
//! the kernel about memory.

/// Turns transparent huge pages off for this process. mimalloc is built not to ask for them
/// (`no_thp`), but a kernel set to `always` (not the usual `madvise`) would still back its heap
/// with 2 MiB pages, each resident in full however little of it is used: about 20 MiB of the
/// controller's resident memory at 10,000 policies. The kernel checks the flag when it faults a
/// page in, so memory mapped before this call is covered too. Failing (an old kernel) only
/// leaves huge pages as they were.
pub fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

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
