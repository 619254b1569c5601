//! Recurring schedules: cron expressions and when they fire.
//!
//! A [`CronExpr`] is parsed from a classic cron expression and [`next_fire`] computes the first
//! instant, strictly after a given instant, at which the schedule fires in a time zone. Instants are
//! plain `i64` microseconds since the Unix epoch (UTC); schedules are evaluated on the wall clock of
//! the schedule's time zone (see [`zone`]).
//!
//! # Syntax
//!
//! Six whitespace-separated fields: `second minute hour day-of-month month day-of-week`. Five fields
//! are accepted too and mean `second = 0`.
//!
//! | field        | values                                          |
//! |--------------|-------------------------------------------------|
//! | second       | 0-59                                            |
//! | minute       | 0-59                                            |
//! | hour         | 0-23                                            |
//! | day-of-month | 1-31                                            |
//! | month        | 1-12 or `JAN`-`DEC`                             |
//! | day-of-week  | 0-7 or `SUN`-`SAT` (both 0 and 7 are Sunday)    |
//!
//! Each field is a comma-separated list of items; an item is `*` (every value), a value `a`, a range
//! `a-b`, or a stepped `*/n`, `a-b/n` or `a/n` (from `a` to the field maximum). `?` means the same
//! as `*` and is allowed in day-of-month and day-of-week only. Names are case-insensitive. Steps
//! run from 1 up to the width of the field (59 for seconds, 23 for hours, ...).
//!
//! Macros, all at second 0: `@yearly`/`@annually` (`0 0 0 1 1 *`), `@monthly` (`0 0 0 1 * *`),
//! `@weekly` (`0 0 0 * * 0`), `@daily`/`@midnight` (`0 0 0 * * *`) and `@hourly` (`0 0 * * * *`).
//!
//! Day-of-month and day-of-week follow classic cron: when both fields are restricted (neither is
//! exactly `*` or `?`), a day matches when *either* field matches; otherwise both must match. A
//! stepped star such as `*/2` counts as restricted.
//!
//! Rejected with a [`CronError`] that names the field, the offending token and the allowed values:
//! a wrong number of fields, out-of-range values, reversed ranges (`5-2`), zero or oversized steps,
//! empty list items, unknown names, unsupported syntax (`L`, `W`, `#`, a year field), an empty
//! expression, and expressions that can never match, such as `0 0 0 30 2 *` (when day-of-week is
//! unrestricted, some selected day of the month must exist in the longest selected month).
//!
//! # Time zones and daylight-saving time
//!
//! A *slot* is a wall-clock (civil) date-time in the schedule's zone that matches the expression.
//! Each slot `c` resolves to exactly one instant:
//!
//! - `c` exists once: that instant.
//! - `c` falls in a gap (clocks spring forward, e.g. 02:00 jumps to 03:00 so 02:30 never happens):
//!   the instant the gap ends, i.e. the transition instant (03:00 at the new offset). All slots in
//!   one gap therefore resolve to the same instant and the schedule fires **once** there: a daily
//!   02:30 job fires at 03:00 that day, and an every-second job fires once at 03:00:00 for the
//!   whole skipped hour.
//! - `c` is ambiguous (clocks fall back and the wall time happens twice): the **earlier** instant,
//!   the first occurrence. During the repeated span slots fire on the first pass only; the second
//!   pass fires nothing.
//!
//! [`next_fire`]`(t)` is the smallest resolved instant strictly greater than `t`. Resolution never
//! decreases as civil time increases, so the search walks matching civil times after the wall-clock
//! time of `t` in increasing order, jumping field by field (month, day, hour, minute, second), and
//! returns the first whose resolved instant is after `t`. When `t` lies in the second pass of a
//! repeated span, slots in the rest of that span resolve before `t` and are skipped in one jump to
//! the end of the span. The search covers the 8 years (of wall-clock time) after `t`.

use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::{AmbiguousOffset, Offset, TimeZone};

/// How far ahead, in wall-clock years, [`next_fire`] looks for a matching date-time.
const SEARCH_YEARS: i32 = 8;

const MONTH_NAMES: &[&str] =
    &["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"];
const DAY_NAMES: &[&str] = &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// The layout of one cron field.
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    /// Names for the values `min`, `min + 1`, ... (empty when the field has no names).
    names: &'static [&'static str],
    /// Whether `?` is accepted (day fields only).
    question: bool,
    /// The allowed values, for error messages.
    allowed: &'static str,
}

const SECOND: Field = Field { name: "second", min: 0, max: 59, names: &[], question: false, allowed: "0-59" };
const MINUTE: Field = Field { name: "minute", min: 0, max: 59, names: &[], question: false, allowed: "0-59" };
const HOUR: Field = Field { name: "hour", min: 0, max: 23, names: &[], question: false, allowed: "0-23" };
const DAY_OF_MONTH: Field =
    Field { name: "day-of-month", min: 1, max: 31, names: &[], question: true, allowed: "1-31" };
const MONTH: Field =
    Field { name: "month", min: 1, max: 12, names: MONTH_NAMES, question: false, allowed: "1-12 or JAN-DEC" };
const DAY_OF_WEEK: Field = Field {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: DAY_NAMES,
    question: true,
    allowed: "0-7 or SUN-SAT (0 and 7 are Sunday)",
};

/// A parsed cron expression.
///
/// Each field is kept as a bitset of the values it matches (bit `v` set when value `v` matches),
/// together with the original text. See the [module docs](self) for the syntax.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CronExpr {
    text: String,
    seconds: u64,
    minutes: u64,
    hours: u64,
    days_of_month: u64,
    months: u64,
    /// Sunday is bit 0; a parsed 7 is folded onto 0.
    days_of_week: u64,
    /// Day-of-month is neither `*` nor `?`.
    dom_restricted: bool,
    /// Day-of-week is neither `*` nor `?`.
    dow_restricted: bool,
}

