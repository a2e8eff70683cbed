//! A partner's score day by day, and the qualification window read from it.
//!
//! A score only changes on the days `next_change_after` announces or when a fact arrives, so
//! the history is kept as change points: a snapshot holds from its day until the next
//! entry's day. Recording walks from the first day a change can affect to today, evaluating
//! only on change days, so a backfill of a year costs a few dozen evaluations, not 365.

use super::{PartnerScore, PartnerState, day_points, evaluate, next_change_after};
use crate::calendar::Month;
use crate::rules::{Path, RuleBook};
use chrono::{Datelike, Days, NaiveDate};
use serde::{Deserialize, Serialize};

/// Partner Center's qualification window: the current month and this many full months
/// before it.
pub const WINDOW_PREVIOUS_MONTHS: u32 = 5;

/// What a day's score was: totals and subcategory points per designation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaySnapshot {
    pub path: Path,
    pub designations: Vec<DesignationSnapshot>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesignationSnapshot {
    pub designation: String,
    pub total: u32,
    pub qualified: bool,
    /// `(subcategory, points)` in rule order.
    pub points: Vec<(String, u32)>,
}

impl DaySnapshot {
    pub fn of(score: &PartnerScore) -> DaySnapshot {
        DaySnapshot {
            path: score.path,
            designations: score
                .designations
                .iter()
                .map(|d| DesignationSnapshot {
                    designation: d.designation.clone(),
                    total: d.total,
                    qualified: d.qualified,
                    points: d.subcategories.iter().map(|s| (s.name.clone(), s.points)).collect(),
                })
                .collect(),
        }
    }
}

/// One designation's standing in its qualification window on a day.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QualificationWindow {
    pub designation: String,
    /// The first day of the window (the window ends on the day it is computed for).
    pub window_start: NaiveDate,
    /// Runs of qualified days inside the window, inclusive, oldest first.
    pub qualified_periods: Vec<(NaiveDate, NaiveDate)>,
    pub qualified_days: u32,
    pub last_qualified_on: Option<NaiveDate>,
    /// The last day whose window still contains `last_qualified_on`.
    pub in_window_until: Option<NaiveDate>,
    /// Days from the day computed for until `in_window_until` (0: it is the last one).
    pub days_left: Option<u32>,
}

impl QualificationWindow {
    pub fn qualified(&self) -> bool {
        self.last_qualified_on.is_some()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("stored score history is corrupt: {0}")]
    Corrupt(String),
    #[error("format version {0} of stored score history is not supported")]
    UnknownVersion(u8),
}

/// A partner's daily scores, as change points.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScoreHistory {
    /// Oldest first; each entry differs from the one before it.
    entries: Vec<(NaiveDate, DaySnapshot)>,
    /// The history is complete through this day.
    evaluated_through: Option<NaiveDate>,
}

impl ScoreHistory {
    /// Brings the history up to `today` after facts changed, and returns today's score.
    /// `affected_from` is the first day the new facts can change (none: only the date moved);
    /// days from there, or from the day after the last one recorded, are evaluated again,
    /// but never before `oldest` (facts older than needed for it may be pruned).
    pub fn record(
        &mut self,
        partner_id: &str,
        state: &PartnerState,
        affected_from: Option<NaiveDate>,
        oldest: NaiveDate,
        today: NaiveDate,
        rules: &RuleBook,
    ) -> PartnerScore {
        let resume = self.evaluated_through.and_then(|d| d.succ_opt()).unwrap_or(today);
        let from = affected_from.map_or(resume, |a| a.min(resume)).max(oldest).min(today);
        self.entries.truncate(self.entries.partition_point(|(day, _)| *day < from));
        self.evaluated_through = Some(today);
        let mut day = from;
        loop {
            // Past days need only their points; today's score is the full report.
            let last = self.entries.last().map(|(_, snapshot)| snapshot);
            let (score, changed) = if day == today {
                let score = evaluate(partner_id, state, day, rules);
                let snapshot = DaySnapshot::of(&score);
                let changed = (last != Some(&snapshot)).then_some(snapshot);
                (Some(score), changed)
            } else {
                let points = day_points(state, day, rules);
                (None, last.is_none_or(|last| !points.matches(last)).then(|| points.snapshot()))
            };
            if let Some(snapshot) = changed {
                self.entries.push((day, snapshot));
            }
            match next_change_after(state, day, rules) {
                Some(next) if next <= today => day = next,
                // Nothing changes between `day` and today but the date itself.
                _ => return score.unwrap_or_else(|| evaluate(partner_id, state, today, rules)),
            }
        }
    }

