//! Decoding and scoring a batch on every core.
//!
//! Decoding events and scoring partners are pure CPU work on items that share nothing, and
//! the consumer task is the only one doing it: on its own it keeps one core busy while the
//! other waits for Redis and the broker. The calling thread works too, so a small batch
//! starts no thread at all.
//!
//! The threads take blocks of items from a shared queue rather than a fixed half each:
//! Redis and the broker share the same cores, and a thread that one of them preempts held
//! up the whole batch at the end of its fixed half while the other thread sat idle.
//!
//! On a runtime worker, the work runs under `block_in_place`: the tasks queued on that
//! worker (the next chunk's Redis read, the Redis connection's own task) move to another
//! thread first, instead of waiting the tens of milliseconds a chunk takes to score.
//!
//! An operator may have the threads score at a lower CPU priority (`--scoring-nice`):
//! during a catch-up, scoring, Redis and the broker fill the cores, and every read and
//! health check waits for one; a scoring thread at nice 10 gets about a tenth of the share
//! of a thread at nice 0 while both want a core. The calling thread is a runtime worker,
//! whose priority could not be restored without privileges, so then it only waits for the
//! threads.

use std::collections::VecDeque;
use std::sync::{Mutex, OnceLock};

/// Below this many items per core, a thread costs more than it saves: starting one takes
/// tens of microseconds, scoring a partner a few to tens, decoding an event about one.
const MIN_PER_THREAD: usize = 64;

/// Items a thread takes from the queue at a time: small enough that the threads finish
/// together, large enough that the queue's lock is taken rarely.
const BLOCK: usize = 16;

/// How a batch's work is spread over the cores: the nice value of its threads (0: the
/// process's own priority, the calling thread working too).
#[derive(Clone, Copy, Debug, Default)]
pub struct Workers {
    nice: u8,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot lower a scoring thread's CPU priority to nice {nice}: {source}")]
pub struct PriorityError {
    nice: u8,
    source: std::io::Error,
}

impl Workers {
    /// Workers whose threads run at `nice`, once a thread has shown it can: a service that
    /// would silently score at full priority is not what its operator asked for.
    pub fn at_nice(nice: u8) -> Result<Self, PriorityError> {
        if nice > 0 {
            std::thread::spawn(move || lower_priority(nice))
                .join()
                .expect("setting a priority does not panic")
                .map_err(|source| PriorityError { nice, source })?;
        }
        Ok(Workers { nice })
    }

    /// `f` applied to every item, in order, spread over the machine's cores.
    pub fn map<T: Send, R: Send>(&self, items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
        let threads = cores().min(items.len() / MIN_PER_THREAD).max(1);
        // Niced, even one thread is worth starting (on one core, it is all there is), but
        // not for under MIN_PER_THREAD items, too little to hold anything up.
        let in_place = if self.nice == 0 { threads == 1 } else { items.len() < MIN_PER_THREAD };
        if in_place {
            return items.into_iter().map(f).collect();
        }
        off_the_runtime(|| on_threads(threads, self.nice, items, f))
    }
}

/// The cores this process may use, worked out once: the standard library reads the cgroup's
/// CPU quota from files at every call, about 57 µs of system calls here, and every batch's
/// decoding and each chunk's scoring asked.
fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Sets the calling thread's nice value (Linux keeps one per thread). Raising it needs no
/// privilege; lowering it back would, which is why only threads that end with the batch
/// call this.
#[cfg(target_os = "linux")]
fn lower_priority(nice: u8) -> std::io::Result<()> {
    // SAFETY: plain system calls on this thread's own id, no memory handed over.
    let set = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, i32::from(nice)) };
    if set == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority(_nice: u8) -> std::io::Result<()> {
    Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "per-thread priorities are Linux's"))
}

/// Runs `work`, which blocks for a while, letting the other tasks of this runtime worker
/// run meanwhile. A current-thread runtime has no other thread to hand them to, so there
/// (in tests) `work` simply runs.
fn off_the_runtime<R>(work: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(runtime) if runtime.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(work),
        _ => work(),
    }
}

