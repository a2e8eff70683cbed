//! The JSON form of an event (spec §2): one object per Kafka message or per file line.
//!
//! The object is read field by field into borrowed text: only the fields some event type
//! reads are kept, each as a slice of the message where it has no escapes. Going through
//! `serde_json::Value` built a map of owned keys and values for every event, a dozen
//! allocations and copies that the event's own fields then copied again.

use super::fields::{self, shown};
use super::{AcrLine, CertificationChange, CertificationStatus, DeploymentReport, Event, EventError, Fact};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Number;
use std::borrow::Cow;
use std::fmt;

/// Decodes and validates one JSON event.
pub fn decode_json(bytes: &[u8]) -> Result<Event, EventError> {
    let text = std::str::from_utf8(bytes).map_err(|_| EventError::NotUtf8)?;
    let not_json = |e: serde_json::Error| EventError::NotJson(e.to_string());
    // JSON's whitespace is these four; anything but an object is parsed whole (so invalid
    // JSON is still reported as such) only to name what it is.
    if !text.trim_start_matches([' ', '\t', '\n', '\r']).starts_with('{') {
        let value: Scalar = serde_json::from_str(text).map_err(not_json)?;
        return Err(EventError::NotAnObject(value.kind()));
    }
    let EventObject(slots) = serde_json::from_str(text).map_err(not_json)?;
    let event = Fields(&slots);
    let event_type = event.required_str("type")?;
    let event_id = fields::id("event_id", event.required_str("event_id")?)?;
    let partner_id = event.required_str("partner_id")?;
    fields::validate_partner_id(partner_id)?;
    let fact = match event_type {
        "acr" => Fact::Acr(acr(&event)?),
        "certification" => Fact::Certification(certification(&event)?),
        "deployment" => Fact::Deployment(deployment(&event)?),
        other => return Err(EventError::UnknownType(shown(other))),
    };
    Ok(Event { event_id, partner_id: partner_id.to_owned(), fact })
}

fn acr(event: &Fields) -> Result<AcrLine, EventError> {
    Ok(AcrLine {
        customer_id: fields::id("customer_id", event.required_str("customer_id")?)?,
        segment: fields::segment(event.optional_str("customer_segment")?)?,
        area: fields::area(event.required_str("solution_area")?)?,
        attribution: fields::attribution(event.required_str("attribution")?)?,
        month: fields::month("month", event.required_str("month")?)?,
        amount_micros: amount(event.required("amount_micros")?)?,
    })
}

fn certification(event: &Fields) -> Result<CertificationChange, EventError> {
    let individual_id = fields::id("individual_id", event.required_str("individual_id")?)?;
    let certification = fields::certification(event.required_str("certification")?)?;
    let status = match event.optional_str("status")? {
        None | Some("EARNED") => {
            let earned_on = fields::date("earned_on", event.required_str("earned_on")?)?;
            let expires_on = event.optional_str("expires_on")?.map(|d| fields::date("expires_on", d)).transpose()?;
            if let Some(expires_on) = expires_on.filter(|e| *e <= earned_on) {
                return Err(EventError::ExpiryNotAfterEarned { earned_on, expires_on });
            }
            CertificationStatus::Earned { earned_on, expires_on }
        }
        Some("REMOVED") => {
            CertificationStatus::Removed { removed_on: fields::date("removed_on", event.required_str("removed_on")?)? }
        }
        Some(other) => {
            return Err(EventError::BadEnum { field: "status", value: shown(other), allowed: "EARNED, REMOVED" });
        }
    };
    Ok(CertificationChange { individual_id, certification, status })
}

fn deployment(event: &Fields) -> Result<DeploymentReport, EventError> {
    Ok(DeploymentReport {
        deployment_id: fields::id("deployment_id", event.required_str("deployment_id")?)?,
        customer_id: fields::id("customer_id", event.required_str("customer_id")?)?,
        area: fields::area(event.required_str("solution_area")?)?,
        service: fields::id("service", event.required_str("service")?)?,
        attribution: fields::attribution(event.required_str("attribution")?)?,
        deployed_on: fields::date("deployed_on", event.required_str("deployed_on")?)?,
    })
}

