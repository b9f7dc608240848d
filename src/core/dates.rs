//! The date variables every run's context starts with, as the engine we
//! descend from sets them (graphs use them for page names and paths). They
//! are computed once, from the time the run starts (passed in), and kept
//! with the run, so a resume a day later sees the same values; a trigger's
//! own context overrides any of them.
//!
//! They are held once per run, in the run's trigger context, and nowhere
//! else: the context that flows along edges starts without them
//! (`flowing`), and they are laid under what reads them — template lookups
//! (`core::scope`), a component's POSTed input, and the run's final output
//! from an Output node — so no node context, FOREACH item or stored output
//! carries a copy.

use serde_json::{json, Map, Value};

const MS_PER_DAY: u64 = 86_400_000;

/// The names of the date variables.
pub const NAMES: [&str; 12] = [
    "_today",
    "_yesterday",
    "_now",
    "_now_unix",
    "_now_unix_s",
    "_year",
    "_month",
    "_day",
    "_hour",
    "_minute",
    "_second",
    "_iso_week",
];

pub fn is_date_var(name: &str) -> bool {
    NAMES.contains(&name)
}

/// A run's date layer: the date variables as its trigger context holds them
/// (the trigger's own values where it set any).
pub fn layer(run_context: &Map<String, Value>) -> impl Iterator<Item = (&String, &Value)> {
    run_context.iter().filter(|(k, _)| is_date_var(k))
}

/// The date variable `name` as the run holds it, if `name` is one.
pub fn lookup<'a>(run_context: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if is_date_var(name) {
        run_context.get(name)
    } else {
        None
    }
}

/// `map` with the run's date variables laid under it: its own keys win.
pub fn lay_under(map: &mut Map<String, Value>, run_context: &Map<String, Value>) {
    for (k, v) in layer(run_context) {
        if !map.contains_key(k) {
            map.insert(k.clone(), v.clone());
        }
    }
}

