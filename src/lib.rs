//! pcs: Microsoft Solutions Partner capability scores, kept fresh as facts arrive.
//!
//! The data path: [`events`] decodes and validates, [`engine`] merges facts into partner
//! state and scores it under [`rules`]; [`cli`] is the command line over all of it.

pub mod api;
pub mod auth;
pub mod calendar;
pub mod cli;
pub mod clock;
pub mod config;
pub mod demo;
pub mod engine;
pub mod events;
pub mod feed;
pub mod ingest;
pub mod kafka;
pub mod playground;
pub mod proto;
pub mod rules;
pub mod service;
pub mod store;
pub mod telemetry;

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