impl CronExpr {
    /// Parses a 5- or 6-field cron expression or a macro such as `@daily`.
    ///
    /// Leading and trailing whitespace is ignored. Returns a [`CronError`] describing what is wrong
    /// when the expression is malformed or can never match.
    pub fn parse(expression: &str) -> Result<CronExpr, CronError> {
        let text = expression.trim();
        let fail = |message: String| CronError { expression: text.to_string(), message };
        if text.is_empty() {
            return Err(fail(
                "empty expression; expected 5 or 6 fields (e.g. \"0 30 9 * * MON-FRI\") or a macro such as @daily"
                    .to_string(),
            ));
        }
        let expanded = if text.starts_with('@') {
            match text.to_ascii_lowercase().as_str() {
                "@yearly" | "@annually" => "0 0 0 1 1 *",
                "@monthly" => "0 0 0 1 * *",
                "@weekly" => "0 0 0 * * 0",
                "@daily" | "@midnight" => "0 0 0 * * *",
                "@hourly" => "0 0 * * * *",
                _ => {
                    return Err(fail(format!(
                        "unknown macro {text:?}; supported macros are @yearly, @annually, @monthly, \
                         @weekly, @daily, @midnight and @hourly"
                    )));
                }
            }
        } else {
            text
        };
        let parts: Vec<&str> = expanded.split_whitespace().collect();
        let fields: [&str; 6] = match parts[..] {
            [minute, hour, dom, month, dow] => ["0", minute, hour, dom, month, dow],
            [second, minute, hour, dom, month, dow] => [second, minute, hour, dom, month, dow],
            [..] if parts.len() == 7 => {
                return Err(fail(
                    "found 7 fields, but year fields are not supported; use 6 fields (second minute hour \
                     day-of-month month day-of-week) or 5 (minute hour day-of-month month day-of-week)"
                        .to_string(),
                ));
            }
            _ => {
                return Err(fail(format!(
                    "expected 6 fields (second minute hour day-of-month month day-of-week) or 5 (minute \
                     hour day-of-month month day-of-week), found {}",
                    parts.len()
                )));
            }
        };
        let seconds = parse_field(&SECOND, fields[0]).map_err(fail)?;
        let minutes = parse_field(&MINUTE, fields[1]).map_err(fail)?;
        let hours = parse_field(&HOUR, fields[2]).map_err(fail)?;
        let days_of_month = parse_field(&DAY_OF_MONTH, fields[3]).map_err(fail)?;
        let months = parse_field(&MONTH, fields[4]).map_err(fail)?;
        let mut days_of_week = parse_field(&DAY_OF_WEEK, fields[5]).map_err(fail)?;
        if days_of_week & (1 << 7) != 0 {
            days_of_week = (days_of_week & !(1 << 7)) | 1;
        }
        let unrestricted = |field: &str| field == "*" || field == "?";
        let dom_restricted = !unrestricted(fields[3]);
        let dow_restricted = !unrestricted(fields[5]);
        if !dow_restricted {
            // Every selected day must be checked against the longest selected month; February
            // counts as 29 days because leap years exist.
            let longest =
                (1..=12u32).filter(|m| months & (1 << m) != 0).map(max_days_in_month).max().unwrap_or(31);
            let possible = (1u64 << (longest + 1)) - 1;
            if days_of_month & possible == 0 {
                let first = days_of_month.trailing_zeros();
                return Err(fail(format!(
                    "day-of-month field: day {first} in {:?} never occurs in the selected months \
                     {:?} (the longest has {longest} days), so the expression can never fire; use \
                     days 1-{longest} or select other months",
                    fields[3], fields[4]
                )));
            }
        }
        Ok(CronExpr {
            text: text.to_string(),
            seconds,
            minutes,
            hours,
            days_of_month,
            months,
            days_of_week,
            dom_restricted,
            dow_restricted,
        })
    }

    /// The original expression text, trimmed.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether a civil (wall-clock) date-time matches every field.
    ///
    /// Fractions of a second are ignored.
    pub fn matches(&self, dt: DateTime) -> bool {
        let weekday = dt.weekday().to_sunday_zero_offset() as u32;
        has(self.seconds, dt.second() as u32)
            && has(self.minutes, dt.minute() as u32)
            && has(self.hours, dt.hour() as u32)
            && has(self.months, dt.month() as u32)
            && self.day_matches(dt.day() as u32, weekday)
    }

    /// The day rule: OR when both day fields are restricted, AND otherwise.
    fn day_matches(&self, day: u32, weekday: u32) -> bool {
        let dom = has(self.days_of_month, day);
        let dow = has(self.days_of_week, weekday);
        if self.dom_restricted && self.dow_restricted { dom || dow } else { dom && dow }
    }

    /// The first matching civil time at or after `from` and not after `limit`.
    ///
    /// `from` may be denormalized upwards (second 60, day 32, month 13, ...); each step either
    /// accepts a field or moves to the next candidate of that field, resetting the smaller ones.
    fn first_match(&self, from: Civil, limit: Civil) -> Option<Civil> {
        let Civil { mut year, mut month, mut day, mut hour, mut minute, mut second } = from;
        loop {
            if year > limit.year {
                return None;
            }
            match next_bit(self.months, month) {
                None => {
                    (year, month, day, hour, minute, second) = (year + 1, 1, 1, 0, 0, 0);
                    continue;
                }
                Some(m) if m != month => (month, day, hour, minute, second) = (m, 1, 0, 0, 0),
                Some(_) => {}
            }
            if day > days_in_month(year, month) {
                (month, day, hour, minute, second) = (month + 1, 1, 0, 0, 0);
                continue;
            }
            if !self.day_matches(day, weekday(year, month, day)) {
                (day, hour, minute, second) = (day + 1, 0, 0, 0);
                continue;
            }
            match next_bit(self.hours, hour) {
                None => {
                    (day, hour, minute, second) = (day + 1, 0, 0, 0);
                    continue;
                }
                Some(h) if h != hour => (hour, minute, second) = (h, 0, 0),
                Some(_) => {}
            }
            match next_bit(self.minutes, minute) {
                None => {
                    (hour, minute, second) = (hour + 1, 0, 0);
                    continue;
                }
                Some(m) if m != minute => (minute, second) = (m, 0),
                Some(_) => {}
            }
            match next_bit(self.seconds, second) {
                None => {
                    (minute, second) = (minute + 1, 0);
                    continue;
                }
                Some(s) => second = s,
            }
            let found = Civil { year, month, day, hour, minute, second };
            return (found <= limit).then_some(found);
        }
    }
}

impl FromStr for CronExpr {
    type Err = CronError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CronExpr::parse(s)
    }
}

impl fmt::Display for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Why an expression was rejected: the expression, and what is wrong with it and how to fix it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CronError {
    /// The rejected input (the trimmed expression, or the time zone name for [`zone`]).
    pub expression: String,
    /// What is wrong with it and how to fix it.
    pub message: String,
}

impl fmt::Display for CronError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid schedule {:?}: {}", self.expression, self.message)
    }
}

impl std::error::Error for CronError {}

/// The first fire instant strictly after `after_micros`, in `zone`, following the DST rule in the
/// [module docs](self); `None` when the expression matches no date-time within the next 8 years.
///
/// Instants are microseconds since the Unix epoch (UTC). `None` is also returned when the answer
/// would fall outside the range of representable date-times (beyond the year 9999).
pub fn next_fire(expr: &CronExpr, zone: &TimeZone, after_micros: i64) -> Option<i64> {
    search(expr, zone, after_micros, &mut 0)
}

