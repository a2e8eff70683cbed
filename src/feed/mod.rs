//! Score publishing and the watch fan-out.

mod publisher;
mod watch;

pub use publisher::{ScorePublisher, VERSION_HEADER};
pub use watch::{Cursor, WatchHub, WatchItem};
