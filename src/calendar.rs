//! Calendar months and the date arithmetic the rules need.
//!
//! ACR is reported per calendar month, so months are their own type: a count of months
//! since year 0, which makes "M-13" a subtraction and keeps month keys 4 bytes wide.

use chrono::{Datelike, Months, NaiveDate};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The years the event format accepts (spec §2).
pub const MIN_YEAR: i32 = 2000;
pub const MAX_YEAR: i32 = 2100;

/// A calendar month, stored as `year * 12 + (month - 1)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Month(i32);

impl Month {
    pub fn new(year: i32, month: u32) -> Option<Month> {
        (1..=12).contains(&month).then(|| Month(year * 12 + month as i32 - 1))
    }

    pub fn of(date: NaiveDate) -> Month {
        Month(date.year() * 12 + date.month0() as i32)
    }

    /// The raw month count; stable, as stored state and digests use it.
    pub fn index(self) -> i32 {
        self.0
    }

    pub fn year(self) -> i32 {
        self.0.div_euclid(12)
    }

    pub fn month(self) -> u32 {
        self.0.rem_euclid(12) as u32 + 1
    }

    /// The month `n` months before this one.
    pub fn back(self, n: u32) -> Month {
        Month(self.0 - n as i32)
    }

    /// The month `n` months after this one.
    pub fn forward(self, n: u32) -> Month {
        Month(self.0 + n as i32)
    }

    pub fn first_day(self) -> NaiveDate {
        NaiveDate::from_ymd_opt(self.year(), self.month(), 1).expect("every month has a day 1")
    }

    /// Parses exactly `YYYY-MM` with a year in the accepted range.
    pub fn parse(text: &str) -> Option<Month> {
        let b = text.as_bytes();
        if b.len() != 7 || b[4] != b'-' || !all_digits(&b[..4]) || !all_digits(&b[5..]) {
            return None;
        }
        let year: i32 = text[..4].parse().ok()?;
        let month: u32 = text[5..].parse().ok()?;
        if !(MIN_YEAR..=MAX_YEAR).contains(&year) {
            return None;
        }
        Month::new(year, month)
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match year_month_digits(self.year(), self.month()) {
            Some(text) => f.write_str(std::str::from_utf8(&text).expect("ASCII digits")),
            None => write!(f, "{:04}-{:02}", self.year(), self.month()),
        }
    }
}

impl Month {
    /// `YYYY-MM`, as `Display` writes it, without going through a formatter: a report names
    /// a dozen months per designation, each a string of its own.
    pub fn text(self) -> String {
        match year_month_digits(self.year(), self.month()) {
            Some(text) => ascii(&text),
            None => self.to_string(),
        }
    }
}

/// `day` as `YYYY-MM-DD`, as chrono's `Display` writes it. Digit by digit where the year has
/// four: a score carries a dozen dates as text, and chrono's padded integer formatting was
/// about 1.5 % of the benchmark process's samples under a stream of new partners.
pub fn date_text(day: NaiveDate) -> String {
    match year_month_digits(day.year(), day.month()) {
        Some(year_month) => {
            let mut text = [0; 10];
            text[..7].copy_from_slice(&year_month);
            text[7] = b'-';
            text[8] = digit(day.day() / 10);
            text[9] = digit(day.day());
            ascii(&text)
        }
        None => day.to_string(),
    }
}

/// `YYYY-MM` for a year of four digits (0 to 9999); other years are written by `Display`,
/// which pads or signs them.
fn year_month_digits(year: i32, month: u32) -> Option<[u8; 7]> {
    let year = u32::try_from(year).ok().filter(|y| *y <= 9999)?;
    Some([digit(year / 1000), digit(year / 100), digit(year / 10), digit(year), b'-', digit(month / 10), digit(month)])
}

/// The last decimal digit of `n`, as ASCII.
fn digit(n: u32) -> u8 {
    b'0' + (n % 10) as u8
}

fn ascii(text: &[u8]) -> String {
    String::from_utf8(text.to_vec()).expect("ASCII digits")
}

