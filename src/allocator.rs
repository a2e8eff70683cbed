//! The process's allocator: mimalloc, its 2.x line, and how long it keeps freed memory.

use std::ffi::c_long;

/// Every scored batch allocates and frees many small, short-lived buffers (decoded state,
/// reports, encoded messages) on two threads at once; a profile of the pipeline showed
/// glibc's malloc and free taking about 40 % of its time. mimalloc's thread-local free
/// lists make those calls cheap. Declared here so the service, its benchmark and its tests
/// all run on the allocator that ships.
///
/// Its 2.x line (the crate's `v2` feature), not the 3.x it builds by default: scores are
/// allocated on the scoring threads and freed on the runtime's, and under 20k new partners
/// a second 3.x's allocation path alone was 7 % of the benchmark process's samples. In
/// twelve benchmark runs alternated with twelve on 3.x, 2.x took about 1.5 µs off an
/// event's CPU and met the 100 ms freshness target at 20k events/s in eight runs against
/// two (README, "Performance"), for 30–50 MiB more at the peak of a catch-up.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
/// 681 and 762 MiB against 660–700 (README, "Performance").
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
}
