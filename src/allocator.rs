//! The process's allocator: mimalloc, its 2.x line, called by its plain entry points where
//! they give the alignment asked for, and how long it keeps freed memory.

use libmimalloc_sys::{
    mi_free, mi_malloc, mi_malloc_aligned, mi_realloc, mi_realloc_aligned, mi_zalloc, mi_zalloc_aligned,
};
use std::alloc::{GlobalAlloc, Layout};
use std::ffi::{c_long, c_void};

/// Every scored batch allocates and frees many small, short-lived buffers (decoded state,
/// reports, encoded messages) on two threads at once; a profile of the pipeline showed
/// glibc's malloc and free taking about 40 % of its time. mimalloc's thread-local free
/// lists make those calls cheap. Declared here so the service, its benchmark and its tests
/// all run on the allocator that ships.
///
/// Its 2.x line (`libmimalloc-sys`'s `v2` feature), not the 3.x it builds by default:
/// scores are allocated on the scoring threads and freed on the runtime's, and under 20k
/// new partners a second 3.x's allocation path alone was 7 % of the benchmark process's
/// samples. In twelve benchmark runs alternated with twelve on 3.x, 2.x took about 1.5 µs
/// off an event's CPU and met the 100 ms freshness target at 20k events/s in eight runs
/// against two (docs/performance-log.md, twenty-fifth round), for 30–50 MiB more at the
/// peak of a catch-up.
#[global_allocator]
static ALLOCATOR: Mimalloc = Mimalloc;

/// mimalloc behind Rust's allocator interface. The `mimalloc` crate passes every request
/// to mimalloc's aligned entry points, whose checks before they reach the same free list
/// took more instructions than the allocation itself: scoring and encoding a new partner
/// (callgrind, the applier's steps for one ACR event) ran 85,100 instructions with the
/// plain entry points against 91,500 through the aligned ones. Nearly every Rust
/// allocation asks for an alignment no larger than its size and than 16 bytes, which
/// mimalloc gives every block of that size anyway; its own aligned path hands such requests
/// to the plain one (`mi_malloc_is_naturally_aligned` in `alloc-aligned.c`). Only the rest
/// go the long way.
struct Mimalloc;

/// The alignment mimalloc gives every block at least as large (`MI_MAX_ALIGN_SIZE`).
const NATURAL_ALIGNMENT: usize = 16;

/// Whether a plain allocation of `size` bytes is aligned as `align` asks.
fn naturally_aligned(size: usize, align: usize) -> bool {
    align <= NATURAL_ALIGNMENT && align <= size
}

/// A block for `layout` from `plain` where its blocks are aligned as asked, else from
/// `aligned`: mimalloc's allocating or zeroing pair.
///
/// # Safety
/// `layout` has a non-zero size, as `GlobalAlloc` promises.
#[inline]
unsafe fn allocate(
    layout: Layout,
    plain: unsafe extern "C" fn(usize) -> *mut c_void,
    aligned: unsafe extern "C" fn(usize, usize) -> *mut c_void,
) -> *mut u8 {
    // SAFETY: both are mimalloc's allocation functions, given a size (and an alignment,
    // a power of two as `Layout` guarantees).
    unsafe {
        if naturally_aligned(layout.size(), layout.align()) {
            plain(layout.size()).cast()
        } else {
            aligned(layout.size(), layout.align()).cast()
        }
    }
}