/// Serde for months as `"YYYY-MM"` text, for reports (stored state keeps the compact number).
pub mod month_text {
    use super::Month;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(months: &[Month], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(months.iter().map(|m| m.text()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Month>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|t| Month::parse(t).ok_or_else(|| D::Error::custom(format!("{t:?} is not a YYYY-MM month"))))
            .collect()
    }
}

/// Serde for dates as day numbers (days since 0001-01-01 in the proleptic Gregorian
/// calendar): stored state holds many dates, and a 3-byte varint is smaller and far quicker
/// to read back than `"YYYY-MM-DD"` text.
pub mod day_number {
    use chrono::{Datelike, NaiveDate};
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(day: &NaiveDate, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i32(day.num_days_from_ce())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveDate, D::Error> {
        from_number(i32::deserialize(d)?)
    }

    pub(crate) fn from_number<E: Error>(n: i32) -> Result<NaiveDate, E> {
        NaiveDate::from_num_days_from_ce_opt(n).ok_or_else(|| E::custom(format!("day number {n} is out of range")))
    }

    /// The same for a list of dates.
    pub mod list {
        use chrono::{Datelike, NaiveDate};
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(days: &[NaiveDate], s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(days.iter().map(|d| d.num_days_from_ce()))
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<NaiveDate>, D::Error> {
            Vec::<i32>::deserialize(d)?.into_iter().map(super::from_number).collect()
        }
    }

    /// The same for a list of `(from, until)` intervals with an open end.
    pub mod intervals {
        use chrono::{Datelike, NaiveDate};
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(days: &[(NaiveDate, Option<NaiveDate>)], s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(days.iter().map(|(a, b)| (a.num_days_from_ce(), b.map(|b| b.num_days_from_ce()))))
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(NaiveDate, Option<NaiveDate>)>, D::Error> {
            Vec::<(i32, Option<i32>)>::deserialize(d)?
                .into_iter()
                .map(|(a, b)| Ok((super::from_number(a)?, b.map(super::from_number).transpose()?)))
                .collect()
        }
    }
}

/// The last complete calendar month before `as_of`'s month: spec §1's "M".
pub fn last_complete_month(as_of: NaiveDate) -> Month {
    Month::of(as_of).back(1)
}

/// `date` minus `n` calendar months, the day clamped to the target month's length
/// (2024-02-29 − 12 months = 2023-02-28), as spec §5.4 requires.
pub fn months_before(date: NaiveDate, n: u32) -> NaiveDate {
    date.checked_sub_months(Months::new(n)).expect("dates stay far inside chrono's range")
}

/// Parses exactly `YYYY-MM-DD`: a real calendar date with a year in the accepted range.
pub fn parse_date(text: &str) -> Option<NaiveDate> {
    let b = text.as_bytes();
    if b.len() != 10
        || b[4] != b'-'
        || b[7] != b'-'
        || !all_digits(&b[..4])
        || !all_digits(&b[5..7])
        || !all_digits(&b[8..])
    {
        return None;
    }
    let year: i32 = text[..4].parse().ok()?;
    if !(MIN_YEAR..=MAX_YEAR).contains(&year) {
        return None;
    }
    NaiveDate::from_ymd_opt(year, text[5..7].parse().ok()?, text[8..].parse().ok()?)
}

fn all_digits(b: &[u8]) -> bool {
    b.iter().all(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        parse_date(s).unwrap()
    }

    #[test]
    fn months_print_as_year_dash_month() {
        for (year, month, text) in
            [(2024, 6, "2024-06"), (2000, 12, "2000-12"), (987, 1, "0987-01"), (-1, 3, "-001-03")]
        {
            assert_eq!(Month::new(year, month).unwrap().to_string(), text);
            assert_eq!(Month::new(year, month).unwrap().text(), text);
        }
        assert_eq!(Month::new(12345, 10).unwrap().to_string(), "12345-10");
        assert_eq!(Month::new(12345, 10).unwrap().text(), "12345-10");
    }

    /// Every day of the accepted years and around them, and years of other widths, read as
    /// chrono writes them: a digit out of place cannot pass unseen.
    #[test]
    fn dates_print_as_chrono_prints_them() {
        let mut day = NaiveDate::from_ymd_opt(1999, 1, 1).unwrap();
        while day <= NaiveDate::from_ymd_opt(2101, 12, 31).unwrap() {
            assert_eq!(date_text(day), day.to_string());
            day = day.succ_opt().unwrap();
        }
        for (year, month, day) in [(0, 1, 1), (9, 2, 3), (987, 10, 31), (9999, 12, 31), (10000, 1, 1), (-1, 6, 15)] {
            let day = NaiveDate::from_ymd_opt(year, month, day).unwrap();
            assert_eq!(date_text(day), day.to_string());
        }
    }

    #[test]
    fn m_is_the_month_before_as_of() {
        assert_eq!(last_complete_month(d("2024-07-10")).to_string(), "2024-06");
        assert_eq!(last_complete_month(d("2024-01-01")).to_string(), "2023-12");
    }

    #[test]
    fn month_arithmetic_crosses_years() {
        let m = Month::parse("2024-01").unwrap();
        assert_eq!(m.back(13).to_string(), "2022-12");
        assert_eq!(m.forward(12).to_string(), "2025-01");
    }

    #[test]
    fn months_before_clamps_to_month_end() {
        assert_eq!(months_before(d("2024-02-29"), 12), d("2023-02-28"));
        assert_eq!(months_before(d("2024-03-31"), 1), d("2024-02-29"));
    }

    #[test]
    fn parsing_is_strict() {
        assert!(Month::parse("2024-13").is_none());
        assert!(Month::parse("2024-1").is_none());
        assert!(Month::parse("1999-12").is_none());
        assert!(Month::parse("2101-01").is_none());
        assert!(parse_date("2024-02-30").is_none());
        assert!(parse_date("2024-2-03").is_none());
        assert!(parse_date("+024-02-03").is_none());
        assert_eq!(parse_date("2100-12-31"), NaiveDate::from_ymd_opt(2100, 12, 31));
    }
}
