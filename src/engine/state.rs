//! A partner's facts: everything its events said, merged so that order and redelivery never
//! matter (spec §2 "Order independence").
//!
//! Each kind of fact is merged by an operation that is commutative and, except for ACR
//! amounts, idempotent: a set insert for certification dates, a max for segments, a min for
//! a deployment's representative report. ACR amounts are sums, so the event-id record in
//! `seen` is what keeps a redelivered line from counting twice.

use crate::calendar::{Month, last_complete_month, months_before};
use crate::events::{CertificationStatus, Event, Fact, Segment, SolutionArea};
use crate::rules::RuleBook;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

mod v1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// Spec §2: the id names a different fact than the one already merged under it.
    #[error("event_id {0:?} reused with different content (the first event with that id stays)")]
    ReusedId(String),
    #[error("format version {0} of stored partner state is not supported")]
    UnknownVersion(u8),
    #[error("stored partner state is corrupt: {0}")]
    Corrupt(String),
}

/// What applying an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// A fact not seen before was merged.
    New,
    /// The same fact under the same id was already merged: nothing changed.
    Redelivery,
}

/// All retained facts of one partner.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartnerState {
    /// Event ids already merged (as 128-bit digests, see [`id_digest`]), with a digest of
    /// their fact and how long the id matters. foldhash: this lookup runs for every event,
    /// and SipHash costs more than the rest of the merge.
    seen: foldhash::HashMap<u128, SeenEvent>,
    customers: BTreeMap<String, CustomerFacts>,
    /// Keyed by (individual, certification): iteration groups an individual's credentials.
    certifications: BTreeMap<(String, String), CertificationFacts>,
    /// One representative report per deployment id (spec §2, §5.4).
    deployments: BTreeMap<String, Deployment>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct SeenEvent {
    fingerprint: u64,
    lifetime: Lifetime,
    /// When the event arrived: its id is kept at least through the dedup window.
    #[serde(with = "crate::calendar::day_number")]
    received_on: NaiveDate,
}