// SAFETY: each method hands the request to the mimalloc function that meets it: the plain
// ones only where mimalloc's blocks are aligned as asked (`naturally_aligned`), the aligned
// ones otherwise. `mi_free` and `mi_realloc*` take any block either kind returned.
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe { allocate(layout, mi_malloc, mi_malloc_aligned) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe { allocate(layout, mi_zalloc, mi_zalloc_aligned) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: see the impl.
        unsafe { mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: see the impl; a block kept in place was aligned already.
        unsafe {
            if naturally_aligned(new_size, layout.align()) {
                mi_realloc(ptr.cast(), new_size).cast()
            } else {
                mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
            }
        }
    }
}

/// `mi_option_purge_delay` in mimalloc 2.x's `mi_option_t` (`include/mimalloc.h`), which
/// the Rust bindings name no constant for. A test reads it back from a process started
/// with `MIMALLOC_PURGE_DELAY`, so a binding whose numbering moved fails there.
const PURGE_DELAY_OPTION: libmimalloc_sys::mi_option_t = 15;

/// The environment variable mimalloc reads the purge delay from when the process starts.
const PURGE_DELAY_VARIABLE: &str = "MIMALLOC_PURGE_DELAY";

/// How long, in milliseconds, freed memory stays with the allocator before it goes back to
/// the system. mimalloc's own 10 ms is shorter than a batch's cycle under load: the pages
/// one batch's scores freed went back, and the next batch faulted them in again, each
/// zeroed by the kernel (page faults in 9 % of the benchmark process's stacks at 20k
/// events/s). With 100 ms, in eight benchmark runs alternated with eight at 10 ms, the
/// benchmark process spent 38–42 µs an event at 20k events/s against 39–45, and the
/// freshness p99 was lower in all eight; `pcs serve` catching up on 1M events peaked at
/// 681 and 762 MiB against 660–700 (docs/performance-log.md, twenty-fifth round).
const PURGE_DELAY_MS: c_long = 100;

/// Sets the purge delay to `PURGE_DELAY_MS`, unless the operator chose one with
/// `MIMALLOC_PURGE_DELAY` (mimalloc has read it already; this leaves it be). The option is
/// read each time freed memory is scheduled to go back, so setting it once the process
/// runs takes effect from then on.
pub fn keep_freed_memory_briefly() {
    if std::env::var_os(PURGE_DELAY_VARIABLE).is_none() {
        // SAFETY: mi_option_set stores one value in mimalloc's table of options; it may be
        // called at any time from any thread.
        unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY_OPTION, PURGE_DELAY_MS) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Set in the child process that the tests below start, with the case it checks.
    const CHILD: &str = "PCS_ALLOCATOR_TEST_CHILD";

    /// The purge delay mimalloc uses now.
    fn purge_delay_ms() -> c_long {
        // SAFETY: mi_option_get reads one value from mimalloc's table of options.
        unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY_OPTION) }
    }

    /// Runs this test binary's `test` alone in a new process, with `env` set, and says
    /// whether it passed. Its output is shown only when it failed.
    fn passes_in_a_new_process(test: &str, env: &[(&str, &str)]) -> bool {
        let mut child = Command::new(std::env::current_exe().expect("the test binary's path"));
        child.args([test, "--exact", "--test-threads", "1"]).env_remove(PURGE_DELAY_VARIABLE);
        for (key, value) in env {
            child.env(key, value);
        }
        let run = child.output().expect("the test binary runs");
        if !run.status.success() {
            eprintln!("{}{}", String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
        }
        run.status.success()
    }

    #[test]
    fn the_option_set_is_the_purge_delay_mimalloc_reads_from_its_variable() {
        let test = "allocator::tests::the_option_set_is_the_purge_delay_mimalloc_reads_from_its_variable";
        match std::env::var(CHILD).as_deref() {
            Ok("from the variable") => assert_eq!(purge_delay_ms(), 1234),
            Ok(other) => panic!("unknown case {other}"),
            Err(_) => {
                assert!(passes_in_a_new_process(test, &[(CHILD, "from the variable"), (PURGE_DELAY_VARIABLE, "1234")]))
            }
        }
    }

    #[test]
    fn the_service_keeps_freed_memory_for_its_delay_unless_the_operator_chose_one() {
        let test = "allocator::tests::the_service_keeps_freed_memory_for_its_delay_unless_the_operator_chose_one";
        match std::env::var(CHILD).as_deref() {
            Ok("default") => {
                assert_eq!(purge_delay_ms(), 10, "mimalloc's own default before the service sets its own");
                keep_freed_memory_briefly();
                assert_eq!(purge_delay_ms(), PURGE_DELAY_MS);
            }
            Ok("operator") => {
                keep_freed_memory_briefly();
                assert_eq!(purge_delay_ms(), 1000);
            }
            Ok(other) => panic!("unknown case {other}"),
            Err(_) => {
                assert!(passes_in_a_new_process(test, &[(CHILD, "default")]), "without the variable");
                assert!(
                    passes_in_a_new_process(test, &[(CHILD, "operator"), (PURGE_DELAY_VARIABLE, "1000")]),
                    "with MIMALLOC_PURGE_DELAY=1000"
                );
            }
        }
    }

    /// Every block is aligned as its layout asks and keeps its bytes when it grows or
    /// shrinks, on both paths: sizes from 1 byte to past mimalloc's small and medium
    /// blocks, alignments from 1 to a page, including sizes smaller than their alignment
    /// (which must take the aligned path). Many blocks of each layout, so that a size class
    /// whose blocks were misplaced would show in one of them.
    #[test]
    fn blocks_are_aligned_as_asked_and_keep_their_bytes() {
        let sizes = (1..=160).chain([250, 256, 1000, 1024, 1032, 4096, 10_000, 70_000, 600_000]);
        for size in sizes {
            for align in [1, 2, 4, 8, 16, 32, 64, 4096] {
                let layout = Layout::from_size_align(size, align).unwrap();
                let blocks: Vec<*mut u8> = (0..64)
                    .map(|i| {
                        // SAFETY: the layout has a non-zero size; each block is freed below.
                        let block = unsafe {
                            if i % 2 == 0 { ALLOCATOR.alloc(layout) } else { ALLOCATOR.alloc_zeroed(layout) }
                        };
                        assert!(
                            !block.is_null() && (block as usize).is_multiple_of(align),
                            "{size} bytes aligned {align}"
                        );
                        // SAFETY: the block holds `size` bytes.
                        let bytes = unsafe { std::slice::from_raw_parts_mut(block, size) };
                        if i % 2 == 1 {
                            assert!(bytes.iter().all(|b| *b == 0), "zeroed: {size} bytes aligned {align}");
                        }
                        bytes.fill(i as u8);
                        block
                    })
                    .collect();
                for (i, block) in blocks.into_iter().enumerate() {
                    let new_size = if i % 2 == 0 { size * 3 + 5 } else { size.div_ceil(2) };
                    // SAFETY: the block came from this allocator with `layout`; the new size
                    // is not zero.
                    let moved = unsafe { ALLOCATOR.realloc(block, layout, new_size) };
                    assert!(
                        !moved.is_null() && (moved as usize).is_multiple_of(align),
                        "{size} -> {new_size} aligned {align}"
                    );
                    // SAFETY: the block now holds `new_size` bytes, the first `kept` of them
                    // the old block's.
                    let kept = size.min(new_size);
                    assert!(unsafe { std::slice::from_raw_parts(moved, kept) }.iter().all(|b| *b == i as u8));
                    // SAFETY: freed once, with the layout of its last size.
                    unsafe { ALLOCATOR.dealloc(moved, Layout::from_size_align(new_size, align).unwrap()) };
                }
            }
        }
    }
}