/// `amount_micros` is a string or an integer literal; `5.0` and `1e3` are numbers but not
/// integer literals, which serde_json reads as floats (as it does integers past `u64`).
fn amount(value: &Scalar) -> Result<i64, EventError> {
    match value {
        Scalar::Text(text) => fields::amount_text(text),
        Scalar::Number(n) => {
            if let Some(v) = n.as_i64() {
                return Ok(v);
            }
            // A float that is a huge whole number was most likely an integer literal too long
            // for u64; say so rather than blame the notation.
            let too_big = n.as_f64().is_none_or(|f| f.fract() == 0.0 && f.abs() >= 9.2e18);
            Err(EventError::BadAmount {
                value: n.to_string(),
                why: if too_big {
                    "does not fit a signed 64-bit integer"
                } else {
                    "is not an integer literal (write it as a string of digits)"
                },
            })
        }
        other => {
            Err(EventError::WrongType { field: "amount_micros", expected: "a string or an integer", got: other.kind() })
        }
    }
}

/// Every field some event type reads. The others are read and dropped.
const FIELD_NAMES: [&str; 18] = [
    "type",
    "event_id",
    "partner_id",
    "customer_id",
    "customer_segment",
    "solution_area",
    "attribution",
    "month",
    "amount_micros",
    "individual_id",
    "certification",
    "status",
    "earned_on",
    "expires_on",
    "removed_on",
    "deployment_id",
    "service",
    "deployed_on",
];

fn slot(name: &str) -> Option<usize> {
    FIELD_NAMES.iter().position(|known| *known == name)
}

/// The values of an object's known fields, by their place in [`FIELD_NAMES`].
type Slots<'a> = [Option<Scalar<'a>>; FIELD_NAMES.len()];

/// The object's fields, with `null` read as absent (spec §2).
struct Fields<'s, 'a>(&'s Slots<'a>);

impl<'s, 'a> Fields<'s, 'a> {
    fn optional(&self, name: &'static str) -> Option<&'s Scalar<'a>> {
        let index = slot(name).expect("every field an event type reads is in FIELD_NAMES");
        self.0[index].as_ref().filter(|v| !matches!(v, Scalar::Null))
    }

    fn required(&self, name: &'static str) -> Result<&'s Scalar<'a>, EventError> {
        self.optional(name).ok_or(EventError::Missing(name))
    }

    fn required_str(&self, name: &'static str) -> Result<&'s str, EventError> {
        as_str(name, self.required(name)?)
    }

    fn optional_str(&self, name: &'static str) -> Result<Option<&'s str>, EventError> {
        self.optional(name).map(|v| as_str(name, v)).transpose()
    }
}

fn as_str<'s>(field: &'static str, value: &'s Scalar<'_>) -> Result<&'s str, EventError> {
    match value {
        Scalar::Text(text) => Ok(text),
        other => Err(EventError::WrongType { field, expected: "a string", got: other.kind() }),
    }
}

/// A JSON value as far as an event's field needs it: its text or number, or only its kind.
enum Scalar<'a> {
    Null,
    Bool,
    Number(Number),
    /// Borrowed from the message unless it had escapes.
    Text(Cow<'a, str>),
    Array,
    Object,
}

impl Scalar<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Scalar::Null => "null",
            Scalar::Bool => "a boolean",
            Scalar::Number(_) => "a number",
            Scalar::Text(_) => "a string",
            Scalar::Array => "an array",
            Scalar::Object => "an object",
        }
    }
}