/// A time zone by IANA name ("Europe/Berlin", "UTC"); an error names the zone.
pub fn zone(name: &str) -> Result<TimeZone, CronError> {
    TimeZone::get(name).map_err(|err| CronError {
        expression: name.to_string(),
        message: format!(
            "unknown time zone {name:?}; use an IANA time zone name such as \"Europe/Berlin\" or \"UTC\" ({err})"
        ),
    })
}

/// [`next_fire`], counting in `resolutions` how many slots were resolved to instants.
fn search(expr: &CronExpr, zone: &TimeZone, after_micros: i64, resolutions: &mut u32) -> Option<i64> {
    let after = Timestamp::from_microsecond(after_micros).ok()?;
    let now = Civil::from_datetime(zone.to_datetime(after));
    let limit = Civil { year: now.year + SEARCH_YEARS, ..now };
    let mut from = now.next_second();
    loop {
        let slot = expr.first_match(from, limit)?;
        let dt = slot.to_datetime()?;
        *resolutions += 1;
        let at = resolve(zone, dt)?;
        if at > after {
            return Some(at.as_microsecond());
        }
        // Only a slot in the second pass of a repeated span resolves at or before `after`: every
        // later slot of that span does too, so continue at the end of the span.
        let span_end = match zone.to_ambiguous_timestamp(dt).offset() {
            AmbiguousOffset::Fold { before, after } => fold_end(zone, dt, before, after),
            _ => None,
        };
        from = span_end.map(Civil::from_datetime).filter(|end| *end > slot).unwrap_or(slot.next_second());
    }
}

/// Resolves a slot to its fire instant: itself, the end of the gap it falls in, or its first
/// occurrence when it is repeated.
fn resolve(zone: &TimeZone, slot: DateTime) -> Option<Timestamp> {
    match zone.to_ambiguous_timestamp(slot).offset() {
        AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(slot).ok(),
        AmbiguousOffset::Fold { before, .. } => before.to_timestamp(slot).ok(),
        AmbiguousOffset::Gap { before, after } => {
            // Read with the later offset, the slot names an instant just before the transition.
            let probe = after.to_timestamp(slot).ok()?;
            transition_to(zone, probe, after).or_else(|| before.to_timestamp(slot).ok())
        }
    }
}

/// The first transition strictly after `from` to the offset `to`.
fn transition_to(zone: &TimeZone, from: Timestamp, to: Offset) -> Option<Timestamp> {
    zone.following(from).take(4).find(|t| t.offset() == to).map(|t| t.timestamp())
}

/// The first civil time after the repeated span that contains `slot`.
fn fold_end(zone: &TimeZone, slot: DateTime, before: Offset, after: Offset) -> Option<DateTime> {
    let first_pass = before.to_timestamp(slot).ok()?;
    let transition = transition_to(zone, first_pass, after)?;
    Some(before.to_datetime(transition))
}

/// A whole-second civil date-time as plain numbers, ordered chronologically.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Civil {
    year: i32,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
}

impl Civil {
    /// Truncates to the whole second.
    fn from_datetime(dt: DateTime) -> Civil {
        Civil {
            year: i32::from(dt.year()),
            month: dt.month() as u32,
            day: dt.day() as u32,
            hour: dt.hour() as u32,
            minute: dt.minute() as u32,
            second: dt.second() as u32,
        }
    }

    /// One second later, possibly denormalized (second 60).
    fn next_second(self) -> Civil {
        Civil { second: self.second + 1, ..self }
    }

    fn to_datetime(self) -> Option<DateTime> {
        let narrow = |v: u32| i8::try_from(v).ok();
        DateTime::new(
            i16::try_from(self.year).ok()?,
            narrow(self.month)?,
            narrow(self.day)?,
            narrow(self.hour)?,
            narrow(self.minute)?,
            narrow(self.second)?,
            0,
        )
        .ok()
    }
}

fn has(mask: u64, value: u32) -> bool {
    value < 64 && mask & (1 << value) != 0
}

/// The smallest value `>= from` in `mask`.
fn next_bit(mask: u64, from: u32) -> Option<u32> {
    if from >= 64 {
        return None;
    }
    let rest = mask & (u64::MAX << from);
    (rest != 0).then(|| rest.trailing_zeros())
}

fn is_leap(year: i32) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The most days `month` ever has (29 for February).
fn max_days_in_month(month: u32) -> u32 {
    days_in_month(2000, month)
}

/// Day of the week, Sunday = 0, of a proleptic Gregorian date.
fn weekday(year: i32, month: u32, day: u32) -> u32 {
    // Days since 1970-01-01 (a Thursday), counting years from March so leap days come last.
    let (year, month, day) = (i64::from(year), i64::from(month), i64::from(day));
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    (days + 4).rem_euclid(7) as u32
}

/// Parses one field into a bitset of the values it matches.
fn parse_field(field: &Field, text: &str) -> Result<u64, String> {
    let mut mask = 0;
    for item in text.split(',') {
        if item.is_empty() {
            return Err(format!(
                "{} field: empty list item in {text:?}; remove the extra comma (allowed values are {})",
                field.name, field.allowed
            ));
        }
        mask |= parse_item(field, item)?;
    }
    Ok(mask)
}

/// Parses one list item: `*`, `?`, `a`, `a-b`, `*/n`, `a-b/n` or `a/n`.
fn parse_item(field: &Field, item: &str) -> Result<u64, String> {
    let name = field.name;
    let (base, step) = match item.split_once('/') {
        Some((base, step)) => (base, Some(parse_step(field, item, step)?)),
        None => (item, None),
    };
    let (low, high) = if base == "*" || base == "?" {
        if base == "?" && !field.question {
            return Err(format!(
                "{name} field: \"?\" is only allowed in the day-of-month and day-of-week fields; use \"*\""
            ));
        }
        (field.min, field.max)
    } else if let Some((first, last)) = base.split_once('-') {
        let low = parse_value(field, item, first)?;
        let high = parse_value(field, item, last)?;
        if low > high {
            return Err(format!(
                "{name} field: range {item:?} is reversed ({low} > {high}); write the smaller value first \
                 (allowed values are {})",
                field.allowed
            ));
        }
        (low, high)
    } else {
        let value = parse_value(field, item, base)?;
        if step.is_some() { (value, field.max) } else { (value, value) }
    };
    let step = step.unwrap_or(1);
    let mut mask = 0;
    let mut value = low;
    while value <= high {
        mask |= 1 << value;
        value += step;
    }
    Ok(mask)
}

