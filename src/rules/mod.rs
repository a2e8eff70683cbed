//! Rule sets: the numbers and lists of spec §6 as data.
//!
//! A rule set is a TOML file (the default one, `default.toml`, is compiled in). Nothing in the
//! engine hard-codes a threshold, a maximum or a certification id: it reads them from here.
//! A [`RuleBook`] holds one or more rule sets and picks the one in force for a date.

mod validate;

use crate::events::SolutionArea;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path as FsPath;
use std::sync::atomic::{AtomicU64, Ordering};

/// The rule set compiled into the binary.
pub const DEFAULT_RULES: &str = include_str!("default.toml");

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("cannot read rule file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("rule set {origin} is not valid TOML for a rule set: {message}")]
    Parse { origin: String, message: String },
    #[error("rule set {origin} is invalid: {problem}")]
    Invalid { origin: String, problem: String },
    #[error("rule sets {first} and {second} both take effect on {date}")]
    SameEffectiveDate { first: String, second: String, date: NaiveDate },
    #[error("a rule book needs at least one rule set")]
    Empty,
}

/// A partner's path (spec §4): it picks thresholds and prerequisites.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Path {
    #[serde(rename = "SMB")]
    Smb,
    #[serde(rename = "ENTERPRISE")]
    Enterprise,
}

impl Path {
    pub fn name(self) -> &'static str {
        match self {
            Path::Smb => "SMB",
            Path::Enterprise => "ENTERPRISE",
        }
    }
}

/// One rule set, in force from `effective_from`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSet {
    pub effective_from: NaiveDate,
    pub total_max: u32,
    pub path: PathRule,
    pub qualification: QualificationRule,
    pub catalogue: Vec<CatalogueEntry>,
    pub designations: Vec<Designation>,
    /// Where the set came from (a file name, or "default"), for messages.
    #[serde(skip)]
    pub origin: String,
    /// `catalogue` indexed by id, built on load.
    #[serde(skip)]
    eligible_until: HashMap<String, Option<NaiveDate>>,
    /// Every "months before M" some ACR subcategory reads, sorted and distinct, built on load.
    #[serde(skip)]
    acr_months_back: Vec<u32>,
    /// Names this set's content for the life of the process, so that what the engine derives
    /// from a set alone can be kept between evaluations. Given by the rule book that takes
    /// the set (a book never changes a set it holds, and the engine reads sets only through
    /// a book); 0 for a set in no book.
    #[serde(skip)]
    id: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathRule {
    pub enterprise_min_ttm_acr_micros: i64,
    pub smb_min_customer_share_percent: u32,
    pub ttm_months: u32,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QualificationRule {
    pub min_total: u32,
    pub min_subcategory_points: u32,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogueEntry {
    pub id: String,
    /// The last day a retired certification still earns points.
    pub eligible_until: Option<NaiveDate>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Designation {
    pub name: String,
    pub solution_area: SolutionArea,
    pub subcategories: Vec<Subcategory>,
}

/// A subcategory of a designation; `kind` in the file picks the variant.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Subcategory {
    NetCustomerAdds(NetCustomerAddsRule),
    Skilling(SkillingRule),
    UsageGrowth(UsageGrowthRule),
    Deployments(DeploymentsRule),
}

impl Subcategory {
    pub fn name(&self) -> &str {
        match self {
            Subcategory::NetCustomerAdds(r) => &r.name,
            Subcategory::Skilling(r) => &r.name,
            Subcategory::UsageGrowth(r) => &r.name,
            Subcategory::Deployments(r) => &r.name,
        }
    }

    pub fn max(&self) -> u32 {
        match self {
            Subcategory::NetCustomerAdds(r) => r.max,
            Subcategory::Skilling(r) => r.max,
            Subcategory::UsageGrowth(r) => r.max,
            Subcategory::Deployments(r) => r.max,
        }
    }
}

/// Spec §5.1.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetCustomerAddsRule {
    pub name: String,
    pub max: u32,
    pub points_per_customer: u32,
    pub smb_threshold_micros: i64,
    pub enterprise_threshold_micros: i64,
    pub baseline_months_back: Vec<u32>,
    pub recent_months_back: Vec<u32>,
}

impl NetCustomerAddsRule {
    pub fn threshold_micros(&self, path: Path) -> i64 {
        match path {
            Path::Smb => self.smb_threshold_micros,
            Path::Enterprise => self.enterprise_threshold_micros,
        }
    }
}

/// Spec §5.2.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkillingRule {
    pub name: String,
    pub max: u32,
    pub points_per_individual: u32,
    pub smb_max_individuals: u32,
    pub enterprise_max_individuals: u32,
    pub scoring_certifications: Vec<String>,
    #[serde(default)]
    pub prerequisites: Vec<Prerequisite>,
}

