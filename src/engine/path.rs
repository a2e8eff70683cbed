//! Spec §4: SMB or ENTERPRISE, from trailing-twelve-month ACR and customer segments.

use super::report::PathExplanation;
use super::state::{CustomerFacts, PartnerState};
use crate::calendar::Month;
use crate::events::Segment;
use crate::rules::{Path, PathRule};

pub(crate) struct PathDecision {
    pub path: Path,
    pub ttm_acr_micros: i128,
    pub explanation: PathExplanation,
}

pub(crate) fn decide(state: &PartnerState, m: Month, rule: &PathRule) -> PathDecision {
    let first = m.back(rule.ttm_months - 1);
    let mut ttm_acr_micros = 0i128;
    let mut explanation = PathExplanation { ttm_customers: 0, known_segment_customers: 0, smb_or_smc_customers: 0 };
    for customer in state.customers().values() {
        let start = customer.acr.partition_point(|(month, _)| *month < first);
        let ttm: i128 =
            customer.acr[start..].iter().take_while(|(month, _)| *month <= m).flat_map(|(_, by_area)| by_area).sum();
        ttm_acr_micros += ttm;
        if ttm <= 0 {
            continue;
        }
        explanation.ttm_customers += 1;
        match segment_at(customer, m) {
            Segment::Unknown => {}
            segment => {
                explanation.known_segment_customers += 1;
                if matches!(segment, Segment::Smb | Segment::Smc) {
                    explanation.smb_or_smc_customers += 1;
                }
            }
        }
    }
    let known = u64::from(explanation.known_segment_customers);
    let smb_like = u64::from(explanation.smb_or_smc_customers);
    let path = if ttm_acr_micros >= i128::from(rule.enterprise_min_ttm_acr_micros) {
        Path::Enterprise
    } else if known == 0 || 100 * smb_like >= u64::from(rule.smb_min_customer_share_percent) * known {
        Path::Smb
    } else {
        Path::Enterprise
    };
    PathDecision { path, ttm_acr_micros, explanation }
}

/// Spec §3: the segment of the latest month not after `m` that reported one (the largest
/// segment of that month, kept so by the state).
fn segment_at(customer: &CustomerFacts, m: Month) -> Segment {
    let upto = customer.segments.partition_point(|(month, _)| *month <= m);
    upto.checked_sub(1).map_or(Segment::Unknown, |i| customer.segments[i].1)
}
