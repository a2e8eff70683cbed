//! The report of spec §7, with explanations of every point.
//!
//! The spec's keys (`partner_id`, `as_of`, `path`, `ttm_acr_micros`, `designations`, and per
//! subcategory `name`, `points`, `max`, `value`) keep their names and meaning; everything else
//! is explanation.

use crate::calendar::Month;
use crate::rules::Path;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartnerScore {
    pub partner_id: String,
    pub as_of: NaiveDate,
    pub path: Path,
    /// Can exceed `i64` only in theory; JSON prints it as an exact integer either way.
    pub ttm_acr_micros: i128,
    pub path_explanation: PathExplanation,
    pub designations: Vec<DesignationScore>,
}

/// The figures the path was decided on (spec §4).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathExplanation {
    pub ttm_customers: u32,
    pub known_segment_customers: u32,
    pub smb_or_smc_customers: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesignationScore {
    pub designation: String,
    pub total: u32,
    pub qualified: bool,
    pub subcategories: Vec<SubcategoryScore>,
    /// What is missing to qualify; absent when qualified. Shared: partners in the same
    /// standing get the same plan (see `shortfall::plan`), and the protobuf encoding keeps
    /// each plan's bytes by its address (`proto::encode_score`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shortfall: Option<Arc<Shortfall>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubcategoryScore {
    pub name: String,
    pub points: u32,
    pub max: u32,
    /// Spec §5's value; `null` where it says so. Usage growth percentages beyond `i64`
    /// saturate (their points are capped long before).
    pub value: Option<i64>,
    pub explanation: Explanation,
}

/// What counted, per kind of subcategory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Explanation {
    NetCustomerAdds {
        threshold_micros: i64,
        /// The months compared, oldest first, as `YYYY-MM`.
        #[serde(with = "crate::calendar::month_text")]
        baseline_months: Vec<Month>,
        #[serde(with = "crate::calendar::month_text")]
        recent_months: Vec<Month>,
        /// Customers counted +1, with their ACR in the baseline and recent months.
        added: Vec<CustomerChange>,
        /// Customers counted −1.
        lost: Vec<CustomerChange>,
    },
    Skilling {
        prerequisites: Vec<PrerequisiteStatus>,
        prerequisites_met: bool,
        prerequisite_points: u32,
        /// Individuals holding at least one scoring certification, sorted.
        individuals: Vec<String>,
        /// How many of them earn points (capped by the path's maximum).
        counted_individuals: u32,
    },
    UsageGrowth {
        current_month: String,
        current_micros: i128,
        base_month: String,
        base_micros: i128,
        min_current_micros: i64,
    },
    Deployments {
        /// The window is `(window_after, as_of]`.
        window_after: NaiveDate,
        /// Deployment ids counted, sorted.
        counted: Vec<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerChange {
    pub customer_id: String,
    pub baseline_micros: Vec<i128>,
    pub recent_micros: Vec<i128>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrerequisiteStatus {
    pub certification: String,
    pub held: u32,
    pub required: u32,
    pub points: u32,
}

/// What a designation lacks to qualify, and one cheap way to get it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shortfall {
    /// Points below the qualifying total (0 when only a subcategory is missing).
    pub points_needed: u32,
    /// Subcategories below the minimum points each must have.
    pub empty_subcategories: Vec<String>,
    /// Steps that together would qualify the designation, if any can.
    pub steps: Vec<ShortfallStep>,
    /// The same in words: "needs 2 more points: 1 more deployment".
    pub summary: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShortfallStep {
    pub subcategory: String,
    pub action: String,
    pub points: u32,
}
