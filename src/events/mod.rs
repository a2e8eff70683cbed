//! Typed partner events (spec §2) and their validation.
//!
//! Every decoder (JSON here, protobuf in the service) produces these types through the same
//! field checks in [`fields`], so a message is accepted or rejected for the same reason
//! whatever its encoding.

mod fields;
mod json;
mod lines;
mod protobuf;

pub use fields::validate_partner_id;
pub use json::decode_json;
pub use lines::{JsonLines, NumberedEvent};
pub use protobuf::decode_protobuf;

use crate::calendar::Month;
use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};
use std::fmt;
use xxhash_rust::xxh3::Xxh3;

/// Why an event was rejected. Every message names the field it is about, so a producer can
/// fix its payload from the dead-letter header or the `line N:` message alone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("not valid JSON: {0}")]
    NotJson(String),
    #[error("not a valid protobuf PartnerEvent: {0}")]
    NotProtobuf(String),
    #[error("not valid UTF-8")]
    NotUtf8,
    #[error("an event must be a JSON object, got {0}")]
    NotAnObject(&'static str),
    #[error("missing required field \"{0}\"")]
    Missing(&'static str),
    #[error("field \"{field}\" must be {expected}, got {got}")]
    WrongType { field: &'static str, expected: &'static str, got: &'static str },
    #[error("type {0} is not one of \"acr\", \"certification\", \"deployment\"")]
    UnknownType(String),
    #[error("{field} {value} is not a valid YYYY-MM month (years 2000-2100)")]
    BadMonth { field: &'static str, value: String },
    #[error("{field} {value} is not a valid YYYY-MM-DD calendar date (years 2000-2100)")]
    BadDate { field: &'static str, value: String },
    #[error("amount_micros {value} {why}")]
    BadAmount { value: String, why: &'static str },
    #[error("{field} {value} is not one of {allowed}")]
    BadEnum { field: &'static str, value: String, allowed: &'static str },
    #[error("{field} {value} {why}")]
    BadId { field: &'static str, value: String, why: &'static str },
    #[error("expires_on {expires_on} is not after earned_on {earned_on}")]
    ExpiryNotAfterEarned { earned_on: NaiveDate, expires_on: NaiveDate },
}

/// One validated event: the fact it states, keyed by partner and event id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub event_id: String,
    pub partner_id: String,
    pub fact: Fact,
}

/// What an event says happened. Two events state the same fact exactly when their `Fact`s are
/// equal: that is how a redelivery is told from a reused id (spec §2 "Duplicates").
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fact {
    Acr(AcrLine),
    Certification(CertificationChange),
    Deployment(DeploymentReport),
}

/// An additive usage line: ACR of one customer, area and month.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcrLine {
    pub customer_id: String,
    pub segment: Segment,
    pub area: SolutionArea,
    pub attribution: Attribution,
    pub month: Month,
    pub amount_micros: i64,
}

/// A credential earned or removed for one individual.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificationChange {
    pub individual_id: String,
    pub certification: String,
    pub status: CertificationStatus,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertificationStatus {
    /// Held from `earned_on` (inclusive) until `expires_on` (exclusive), if any.
    Earned { earned_on: NaiveDate, expires_on: Option<NaiveDate> },
    /// The individual left, or the credential was revoked, from `removed_on`.
    Removed { removed_on: NaiveDate },
}

/// A report that a deployment happened (several reports may describe one deployment).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeploymentReport {
    pub deployment_id: String,
    pub customer_id: String,
    pub area: SolutionArea,
    pub service: String,
    pub attribution: Attribution,
    pub deployed_on: NaiveDate,
}

/// The three Azure solution areas; each is also the name of a designation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SolutionArea {
    #[serde(rename = "DATA_AI")]
    DataAi,
    #[serde(rename = "DIGITAL_APP_INNOVATION")]
    DigitalAppInnovation,
    #[serde(rename = "INFRASTRUCTURE")]
    Infrastructure,
}

impl SolutionArea {
    pub const ALL: [SolutionArea; 3] =
        [SolutionArea::DataAi, SolutionArea::DigitalAppInnovation, SolutionArea::Infrastructure];
    pub const NAMES: &'static str = "DATA_AI, DIGITAL_APP_INNOVATION, INFRASTRUCTURE";

    /// A dense index, so per-area sums live in a `[_; 3]`.
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            SolutionArea::DataAi => "DATA_AI",
            SolutionArea::DigitalAppInnovation => "DIGITAL_APP_INNOVATION",
            SolutionArea::Infrastructure => "INFRASTRUCTURE",
        }
    }

    pub fn parse(text: &str) -> Option<SolutionArea> {
        SolutionArea::ALL.into_iter().find(|a| a.name() == text)
    }
}