    /// Forgets days before `keep_from`, keeping the entry in force on it.
    pub fn prune(&mut self, keep_from: NaiveDate) {
        let before = self.entries.partition_point(|(day, _)| *day <= keep_from);
        if before > 1 {
            self.entries.drain(..before - 1);
        }
    }

    /// The score on `day`; `None` before the first recorded day. A day after the last one
    /// evaluated gets the last score: the day-rollover index re-evaluates a partner on every
    /// day its score can change, so until then it holds.
    pub fn on(&self, day: NaiveDate) -> Option<&DaySnapshot> {
        let at = self.entries.partition_point(|(d, _)| *d <= day);
        at.checked_sub(1).map(|i| &self.entries[i].1)
    }

    pub fn first_day(&self) -> Option<NaiveDate> {
        self.entries.first().map(|(d, _)| *d)
    }

    pub fn evaluated_through(&self) -> Option<NaiveDate> {
        self.evaluated_through
    }

    /// Every day from `from` to `to` (inclusive) with a recorded score.
    pub fn days(&self, from: NaiveDate, to: NaiveDate) -> Vec<(NaiveDate, &DaySnapshot)> {
        let mut out = Vec::new();
        let mut day = from.max(self.first_day().unwrap_or(from));
        while day <= to {
            match self.on(day) {
                Some(s) => out.push((day, s)),
                None => break,
            }
            day = match day.succ_opt() {
                Some(next) => next,
                None => break,
            };
        }
        out
    }

    /// Each designation's qualification window as of `today`: qualified on which days of
    /// the current month and the previous five, and for how long the last such day keeps
    /// counting. Designations are those of today's score (the rule set in force).
    pub fn windows(&self, today: NaiveDate) -> Vec<QualificationWindow> {
        let window_start = Month::of(today).back(WINDOW_PREVIOUS_MONTHS).first_day();
        let Some(current) = self.on(today) else { return Vec::new() };
        // Entries in force during [window_start, today]: the one in force on the first day,
        // then every later one.
        let first = self.entries.partition_point(|(d, _)| *d <= window_start).saturating_sub(1);
        let spans: Vec<(NaiveDate, NaiveDate, &DaySnapshot)> = self.entries[first..]
            .iter()
            .enumerate()
            .filter(|(_, (d, _))| *d <= today)
            .map(|(i, (d, s))| {
                let next = self.entries.get(first + i + 1).map(|(n, _)| *n);
                let end = next.and_then(|n| n.pred_opt()).map_or(today, |e| e.min(today));
                ((*d).max(window_start), end, s)
            })
            .filter(|(start, end, _)| start <= end)
            .collect();
        current
            .designations
            .iter()
            .map(|d| {
                let mut periods: Vec<(NaiveDate, NaiveDate)> = Vec::new();
                for (start, end, s) in &spans {
                    let qualified = s.designations.iter().any(|x| x.designation == d.designation && x.qualified);
                    if !qualified {
                        continue;
                    }
                    match periods.last_mut() {
                        Some(last) if last.1.succ_opt() == Some(*start) => last.1 = *end,
                        _ => periods.push((*start, *end)),
                    }
                }
                let qualified_days =
                    periods.iter().map(|(a, b)| (b.signed_duration_since(*a).num_days() + 1) as u32).sum();
                let last_qualified_on = periods.last().map(|p| p.1);
                let in_window_until =
                    last_qualified_on.map(|l| last_day_of(Month::of(l).forward(WINDOW_PREVIOUS_MONTHS)));
                QualificationWindow {
                    designation: d.designation.clone(),
                    window_start,
                    qualified_periods: periods,
                    qualified_days,
                    last_qualified_on,
                    in_window_until,
                    days_left: in_window_until.map(|u| u.signed_duration_since(today).num_days().max(0) as u32),
                }
            })
            .collect()
    }

