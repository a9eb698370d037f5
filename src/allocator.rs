//! The process allocator (mimalloc, chosen in `main`) and what the process asks of it and of
//! the kernel about memory.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment every `mi_malloc` block of at least that size already has (mimalloc's
/// `MI_MAX_ALIGN_SIZE`, the platform's `max_align_t`); the standard library's system allocator
/// draws the same line.
const NATURAL_ALIGNMENT: usize = 16;

/// mimalloc as the global allocator, calling its plain entry points whenever the layout allows.
/// The `mimalloc` crate's allocator sends every request through `mi_malloc_aligned`, whose fast
/// path covers only blocks up to 1 KiB: the proxy's read buffers and header maps, allocated per
/// request, took its generic path. Calling `mi_malloc` for them saved about 550 instructions per
/// proxied request (`bench/cost.sh`: 36,812 before, 36,265 after).
pub struct Allocator;

fn natural(layout: &Layout) -> bool {
    layout.align() <= NATURAL_ALIGNMENT && layout.align() <= layout.size()
}

// SAFETY: each method forwards to the mimalloc function of the same contract; blocks from either
// family are freed by `mi_free`, and a block is only ever reallocated within the alignment its
// layout asks for.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe {
            match natural(&layout) {
                true => mi::mi_malloc(layout.size()),
                false => mi::mi_malloc_aligned(layout.size(), layout.align()),
            }
            .cast()
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe {
            match natural(&layout) {
                true => mi::mi_zalloc(layout.size()),
                false => mi::mi_zalloc_aligned(layout.size(), layout.align()),
            }
            .cast()
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: see the impl.
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: see the impl; `new_size` with the old alignment is a valid layout (the caller's
        // contract).
        unsafe {
            let grown = Layout::from_size_align_unchecked(new_size, layout.align());
            match natural(&grown) {
                true => mi::mi_realloc(ptr.cast(), new_size),
                false => mi::mi_realloc_aligned(ptr.cast(), new_size, layout.align()),
            }
            .cast()
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_block_has_the_alignment_its_layout_asks_for_through_alloc_zeroing_and_growth() {
        for align in [1, 2, 4, 8, 16, 32, 64, 4096] {
            for size in [1, 3, 8, 15, 16, 24, 100, 1024, 1500, 70_000] {
                let layout = Layout::from_size_align(size, align).expect("valid layout");
                // SAFETY: non-zero sizes; each block is freed with the layout it was made with.
                unsafe {
                    let plain = Allocator.alloc(layout);
                    assert!(!plain.is_null());
                    assert_eq!(plain as usize % align, 0, "alloc {size} bytes at {align}");
                    plain.write_bytes(0xa5, size);

                    let grown = Allocator.realloc(plain, layout, size * 3);
                    assert_eq!(grown as usize % align, 0, "realloc {size} bytes at {align}");
                    assert!(
                        (0..size).all(|at| *grown.add(at) == 0xa5),
                        "realloc kept the bytes"
                    );
                    Allocator.dealloc(grown, Layout::from_size_align(size * 3, align).unwrap());

                    let zeroed = Allocator.alloc_zeroed(layout);
                    assert_eq!(
                        zeroed as usize % align,
                        0,
                        "alloc_zeroed {size} bytes at {align}"
                    );
                    assert!(
                        (0..size).all(|at| *zeroed.add(at) == 0),
                        "alloc_zeroed zeroes"
                    );
                    Allocator.dealloc(zeroed, layout);
                }
            }
        }
    }
}
