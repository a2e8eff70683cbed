//! Decoding and scoring a batch on every core.
//!
//! Decoding events and scoring partners are pure CPU work on items that share nothing, and
//! the consumer task is the only one doing it: on its own it keeps one core busy while the
//! other waits for Redis and the broker. A batch's items are split into one run of
//! consecutive items per core; the calling thread takes the first run, so a small batch
//! starts no thread at all.

/// Below this many items per core, a thread costs more than it saves: starting one takes
/// tens of microseconds, scoring a partner a few to tens, decoding an event about one.
const MIN_PER_THREAD: usize = 64;

/// `f` applied to every item, in order, spread over the machine's cores.
pub fn map<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cores.min(items.len() / MIN_PER_THREAD).max(1);
    if threads == 1 {
        return items.into_iter().map(f).collect();
    }
    let per_thread = items.len().div_ceil(threads);
    let mut runs: Vec<Vec<T>> = Vec::with_capacity(threads);
    let mut items = items.into_iter();
    loop {
        let run: Vec<T> = items.by_ref().take(per_thread).collect();
        if run.is_empty() {
            break;
        }
        runs.push(run);
    }
    let f = &f;
    std::thread::scope(|scope| {
        let mut runs = runs.into_iter();
        let first = runs.next().expect("at least one run");
        let others: Vec<_> = runs.map(|run| scope.spawn(move || run.into_iter().map(f).collect::<Vec<R>>())).collect();
        let mut out: Vec<R> = first.into_iter().map(f).collect();
        for other in others {
            // A panic while scoring is a bug; it surfaces on the consumer task as it would
            // have without the threads.
            out.extend(other.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_order_of_any_number_of_items() {
        for n in [0, 1, MIN_PER_THREAD - 1, MIN_PER_THREAD * 2, MIN_PER_THREAD * 5 + 3] {
            let items: Vec<usize> = (0..n).collect();
            let doubled = map(items, |i| i * 2);
            assert_eq!(doubled, (0..n).map(|i| i * 2).collect::<Vec<_>>());
        }
    }
}