/// `f` applied to every item on `threads` threads, in order: the caller's among them, or,
/// at a nice value above 0, as many new threads at that value.
fn on_threads<T: Send, R: Send>(threads: usize, nice: u8, items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let total = items.len();
    let mut blocks: VecDeque<(usize, Vec<T>)> = VecDeque::with_capacity(total.div_ceil(BLOCK));
    let mut items = items.into_iter();
    loop {
        let block: Vec<T> = items.by_ref().take(BLOCK).collect();
        if block.is_empty() {
            break;
        }
        blocks.push_back((blocks.len(), block));
    }
    let queue = Mutex::new(blocks);
    let work = || {
        let mut done: Vec<(usize, Vec<R>)> = Vec::new();
        loop {
            let next = queue.lock().expect("no thread panics holding the queue").pop_front();
            let Some((index, block)) = next else { return done };
            done.push((index, block.into_iter().map(&f).collect()));
        }
    };
    let niced = || {
        // `Workers::at_nice` showed this works; a thread that failed would only score at full
        // priority.
        let _ = lower_priority(nice);
        work()
    };
    let mut done = std::thread::scope(|scope| {
        let (others, mut done) = if nice == 0 {
            ((1..threads).map(|_| scope.spawn(work)).collect::<Vec<_>>(), work())
        } else {
            ((0..threads).map(|_| scope.spawn(niced)).collect(), Vec::new())
        };
        for other in others {
            // A panic while scoring is a bug; it surfaces on the consumer task as it would
            // have without the threads.
            done.extend(other.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
        }
        done
    });
    done.sort_unstable_by_key(|(index, _)| *index);
    let mut out = Vec::with_capacity(total);
    for (_, results) in done {
        out.extend(results);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_order_of_any_number_of_items() {
        for n in [0, 1, MIN_PER_THREAD - 1, MIN_PER_THREAD * 2, MIN_PER_THREAD * 5 + 3, BLOCK * 40 + 1] {
            let items: Vec<usize> = (0..n).collect();
            let doubled = Workers::default().map(items, |i| i * 2);
            assert_eq!(doubled, (0..n).map(|i| i * 2).collect::<Vec<_>>());
        }
    }

    /// Items that take uneven time still come back in order, each exactly once, whatever
    /// the number of threads (the machine running the tests may have one core).
    #[test]
    fn uneven_work_keeps_order() {
        for (threads, nice) in [(2, 0), (3, 0), (2, 5)] {
            let items: Vec<u64> = (0..1_000).collect();
            let out = on_threads(threads, nice, items, |i| {
                if i % 97 == 0 {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                i + 1
            });
            assert_eq!(out, (1..=1_000).collect::<Vec<_>>());
        }
    }

    /// While the work blocks a runtime's only worker, a task spawned just before it (as the
    /// next chunk's Redis read is) still runs; a current-thread runtime runs the work in place.
    #[test]
    fn the_workers_other_tasks_run_meanwhile() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).build().unwrap();
        let ran = runtime.block_on(async {
            tokio::spawn(async {
                let flag = Arc::new(AtomicBool::new(false));
                let set = Arc::clone(&flag);
                tokio::spawn(async move { set.store(true, Ordering::SeqCst) });
                off_the_runtime(|| {
                    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
                    while !flag.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                    flag.load(Ordering::SeqCst)
                })
            })
            .await
            .unwrap()
        });
        assert!(ran, "the task spawned before the blocking work never ran");
        let single = tokio::runtime::Builder::new_current_thread().build().unwrap();
        assert_eq!(single.block_on(async { off_the_runtime(|| 7) }), 7);
    }

    /// A niced batch is worked on threads at that nice value only: the calling thread (a
    /// runtime worker in the service) keeps its own, which it could not get back.
    #[cfg(target_os = "linux")]
    #[test]
    fn niced_work_runs_on_niced_threads_only() {
        use std::collections::BTreeSet;
        fn thread_nice() -> i32 {
            // SAFETY: plain system calls on this thread's own id.
            unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
        }
        let own = thread_nice();
        assert!(own < 19, "the test needs to run below nice 19, not at {own}");
        let niced = Workers::at_nice(19).unwrap();
        // One thread's worth and several threads' worth: both niced, on any number of cores.
        for n in [MIN_PER_THREAD, MIN_PER_THREAD * 20] {
            let nices = niced.map((0..n).collect(), |_| thread_nice());
            assert!(nices.iter().all(|nice| *nice == 19), "worked at nice values {:?}", BTreeSet::from_iter(nices));
        }
        let few = niced.map((0..MIN_PER_THREAD - 1).collect(), |_| thread_nice());
        assert!(few.iter().all(|n| *n == own), "a handful of items is worked in place");
        assert_eq!(thread_nice(), own);
        let unniced = on_threads(2, 0, (0..1_000).collect(), |_: u32| thread_nice());
        assert!(unniced.iter().all(|n| *n == own));
    }
}
