//! The protobuf form of an event (`pcs.v1.PartnerEvent`), checked field by field exactly as
//! the JSON form is. Proto3 has no "absent" for strings, so an empty string is a missing field.

use super::fields::{self, shown};
use super::{AcrLine, CertificationChange, CertificationStatus, DeploymentReport, Event, EventError, Fact, Segment};
use crate::events::SolutionArea;
use crate::proto;
use prost::Message;

pub fn decode_protobuf(bytes: &[u8]) -> Result<Event, EventError> {
    let event = proto::PartnerEvent::decode(bytes).map_err(|e| EventError::NotProtobuf(e.to_string()))?;
    let event_id = fields::id("event_id", required("event_id", &event.event_id)?)?;
    fields::validate_partner_id(required("partner_id", &event.partner_id)?)?;
    let fact = match event.payload {
        Some(proto::partner_event::Payload::Acr(a)) => Fact::Acr(AcrLine {
            customer_id: fields::id("customer_id", required("customer_id", &a.customer_id)?)?,
            segment: segment(a.customer_segment)?,
            area: area(a.solution_area)?,
            attribution: fields::attribution(required("attribution", &a.attribution)?)?,
            month: fields::month("month", required("month", &a.month)?)?,
            amount_micros: a.amount_micros,
        }),
        Some(proto::partner_event::Payload::Certification(c)) => {
            let individual_id = fields::id("individual_id", required("individual_id", &c.individual_id)?)?;
            let certification = fields::certification(required("certification", &c.certification)?)?;
            let status = match proto::CertificationStatus::try_from(c.status) {
                Ok(proto::CertificationStatus::Unspecified | proto::CertificationStatus::Earned) => {
                    let earned_on = fields::date("earned_on", required("earned_on", &c.earned_on)?)?;
                    let expires_on =
                        (!c.expires_on.is_empty()).then(|| fields::date("expires_on", &c.expires_on)).transpose()?;
                    if let Some(expires_on) = expires_on.filter(|e| *e <= earned_on) {
                        return Err(EventError::ExpiryNotAfterEarned { earned_on, expires_on });
                    }
                    CertificationStatus::Earned { earned_on, expires_on }
                }
                Ok(proto::CertificationStatus::Removed) => CertificationStatus::Removed {
                    removed_on: fields::date("removed_on", required("removed_on", &c.removed_on)?)?,
                },
                Err(_) => return Err(unknown_enum("status", c.status, "EARNED, REMOVED")),
            };
            Fact::Certification(CertificationChange { individual_id, certification, status })
        }
        Some(proto::partner_event::Payload::Deployment(d)) => Fact::Deployment(DeploymentReport {
            deployment_id: fields::id("deployment_id", required("deployment_id", &d.deployment_id)?)?,
            customer_id: fields::id("customer_id", required("customer_id", &d.customer_id)?)?,
            area: area(d.solution_area)?,
            service: fields::id("service", required("service", &d.service)?)?,
            attribution: fields::attribution(required("attribution", &d.attribution)?)?,
            deployed_on: fields::date("deployed_on", required("deployed_on", &d.deployed_on)?)?,
        }),
        None => return Err(EventError::Missing("payload (acr, certification or deployment)")),
    };
    Ok(Event { event_id, partner_id: event.partner_id, fact })
}

fn required<'a>(field: &'static str, value: &'a str) -> Result<&'a str, EventError> {
    if value.is_empty() { Err(EventError::Missing(field)) } else { Ok(value) }
}

fn unknown_enum(field: &'static str, value: i32, allowed: &'static str) -> EventError {
    EventError::BadEnum { field, value: shown(&value.to_string()), allowed }
}

fn area(value: i32) -> Result<SolutionArea, EventError> {
    match proto::SolutionArea::try_from(value) {
        Ok(proto::SolutionArea::DataAi) => Ok(SolutionArea::DataAi),
        Ok(proto::SolutionArea::DigitalAppInnovation) => Ok(SolutionArea::DigitalAppInnovation),
        Ok(proto::SolutionArea::Infrastructure) => Ok(SolutionArea::Infrastructure),
        Ok(proto::SolutionArea::Unspecified) => Err(EventError::Missing("solution_area")),
        Err(_) => Err(unknown_enum("solution_area", value, SolutionArea::NAMES)),
    }
}

fn segment(value: i32) -> Result<Segment, EventError> {
    match proto::CustomerSegment::try_from(value) {
        Ok(proto::CustomerSegment::Unspecified | proto::CustomerSegment::Unknown) => Ok(Segment::Unknown),
        Ok(proto::CustomerSegment::Smb) => Ok(Segment::Smb),
        Ok(proto::CustomerSegment::Smc) => Ok(Segment::Smc),
        Ok(proto::CustomerSegment::Enterprise) => Ok(Segment::Enterprise),
        Err(_) => Err(unknown_enum("customer_segment", value, Segment::NAMES)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::decode_json;

    #[test]
    fn same_fact_as_json() {
        let event = proto::PartnerEvent {
            event_id: "a-1".into(),
            partner_id: "P1".into(),
            payload: Some(proto::partner_event::Payload::Acr(proto::AcrLine {
                customer_id: "C1".into(),
                customer_segment: proto::CustomerSegment::Smb as i32,
                solution_area: proto::SolutionArea::DataAi as i32,
                attribution: "PAL".into(),
                month: "2024-05".into(),
                amount_micros: 600_000_000,
            })),
        };
        let json = r#"{"type":"acr","event_id":"a-1","partner_id":"P1","customer_id":"C1","customer_segment":"SMB","solution_area":"DATA_AI","attribution":"PAL","month":"2024-05","amount_micros":"600000000"}"#;
        assert_eq!(decode_protobuf(&event.encode_to_vec()), decode_json(json.as_bytes()));
    }

    #[test]
    fn rejections_name_the_field() {
        let event = proto::PartnerEvent {
            event_id: "c-1".into(),
            partner_id: "P1".into(),
            payload: Some(proto::partner_event::Payload::Certification(proto::CertificationChange {
                individual_id: "u".into(),
                certification: "AZURE_ADMINISTRATOR_ASSOCIATE".into(),
                status: 9,
                ..Default::default()
            })),
        };
        assert_eq!(
            decode_protobuf(&event.encode_to_vec()).unwrap_err().to_string(),
            "status \"9\" is not one of EARNED, REMOVED"
        );
        assert!(
            decode_protobuf(b"\xff\xff\xff").unwrap_err().to_string().starts_with("not a valid protobuf PartnerEvent")
        );
    }
}
