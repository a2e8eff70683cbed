//! The service's "today": the UTC date, or a fixed date (`--now`) so that tests and
//! backfills are deterministic.

use chrono::{NaiveDate, Utc};

#[derive(Clone, Copy, Debug)]
pub enum Clock {
    System,
    Fixed(NaiveDate),
}

impl Clock {
    pub fn today(&self) -> NaiveDate {
        match self {
            Clock::System => Utc::now().date_naive(),
            Clock::Fixed(day) => *day,
        }
    }
}
