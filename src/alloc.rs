//! The global allocator: mimalloc, asked for an alignment only when a plain block might not
//! have it.
//!
//! The `mimalloc` crate's allocator passes every Rust allocation to `mi_malloc_aligned`.
//! mimalloc 3 serves that from its plain free list only while the list has a block; when
//! it is empty, a block size that is not a power of two (the model's successor lists: 80,
//! 160, 320 bytes) takes the over-allocating path, which draws from the next size class up
//! and so never refills the list: every such allocation pays about 130 more instructions
//! and a fifth more memory (cloudPhysics replay: 53k of 53k successor-list allocations).
//! A plain `mi_malloc` block is aligned to a machine word, and to 16 bytes from 16 bytes
//! up (mimalloc's `MI_MAX_ALIGN_SIZE`, asserted in its `alloc.c`). That covers almost
//! every allocation; larger alignments (the model's cache-line-aligned state tables) keep
//! the aligned entry points. The test below checks the alignment of every size to 300
//! bytes.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment every plain mimalloc block of at least this many bytes has.
const PLAIN_ALIGN: usize = 16;

/// mimalloc, through its plain entry points where they give the alignment asked for.
pub struct Allocator;

/// Whether a plain block of `size` bytes is aligned to `align`: blocks are aligned to a
/// machine word, and to [`PLAIN_ALIGN`] from that size up.
fn plain(size: usize, align: usize) -> bool {
    align <= size_of::<usize>() || (align <= PLAIN_ALIGN && size >= align)
}

// SAFETY: every path returns a block of at least `size` bytes aligned to `align` (see
// `plain`) or null, and frees with `mi_free`, which takes blocks from all of them.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        let p = if plain(size, align) {
            mi::mi_malloc(size)
        } else {
            mi::mi_malloc_aligned(size, align)
        };
        p.cast()
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        let p = if plain(size, align) {
            mi::mi_zalloc(size)
        } else {
            mi::mi_zalloc_aligned(size, align)
        };
        p.cast()
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi::mi_free(ptr.cast::<c_void>());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // mimalloc's realloc keeps the block when it fits, or copies into a new one of its
        // kind; either takes a block from any of its allocation functions.
        let p = if plain(new_size, layout.align()) {
            mi::mi_realloc(ptr.cast(), new_size)
        } else {
            mi::mi_realloc_aligned(ptr.cast(), new_size, layout.align())
        };
        p.cast()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size and alignment up to a page, allocated, written, grown and shrunk: each
    /// block is aligned as asked and keeps its bytes (many of each, so blocks come from
    /// both fresh and reused pages).
    #[test]
    fn blocks_are_aligned_as_asked_and_keep_their_bytes() {
        let a = Allocator;
        for align in [1, 2, 4, 8, 16, 32, 64, 4096] {
            for size in (0..=300).chain([1000, 4096, 70_000]) {
                let layout = Layout::from_size_align(size.max(1), align).unwrap();
                let blocks: Vec<*mut u8> = (0..40)
                    .map(|i| unsafe {
                        let p = if i % 2 == 0 {
                            a.alloc(layout)
                        } else {
                            a.alloc_zeroed(layout)
                        };
                        assert!(!p.is_null());
                        assert_eq!(p as usize % align, 0, "size {size} align {align}");
                        if i % 2 == 1 {
                            assert!((0..layout.size()).all(|j| *p.add(j) == 0));
                        }
                        std::ptr::write_bytes(p, i as u8, layout.size());
                        p
                    })
                    .collect();
                for (i, p) in blocks.into_iter().enumerate() {
                    let (grown, shrunk) = (layout.size() * 3, layout.size().div_ceil(2));
                    unsafe {
                        let p = a.realloc(p, layout, grown);
                        assert!(!p.is_null());
                        assert_eq!(p as usize % align, 0, "size {size} align {align} grown");
                        assert!((0..layout.size()).all(|j| *p.add(j) == i as u8));
                        let grown = Layout::from_size_align(grown, align).unwrap();
                        let p = a.realloc(p, grown, shrunk);
                        assert!(!p.is_null());
                        assert_eq!(p as usize % align, 0, "size {size} align {align} shrunk");
                        assert!((0..shrunk).all(|j| *p.add(j) == i as u8));
                        a.dealloc(p, Layout::from_size_align(shrunk, align).unwrap());
                    }
                }
            }
        }
    }
}