impl<'de> Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Null)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Bool)
    }

    fn visit_i64<E>(self, v: i64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Scalar<'de>, E> {
        // serde_json yields only finite floats; `Value` reads any other as null too.
        Ok(Number::from_f64(v).map_or(Scalar::Null, Scalar::Number))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Text(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Text(Cow::Owned(v.to_owned())))
    }

    // Nested values are read as values too, not skipped with `IgnoredAny`: serde_json's
    // skipping neither limits nesting depth nor checks escapes and number ranges, so a line
    // `Value` refused would have been taken.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar<'de>, A::Error> {
        while seq.next_element::<Scalar>()?.is_some() {}
        Ok(Scalar::Array)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar<'de>, A::Error> {
        while map.next_entry::<Scalar, Scalar>()?.is_some() {}
        Ok(Scalar::Object)
    }
}

/// A top-level JSON object's known fields. A field given twice keeps its last value, as
/// `serde_json::Value` does.
struct EventObject<'a>(Slots<'a>);

impl<'de> Deserialize<'de> for EventObject<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(EventObjectVisitor)
    }
}

struct EventObjectVisitor;

impl<'de> Visitor<'de> for EventObjectVisitor {
    type Value = EventObject<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<EventObject<'de>, A::Error> {
        let mut slots: Slots<'de> = Default::default();
        while let Some(FieldSlot(found)) = map.next_key()? {
            match found {
                Some(index) => slots[index] = Some(map.next_value()?),
                // Read and dropped, for the checks `Scalar` keeps.
                None => drop(map.next_value::<Scalar>()?),
            }
        }
        Ok(EventObject(slots))
    }
}

/// A field's place in [`FIELD_NAMES`]; `None` for a field no event type reads. Found from
/// the name as parsed, so a name with escapes costs no copy either.
struct FieldSlot(Option<usize>);

impl<'de> Deserialize<'de> for FieldSlot {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(FieldSlotVisitor)
    }
}

struct FieldSlotVisitor;

