//! Score publishing and the watch fan-out.

mod publisher;
mod watch;

pub use publisher::{BatchScores, Deliveries, ScorePublisher, VERSION_HEADER};
pub use watch::{Cursor, WatchHub, WatchItem};
