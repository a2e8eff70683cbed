//! Reads state stored in format version 1 (event ids and dates as text), so partners
//! written by an earlier release load after an upgrade and are rewritten as version 2 on
//! their next update. The shapes mirror version 1 field for field: postcard is positional.

use super::{CertificationFacts, CustomerFacts, Deployment, Lifetime, PartnerState, SeenEvent, StateError, id_digest};
use crate::calendar::Month;
use crate::events::SolutionArea;
use chrono::NaiveDate;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};

#[derive(Deserialize)]
struct StateV1 {
    seen: HashMap<String, SeenV1>,
    customers: BTreeMap<String, CustomerFacts>,
    certifications: BTreeMap<(String, String), CertificationsV1>,
    deployments: BTreeMap<String, DeploymentV1>,
}

#[derive(Deserialize)]
struct SeenV1 {
    fingerprint: u64,
    lifetime: LifetimeV1,
    received_on: NaiveDate,
}

#[derive(Deserialize)]
enum LifetimeV1 {
    AcrMonth(Month),
    Until(NaiveDate),
    Deployed(NaiveDate),
    Forever,
}

#[derive(Deserialize)]
struct CertificationsV1 {
    earned: Vec<(NaiveDate, Option<NaiveDate>)>,
    removed: Vec<NaiveDate>,
}

#[derive(Deserialize)]
struct DeploymentV1 {
    deployed_on: NaiveDate,
    area: SolutionArea,
    service: String,
}

pub(super) fn decode(body: &[u8]) -> Result<PartnerState, StateError> {
    let v1: StateV1 = postcard::from_bytes(body).map_err(|e| StateError::Corrupt(format!("version 1: {e}")))?;
    Ok(PartnerState {
        seen: v1
            .seen
            .into_iter()
            .map(|(id, s)| {
                let lifetime = match s.lifetime {
                    LifetimeV1::AcrMonth(m) => Lifetime::AcrMonth(m),
                    LifetimeV1::Until(d) => Lifetime::Until(d),
                    LifetimeV1::Deployed(d) => Lifetime::Deployed(d),
                    LifetimeV1::Forever => Lifetime::Forever,
                };
                (id_digest(&id), SeenEvent { fingerprint: s.fingerprint, lifetime, received_on: s.received_on })
            })
            .collect(),
        customers: v1.customers,
        certifications: v1
            .certifications
            .into_iter()
            .map(|(k, c)| (k, CertificationFacts { earned: c.earned, removed: c.removed }))
            .collect(),
        deployments: v1
            .deployments
            .into_iter()
            .map(|(id, d)| (id, Deployment { deployed_on: d.deployed_on, area: d.area, service: d.service }))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::decode_json;

    /// Version 1 as the previous release wrote it: a partner with every kind of fact.
    const STORED_V1: &str = include_str!("v1.hex");

    #[test]
    fn version_one_state_reads_as_the_same_facts() {
        let bytes: Vec<u8> = (0..STORED_V1.trim().len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&STORED_V1.trim()[i..i + 2], 16).unwrap())
            .collect();
        assert_eq!(bytes[0], 1);
        let old = PartnerState::decode(&bytes).unwrap();
        let mut fresh = PartnerState::default();
        for line in V1_EVENTS.lines() {
            fresh.apply(&decode_json(line.as_bytes()).unwrap()).unwrap();
        }
        assert_eq!(old, fresh);
        assert_eq!(PartnerState::decode(&old.encode()).unwrap(), old);
    }

    /// The events STORED_V1 was made from.
    const V1_EVENTS: &str = r#"{"type":"acr","event_id":"a1","partner_id":"P","customer_id":"C1","customer_segment":"SMB","solution_area":"DATA_AI","attribution":"PAL","month":"2024-05","amount_micros":"900000000"}
{"type":"certification","event_id":"c1","partner_id":"P","individual_id":"u","certification":"AZURE_ADMINISTRATOR_ASSOCIATE","earned_on":"2024-01-10","expires_on":"2025-01-10"}
{"type":"certification","event_id":"c2","partner_id":"P","individual_id":"u","certification":"AZURE_ADMINISTRATOR_ASSOCIATE","status":"REMOVED","removed_on":"2024-03-01"}
{"type":"deployment","event_id":"d1","partner_id":"P","deployment_id":"x","customer_id":"C1","solution_area":"DATA_AI","service":"AKS","attribution":"PAL","deployed_on":"2023-07-20"}"#;
}