    /// The stored form: a version byte, then postcard, with every name written once.
    pub fn encode(&self) -> Vec<u8> {
        let mut names: Vec<String> = Vec::new();
        let mut name = |n: &str| -> u16 {
            match names.iter().position(|x| x == n) {
                Some(i) => i as u16,
                None => {
                    names.push(n.to_owned());
                    (names.len() - 1) as u16
                }
            }
        };
        let entries: Vec<StoredEntry> = self
            .entries
            .iter()
            .map(|(day, s)| StoredEntry {
                day: day.num_days_from_ce(),
                enterprise: s.path == Path::Enterprise,
                designations: s
                    .designations
                    .iter()
                    .map(|d| StoredDesignation {
                        name: name(&d.designation),
                        total: d.total,
                        qualified: d.qualified,
                        points: d.points.iter().map(|(n, p)| (name(n), *p)).collect(),
                    })
                    .collect(),
            })
            .collect();
        let stored =
            StoredHistory { names, entries, evaluated_through: self.evaluated_through.map(|d| d.num_days_from_ce()) };
        let mut bytes = vec![FORMAT_VERSION];
        postcard::to_io(&stored, &mut bytes).expect("writing to a Vec cannot fail");
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Result<ScoreHistory, HistoryError> {
        let stored: StoredHistory = match bytes.split_first() {
            Some((&FORMAT_VERSION, body)) => {
                postcard::from_bytes(body).map_err(|e| HistoryError::Corrupt(e.to_string()))?
            }
            Some((&other, _)) => return Err(HistoryError::UnknownVersion(other)),
            None => return Err(HistoryError::Corrupt("empty".into())),
        };
        let day =
            |n: i32| NaiveDate::from_num_days_from_ce_opt(n).ok_or_else(|| HistoryError::Corrupt(format!("day {n}")));
        let name = |i: u16| {
            stored.names.get(usize::from(i)).cloned().ok_or_else(|| HistoryError::Corrupt(format!("name {i}")))
        };
        let mut entries = Vec::with_capacity(stored.entries.len());
        for e in &stored.entries {
            let mut designations = Vec::with_capacity(e.designations.len());
            for d in &e.designations {
                designations.push(DesignationSnapshot {
                    designation: name(d.name)?,
                    total: d.total,
                    qualified: d.qualified,
                    points: d.points.iter().map(|(n, p)| Ok((name(*n)?, *p))).collect::<Result<_, HistoryError>>()?,
                });
            }
            let path = if e.enterprise { Path::Enterprise } else { Path::Smb };
            entries.push((day(e.day)?, DaySnapshot { path, designations }));
        }
        Ok(ScoreHistory { entries, evaluated_through: stored.evaluated_through.map(day).transpose()? })
    }
}

fn last_day_of(month: Month) -> NaiveDate {
    month.forward(1).first_day().checked_sub_days(Days::new(1)).expect("a month has a last day")
}

/// The first byte of an encoded history, so a later format can be read beside this one.
const FORMAT_VERSION: u8 = 1;

#[derive(Serialize, Deserialize)]
struct StoredHistory {
    names: Vec<String>,
    entries: Vec<StoredEntry>,
    evaluated_through: Option<i32>,
}

/// Days as day numbers and names as indexes: a year of change points stays a few hundred
/// bytes, read and written with the partner's facts on every update.
#[derive(Serialize, Deserialize)]
struct StoredEntry {
    day: i32,
    enterprise: bool,
    designations: Vec<StoredDesignation>,
}

#[derive(Serialize, Deserialize)]
struct StoredDesignation {
    name: u16,
    total: u32,
    qualified: bool,
    points: Vec<(u16, u32)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::decode_json;