/// How long an event id must be remembered. Only an ACR line is unsafe to apply twice; the
/// other facts merge idempotently, so their ids are kept only while their fact still counts,
/// to keep rejecting a reused id during that time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Lifetime {
    AcrMonth(Month),
    Until(#[serde(with = "crate::calendar::day_number")] NaiveDate),
    Deployed(#[serde(with = "crate::calendar::day_number")] NaiveDate),
    Forever,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CustomerFacts {
    /// Eligible ACR per month (sorted), per solution area, summed exactly in 128 bits.
    pub(crate) acr: Vec<(Month, [i128; 3])>,
    /// The largest known segment reported per month (sorted); `UNKNOWN` is never stored.
    pub(crate) segments: Vec<(Month, Segment)>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CertificationFacts {
    /// Distinct `(earned_on, expires_on)` intervals, sorted.
    #[serde(with = "crate::calendar::day_number::intervals")]
    pub(crate) earned: Vec<(NaiveDate, Option<NaiveDate>)>,
    /// Distinct `removed_on` dates, sorted.
    #[serde(with = "crate::calendar::day_number::list")]
    pub(crate) removed: Vec<NaiveDate>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Deployment {
    #[serde(with = "crate::calendar::day_number")]
    pub(crate) deployed_on: NaiveDate,
    pub(crate) area: SolutionArea,
    pub(crate) service: String,
}

impl Deployment {
    /// The order that picks a deployment's representative report: earliest date, then the
    /// smallest `(solution_area, service)` in byte order (the area enum's order is the byte
    /// order of its names).
    fn precedes(&self, other: &Deployment) -> bool {
        (self.deployed_on, self.area, self.service.as_bytes())
            < (other.deployed_on, other.area, other.service.as_bytes())
    }
}

/// The first byte of an encoded state, so a later format can be read beside this one.
/// Version 2 stores event ids as digests and dates as day numbers (version 1: ids and dates
/// as text, still read, see `v1`).
const FORMAT_VERSION: u8 = 2;

/// The key an event id is remembered by: 128 bits of xxh3. Ids are free text (UUIDs and
/// longer) and a partner remembers thousands, so a fixed 16 bytes keeps state small; two
/// ids of one partner would share a digest with odds around 2^-100 (then the second would
/// be taken for a redelivery or a reused id).
pub(crate) fn id_digest(event_id: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(event_id.as_bytes())
}

impl PartnerState {
    /// Merges one event. The event's partner is the caller's business: a state holds one
    /// partner's facts.
    pub fn apply(&mut self, event: &Event) -> Result<Applied, StateError> {
        self.apply_received(event, NaiveDate::MIN)
    }

    /// Merges one event that arrived on `received_on` (its id then outlives pruning through
    /// the dedup window, see [`PartnerState::prune`]).
    pub fn apply_received(&mut self, event: &Event, received_on: NaiveDate) -> Result<Applied, StateError> {
        let fingerprint = event.fact.fingerprint();
        let id = id_digest(&event.event_id);
        if let Some(seen) = self.seen.get(&id) {
            return if seen.fingerprint == fingerprint {
                Ok(Applied::Redelivery)
            } else {
                Err(StateError::ReusedId(event.event_id.clone()))
            };
        }
        let lifetime = self.merge(&event.fact);
        self.seen.insert(id, SeenEvent { fingerprint, lifetime, received_on });
        Ok(Applied::New)
    }

    fn merge(&mut self, fact: &Fact) -> Lifetime {
        match fact {
            Fact::Acr(line) => {
                let customer = entry(&mut self.customers, &line.customer_id);
                if line.attribution.is_eligible() {
                    let cells = &mut customer.acr;
                    let at = match cells.binary_search_by_key(&line.month, |c| c.0) {
                        Ok(i) => i,
                        Err(i) => {
                            cells.insert(i, (line.month, [0; 3]));
                            i
                        }
                    };
                    cells[at].1[line.area.index()] += i128::from(line.amount_micros);
                }
                if line.segment != Segment::Unknown {
                    let segments = &mut customer.segments;
                    match segments.binary_search_by_key(&line.month, |s| s.0) {
                        Ok(i) => segments[i].1 = segments[i].1.max(line.segment),
                        Err(i) => segments.insert(i, (line.month, line.segment)),
                    }
                }
                Lifetime::AcrMonth(line.month)
            }
            Fact::Certification(change) => {
                let key = (change.individual_id.clone(), change.certification.clone());
                let facts = self.certifications.entry(key).or_default();
                match change.status {
                    CertificationStatus::Earned { earned_on, expires_on } => {
                        insert_sorted(&mut facts.earned, (earned_on, expires_on));
                        expires_on.map_or(Lifetime::Forever, Lifetime::Until)
                    }
                    CertificationStatus::Removed { removed_on } => {
                        insert_sorted(&mut facts.removed, removed_on);
                        Lifetime::Forever
                    }
                }
            }
            Fact::Deployment(report) => {
                if report.attribution.is_eligible() {
                    let candidate = Deployment {
                        deployed_on: report.deployed_on,
                        area: report.area,
                        service: report.service.clone(),
                    };
                    match self.deployments.get_mut(report.deployment_id.as_str()) {
                        Some(current) if candidate.precedes(current) => *current = candidate,
                        Some(_) => {}
                        None => {
                            self.deployments.insert(report.deployment_id.clone(), candidate);
                        }
                    }
                }
                Lifetime::Deployed(report.deployed_on)
            }
        }
    }

    /// True when no event was ever merged.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
            && self.customers.is_empty()
            && self.certifications.is_empty()
            && self.deployments.is_empty()
    }

    /// Number of event ids remembered (for footprint figures and dedup-window pruning).
    pub fn remembered_events(&self) -> usize {
        self.seen.len()
    }

    pub(crate) fn customers(&self) -> &BTreeMap<String, CustomerFacts> {
        &self.customers
    }

    pub(crate) fn certifications(&self) -> &BTreeMap<(String, String), CertificationFacts> {
        &self.certifications
    }

    pub(crate) fn deployments(&self) -> &BTreeMap<String, Deployment> {
        &self.deployments
    }

    /// Drops every fact that cannot affect an evaluation on `horizon` or later under any rule
    /// set of `rules`, and the ids of events whose facts are gone or can no longer count —
    /// except ids received on or after `keep_ids_since` (the dedup window), which are kept
    /// so that a redelivery is still recognised, or a reused id still rejected.
    /// Evaluations before `horizon` are not meaningful afterwards.
    pub fn prune(&mut self, horizon: NaiveDate, keep_ids_since: NaiveDate, rules: &RuleBook) {
        let lookback = rules.sets().iter().map(|s| s.acr_lookback_months()).max().unwrap_or(0);
        let window = rules.sets().iter().map(|s| s.deployment_window_months()).max().unwrap_or(0);
        let earliest_m = last_complete_month(horizon);
        let oldest_acr_month = earliest_m.back(lookback);
        let deployment_cutoff = months_before(horizon, window);

        self.customers.retain(|_, c| {
            c.acr.retain(|(month, _)| *month >= oldest_acr_month);
            // Every later M looks up the latest segment at or before it, so of the months up
            // to the earliest M only the latest still matters.
            let settled = c.segments.partition_point(|(month, _)| *month <= earliest_m);
            if settled > 1 {
                c.segments.drain(..settled - 1);
            }
            !c.acr.is_empty() || !c.segments.is_empty()
        });

        self.certifications.retain(|_, c| {
            let settled = c.removed.partition_point(|d| *d <= horizon);
            if let Some(&latest_removal) = c.removed[..settled].last() {
                // From `horizon` on this removal always applies, so only a later earning can
                // beat it; earlier removals are outweighed by it.
                c.removed.drain(..settled - 1);
                c.earned.retain(|(earned_on, _)| *earned_on > latest_removal);
            }
            c.earned.retain(|(_, expires_on)| expires_on.is_none_or(|e| e > horizon));
            !c.earned.is_empty() || !c.removed.is_empty()
        });

        self.seen.retain(|_, seen| {
            let counts = match seen.lifetime {
                Lifetime::AcrMonth(month) => month >= oldest_acr_month,
                Lifetime::Until(until) => until > horizon,
                Lifetime::Deployed(on) => on > deployment_cutoff,
                Lifetime::Forever => true,
            };
            counts || seen.received_on >= keep_ids_since
        });
    }

    /// The facts with `month`'s ACR multiplied by `numerator / denominator` (rounded toward
    /// zero): the run-rate projection of a month in progress. `None` when nothing of that
    /// month is known, as there is nothing to project then. Event ids are left out: a
    /// projection is only evaluated, never merged into or stored.
    pub(crate) fn with_month_projected(
        &self,
        month: Month,
        numerator: i128,
        denominator: i128,
    ) -> Option<PartnerState> {
        let mut any = false;
        let customers = self
            .customers
            .iter()
            .map(|(id, c)| {
                let mut c = c.clone();
                if let Ok(i) = c.acr.binary_search_by_key(&month, |cell| cell.0) {
                    any = true;
                    for area in &mut c.acr[i].1 {
                        *area = *area * numerator / denominator;
                    }
                }
                (id.clone(), c)
            })
            .collect();
        any.then(|| PartnerState {
            seen: Default::default(),
            customers,
            certifications: self.certifications.clone(),
            deployments: self.deployments.clone(),
        })
    }

    /// Eligible ACR of all customers and areas in `month`.
    pub(crate) fn acr_in(&self, month: Month) -> i128 {
        self.customers
            .values()
            .filter_map(|c| {
                c.acr.binary_search_by_key(&month, |cell| cell.0).ok().map(|i| c.acr[i].1.iter().sum::<i128>())
            })
            .sum()
    }

    /// The stored form: a version byte, then the state in postcard.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = vec![FORMAT_VERSION];
        postcard::to_io(self, &mut bytes).expect("writing to a Vec cannot fail");
        bytes
    }

    /// Reads what [`PartnerState::encode`] wrote.
    pub fn decode(bytes: &[u8]) -> Result<PartnerState, StateError> {
        match bytes.split_first() {
            Some((&FORMAT_VERSION, body)) => postcard::from_bytes(body).map_err(|e| StateError::Corrupt(e.to_string())),
            Some((&1, body)) => v1::decode(body),
            Some((&other, _)) => Err(StateError::UnknownVersion(other)),
            None => Err(StateError::Corrupt("empty".into())),
        }
    }
}

/// The map entry for `key`, allocating the key only when it is new.
fn entry<'a, V: Default>(map: &'a mut BTreeMap<String, V>, key: &str) -> &'a mut V {
    if !map.contains_key(key) {
        map.insert(key.to_owned(), V::default());
    }
    map.get_mut(key).expect("inserted above")
}

fn insert_sorted<T: Ord>(items: &mut Vec<T>, item: T) {
    if let Err(i) = items.binary_search(&item) {
        items.insert(i, item);
    }
}