/// Parses the step after `/`: 1 up to the width of the field.
fn parse_step(field: &Field, item: &str, step: &str) -> Result<u32, String> {
    let name = field.name;
    let widest = field.max - field.min;
    if step.is_empty() || !step.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{name} field: step {step:?} in {item:?} is not a number; use a step from 1 to {widest}"
        ));
    }
    match step.parse::<u32>() {
        Ok(n) if (1..=widest).contains(&n) => Ok(n),
        _ => Err(format!(
            "{name} field: step {step} in {item:?} is out of range; use a step from 1 to {widest}"
        )),
    }
}

/// Parses a single value: a number or, for month and day-of-week, a three-letter name.
fn parse_value(field: &Field, item: &str, token: &str) -> Result<u32, String> {
    let (name, allowed) = (field.name, field.allowed);
    if token.is_empty() {
        return Err(format!("{name} field: missing value in {item:?}; allowed values are {allowed}"));
    }
    if token.bytes().all(|b| b.is_ascii_digit()) {
        return match token.parse::<u32>() {
            Ok(v) if (field.min..=field.max).contains(&v) => Ok(v),
            _ => Err(format!(
                "{name} field: value {token} in {item:?} is out of range; allowed values are {allowed}"
            )),
        };
    }
    let upper = token.to_ascii_uppercase();
    if let Some(index) = field.names.iter().position(|n| *n == upper) {
        return Ok(field.min + index as u32);
    }
    if upper.contains('#') {
        return Err(format!(
            "{name} field: the nth-weekday syntax \"#\" in {item:?} is not supported; allowed values are {allowed}"
        ));
    }
    if upper.bytes().all(|b| b.is_ascii_digit() || b == b'L' || b == b'W') {
        return Err(format!(
            "{name} field: the last-day/weekday syntax (\"L\", \"W\") in {item:?} is not supported; list the \
             days explicitly (allowed values are {allowed})"
        ));
    }
    if field.names.is_empty() {
        Err(format!("{name} field: {token:?} in {item:?} is not a number; allowed values are {allowed}"))
    } else {
        Err(format!("{name} field: unknown name {token:?} in {item:?}; allowed values are {allowed}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::SignedDuration;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    const SECOND_MICROS: i64 = 1_000_000;
    const HOUR_MICROS: i64 = 3_600 * SECOND_MICROS;

    fn expr(text: &str) -> CronExpr {
        CronExpr::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    /// An RFC 3339 instant ("2026-03-08T01:59:59-05:00") as microseconds.
    fn at(text: &str) -> i64 {
        text.parse::<Timestamp>().unwrap().as_microsecond()
    }

    fn civil(text: &str) -> DateTime {
        text.parse().unwrap()
    }

    fn tz(name: &str) -> TimeZone {
        zone(name).unwrap()
    }

    /// The next `count` fires after `start`.
    fn fires(expression: &str, zone_name: &str, start: &str, count: usize) -> Vec<i64> {
        let (e, z) = (expr(expression), tz(zone_name));
        let mut t = at(start);
        (0..count)
            .map(|_| {
                t = next_fire(&e, &z, t).expect("fires");
                t
            })
            .collect()
    }

    fn instants(texts: &[&str]) -> Vec<i64> {
        texts.iter().map(|t| at(t)).collect()
    }

    // ---- parsing -------------------------------------------------------------------------

    #[test]
    fn parses_fields_and_matches() {
        let e = expr("  0 30 9 * * MON-FRI ");
        assert_eq!(e.as_str(), "0 30 9 * * MON-FRI");
        assert_eq!(e.to_string(), "0 30 9 * * MON-FRI");
        assert!(e.matches(civil("2026-01-05T09:30:00"))); // Monday
        assert!(e.matches(civil("2026-01-09T09:30:00.5"))); // Friday, fraction ignored
        assert!(!e.matches(civil("2026-01-10T09:30:00"))); // Saturday
        assert!(!e.matches(civil("2026-01-05T09:30:01")));
        assert!(!e.matches(civil("2026-01-05T10:30:00")));

        let five = expr("*/15 * * * *");
        assert!(five.matches(civil("2026-01-05T10:45:00")));
        assert!(!five.matches(civil("2026-01-05T10:45:01")));
        assert!(!five.matches(civil("2026-01-05T10:44:00")));

        let steps = expr("10-20/5 5/20 * * * *");
        for s in 0..60 {
            assert_eq!(steps.matches(civil(&format!("2026-01-05T00:05:{s:02}"))), [10, 15, 20].contains(&s));
        }
        for m in 0..60 {
            assert_eq!(steps.matches(civil(&format!("2026-01-05T00:{m:02}:10"))), [5, 25, 45].contains(&m));
        }

        let names = expr("0 0 12 1,15 jan,Mar-may ?");
        assert!(names.matches(civil("2026-04-15T12:00:00")));
        assert!(names.matches(civil("2026-01-01T12:00:00")));
        assert!(!names.matches(civil("2026-02-15T12:00:00")));
        assert!(!names.matches(civil("2026-04-14T12:00:00")));

        assert_eq!("0 0 0 * * 7".parse::<CronExpr>().unwrap().days_of_week, 1);
        let sunday = expr("0 0 0 * * 7");
        assert!(sunday.matches(civil("2026-01-04T00:00:00")));
        assert!(!sunday.matches(civil("2026-01-03T00:00:00")));
        assert_eq!(expr("0 0 0 * * 5-7").days_of_week, expr("0 0 0 * * 0,5,6").days_of_week);
        assert_eq!(expr("0 0 0 * * sat,SUN").days_of_week, 0b100_0001);
        assert_eq!(expr("* * * * * *"), expr("* * * * * *"));
        assert!(expr("* * * * * *").matches(civil("2031-07-19T13:14:15")));
    }

    #[test]
    fn parses_macros() {
        let cases = [
            ("@yearly", "0 0 0 1 1 *"),
            ("@ANNUALLY", "0 0 0 1 1 *"),
            ("@monthly", "0 0 0 1 * *"),
            ("@weekly", "0 0 0 * * 0"),
            ("@daily", "0 0 0 * * *"),
            ("@midnight", "0 0 0 * * *"),
            ("@hourly", "0 0 * * * *"),
        ];
        for (mac, fields) in cases {
            let (a, b) = (expr(mac), expr(fields));
            assert_eq!(a.as_str(), mac);
            assert_eq!(CronExpr { text: fields.to_string(), ..a }, b, "{mac}");
        }
        assert!(expr("@hourly").matches(civil("2026-05-05T17:00:00")));
        assert!(!expr("@hourly").matches(civil("2026-05-05T17:01:00")));
    }

    #[test]
    fn rejects_bad_expressions_naming_the_field() {
        let cases: &[(&str, &[&str])] = &[
            ("", &["empty expression"]),
            ("   ", &["empty expression"]),
            ("* * * *", &["expected 6 fields", "found 4"]),
            ("* * * * * * * *", &["found 8"]),
            ("0 0 0 1 1 * 2027", &["year fields are not supported"]),
            ("60 * * * * *", &["second field", "60", "0-59"]),
            ("0 60 * * * *", &["minute field", "60", "0-59"]),
            ("0 0 24 * * *", &["hour field", "24", "0-23"]),
            ("0 0 0 0 * *", &["day-of-month field", "value 0", "1-31"]),
            ("0 0 0 32 * *", &["day-of-month field", "32", "1-31"]),
            ("0 0 0 * 13 *", &["month field", "13", "1-12 or JAN-DEC"]),
            ("0 0 0 * * 8", &["day-of-week field", "8", "0-7"]),
            ("0 99999999999 * * * *", &["minute field", "out of range"]),
            ("0 5-2 * * * *", &["minute field", "\"5-2\"", "reversed"]),
            ("0 0 0 * * SAT-SUN", &["day-of-week field", "reversed"]),
            ("*/0 * * * * *", &["second field", "step 0", "1 to 59"]),
            ("0 */60 * * * *", &["minute field", "step 60", "1 to 59"]),
            ("0 0 */24 * * *", &["hour field", "step 24", "1 to 23"]),
            ("0 0 0 * 1-6/12 *", &["month field", "step 12", "1 to 11"]),
            ("0 0 0 * * */", &["day-of-week field", "step \"\""]),
            ("0 0 0 * * 1/x", &["day-of-week field", "not a number"]),
            ("0 1,,2 * * * *", &["minute field", "empty list item"]),
            ("0 1, * * * *", &["minute field", "empty list item"]),
            ("0 0 0 * FOO *", &["month field", "unknown name \"FOO\"", "JAN-DEC"]),
            ("0 0 0 * * FUN", &["day-of-week field", "unknown name \"FUN\"", "SUN-SAT"]),
            ("0 0 x * * *", &["hour field", "\"x\"", "not a number"]),
            ("0 0 5- * * *", &["hour field", "missing value"]),
            ("0 0 -5 * * *", &["hour field", "missing value"]),
            ("0 0 0 L * *", &["day-of-month field", "\"L\"", "not supported"]),
            ("0 0 0 15W * *", &["day-of-month field", "not supported"]),
            ("0 0 0 LW * *", &["day-of-month field", "not supported"]),
            ("0 0 0 * * 5L", &["day-of-week field", "not supported"]),
            ("0 0 0 * * MON#2", &["day-of-week field", "\"#\"", "not supported"]),
            ("0 0 0 * * 1#3", &["day-of-week field", "not supported"]),
            ("? 0 0 * * *", &["second field", "\"?\" is only allowed"]),
            ("0 0 0 * ? *", &["month field", "\"?\" is only allowed"]),
            ("@reboot", &["unknown macro", "@reboot"]),
            ("0 0 0 30 2 *", &["day-of-month field", "day 30", "never occurs", "29 days"]),
            ("0 0 0 31 4,6,9,11 *", &["day-of-month field", "day 31", "never occurs", "30 days"]),
            ("0 0 0 30,31 FEB ?", &["day-of-month field", "never occurs"]),
        ];
        for (text, needles) in cases {
            let err = CronExpr::parse(text).expect_err(text);
            assert_eq!(err.expression, text.trim());
            let shown = err.to_string();
            assert!(shown.contains(&err.message) && shown.contains(&format!("{:?}", text.trim())), "{shown}");
            for needle in *needles {
                assert!(err.message.contains(needle), "{text:?}: {:?} lacks {needle:?}", err.message);
            }
        }
    }

    #[test]
    fn accepts_rare_but_possible_days() {
        // Feb 29 exists in leap years; the 31st exists in some selected month; with day-of-week
        // restricted the OR rule makes any day-of-month acceptable.
        assert!(CronExpr::parse("0 0 0 29 2 *").is_ok());
        assert!(CronExpr::parse("0 0 0 31 4,5 *").is_ok());
        assert!(CronExpr::parse("0 0 0 30 2 MON").is_ok());
        assert!(CronExpr::parse("0 0 0 30,5 2 *").is_ok());
        assert!(CronExpr::parse("0 0 0 */30 * *").is_ok());
        assert!(CronExpr::parse("0 0 0 * * 0-7/7").is_ok());
    }

    #[test]
    fn zone_lookup() {
        assert_eq!(tz("UTC").iana_name(), Some("UTC"));
        assert_eq!(tz("Europe/Berlin").iana_name(), Some("Europe/Berlin"));
        let err = zone("Mars/Olympus_Mons").unwrap_err();
        assert_eq!(err.expression, "Mars/Olympus_Mons");
        assert!(err.message.contains("unknown time zone \"Mars/Olympus_Mons\""), "{err}");
    }

    // ---- next_fire in UTC ----------------------------------------------------------------

    #[test]
    fn every_second_and_every_fifteen_minutes() {
        let utc = tz("UTC");
        let each = expr("* * * * * *");
        assert_eq!(next_fire(&each, &utc, at("2026-01-01T00:00:00Z")), Some(at("2026-01-01T00:00:01Z")));
        assert_eq!(next_fire(&each, &utc, at("2026-01-01T00:00:00.5Z")), Some(at("2026-01-01T00:00:01Z")));
        assert_eq!(next_fire(&each, &utc, at("2025-12-31T23:59:59Z")), Some(at("2026-01-01T00:00:00Z")));
        assert_eq!(next_fire(&each, &utc, at("1969-12-31T23:59:58.25Z")), Some(at("1969-12-31T23:59:59Z")));

        let quarter = expr("0 */15 * * * *");
        assert_eq!(next_fire(&quarter, &utc, at("2026-01-01T10:07:30Z")), Some(at("2026-01-01T10:15:00Z")));
        assert_eq!(next_fire(&quarter, &utc, at("2026-01-01T10:15:00Z")), Some(at("2026-01-01T10:30:00Z")));
        assert_eq!(
            fires("*/15 * * * *", "UTC", "2026-01-01T23:30:00Z", 3),
            instants(&["2026-01-01T23:45:00Z", "2026-01-02T00:00:00Z", "2026-01-02T00:15:00Z"])
        );
    }

    #[test]
    fn weekdays_at_half_past_nine() {
        // 2026-01-02 is a Friday.
        assert_eq!(
            fires("0 30 9 * * MON-FRI", "UTC", "2026-01-02T10:00:00Z", 3),
            instants(&["2026-01-05T09:30:00Z", "2026-01-06T09:30:00Z", "2026-01-07T09:30:00Z"])
        );
        assert_eq!(
            fires("0 30 9 * * 1-5", "UTC", "2026-01-02T09:29:59Z", 1),
            instants(&["2026-01-02T09:30:00Z"])
        );
    }

    #[test]
    fn month_and_year_rollovers() {
        assert_eq!(
            fires("0 0 0 1 * *", "UTC", "2026-11-15T00:00:00Z", 3),
            instants(&["2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z", "2027-02-01T00:00:00Z"])
        );
        assert_eq!(
            fires("0 0 0 31 * *", "UTC", "2026-01-31T00:00:00Z", 3),
            instants(&["2026-03-31T00:00:00Z", "2026-05-31T00:00:00Z", "2026-07-31T00:00:00Z"])
        );
        assert_eq!(
            fires("59 59 23 31 12 *", "UTC", "2026-12-31T23:59:59Z", 1),
            instants(&["2027-12-31T23:59:59Z"])
        );
        assert_eq!(fires("@yearly", "UTC", "2026-06-01T00:00:00Z", 1), instants(&["2027-01-01T00:00:00Z"]));
    }

    #[test]
    fn february_29_in_leap_years_only() {
        assert_eq!(
            fires("0 0 12 29 2 *", "UTC", "2026-01-01T00:00:00Z", 3),
            instants(&["2028-02-29T12:00:00Z", "2032-02-29T12:00:00Z", "2036-02-29T12:00:00Z"])
        );
        // 2100 is not a leap year.
        assert_eq!(
            fires("0 0 0 29 2 *", "UTC", "2096-03-01T00:00:00Z", 1),
            instants(&["2104-02-29T00:00:00Z"])
        );
    }

    #[test]
    fn day_of_month_or_day_of_week() {
        // Both restricted: the 13th OR any Friday (2026-01-02 and 2026-01-09 are Fridays).
        assert_eq!(
            fires("0 0 0 13 * FRI", "UTC", "2026-01-01T00:00:00Z", 4),
            instants(&[
                "2026-01-02T00:00:00Z",
                "2026-01-09T00:00:00Z",
                "2026-01-13T00:00:00Z",
                "2026-01-16T00:00:00Z"
            ])
        );
        // Only one restricted: both must match (Friday the 13th is 2026-02-13, then 2026-03-13).
        assert_eq!(
            fires("0 0 0 13 * *", "UTC", "2026-01-01T00:00:00Z", 2),
            instants(&["2026-01-13T00:00:00Z", "2026-02-13T00:00:00Z"])
        );
        assert_eq!(
            fires("0 0 0 ? * FRI", "UTC", "2026-01-01T00:00:00Z", 2),
            instants(&["2026-01-02T00:00:00Z", "2026-01-09T00:00:00Z"])
        );
        // A stepped star counts as restricted: odd days OR Sundays.
        assert_eq!(
            fires("0 0 0 */2 * SUN", "UTC", "2026-01-01T00:00:00Z", 4),
            instants(&[
                "2026-01-03T00:00:00Z",
                "2026-01-04T00:00:00Z",
                "2026-01-05T00:00:00Z",
                "2026-01-07T00:00:00Z"
            ])
        );
    }

    #[test]
    fn none_outside_the_representable_range() {
        let (e, utc) = (expr("0 0 0 1 1 *"), tz("UTC"));
        assert_eq!(next_fire(&e, &utc, at("9999-06-01T00:00:00Z")), None);
        assert_eq!(next_fire(&e, &utc, i64::MAX), None);
        assert_eq!(next_fire(&e, &utc, i64::MIN), None);
        assert_eq!(next_fire(&e, &utc, at("9998-06-01T00:00:00Z")), Some(at("9999-01-01T00:00:00Z")));
    }

    #[test]
    fn sparse_search_jumps_instead_of_stepping() {
        let mut resolutions = 0;
        let found = search(&expr("0 0 12 29 2 *"), &tz("UTC"), at("2026-01-01T00:00:00Z"), &mut resolutions);
        assert_eq!(found, Some(at("2028-02-29T12:00:00Z")));
        assert_eq!(resolutions, 1);
    }

    // ---- daylight-saving time ------------------------------------------------------------

    #[test]
    fn every_second_across_new_york_spring_gap() {
        let got = fires("* * * * * *", "America/New_York", "2026-03-08T01:59:57-05:00", 4);
        assert_eq!(
            got,
            instants(&[
                "2026-03-08T01:59:58-05:00",
                "2026-03-08T01:59:59-05:00",
                "2026-03-08T03:00:00-04:00", // the whole gap, once
                "2026-03-08T03:00:01-04:00",
            ])
        );
        assert!(got.windows(2).all(|w| w[1] - w[0] == SECOND_MICROS));
        // Same in Berlin.
        let got = fires("* * * * * *", "Europe/Berlin", "2026-03-29T01:59:59+01:00", 2);
        assert_eq!(got, instants(&["2026-03-29T03:00:00+02:00", "2026-03-29T03:00:01+02:00"]));
    }

    #[test]
    fn every_second_across_new_york_fall_fold() {
        let (e, z) = (expr("* * * * * *"), tz("America/New_York"));
        let mut t = at("2026-11-01T00:59:58-04:00");
        let mut seen = Vec::new();
        while t < at("2026-11-01T02:00:00-05:00") {
            t = next_fire(&e, &z, t).unwrap();
            seen.push(t);
        }
        // 00:59:59 EDT, then 01:00:00 EDT ... 01:59:59 EDT each once, then 02:00:00 EST.
        assert_eq!(seen.len(), 1 + 3600 + 1);
        assert_eq!(seen[0], at("2026-11-01T00:59:59-04:00"));
        assert_eq!(seen[1], at("2026-11-01T01:00:00-04:00"));
        assert_eq!(seen[3600], at("2026-11-01T01:59:59-04:00"));
        assert!(seen[..3601].windows(2).all(|w| w[1] - w[0] == SECOND_MICROS));
        assert_eq!(seen[3601], at("2026-11-01T02:00:00-05:00"));
        assert_eq!(seen[3601] - seen[3600], HOUR_MICROS + SECOND_MICROS);

        // From anywhere in the second pass, the next fire is 02:00 EST, found in a single jump.
        for inside in
            ["2026-11-01T01:00:00-05:00", "2026-11-01T01:30:00.5-05:00", "2026-11-01T01:59:59-05:00"]
        {
            let mut resolutions = 0;
            assert_eq!(search(&e, &z, at(inside), &mut resolutions), Some(at("2026-11-01T02:00:00-05:00")));
            assert!(resolutions <= 2, "{resolutions} resolutions from {inside}");
        }
    }

    #[test]
    fn every_second_across_berlin_fall_fold() {
        let got = fires("* * * * * *", "Europe/Berlin", "2026-10-25T02:59:58+02:00", 2);
        assert_eq!(got, instants(&["2026-10-25T02:59:59+02:00", "2026-10-25T03:00:00+01:00"]));
        let got = fires("* * * * * *", "Europe/Berlin", "2026-10-25T02:00:00+01:00", 1);
        assert_eq!(got, instants(&["2026-10-25T03:00:00+01:00"]));
    }

    #[test]
    fn daily_in_the_gap_fires_at_the_gap_end() {
        assert_eq!(
            fires("0 30 2 * * *", "America/New_York", "2026-03-07T12:00:00-05:00", 3),
            instants(&[
                "2026-03-08T03:00:00-04:00",
                "2026-03-09T02:30:00-04:00",
                "2026-03-10T02:30:00-04:00"
            ])
        );
        assert_eq!(
            fires("0 30 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00+01:00", 3),
            instants(&[
                "2026-03-29T03:00:00+02:00",
                "2026-03-30T02:30:00+02:00",
                "2026-03-31T02:30:00+02:00"
            ])
        );
        // Several slots in one gap fire once, at the gap end.
        assert_eq!(
            fires("0 */20 2 * * *", "America/New_York", "2026-03-08T01:00:00-05:00", 2),
            instants(&["2026-03-08T03:00:00-04:00", "2026-03-09T02:00:00-04:00"])
        );
        // Lord Howe springs forward by 30 minutes: 02:00 -> 02:30.
        assert_eq!(
            fires("0 15 2 * * *", "Australia/Lord_Howe", "2026-10-03T12:00:00+10:30", 2),
            instants(&["2026-10-04T02:30:00+11:00", "2026-10-05T02:15:00+11:00"])
        );
    }

    #[test]
    fn daily_in_the_fold_fires_on_the_first_pass() {
        assert_eq!(
            fires("0 30 1 * * *", "America/New_York", "2026-10-31T12:00:00-04:00", 2),
            instants(&["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"])
        );
        assert_eq!(
            fires("0 30 1 * * *", "America/New_York", "2026-11-01T01:30:00-04:00", 1),
            instants(&["2026-11-02T01:30:00-05:00"])
        );
        assert_eq!(
            fires("0 30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00+02:00", 2),
            instants(&["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"])
        );
    }

    #[test]
    fn hourly_across_new_york_transitions() {
        assert_eq!(
            fires("0 0 * * * *", "America/New_York", "2026-03-08T00:30:00-05:00", 3),
            instants(&["2026-03-08T06:00:00Z", "2026-03-08T07:00:00Z", "2026-03-08T08:00:00Z"])
        );
        // 01:00 EDT, (01:00 EST is the second pass: nothing), 02:00 EST, 03:00 EST.
        assert_eq!(
            fires("0 0 * * * *", "America/New_York", "2026-11-01T00:30:00-04:00", 3),
            instants(&["2026-11-01T05:00:00Z", "2026-11-01T07:00:00Z", "2026-11-01T08:00:00Z"])
        );
    }

    #[test]
    fn hourly_across_berlin_transitions() {
        // 01:00 CET, 02:00 (gap) and 03:00 CEST both resolve to 01:00Z, 04:00 CEST.
        assert_eq!(
            fires("0 0 * * * *", "Europe/Berlin", "2026-03-29T00:30:00+01:00", 3),
            instants(&["2026-03-29T00:00:00Z", "2026-03-29T01:00:00Z", "2026-03-29T02:00:00Z"])
        );
        // 01:00 CEST, 02:00 CEST, (02:00 CET: second pass), 03:00 CET.
        assert_eq!(
            fires("0 0 * * * *", "Europe/Berlin", "2026-10-25T00:30:00+02:00", 3),
            instants(&["2026-10-24T23:00:00Z", "2026-10-25T00:00:00Z", "2026-10-25T02:00:00Z"])
        );
    }

    #[test]
    fn internal_weekday_agrees_with_jiff() {
        for (y, m, d) in
            [(1970, 1, 1), (2000, 2, 29), (2026, 3, 8), (1600, 3, 1), (-44, 3, 15), (9999, 12, 31)]
        {
            let expected = jiff::civil::date(y as i16, m as i8, d as i8).weekday().to_sunday_zero_offset();
            assert_eq!(weekday(y, m, d), expected as u32, "{y}-{m}-{d}");
        }
    }

    // ---- property tests ------------------------------------------------------------------

    const ZONES: [&str; 5] =
        ["UTC", "America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "Asia/Kolkata"];

    fn zones() -> &'static [TimeZone] {
        static ZONES_LOADED: OnceLock<Vec<TimeZone>> = OnceLock::new();
        ZONES_LOADED.get_or_init(|| ZONES.iter().map(|name| tz(name)).collect())
    }

    fn plus_seconds(dt: DateTime, seconds: i64) -> DateTime {
        dt.checked_add(SignedDuration::from_secs(seconds)).unwrap()
    }

    /// The DST rule, computed independently of the implementation: the unique instant, the first
    /// of two, or for a gap the first instant whose offset is the post-gap one (binary search).
    fn reference_resolve(zone: &TimeZone, c: DateTime) -> Timestamp {
        let amb = zone.to_ambiguous_timestamp(c);
        match amb.offset() {
            AmbiguousOffset::Unambiguous { .. } => amb.unambiguous().unwrap(),
            AmbiguousOffset::Fold { .. } => amb.earlier().unwrap(),
            AmbiguousOffset::Gap { before, after } => {
                // `c - after` precedes the gap end, `c - before` does not.
                let mut low = after.to_timestamp(c).unwrap().as_second();
                let mut high = before.to_timestamp(c).unwrap().as_second();
                while high - low > 1 {
                    let mid = (low + high) / 2;
                    if zone.to_offset(Timestamp::from_second(mid).unwrap()) == after {
                        high = mid;
                    } else {
                        low = mid;
                    }
                }
                Timestamp::from_second(high).unwrap()
            }
        }
    }

    /// An instant in `year`, near one of the zone's transitions when `near` is set.
    fn instant(zone: &TimeZone, year: i16, near: bool, pick: usize, offset_secs: i64, micros: i64) -> i64 {
        let start = jiff::civil::date(year, 1, 1).at(0, 0, 0, 0).to_zoned(TimeZone::UTC).unwrap().timestamp();
        let base = match zone.following(start).nth(pick % 2) {
            Some(transition) if near => transition.timestamp().as_second() + offset_secs % 10_800,
            _ => start.as_second() + offset_secs.rem_euclid(365 * 86_400),
        };
        base * SECOND_MICROS + micros
    }

    fn item(min: u32, max: u32) -> impl Strategy<Value = String> {
        let width = max - min;
        let ordered = |(a, b): (u32, u32)| (a.min(b), a.max(b));
        prop_oneof![
            3 => Just("*".to_string()),
            3 => (min..=max).prop_map(|v| v.to_string()),
            2 => (min..=max, min..=max).prop_map(ordered).prop_map(|(a, b)| format!("{a}-{b}")),
            2 => (1..=width).prop_map(|n| format!("*/{n}")),
            1 => ((min..=max, min..=max).prop_map(ordered), 1..=width)
                .prop_map(|((a, b), n)| format!("{a}-{b}/{n}")),
            1 => (min..=max, 1..=width).prop_map(|(a, n)| format!("{a}/{n}")),
        ]
    }

    fn field(min: u32, max: u32) -> impl Strategy<Value = String> {
        prop::collection::vec(item(min, max), 1..=3).prop_map(|items| items.join(","))
    }

    /// Any expression, with day fields often unrestricted.
    fn any_expression() -> impl Strategy<Value = String> {
        let day = |min, max| prop_oneof![2 => Just("*".to_string()), 1 => field(min, max)];
        (field(0, 59), field(0, 59), field(0, 23), day(1, 31), day(1, 12), day(0, 7))
            .prop_map(|(s, m, h, dom, mon, dow)| format!("{s} {m} {h} {dom} {mon} {dow}"))
    }

    /// Expressions that match at least once an hour, at any seconds.
    fn dense_expression() -> impl Strategy<Value = String> {
        let minutes =
            prop_oneof![Just("*".to_string()), (1..=5u32).prop_map(|n| format!("*/{n}")), field(0, 59)];
        (prop::option::of(field(0, 59)), minutes).prop_map(|(seconds, minutes)| match seconds {
            Some(s) => format!("{s} {minutes} * * * *"),
            None => format!("{minutes} * * * *"),
        })
    }

    /// Checks that `fire` is the resolution of a matching civil time: its own wall-clock time, or
    /// a slot in the gap that ends at `fire`.
    fn assert_is_resolved_slot(e: &CronExpr, zone: &TimeZone, fire: i64) -> Result<(), TestCaseError> {
        let fire = Timestamp::from_microsecond(fire).unwrap();
        let wall = zone.to_datetime(fire);
        prop_assert_eq!(wall.subsec_nanosecond(), 0);
        if e.matches(wall) && reference_resolve(zone, wall) == fire {
            return Ok(());
        }
        let before = zone.to_offset(fire - SignedDuration::from_secs(1));
        let after = zone.to_offset(fire);
        prop_assert!(after > before, "{} is neither a slot's instant nor a gap end", fire);
        let mut slot = before.to_datetime(fire);
        while slot < wall {
            if e.matches(slot) {
                prop_assert_eq!(reference_resolve(zone, slot), fire);
                return Ok(());
            }
            slot = plus_seconds(slot, 1);
        }
        prop_assert!(false, "no matching slot in the gap ending at {}", fire);
        Ok(())
    }

    fn config() -> ProptestConfig {
        ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() }
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn prop_next_fire_is_a_later_resolved_slot(
            text in any_expression(),
            zone_index in 0..ZONES.len(),
            year in 2020i16..=2035,
            near in any::<bool>(),
            pick in 0..2usize,
            offset_secs in any::<i64>(),
            micros in prop_oneof![Just(0i64), 0..SECOND_MICROS],
            between in 0.0..1.0f64,
            later in 0..3 * 86_400 * SECOND_MICROS,
        ) {
            let parsed = CronExpr::parse(&text);
            prop_assume!(parsed.is_ok());
            let e = parsed.unwrap();
            let zone = &zones()[zone_index];
            let t = instant(zone, year, near, pick, offset_secs, micros);
            let fire = next_fire(&e, zone, t);
            prop_assert!(fire.is_some(), "{} never fires after {}", text, t);
            let fire = fire.unwrap();
            prop_assert!(fire > t);
            assert_is_resolved_slot(&e, zone, fire)?;
            // Nothing fires in [t, fire): asking from any instant in between gives the same answer.
            let middle = t + ((fire - t) as f64 * between) as i64;
            prop_assert_eq!(next_fire(&e, zone, middle.min(fire - 1)), Some(fire));
            prop_assert_eq!(next_fire(&e, zone, fire - 1), Some(fire));
            // Monotone in t.
            prop_assert!(next_fire(&e, zone, t + later).unwrap() >= fire);
        }

        #[test]
        fn prop_next_fire_matches_brute_force(
            text in dense_expression(),
            zone_index in 0..ZONES.len(),
            year in 2020i16..=2035,
            near in prop::bool::weighted(0.8),
            pick in 0..2usize,
            offset_secs in any::<i64>(),
            micros in prop_oneof![Just(0i64), 0..SECOND_MICROS],
        ) {
            let e = expr(&text);
            let zone = &zones()[zone_index];
            let t = instant(zone, year, near, pick, offset_secs, micros);
            let after = Timestamp::from_microsecond(t).unwrap();
            // Step civil time second by second; resolution is monotone, so the first match that
            // resolves after t is the answer.
            let mut c = zone.to_datetime(after).with().subsec_nanosecond(0).build().unwrap();
            let mut expected = None;
            for _ in 0..4 * 3_600 {
                c = plus_seconds(c, 1);
                if e.matches(c) {
                    let resolved = reference_resolve(zone, c);
                    if resolved > after {
                        expected = Some(resolved.as_microsecond());
                        break;
                    }
                }
            }
            prop_assert!(expected.is_some(), "brute force found nothing for {}", text);
            prop_assert_eq!(next_fire(&e, zone, t), expected);
        }

        #[test]
        fn prop_resolution_is_the_rule_and_monotone(
            zone_index in 0..ZONES.len(),
            year in 2020i16..=2035,
            pick in 0..2usize,
            offset_secs in -10_800i64..10_800,
            step in 0i64..7_200,
        ) {
            let zone = &zones()[zone_index];
            let t = instant(zone, year, true, pick, offset_secs, 0);
            // Civil times around the transition, read with the pre-transition offset.
            let c = zone.to_offset(Timestamp::from_microsecond(t).unwrap() - SignedDuration::from_hours(4))
                .to_datetime(Timestamp::from_microsecond(t).unwrap());
            let c2 = plus_seconds(c, step);
            let (r, r2) = (resolve(zone, c).unwrap(), resolve(zone, c2).unwrap());
            prop_assert_eq!(r, reference_resolve(zone, c));
            prop_assert_eq!(r2, reference_resolve(zone, c2));
            prop_assert!(r <= r2);
            prop_assert!(zone.to_datetime(r) >= c);
        }
    }
}