    fn date(s: &str) -> NaiveDate {
        crate::calendar::parse_date(s).unwrap()
    }

    /// Every golden vector, recorded in one go as of its date (a backfill), answers every
    /// day as the engine does evaluated on that day.
    #[test]
    fn a_backfilled_history_equals_the_engine_day_by_day() {
        let rules = RuleBook::embedded();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/golden");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".events.jsonl"))
            else {
                continue;
            };
            let mut states: std::collections::BTreeMap<String, (PartnerState, NaiveDate)> = Default::default();
            for line in std::fs::read_to_string(&path).unwrap().lines() {
                let Ok(event) = decode_json(line.as_bytes()) else { continue };
                let (state, earliest) =
                    states.entry(event.partner_id.clone()).or_insert((PartnerState::default(), NaiveDate::MAX));
                if state.apply(&event).is_ok() {
                    *earliest = (*earliest).min(event.fact.affects_from());
                }
            }
            // Two partners per vector, 200 days each: enough to cross months, expiries and
            // windows, and quick in a debug build.
            let today = date("2024-12-31");
            for (partner, (state, earliest)) in states.iter().take(2) {
                let mut history = ScoreHistory::default();
                let oldest = date("2024-06-14");
                history.record(partner, state, Some(*earliest), oldest, today, &rules);
                let history = ScoreHistory::decode(&history.encode()).unwrap();
                assert!(
                    history.entries.windows(2).all(|pair| pair[0].1 != pair[1].1),
                    "{name} {partner}: an entry repeats the one before it"
                );
                let mut day = (*earliest).max(oldest);
                while day <= today {
                    let expected = DaySnapshot::of(&evaluate(partner, state, day, &rules));
                    assert_eq!(history.on(day), Some(&expected), "{name} {partner} on {day}");
                    day = day.succ_opt().unwrap();
                    checked += 1;
                }
            }
        }
        assert!(checked > 2000, "only {checked} days checked");
    }

    #[test]
    fn recording_again_replaces_the_affected_days_only() {
        let rules = RuleBook::embedded();
        let mut state = PartnerState::default();
        let cert = |id: &str, who: &str, on: &str| {
            decode_json(format!(
                r#"{{"type":"certification","event_id":"{id}","partner_id":"P","individual_id":"{who}","certification":"AZURE_ADMINISTRATOR_ASSOCIATE","earned_on":"{on}"}}"#
            ).as_bytes())
            .unwrap()
        };
        let mut history = ScoreHistory::default();
        state.apply(&cert("a", "u1", "2024-03-10")).unwrap();
        history.record("P", &state, Some(date("2024-03-10")), date("2024-01-01"), date("2024-05-01"), &rules);
        let before_april = history.on(date("2024-03-31")).cloned();
        // Learned on 2024-05-01 that someone certified on 2024-04-15.
        let late = cert("b", "u2", "2024-04-15");
        state.apply(&late).unwrap();
        history.record("P", &state, Some(late.fact.affects_from()), date("2024-01-01"), date("2024-05-01"), &rules);
        assert_eq!(history.on(date("2024-03-31")).cloned(), before_april);
        for day in ["2024-04-14", "2024-04-15", "2024-05-01"] {
            assert_eq!(history.on(date(day)), Some(&DaySnapshot::of(&evaluate("P", &state, date(day), &rules))));
        }
        assert_eq!(history.evaluated_through(), Some(date("2024-05-01")));
    }