impl SkillingRule {
    pub fn max_individuals(&self, path: Path) -> u32 {
        match path {
            Path::Smb => self.smb_max_individuals,
            Path::Enterprise => self.enterprise_max_individuals,
        }
    }

    pub fn prerequisites(&self, path: Path) -> impl Iterator<Item = &Prerequisite> {
        self.prerequisites.iter().filter(move |p| p.path == path)
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prerequisite {
    pub path: Path,
    pub certification: String,
    pub required: u32,
    pub points_each: u32,
}

/// Spec §5.3.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageGrowthRule {
    pub name: String,
    pub max: u32,
    pub min_current_micros: i64,
    pub current_months_back: u32,
    pub base_months_back: u32,
}

/// Spec §5.4.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentsRule {
    pub name: String,
    pub max: u32,
    pub points_per_deployment: u32,
    pub window_months: u32,
    pub excluded_services: Vec<String>,
}

impl DeploymentsRule {
    /// Whether a deployment of `service` counts (ASCII case-insensitive, trimmed).
    pub fn counts_service(&self, service: &str) -> bool {
        let service = service.trim_matches(|c: char| c.is_ascii_whitespace());
        !self.excluded_services.iter().any(|x| x.trim().eq_ignore_ascii_case(service))
    }
}

impl RuleSet {
    /// Parses and validates one rule set; `origin` names it in messages.
    pub fn from_toml(text: &str, origin: &str) -> Result<RuleSet, RulesError> {
        let mut set: RuleSet = toml::from_str(text)
            .map_err(|e| RulesError::Parse { origin: origin.to_owned(), message: e.to_string() })?;
        set.origin = origin.to_owned();
        validate::rule_set(&set).map_err(|problem| RulesError::Invalid { origin: origin.to_owned(), problem })?;
        set.eligible_until = set.catalogue.iter().map(|c| (c.id.clone(), c.eligible_until)).collect();
        let mut backs: Vec<u32> = set
            .designations
            .iter()
            .flat_map(|d| &d.subcategories)
            .flat_map(|s| match s {
                Subcategory::NetCustomerAdds(r) => {
                    r.baseline_months_back.iter().chain(&r.recent_months_back).copied().collect()
                }
                Subcategory::UsageGrowth(r) => vec![r.current_months_back, r.base_months_back],
                _ => Vec::new(),
            })
            .collect();
        backs.sort_unstable();
        backs.dedup();
        set.acr_months_back = backs;
        Ok(set)
    }

    /// See the `id` field: 0 for a set in no rule book.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether `certification` earns anything on `as_of`: in the catalogue, and not past its
    /// grace date. Ids outside the catalogue are stored but earn nothing (spec §2).
    pub fn is_eligible(&self, certification: &str, as_of: NaiveDate) -> bool {
        match self.eligible_until.get(certification) {
            Some(Some(until)) => as_of <= *until,
            Some(None) => true,
            None => false,
        }
    }

    /// Every "months before M" that net customer adds or usage growth reads, sorted.
    pub fn acr_months_back(&self) -> &[u32] {
        &self.acr_months_back
    }

    /// The furthest back, in months before M, any ACR rule of this set looks.
    pub fn acr_lookback_months(&self) -> u32 {
        let deepest = self.acr_months_back.last().copied().unwrap_or(0);
        deepest.max(self.path.ttm_months.saturating_sub(1))
    }

