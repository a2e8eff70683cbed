//! The JSON form of an event (spec §2): one object per Kafka message or per file line.

use super::fields::{self, shown};
use super::{AcrLine, CertificationChange, CertificationStatus, DeploymentReport, Event, EventError, Fact};
use serde_json::{Map, Value};

/// Decodes and validates one JSON event.
pub fn decode_json(bytes: &[u8]) -> Result<Event, EventError> {
    let text = std::str::from_utf8(bytes).map_err(|_| EventError::NotUtf8)?;
    let value: Value = serde_json::from_str(text).map_err(|e| EventError::NotJson(e.to_string()))?;
    let Value::Object(object) = value else {
        return Err(EventError::NotAnObject(kind(&value)));
    };
    let event = Fields(&object);
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
fn amount(value: &Value) -> Result<i64, EventError> {
    match value {
        Value::String(text) => fields::amount_text(text),
        Value::Number(n) => {
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
            Err(EventError::WrongType { field: "amount_micros", expected: "a string or an integer", got: kind(other) })
        }
    }
}

/// The object's fields, with `null` read as absent (spec §2).
struct Fields<'a>(&'a Map<String, Value>);

impl<'a> Fields<'a> {
    fn optional(&self, name: &'static str) -> Option<&'a Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    fn required(&self, name: &'static str) -> Result<&'a Value, EventError> {
        self.optional(name).ok_or(EventError::Missing(name))
    }

    fn required_str(&self, name: &'static str) -> Result<&'a str, EventError> {
        as_str(name, self.required(name)?)
    }

    fn optional_str(&self, name: &'static str) -> Result<Option<&'a str>, EventError> {
        self.optional(name).map(|v| as_str(name, v)).transpose()
    }
}

fn as_str<'a>(field: &'static str, value: &'a Value) -> Result<&'a str, EventError> {
    value.as_str().ok_or(EventError::WrongType { field, expected: "a string", got: kind(value) })
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
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
    fn numeric_amounts() {
        let e = decode_json(ACR.replace(r#""600000000""#, "-7").as_bytes()).unwrap();
        assert!(matches!(e.fact, Fact::Acr(AcrLine { amount_micros: -7, .. })));
        assert!(reason(&ACR.replace(r#""600000000""#, "1e3")).contains("not an integer literal"));
        assert!(reason(&ACR.replace(r#""600000000""#, "9223372036854775808")).contains("does not fit"));
    }
}