/// The context that flows from the start nodes: the trigger context without
/// the date variables, which are read from the run instead.
pub fn flowing(run_context: &Map<String, Value>) -> Map<String, Value> {
    run_context
        .iter()
        .filter(|(k, _)| !is_date_var(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// `_today` (`YYYY-MM-DD`, UTC), `_yesterday`, `_now` (ISO 8601 with
/// milliseconds), `_now_unix` (ms), `_now_unix_s`, `_year`, `_month`, `_day`,
/// `_hour`, `_minute`, `_second` (two-digit strings, the year four) and
/// `_iso_week` (`YYYY-Www`).
pub fn date_vars(now_ms: u64) -> Map<String, Value> {
    let days = now_ms / MS_PER_DAY;
    let (y, m, d) = civil_from_days(days);
    let (yy, ym, yd) = civil_from_days(days.saturating_sub(1));
    let in_day = now_ms % MS_PER_DAY;
    let (hour, minute, second, milli) = (
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000,
    );
    let (week_year, week) = iso_week(days);
    let mut vars = Map::new();
    let mut put = |k: &str, v: Value| {
        vars.insert(k.to_string(), v);
    };
    put("_today", json!(format!("{y:04}-{m:02}-{d:02}")));
    put("_yesterday", json!(format!("{yy:04}-{ym:02}-{yd:02}")));
    put(
        "_now",
        json!(format!(
            "{y:04}-{m:02}-{d:02}T{hour:02}:{minute:02}:{second:02}.{milli:03}Z"
        )),
    );
    put("_now_unix", json!(now_ms));
    put("_now_unix_s", json!(now_ms / 1000));
    put("_year", json!(format!("{y:04}")));
    put("_month", json!(format!("{m:02}")));
    put("_day", json!(format!("{d:02}")));
    put("_hour", json!(format!("{hour:02}")));
    put("_minute", json!(format!("{minute:02}")));
    put("_second", json!(format!("{second:02}")));
    put("_iso_week", json!(format!("{week_year:04}-W{week:02}")));
    vars
}

/// The trigger context over the date variables: the caller's keys win.
pub fn with_date_vars(context: Map<String, Value>, now_ms: u64) -> Map<String, Value> {
    let mut all = date_vars(now_ms);
    all.extend(context);
    all
}

/// Year, month, day of a count of days since 1970-01-01 (proleptic
/// Gregorian; the era arithmetic of Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// ISO 8601 week-numbering year and week of a day: weeks start on Monday,
/// and week 1 is the one holding the year's first Thursday.
fn iso_week(days: u64) -> (u64, u64) {
    // 1970-01-01 was a Thursday: weekday 1 = Monday … 7 = Sunday.
    let weekday = (days + 3) % 7 + 1;
    let thursday = days + 4 - weekday;
    let (year, _, _) = civil_from_days(thursday);
    let jan1 = days_from_civil(year, 1, 1);
    (year, (thursday - jan1) / 7 + 1)
}

fn days_from_civil(y: u64, m: u64, d: u64) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y % 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(iso_ms: u64) -> Map<String, Value> {
        date_vars(iso_ms)
    }

    #[test]
    fn values_match_the_calendar() {
        // 2026-11-30T11:22:33.456Z, a Monday.
        let v = at(1_796_037_753_456);
        assert_eq!(v["_today"], json!("2026-11-30"));
        assert_eq!(v["_yesterday"], json!("2026-11-29"));
        assert_eq!(v["_now"], json!("2026-11-30T11:22:33.456Z"));
        assert_eq!(v["_now_unix"], json!(1_796_037_753_456u64));
        assert_eq!(v["_now_unix_s"], json!(1_796_037_753u64));
        assert_eq!(v["_year"], json!("2026"));
        assert_eq!(v["_month"], json!("11"));
        assert_eq!(v["_day"], json!("30"));
        assert_eq!(v["_hour"], json!("11"));
        assert_eq!(v["_minute"], json!("22"));
        assert_eq!(v["_second"], json!("33"));
        assert_eq!(v["_iso_week"], json!("2026-W49"));
    }

    #[test]
    fn year_boundaries() {
        // 2024-03-01 00:00:00Z: the day after a leap day.
        let v = at(1_709_251_200_000);
        assert_eq!(v["_today"], json!("2024-03-01"));
        assert_eq!(v["_yesterday"], json!("2024-02-29"));
        // 2021-01-01 (a Friday) belongs to ISO week 53 of 2020.
        assert_eq!(at(1_609_459_200_000)["_iso_week"], json!("2020-W53"));
        // 2024-12-30 (a Monday) starts week 1 of 2025.
        assert_eq!(at(1_735_516_800_000)["_iso_week"], json!("2025-W01"));
        // 1970-01-01.
        assert_eq!(at(0)["_today"], json!("1970-01-01"));
        assert_eq!(at(0)["_iso_week"], json!("1970-W01"));
    }

    #[test]
    fn names_are_the_variables_set() {
        let vars = date_vars(0);
        assert_eq!(vars.len(), NAMES.len());
        assert!(NAMES.iter().all(|n| vars.contains_key(*n)));
    }

    #[test]
    fn the_layer_goes_under_and_out_of_the_flow() {
        let mut ctx = Map::new();
        ctx.insert("_today".into(), json!("1999-12-31"));
        ctx.insert("topic".into(), json!("x"));
        let run_context = with_date_vars(ctx, 0);
        let flow = flowing(&run_context);
        assert_eq!(flow.len(), 1);
        assert_eq!(flow["topic"], json!("x"));
        let mut input = Map::new();
        input.insert("_year".into(), json!("mine"));
        lay_under(&mut input, &run_context);
        assert_eq!(input["_year"], json!("mine"));
        assert_eq!(input["_today"], json!("1999-12-31"));
        assert!(!input.contains_key("topic"));
        assert_eq!(lookup(&run_context, "_month"), Some(&json!("01")));
        assert_eq!(lookup(&run_context, "topic"), None);
    }

    #[test]
    fn the_callers_context_wins() {
        let mut ctx = Map::new();
        ctx.insert("_today".into(), json!("1999-12-31"));
        let all = with_date_vars(ctx, 0);
        assert_eq!(all["_today"], json!("1999-12-31"));
        assert_eq!(all["_year"], json!("1970"));
    }
}
