//! The score at the next month boundary, forecast from what is already known.
//!
//! On the first day of next month the month in progress becomes the last complete month
//! (spec §1's M), certifications and deployments age on, and ACR windows move. All of that
//! is known today except the rest of this month's ACR, which is projected at its run rate:
//! the ACR so far times the days in the month over the days elapsed (today counted). The
//! forecast is the points the engine gives those projected facts on that day.

use super::{PartnerScore, PartnerState, day_points};
use crate::calendar::Month;
use crate::rules::RuleBook;
use chrono::{Datelike, Days, NaiveDate};
use std::borrow::Cow;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forecast {
    /// The next month boundary: the day forecast for.
    pub on: NaiveDate,
    /// Days of this month elapsed (today included) and days in it: the run-rate factor.
    pub days_elapsed: u32,
    pub days_in_month: u32,
    /// Eligible ACR of this month so far, and of the same month last year (what usage
    /// growth will compare), in USD micros.
    pub month_so_far_micros: i128,
    pub same_month_last_year_micros: i128,
    pub designations: Vec<DesignationForecast>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesignationForecast {
    pub designation: String,
    pub total: u32,
    pub projected_total: u32,
    pub qualified: bool,
    pub projected_qualified: bool,
    pub subcategories: Vec<SubcategoryForecast>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubcategoryForecast {
    pub name: String,
    pub points: u32,
    pub projected_points: u32,
}

impl SubcategoryForecast {
    pub fn points_at_risk(&self) -> u32 {
        self.points.saturating_sub(self.projected_points)
    }
}

/// A designation projected to fall below the qualifying total, or a subcategory to zero.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ScoreWarning {
    pub designation: String,
    pub on: NaiveDate,
    pub total: u32,
    pub projected_total: u32,
    pub loses_qualification: bool,
    /// Subcategories with points today and none on `on`.
    pub zeroed_subcategories: Vec<String>,
    pub summary: String,
}

impl Forecast {
    /// The warnings the feed publishes: designations projected to drop below the qualifying
    /// total of today's rule set, or to a zero subcategory.
    pub fn warnings(&self, min_total: u32) -> Vec<ScoreWarning> {
        self.designations
            .iter()
            .filter_map(|d| {
                let below = d.total >= min_total && d.projected_total < min_total;
                let zeroed: Vec<String> = d
                    .subcategories
                    .iter()
                    .filter(|s| s.points > 0 && s.projected_points == 0)
                    .map(|s| s.name.clone())
                    .collect();
                if !below && zeroed.is_empty() {
                    return None;
                }
                let mut reasons = Vec::new();
                if below {
                    reasons.push(format!("total {} -> {} (below {min_total})", d.total, d.projected_total));
                }
                if !zeroed.is_empty() {
                    reasons.push(format!("no points in {}", zeroed.join(", ")));
                }
                let at_risk: Vec<String> = d
                    .subcategories
                    .iter()
                    .filter(|s| s.points_at_risk() > 0)
                    .map(|s| format!("{} -{}", s.name, s.points_at_risk()))
                    .collect();
                Some(ScoreWarning {
                    designation: d.designation.clone(),
                    on: self.on,
                    total: d.total,
                    projected_total: d.projected_total,
                    loses_qualification: d.qualified && !d.projected_qualified,
                    zeroed_subcategories: zeroed,
                    summary: format!(
                        "{} on {}: {}; at risk: {}",
                        d.designation,
                        self.on,
                        reasons.join(", "),
                        at_risk.join(", ")
                    ),
                })
            })
            .collect()
    }
}

/// Forecasts the next month boundary after `today`, given today's score `current`.
pub fn forecast(state: &PartnerState, current: &PartnerScore, today: NaiveDate, rules: &RuleBook) -> Forecast {
    let month = Month::of(today);
    let on = month.forward(1).first_day();
    let days_in_month = on.signed_duration_since(month.first_day()).num_days() as u32;
    let days_elapsed = today.day();
    let projected: Cow<PartnerState> = state
        .with_month_projected(month, i128::from(days_in_month), i128::from(days_elapsed))
        .map_or(Cow::Borrowed(state), Cow::Owned);
    let next = day_points(&projected, on, rules);
    let designations = current
        .designations
        .iter()
        .filter_map(|d| {
            let p = next.designations().find(|p| p.rule.name == d.designation)?;
            Some(DesignationForecast {
                designation: d.designation.clone(),
                total: d.total,
                projected_total: p.total,
                qualified: d.qualified,
                projected_qualified: p.qualified,
                subcategories: d
                    .subcategories
                    .iter()
                    .map(|s| SubcategoryForecast {
                        name: s.name.clone(),
                        points: s.points,
                        projected_points: p
                            .rule
                            .subcategories
                            .iter()
                            .zip(p.points)
                            .find(|(sub, _)| sub.name() == s.name)
                            .map_or(0, |(_, points)| *points),
                    })
                    .collect(),
            })
        })
        .collect();
    Forecast {
        on,
        days_elapsed,
        days_in_month,
        month_so_far_micros: state.acr_in(month),
        same_month_last_year_micros: state.acr_in(month.back(12)),
        designations,
    }
}

/// [`forecast`] with the warnings it raises under the qualifying total in force `today`.
pub fn forecast_with_warnings(
    state: &PartnerState,
    current: &PartnerScore,
    today: NaiveDate,
    rules: &RuleBook,
) -> (Forecast, Vec<ScoreWarning>) {
    let forecast = forecast(state, current, today, rules);
    let warnings = forecast.warnings(rules.for_date(today).qualification.min_total);
    (forecast, warnings)
}

/// When a forecast made today goes stale without a new event: tomorrow, while this month's
/// ACR is being projected (the run rate's factor changes daily); otherwise only with the
/// score's own change days.
pub fn forecast_refresh_after(state: &PartnerState, today: NaiveDate) -> Option<NaiveDate> {
    let tomorrow = today.checked_add_days(Days::new(1))?;
    (Month::of(tomorrow) == Month::of(today) && state.acr_in(Month::of(today)) != 0).then_some(tomorrow)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::evaluate;
    use crate::events::decode_json;

    fn date(s: &str) -> NaiveDate {
        crate::calendar::parse_date(s).unwrap()
    }

    fn apply(state: &mut PartnerState, line: String) {
        state.apply(&decode_json(line.as_bytes()).unwrap()).unwrap();
    }

    fn acr(state: &mut PartnerState, id: &str, customer: &str, month: &str, usd: i64) {
        apply(
            state,
            format!(
                r#"{{"type":"acr","event_id":"{id}","partner_id":"P","customer_id":"{customer}","customer_segment":"SMB","solution_area":"DATA_AI","attribution":"PAL","month":"{month}","amount_micros":"{}"}}"#,
                usd * 1_000_000
            ),
        );
    }

    /// A partner whose ACR accrues evenly through June and whose next month is known: the
    /// forecast made on 15 June (half the month's ACR in) equals the score actually reached
    /// on 1 July, subcategory by subcategory, including a certification that expires and a
    /// deployment that ages out meanwhile.
    #[test]
    fn the_forecast_of_an_even_month_is_the_next_months_actual_score() {
        let rules = RuleBook::embedded();
        let mut known = PartnerState::default();
        for (i, customer) in ["C1", "C2", "C3", "C4"].iter().enumerate() {
            acr(&mut known, &format!("ly{i}"), customer, "2023-06", 2_000);
            acr(&mut known, &format!("may{i}"), customer, "2024-05", 3_000);
            acr(&mut known, &format!("jun-a{i}"), customer, "2024-06", 1_500 + 500 * i as i64);
        }
        for (i, who) in ["u1", "u2", "u3"].iter().enumerate() {
            let expires = if i == 0 { r#""2024-06-20""# } else { "null" };
            apply(
                &mut known,
                format!(
                    r#"{{"type":"certification","event_id":"c{i}","partner_id":"P","individual_id":"{who}","certification":"AZURE_ADMINISTRATOR_ASSOCIATE","earned_on":"2023-01-10","expires_on":{expires}}}"#
                ),
            );
        }
        for (i, on) in ["2023-06-25", "2024-02-01", "2024-03-01"].iter().enumerate() {
            apply(
                &mut known,
                format!(
                    r#"{{"type":"deployment","event_id":"d{i}","partner_id":"P","deployment_id":"x{i}","customer_id":"C1","solution_area":"DATA_AI","service":"AKS","attribution":"PAL","deployed_on":"{on}"}}"#
                ),
            );
        }
        let today = date("2024-06-15");
        let current = evaluate("P", &known, today, &rules);
        let forecast = forecast(&known, &current, today, &rules);
        assert_eq!((forecast.on, forecast.days_elapsed, forecast.days_in_month), (date("2024-07-01"), 15, 30));

        let mut actual_facts = known.clone();
        for (i, customer) in ["C1", "C2", "C3", "C4"].iter().enumerate() {
            acr(&mut actual_facts, &format!("jun-b{i}"), customer, "2024-06", 1_500 + 500 * i as i64);
        }
        let actual = evaluate("P", &actual_facts, forecast.on, &rules);
        let mut compared = 0;
        for d in &forecast.designations {
            let a = actual.designations.iter().find(|a| a.designation == d.designation).unwrap();
            assert_eq!(d.projected_total, a.total, "{}", d.designation);
            assert_eq!(d.projected_qualified, a.qualified);
            for s in &d.subcategories {
                let x = a.subcategories.iter().find(|x| x.name == s.name).unwrap();
                assert_eq!(s.projected_points, x.points, "{} {}", d.designation, s.name);
                compared += 1;
            }
        }
        assert!(compared >= 4);
        let data_ai = forecast.designations.iter().find(|d| d.designation == "DATA_AI").unwrap();
        let deployments = data_ai.subcategories.iter().find(|s| s.name == "deployments").unwrap();
        assert!(deployments.points_at_risk() > 0, "the 2023-06-25 deployment ages out: {deployments:?}");
    }

    #[test]
    fn a_projected_drop_below_the_total_or_to_zero_warns() {
        let d = |total, projected_total, points: u32, projected_points: u32| DesignationForecast {
            designation: "DATA_AI".into(),
            total,
            projected_total,
            qualified: total >= 70,
            projected_qualified: projected_total >= 70,
            subcategories: vec![SubcategoryForecast { name: "skilling".into(), points, projected_points }],
        };
        let forecast = |designations| Forecast {
            on: date("2024-07-01"),
            days_elapsed: 1,
            days_in_month: 30,
            month_so_far_micros: 0,
            same_month_last_year_micros: 0,
            designations,
        };
        let w = forecast(vec![d(75, 60, 10, 5)]).warnings(70);
        assert_eq!(w.len(), 1);
        assert!(w[0].loses_qualification && w[0].zeroed_subcategories.is_empty());
        assert!(w[0].summary.contains("total 75 -> 60"), "{}", w[0].summary);
        let w = forecast(vec![d(50, 50, 10, 0)]).warnings(70);
        assert_eq!(w[0].zeroed_subcategories, vec!["skilling".to_owned()]);
        assert!(!w[0].loses_qualification);
        assert!(forecast(vec![d(75, 72, 10, 7), d(60, 50, 0, 0)]).warnings(70).is_empty());
    }

    #[test]
    fn the_forecast_is_refreshed_daily_only_while_this_months_acr_is_projected() {
        let mut state = PartnerState::default();
        assert_eq!(forecast_refresh_after(&state, date("2024-06-15")), None);
        acr(&mut state, "a", "C1", "2024-06", 100);
        assert_eq!(forecast_refresh_after(&state, date("2024-06-15")), Some(date("2024-06-16")));
        assert_eq!(forecast_refresh_after(&state, date("2024-06-30")), None, "the month boundary is a change day");
    }
}