    /// The longest deployment window of this set, in months.
    pub fn deployment_window_months(&self) -> u32 {
        self.designations
            .iter()
            .flat_map(|d| &d.subcategories)
            .filter_map(|s| match s {
                Subcategory::Deployments(r) => Some(r.window_months),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }
}

/// Every rule set the service knows, ordered by `effective_from`.
#[derive(Clone, Debug)]
pub struct RuleBook {
    sets: Vec<RuleSet>,
}

impl RuleBook {
    pub fn new(mut sets: Vec<RuleSet>) -> Result<RuleBook, RulesError> {
        sets.sort_by_key(|s| s.effective_from);
        if sets.is_empty() {
            return Err(RulesError::Empty);
        }
        if let Some(pair) = sets.windows(2).find(|w| w[0].effective_from == w[1].effective_from) {
            return Err(RulesError::SameEffectiveDate {
                first: pair[0].origin.clone(),
                second: pair[1].origin.clone(),
                date: pair[0].effective_from,
            });
        }
        Ok(RuleBook::holding(sets))
    }

    /// The compiled-in default rule set alone.
    pub fn embedded() -> RuleBook {
        let set = RuleSet::from_toml(DEFAULT_RULES, "default").expect("the embedded rule set is valid (tested)");
        RuleBook::holding(vec![set])
    }

    /// Takes `sets`, giving each an id no other set of this process has had. A set cloned out
    /// of a book and changed gets a new id when a book takes it again.
    fn holding(mut sets: Vec<RuleSet>) -> RuleBook {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        for set in &mut sets {
            set.id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        }
        RuleBook { sets }
    }

    /// Loads rule sets from files (the embedded default when `paths` is empty).
    pub fn load(paths: &[impl AsRef<FsPath>]) -> Result<RuleBook, RulesError> {
        if paths.is_empty() {
            return Ok(RuleBook::embedded());
        }
        let sets = paths
            .iter()
            .map(|p| {
                let p = p.as_ref();
                let origin = p.display().to_string();
                let text =
                    std::fs::read_to_string(p).map_err(|source| RulesError::Read { path: origin.clone(), source })?;
                RuleSet::from_toml(&text, &origin)
            })
            .collect::<Result<Vec<_>, _>>()?;
        RuleBook::new(sets)
    }

    /// The rule set for `as_of`: the latest `effective_from ≤ as_of`, else the earliest.
    pub fn for_date(&self, as_of: NaiveDate) -> &RuleSet {
        self.sets.iter().rev().find(|s| s.effective_from <= as_of).unwrap_or(&self.sets[0])
    }

    pub fn sets(&self) -> &[RuleSet] {
        &self.sets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_rules_load() {
        let book = RuleBook::embedded();
        let set = book.for_date(NaiveDate::from_ymd_opt(2024, 7, 10).unwrap());
        assert_eq!(set.designations.len(), 3);
        assert_eq!(set.acr_lookback_months(), 13);
        assert_eq!(set.deployment_window_months(), 12);
    }

    #[test]
    fn grace_date_is_inclusive() {
        let set = RuleBook::embedded().sets[0].clone();
        let day = |d| NaiveDate::from_ymd_opt(2024, 7, d).unwrap();
        assert!(set.is_eligible("AZURE_IOT_DEVELOPER_SPECIALTY", day(31)));
        assert!(!set.is_eligible("AZURE_IOT_DEVELOPER_SPECIALTY", day(31).succ_opt().unwrap()));
        assert!(set.is_eligible("AZURE_DEVOPS_ENGINEER_EXPERT", day(31)));
        assert!(!set.is_eligible("NOT_IN_CATALOGUE", day(1)));
    }

    #[test]
    fn picks_the_set_in_force() {
        let later = DEFAULT_RULES.replace("effective_from = \"2024-01-01\"", "effective_from = \"2025-01-01\"");
        let book = RuleBook::new(vec![
            RuleSet::from_toml(&later, "later").unwrap(),
            RuleSet::from_toml(DEFAULT_RULES, "default").unwrap(),
        ])
        .unwrap();
        let on = |y, m, d| book.for_date(NaiveDate::from_ymd_opt(y, m, d).unwrap()).origin.as_str();
        assert_eq!(on(2023, 6, 1), "default", "before every set: the earliest");
        assert_eq!(on(2024, 12, 31), "default");
        assert_eq!(on(2025, 1, 1), "later");
    }

    #[test]
    fn excluded_services_compare_loosely() {
        let set = RuleBook::embedded().sets[0].clone();
        let Subcategory::Deployments(rule) = &set.designations[0].subcategories[3] else { panic!() };
        assert!(!rule.counts_service("  virtual machines LICENSES "));
        assert!(rule.counts_service("Virtual Machines"));
    }
}