impl fmt::Display for SolutionArea {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A customer's segment. The derived order is the tie-break order of spec §3
/// (`SMB < SMC < ENTERPRISE`); `Unknown` sorts first and never wins a tie.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Segment {
    #[serde(rename = "UNKNOWN")]
    Unknown,
    #[serde(rename = "SMB")]
    Smb,
    #[serde(rename = "SMC")]
    Smc,
    #[serde(rename = "ENTERPRISE")]
    Enterprise,
}

impl Segment {
    pub const NAMES: &'static str = "SMB, SMC, ENTERPRISE, UNKNOWN";

    pub fn parse(text: &str) -> Option<Segment> {
        match text {
            "SMB" => Some(Segment::Smb),
            "SMC" => Some(Segment::Smc),
            "ENTERPRISE" => Some(Segment::Enterprise),
            "UNKNOWN" => Some(Segment::Unknown),
            _ => None,
        }
    }
}

/// How Microsoft attributes the revenue or deployment to the partner. Any `[A-Z0-9_]{1,32}`
/// token is valid; only the three of spec §1 count for anything.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Attribution(String);

impl Attribution {
    /// Partner admin link, digital partner of record, cloud solution provider.
    const ELIGIBLE: [&'static str; 3] = ["PAL", "DPOR", "CSP"];

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_eligible(&self) -> bool {
        Attribution::ELIGIBLE.contains(&self.0.as_str())
    }
}

impl Fact {
    /// The event `type` that states this fact.
    pub const KINDS: [&'static str; 3] = ["acr", "certification", "deployment"];

    /// Index into [`Fact::KINDS`].
    pub fn kind(&self) -> usize {
        match self {
            Fact::Acr(_) => 0,
            Fact::Certification(_) => 1,
            Fact::Deployment(_) => 2,
        }
    }

    /// The first day whose score this fact can change: no evaluation before it looks at the
    /// fact (ACR of a month counts once the month is complete; the rest from their date).
    /// Scores of earlier days stay as they were, so history is recomputed from here on.
    pub fn affects_from(&self) -> NaiveDate {
        match self {
            Fact::Acr(a) => a.month.forward(1).first_day(),
            Fact::Certification(c) => match c.status {
                CertificationStatus::Earned { earned_on, .. } => earned_on,
                CertificationStatus::Removed { removed_on } => removed_on,
            },
            Fact::Deployment(d) => d.deployed_on,
        }
    }

    /// A stable 64-bit digest of the fact, kept per event id to tell a redelivery (same
    /// digest) from a reused id (different digest) without storing every event. The encoding
    /// is length-prefixed so no two different facts share an input; the digest must never
    /// change between releases, as stored state depends on it.
    pub fn fingerprint(&self) -> u64 {
        let mut h = Xxh3::new();
        let text = |h: &mut Xxh3, s: &str| {
            h.update(&(s.len() as u64).to_le_bytes());
            h.update(s.as_bytes());
        };
        let day = |h: &mut Xxh3, d: NaiveDate| h.update(&d.num_days_from_ce().to_le_bytes());
        match self {
            Fact::Acr(a) => {
                h.update(b"A");
                text(&mut h, &a.customer_id);
                h.update(&[a.segment as u8, a.area as u8]);
                text(&mut h, a.attribution.as_str());
                h.update(&a.month.index().to_le_bytes());
                h.update(&a.amount_micros.to_le_bytes());
            }
            Fact::Certification(c) => {
                h.update(b"C");
                text(&mut h, &c.individual_id);
                text(&mut h, &c.certification);
                match c.status {
                    CertificationStatus::Earned { earned_on, expires_on } => {
                        h.update(b"E");
                        day(&mut h, earned_on);
                        match expires_on {
                            Some(e) => {
                                h.update(b"X");
                                day(&mut h, e);
                            }
                            None => h.update(b"-"),
                        }
                    }
                    CertificationStatus::Removed { removed_on } => {
                        h.update(b"R");
                        day(&mut h, removed_on);
                    }
                }
            }
            Fact::Deployment(d) => {
                h.update(b"D");
                text(&mut h, &d.deployment_id);
                text(&mut h, &d.customer_id);
                h.update(&[d.area as u8]);
                text(&mut h, &d.service);
                text(&mut h, d.attribution.as_str());
                day(&mut h, d.deployed_on);
            }
        }
        h.digest()
    }
}
