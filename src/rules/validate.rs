//! Checks a rule set before it is used: a bad rule file must fail at start-up with the
//! reason, never score partners with nonsense.

use super::{Path, RuleSet, Subcategory};
use std::collections::HashSet;

pub(super) fn rule_set(set: &RuleSet) -> Result<(), String> {
    let mut catalogue = HashSet::new();
    for entry in &set.catalogue {
        let ok = !entry.id.is_empty()
            && entry.id.len() <= 128
            && entry.id.bytes().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_');
        check(ok, || format!("catalogue id {:?} is not 1-128 characters of A-Z 0-9 _", entry.id))?;
        check(catalogue.insert(entry.id.as_str()), || format!("catalogue lists {} twice", entry.id))?;
    }
    check(set.path.ttm_months > 0, || "path.ttm_months must be > 0".into())?;
    check(set.path.enterprise_min_ttm_acr_micros > 0, || "path.enterprise_min_ttm_acr_micros must be > 0".into())?;
    check(set.path.smb_min_customer_share_percent <= 100, || {
        "path.smb_min_customer_share_percent must be 0-100".into()
    })?;
    check(set.qualification.min_total <= set.total_max, || "qualification.min_total exceeds total_max".into())?;
    check(!set.designations.is_empty(), || "no designations".into())?;

    let mut names = HashSet::new();
    for designation in &set.designations {
        let d = &designation.name;
        check(names.insert(d.as_str()), || format!("designation {d} is defined twice"))?;
        check(!designation.subcategories.is_empty(), || format!("{d} has no subcategories"))?;
        let sum: u32 = designation.subcategories.iter().map(Subcategory::max).sum();
        check(sum == set.total_max, || format!("{d}: subcategory maxima sum to {sum}, not {}", set.total_max))?;
        let mut subcategory_names = HashSet::new();
        for sub in &designation.subcategories {
            let at = format!("{d}.{}", sub.name());
            check(subcategory_names.insert(sub.name()), || format!("{at} is defined twice"))?;
            check(sub.max() > 0, || format!("{at}: max must be > 0"))?;
            subcategory(sub, &at, &catalogue)?;
        }
    }
    Ok(())
}

fn subcategory(sub: &Subcategory, at: &str, catalogue: &HashSet<&str>) -> Result<(), String> {
    match sub {
        Subcategory::NetCustomerAdds(r) => {
            check(r.points_per_customer > 0, || format!("{at}: points_per_customer must be > 0"))?;
            check(r.max % r.points_per_customer == 0, || {
                format!("{at}: max is not a multiple of points_per_customer")
            })?;
            check(r.smb_threshold_micros > 0 && r.enterprise_threshold_micros > 0, || {
                format!("{at}: thresholds must be > 0")
            })?;
            check(!r.baseline_months_back.is_empty() && !r.recent_months_back.is_empty(), || {
                format!("{at}: baseline_months_back and recent_months_back need at least one month")
            })?;
        }
        Subcategory::Skilling(r) => {
            check(r.points_per_individual > 0, || format!("{at}: points_per_individual must be > 0"))?;
            check(r.smb_max_individuals > 0 && r.enterprise_max_individuals > 0, || {
                format!("{at}: max individuals must be > 0")
            })?;
            check(!r.scoring_certifications.is_empty(), || format!("{at}: no scoring certifications"))?;
            for c in r.scoring_certifications.iter().chain(r.prerequisites.iter().map(|p| &p.certification)) {
                check(catalogue.contains(c.as_str()), || format!("{at}: certification {c} is not in the catalogue"))?;
            }
            for path in [Path::Smb, Path::Enterprise] {
                let mut seen = HashSet::new();
                for p in r.prerequisites(path) {
                    check(p.required > 0, || {
                        format!("{at}: prerequisite {} needs a required count > 0", p.certification)
                    })?;
                    check(seen.insert(&p.certification), || {
                        format!("{at}: prerequisite {} is listed twice for {}", p.certification, path.name())
                    })?;
                }
            }
        }
        Subcategory::UsageGrowth(r) => {
            check(r.min_current_micros > 0, || format!("{at}: min_current_micros must be > 0"))?;
            check(r.base_months_back > r.current_months_back, || {
                format!("{at}: base_months_back must be further back than current_months_back")
            })?;
        }
        Subcategory::Deployments(r) => {
            check(r.points_per_deployment > 0, || format!("{at}: points_per_deployment must be > 0"))?;
            check(r.max % r.points_per_deployment == 0, || {
                format!("{at}: max is not a multiple of points_per_deployment")
            })?;
            check(r.window_months > 0, || format!("{at}: window_months must be > 0"))?;
        }
    }
    Ok(())
}

fn check(ok: bool, problem: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(problem()) }
}

#[cfg(test)]
mod tests {
    use super::super::{DEFAULT_RULES, RuleSet};

    fn problem(text: &str) -> String {
        RuleSet::from_toml(text, "test").unwrap_err().to_string()
    }

    #[test]
    fn maxima_must_sum_to_total() {
        let text = DEFAULT_RULES.replacen("max = 40", "max = 39", 1);
        assert!(problem(&text).contains("DATA_AI: subcategory maxima sum to 99, not 100"), "{}", problem(&text));
    }

    #[test]
    fn certifications_must_be_in_catalogue() {
        let text = DEFAULT_RULES.replacen("\"DATA_ANALYST_ASSOCIATE\",", "\"DATA_ANALYST_ASSOCIATE_TYPO\",", 1);
        assert!(problem(&text).contains("DATA_ANALYST_ASSOCIATE_TYPO is not in the catalogue"));
    }

    #[test]
    fn prerequisite_counts_must_be_positive() {
        let text = DEFAULT_RULES.replacen("required = 1", "required = 0", 1);
        assert!(problem(&text).contains("needs a required count > 0"));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let text = DEFAULT_RULES.replacen("total_max = 100", "total_max = 100\ntotal_maxx = 1", 1);
        assert!(problem(&text).contains("unknown field"), "{}", problem(&text));
        let text = DEFAULT_RULES.replacen("points_per_deployment = 2", "points_per_deployment = 2\nbonus = 1", 1);
        assert!(problem(&text).contains("unknown field"), "{}", problem(&text));
    }

    #[test]
    fn unknown_solution_area_is_refused() {
        let text = DEFAULT_RULES.replacen("solution_area = \"DATA_AI\"", "solution_area = \"SECURITY\"", 1);
        assert!(problem(&text).contains("SECURITY"), "{}", problem(&text));
    }
}
