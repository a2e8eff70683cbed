//! The insights of a score (qualification windows, forecast, warnings, daily history) as
//! JSON for the client commands. The spec §7 report stays exactly as the spec has it; these
//! go beside it.

use crate::proto;
use serde_json::{Value, json};

pub fn windows(windows: &[proto::QualificationWindow]) -> Value {
    windows
        .iter()
        .map(|w| {
            json!({
                "designation": w.designation,
                "window_start": w.window_start,
                "window_end": w.window_end,
                "qualified": w.qualified,
                "qualified_days": w.qualified_days,
                "qualified_periods": w.qualified_periods.iter().map(|p| json!([p.from, p.to])).collect::<Vec<_>>(),
                "last_qualified_on": w.last_qualified_on,
                "in_window_until": w.in_window_until,
                "days_left": w.days_left,
            })
        })
        .collect()
}

pub fn warnings(warnings: &[proto::ScoreWarning]) -> Value {
    warnings
        .iter()
        .map(|w| {
            json!({
                "partner_id": w.partner_id,
                "designation": w.designation,
                "on": w.on,
                "total": w.total,
                "projected_total": w.projected_total,
                "loses_qualification": w.loses_qualification,
                "zeroed_subcategories": w.zeroed_subcategories,
                "summary": w.summary,
            })
        })
        .collect()
}

pub fn forecast(forecast: Option<&proto::ScoreForecast>) -> Value {
    let Some(f) = forecast else { return Value::Null };
    json!({
        "on": f.on,
        "days_elapsed": f.days_elapsed,
        "days_in_month": f.days_in_month,
        "month_so_far_micros": f.month_so_far_micros,
        "same_month_last_year_micros": f.same_month_last_year_micros,
        "designations": f.designations.iter().map(|d| json!({
            "designation": d.designation,
            "total": d.total,
            "projected_total": d.projected_total,
            "qualified": d.qualified,
            "projected_qualified": d.projected_qualified,
            "points_at_risk": d.subcategories.iter()
                .filter(|s| s.points_at_risk > 0)
                .map(|s| (s.name.clone(), json!(s.points_at_risk)))
                .collect::<serde_json::Map<_, _>>(),
        })).collect::<Vec<_>>(),
        "warnings": warnings(&f.warnings),
    })
}

pub fn day(day: &proto::DaySnapshot) -> Value {
    json!({
        "date": day.date,
        "path": if day.path == proto::Path::Enterprise as i32 { "ENTERPRISE" } else { "SMB" },
        "designations": day.designations.iter().map(|d| json!({
            "designation": d.designation,
            "total": d.total,
            "qualified": d.qualified,
            "points": d.subcategories.iter()
                .map(|s| (s.name.clone(), json!(s.points)))
                .collect::<serde_json::Map<_, _>>(),
        })).collect::<Vec<_>>(),
    })
}