impl Visitor<'_> for FieldSlotVisitor {
    type Value = FieldSlot;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E>(self, name: &str) -> Result<FieldSlot, E> {
        Ok(FieldSlot(slot(name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Segment, SolutionArea};

    fn reason(line: &str) -> String {
        decode_json(line.as_bytes()).unwrap_err().to_string()
    }

    const ACR: &str = r#"{"type":"acr","event_id":"a-1","partner_id":"P1","customer_id":"C1","customer_segment":"SMB","solution_area":"DATA_AI","attribution":"PAL","month":"2024-05","amount_micros":"600000000"}"#;

    #[test]
    fn decodes_the_spec_examples() {
        let e = decode_json(ACR.as_bytes()).unwrap();
        let Fact::Acr(a) = e.fact else { panic!("not acr") };
        assert_eq!((a.segment, a.area, a.amount_micros), (Segment::Smb, SolutionArea::DataAi, 600_000_000));
        let removed = r#"{"type":"certification","event_id":"c-2","partner_id":"P1","individual_id":"u1","certification":"AZURE_ADMINISTRATOR_ASSOCIATE","status":"REMOVED","removed_on":"2024-09-01","earned_on":"garbage"}"#;
        assert!(decode_json(removed.as_bytes()).is_ok(), "fields of another status are ignored");
    }

    #[test]
    fn reasons_name_the_field() {
        assert_eq!(
            reason(&ACR.replace("2024-05", "2024-13")),
            "month \"2024-13\" is not a valid YYYY-MM month (years 2000-2100)"
        );
        assert_eq!(reason(&ACR.replace(r#""customer_id":"C1","#, "")), "missing required field \"customer_id\"");
        assert_eq!(reason(&ACR.replace(r#""C1""#, "123")), "field \"customer_id\" must be a string, got a number");
        assert_eq!(
            reason(&ACR.replace(r#""600000000""#, "5.0")),
            "amount_micros 5.0 is not an integer literal (write it as a string of digits)"
        );
        assert_eq!(
            reason(&ACR.replace(r#""600000000""#, "true")),
            "field \"amount_micros\" must be a string or an integer, got a boolean"
        );
        assert_eq!(
            reason(&ACR.replace(r#""SMB""#, r#""SOHO""#)),
            "customer_segment \"SOHO\" is not one of SMB, SMC, ENTERPRISE, UNKNOWN"
        );
        assert_eq!(reason("[1,2,3]"), "an event must be a JSON object, got an array");
        assert!(reason("this is not json").starts_with("not valid JSON"));
    }

    #[test]
    fn null_is_absent() {
        let e = decode_json(ACR.replace(r#""SMB""#, "null").as_bytes()).unwrap();
        let Fact::Acr(a) = e.fact else { panic!("not acr") };
        assert_eq!(a.segment, Segment::Unknown);
        assert_eq!(reason(&ACR.replace(r#""a-1""#, "null")), "missing required field \"event_id\"");
    }

    #[test]
    fn fields_are_read_as_the_json_says() {
        let escaped = r#"{"ty\u0070e":"acr","event_id":"a-\"1\"","partner_id":"P1","customer_id":"C\u00e91","customer_segment":"SMB","solution_area":"DATA_AI","attribution":"PAL","month":"2024-05","amount_micros":"600000000"}"#;
        let e = decode_json(escaped.as_bytes()).unwrap();
        assert_eq!(e.event_id, "a-\"1\"");
        let Fact::Acr(a) = e.fact else { panic!("not acr") };
        assert_eq!(a.customer_id, "C\u{e9}1");
        let unknown = ACR.replacen('{', r#"{"note":{"nested":[1,{"x":null}]},"tags":[true,"t"],"#, 1);
        assert!(decode_json(unknown.as_bytes()).is_ok(), "unknown fields of any kind are read and dropped");
        let twice = ACR.replace(r#""month":"2024-05""#, r#""month":"2024-13","month":"2024-04""#);
        let Fact::Acr(a) = decode_json(twice.as_bytes()).unwrap().fact else { panic!("not acr") };
        assert_eq!(a.month.to_string(), "2024-04", "a field given twice keeps its last value");
        assert_eq!(reason(&ACR.replace(r#""C1""#, "{}")), "field \"customer_id\" must be a string, got an object");
        assert_eq!(reason(&ACR.replace(r#""C1""#, "[]")), "field \"customer_id\" must be a string, got an array");
        assert_eq!(reason(&ACR.replace(r#""C1""#, "false")), "field \"customer_id\" must be a string, got a boolean");
        assert_eq!(reason(" \n\"text\""), "an event must be a JSON object, got a string");
        assert_eq!(reason("null"), "an event must be a JSON object, got null");
        assert!(reason(&format!("{ACR} {{")).starts_with("not valid JSON"), "trailing text is refused");
        assert!(reason(&ACR.replacen('{', r#"{"x":[1,"#, 1)).starts_with("not valid JSON"));
    }

    #[test]
    fn unknown_fields_are_checked_as_json() {
        let with = |field: &str| ACR.replacen('{', &format!("{{{field},"), 1);
        let deep = format!("\"x\":{}{}", "[".repeat(200), "]".repeat(200));
        assert!(reason(&with(&deep)).contains("recursion limit exceeded"), "{}", reason(&with(&deep)));
        assert!(reason(&with(r#""x":"\ud800""#)).starts_with("not valid JSON"), "a lone surrogate is refused");
        assert!(reason(&with(r#""x":1e400"#)).contains("number out of range"));
        assert!(reason(&with(r#""x":[1,]"#)).contains("trailing comma"));
        assert!(reason(&with(r#""x":{"a":1,}"#)).contains("trailing comma"));
        assert!(reason(r#"["\ud800"]"#).starts_with("not valid JSON"));
    }

    #[test]
    fn numeric_amounts() {
        let e = decode_json(ACR.replace(r#""600000000""#, "-7").as_bytes()).unwrap();
        assert!(matches!(e.fact, Fact::Acr(AcrLine { amount_micros: -7, .. })));
        assert!(reason(&ACR.replace(r#""600000000""#, "1e3")).contains("not an integer literal"));
        assert!(reason(&ACR.replace(r#""600000000""#, "9223372036854775808")).contains("does not fit"));
    }
}
