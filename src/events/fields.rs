//! Field checks shared by every decoder: the formats of spec §1–§2.

use super::{Attribution, EventError, Segment, SolutionArea};
use crate::calendar::{self, Month};
use chrono::NaiveDate;

/// Long values are cut in messages: a reason ends up in a Kafka header and a log line.
const SHOWN_CHARS: usize = 80;

/// Quotes a value for a message, cut to a readable length.
pub(super) fn shown(value: &str) -> String {
    let mut cut: String = value.chars().take(SHOWN_CHARS).collect();
    if cut.len() < value.len() {
        cut.push('…');
    }
    format!("{cut:?}")
}

/// `partner_id`: 1–64 characters of `[A-Za-z0-9._:-]` (it also names Redis keys and
/// Kafka keys, hence the small alphabet).
pub fn validate_partner_id(value: &str) -> Result<(), EventError> {
    let ok_char = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-');
    let why = if value.is_empty() {
        "is empty"
    } else if value.len() > 64 {
        "is longer than 64 characters"
    } else if !value.bytes().all(ok_char) {
        "may only contain A-Z a-z 0-9 . _ : -"
    } else {
        return Ok(());
    };
    Err(EventError::BadId { field: "partner_id", value: shown(value), why })
}

/// Free-form ids (`event_id`, `customer_id`, `individual_id`, `deployment_id`, `service`):
/// 1–128 Unicode scalar values.
pub(super) fn id(field: &'static str, value: &str) -> Result<String, EventError> {
    let why = if value.is_empty() {
        "is empty"
    } else if value.chars().nth(128).is_some() {
        "is longer than 128 characters"
    } else {
        return Ok(value.to_owned());
    };
    Err(EventError::BadId { field, value: shown(value), why })
}

/// Upper-case tokens: `certification` (1–128) and `attribution` (1–32) of `[A-Z0-9_]`.
fn token(field: &'static str, value: &str, max: usize) -> Result<String, EventError> {
    let ok_char = |c: u8| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_';
    let why = if value.is_empty() {
        "is empty"
    } else if value.len() > max {
        if max == 32 { "is longer than 32 characters" } else { "is longer than 128 characters" }
    } else if !value.bytes().all(ok_char) {
        "may only contain A-Z 0-9 _"
    } else {
        return Ok(value.to_owned());
    };
    Err(EventError::BadId { field, value: shown(value), why })
}

pub(super) fn certification(value: &str) -> Result<String, EventError> {
    token("certification", value, 128)
}

pub(super) fn attribution(value: &str) -> Result<Attribution, EventError> {
    token("attribution", value, 32).map(Attribution)
}

pub(super) fn area(value: &str) -> Result<SolutionArea, EventError> {
    SolutionArea::parse(value).ok_or_else(|| EventError::BadEnum {
        field: "solution_area",
        value: shown(value),
        allowed: SolutionArea::NAMES,
    })
}

pub(super) fn segment(value: Option<&str>) -> Result<Segment, EventError> {
    let Some(value) = value else { return Ok(Segment::Unknown) };
    Segment::parse(value).ok_or_else(|| EventError::BadEnum {
        field: "customer_segment",
        value: shown(value),
        allowed: Segment::NAMES,
    })
}

pub(super) fn month(field: &'static str, value: &str) -> Result<Month, EventError> {
    Month::parse(value).ok_or_else(|| EventError::BadMonth { field, value: shown(value) })
}

pub(super) fn date(field: &'static str, value: &str) -> Result<NaiveDate, EventError> {
    calendar::parse_date(value).ok_or_else(|| EventError::BadDate { field, value: shown(value) })
}

/// `amount_micros` given as a string: an optional `-` and 1–19 digits, within `i64`.
pub(super) fn amount_text(value: &str) -> Result<i64, EventError> {
    let digits = value.strip_prefix('-').unwrap_or(value);
    let bad = |why| Err(EventError::BadAmount { value: shown(value), why });
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return bad("is not an integer (an optional - and 1-19 digits)");
    }
    if digits.len() > 19 {
        return bad("has more than 19 digits");
    }
    value.parse::<i64>().or_else(|_| bad("does not fit a signed 64-bit integer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partner_ids() {
        assert!(validate_partner_id("P-1.a_b:c").is_ok());
        assert!(validate_partner_id("P BAD").is_err());
        assert!(validate_partner_id("").is_err());
        assert!(validate_partner_id(&"x".repeat(64)).is_ok());
        assert!(validate_partner_id(&"x".repeat(65)).is_err());
    }

    #[test]
    fn ids_count_characters_not_bytes() {
        assert!(id("customer_id", &"é".repeat(128)).is_ok());
        assert!(id("customer_id", &"é".repeat(129)).is_err());
    }

    #[test]
    fn amounts() {
        assert_eq!(amount_text("-42"), Ok(-42));
        assert_eq!(amount_text("0009"), Ok(9));
        assert_eq!(amount_text("9223372036854775807"), Ok(i64::MAX));
        assert!(amount_text("9223372036854775808").is_err());
        assert!(amount_text("12.5").is_err());
        assert!(amount_text("+5").is_err());
        assert!(amount_text("-").is_err());
        assert!(amount_text("99999999999999999999").is_err());
    }

    #[test]
    fn tokens() {
        assert!(attribution("PAL").is_ok());
        assert!(attribution("pal").is_err());
        assert!(attribution(&"A".repeat(33)).is_err());
        assert!(certification(&"A".repeat(128)).is_ok());
    }

    #[test]
    fn messages_name_the_field() {
        let e = month("month", "2024-13").unwrap_err();
        assert_eq!(e.to_string(), "month \"2024-13\" is not a valid YYYY-MM month (years 2000-2100)");
    }
}