    /// A rule set that takes effect with the same points but another subcategory name, or
    /// another standing, starts an entry of its own on a past day.
    #[test]
    fn a_new_rule_set_with_the_same_points_starts_an_entry() {
        let edits: [(&str, &str); 2] = [
            ("name = \"intermediate_certifications\"", "name = \"intermediate_certifications_v2\""),
            ("min_total = 70\nmin_subcategory_points = 1", "min_total = 1\nmin_subcategory_points = 0"),
        ];
        for (from, to) in edits {
            let edited = crate::rules::DEFAULT_RULES
                .replacen("effective_from = \"2024-01-01\"", "effective_from = \"2024-04-01\"", 1)
                .replacen(from, to, 1);
            let rules = RuleBook::new(vec![
                crate::rules::RuleSet::from_toml(crate::rules::DEFAULT_RULES, "default").unwrap(),
                crate::rules::RuleSet::from_toml(&edited, "edited").unwrap(),
            ])
            .unwrap();
            let event = decode_json(
                br#"{"type":"certification","event_id":"a","partner_id":"P","individual_id":"u1","certification":"AZURE_ADMINISTRATOR_ASSOCIATE","earned_on":"2024-03-10"}"#,
            )
            .unwrap();
            let mut state = PartnerState::default();
            state.apply(&event).unwrap();
            let mut history = ScoreHistory::default();
            history.record("P", &state, Some(date("2024-03-10")), date("2024-01-01"), date("2024-05-01"), &rules);
            let (before, after) = (history.on(date("2024-03-31")), history.on(date("2024-04-01")));
            assert_eq!(after, Some(&DaySnapshot::of(&evaluate("P", &state, date("2024-04-01"), &rules))), "{to}");
            assert_ne!(before, after, "{to}");
            let (before, after) = (before.unwrap(), after.unwrap());
            let points = |s: &DaySnapshot| -> Vec<u32> {
                s.designations.iter().flat_map(|d| d.points.iter().map(|(_, p)| *p)).collect()
            };
            assert_eq!(points(before), points(after), "{to}: the points changed, not only the rules");
        }
    }

    #[test]
    fn the_window_counts_qualified_days_and_when_the_last_one_leaves() {
        let snapshot = |qualified: bool| DaySnapshot {
            path: Path::Smb,
            designations: vec![DesignationSnapshot {
                designation: "DATA_AI".into(),
                total: if qualified { 75 } else { 40 },
                qualified,
                points: Vec::new(),
            }],
        };
        let history = ScoreHistory {
            entries: vec![
                (date("2023-12-01"), snapshot(true)),
                (date("2024-02-10"), snapshot(false)),
                (date("2024-03-01"), snapshot(true)),
                (date("2024-03-05"), snapshot(false)),
            ],
            evaluated_through: Some(date("2024-06-20")),
        };
        let w = &history.windows(date("2024-06-20"))[0];
        assert_eq!(w.window_start, date("2024-01-01"));
        assert_eq!(
            w.qualified_periods,
            vec![(date("2024-01-01"), date("2024-02-09")), (date("2024-03-01"), date("2024-03-04"))]
        );
        assert_eq!(w.qualified_days, 40 + 4);
        assert_eq!(w.last_qualified_on, Some(date("2024-03-04")));
        // March's days leave the window when it starts in April, on 2024-09-01.
        assert_eq!(w.in_window_until, Some(date("2024-08-31")));
        assert_eq!(w.days_left, Some(72));
        let later = &history.windows(date("2024-06-20"));
        assert!(later[0].qualified());
        let never = ScoreHistory { entries: vec![(date("2024-01-01"), snapshot(false))], ..history };
        let w = &never.windows(date("2024-06-20"))[0];
        assert!(!w.qualified());
        assert_eq!((w.qualified_days, w.days_left), (0, None));
    }

    #[test]
    fn pruning_keeps_the_entry_in_force() {
        let snapshot = DaySnapshot { path: Path::Smb, designations: Vec::new() };
        let mut other = snapshot.clone();
        other.path = Path::Enterprise;
        let mut history = ScoreHistory {
            entries: vec![(date("2024-01-01"), snapshot.clone()), (date("2024-02-01"), other.clone())],
            evaluated_through: Some(date("2024-06-01")),
        };
        history.prune(date("2024-03-01"));
        assert_eq!(history.on(date("2024-03-01")), Some(&other));
        assert_eq!(history.first_day(), Some(date("2024-02-01")));
    }
}
