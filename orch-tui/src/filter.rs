//! The command list's filter language, typed after `/`:
//! `state:failed name:send_email target:a attempts>=2 age>1h err~timeout`.
//!
//! Terms are separated by spaces and must all hold; a value with spaces goes in
//! double quotes (`err~"connection refused"`). `age` is time since creation
//! (`age>1h` is older than an hour, `age<5m` newer than five minutes); `err~` matches
//! the last error's text, ignoring ASCII case.

use std::fmt;
use std::time::Duration;

use orch::store::ListParams;
use orch::{State, Timestamp};

/// A parsed filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// `state:…`
    pub state: Option<State>,
    /// `name:…`
    pub name: Option<String>,
    /// `target:…`
    pub target: Option<String>,
    /// `attempts>=n` (or `attempts>n`, stored as `>= n + 1`).
    pub min_attempts: Option<u32>,
    /// `age>d`: created more than `d` ago.
    pub older_than: Option<Duration>,
    /// `age<d`: created less than `d` ago.
    pub newer_than: Option<Duration>,
    /// `err~text`
    pub error: Option<String>,
}

/// A filter that does not parse, with the term at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError(pub String);

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FilterError {}

/// The terms the filter knows, for help texts.
pub const FILTER_HELP: &str =
    "state:<state> name:<name> target:<target> attempts>=<n> age>|<<duration> err~<text>";

impl Filter {
    /// Parses `text` (empty text is no filter).
    pub fn parse(text: &str) -> Result<Filter, FilterError> {
        let mut f = Filter::default();
        for term in terms(text)? {
            let term = term.as_str();
            if let Some(v) = term.strip_prefix("state:") {
                f.state = Some(State::parse(v).map_err(|_| {
                    FilterError(format!(
                        "unknown state {v:?}: use blocked, pending, running, succeeded, failed or cancelled"
                    ))
                })?);
            } else if let Some(v) = term.strip_prefix("name:") {
                f.name = Some(non_empty(term, v)?);
            } else if let Some(v) = term.strip_prefix("target:") {
                f.target = Some(non_empty(term, v)?);
            } else if let Some(v) = term.strip_prefix("attempts>=") {
                f.min_attempts = Some(number(term, v)?);
            } else if let Some(v) = term.strip_prefix("attempts>") {
                f.min_attempts = Some(number(term, v)?.saturating_add(1));
            } else if let Some(v) = term.strip_prefix("age>") {
                f.older_than = Some(parse_duration(v).map_err(|e| FilterError(format!("{term}: {e}")))?);
            } else if let Some(v) = term.strip_prefix("age<") {
                f.newer_than = Some(parse_duration(v).map_err(|e| FilterError(format!("{term}: {e}")))?);
            } else if let Some(v) = term.strip_prefix("err~") {
                f.error = Some(non_empty(term, v)?);
            } else {
                return Err(FilterError(format!("unknown filter term {term:?}; terms: {FILTER_HELP}")));
            }
        }
        Ok(f)
    }

    /// Whether no term is set.
    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }

    /// Applies the filter to list parameters, ages measured back from `now`.
    pub fn apply(&self, params: &mut ListParams, now: Timestamp) {
        params.state = self.state;
        params.name = self.name.clone();
        params.target = self.target.clone();
        params.min_attempts = self.min_attempts;
        params.created_before = self.older_than.map(|d| now - d);
        params.created_after = self.newer_than.map(|d| now - d);
        params.error_contains = self.error.clone();
    }
}

/// Splits at spaces outside double quotes, dropping the quotes.
fn terms(text: &str) -> Result<Vec<String>, FilterError> {
    let (mut terms, mut current, mut quoted) = (Vec::new(), String::new(), false);
    for c in text.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !current.is_empty() {
                    terms.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if quoted {
        return Err(FilterError(format!("a closing \" is missing in {text:?}")));
    }
    if !current.is_empty() {
        terms.push(current);
    }
    Ok(terms)
}

fn non_empty(term: &str, v: &str) -> Result<String, FilterError> {
    if v.is_empty() { Err(FilterError(format!("{term}: a value is missing"))) } else { Ok(v.to_owned()) }
}

fn number(term: &str, v: &str) -> Result<u32, FilterError> {
    v.parse().map_err(|_| FilterError(format!("{term}: {v:?} is not a whole number")))
}

/// Parses durations such as `500ms`, `30s`, `5m`, `1h30m`, `2d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if text.is_empty() {
        return Err("a duration is missing (e.g. 30s, 5m, 1h)".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("{text:?} is not a duration (e.g. 30s, 5m, 1h)"));
        }
        let n: u64 = rest[..digits].parse().map_err(|_| format!("{text:?}: number too large"))?;
        rest = &rest[digits..];
        let unit = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let part = match &rest[..unit] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "d" => Duration::from_secs(n.saturating_mul(86_400)),
            "" => return Err(format!("{text:?}: a unit is missing (ms, s, m, h or d)")),
            other => return Err(format!("{text:?}: unknown unit {other:?} (ms, s, m, h or d)")),
        };
        total = total.saturating_add(part);
        rest = &rest[unit..];
    }
    Ok(total)
}

/// Formats a duration the short way a monitor shows ages: `850ms`, `42s`, `3m12s`,
/// `5h03m`, `2d04h`.
pub fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s == 0 {
        format!("{}ms", d.as_millis())
    } else if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else if s < 86_400 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_term() {
        let f =
            Filter::parse("state:failed name:send_email target:a attempts>=2 age>1h err~timeout").unwrap();
        assert_eq!(f.state, Some(State::Failed));
        assert_eq!(f.name.as_deref(), Some("send_email"));
        assert_eq!(f.target.as_deref(), Some("a"));
        assert_eq!(f.min_attempts, Some(2));
        assert_eq!(f.older_than, Some(Duration::from_secs(3600)));
        assert_eq!(f.error.as_deref(), Some("timeout"));
        assert_eq!(Filter::parse("attempts>2").unwrap().min_attempts, Some(3));
        assert_eq!(Filter::parse("age<90s").unwrap().newer_than, Some(Duration::from_secs(90)));
        assert!(Filter::parse("  ").unwrap().is_empty());
        let quoted = Filter::parse(r#"err~"connection refused" name:a"#).unwrap();
        assert_eq!(quoted.error.as_deref(), Some("connection refused"));
        assert_eq!(quoted.name.as_deref(), Some("a"));
    }

    #[test]
    fn rejects_bad_terms_with_the_term() {
        assert!(Filter::parse("state:done").unwrap_err().0.contains("\"done\""));
        assert!(Filter::parse("colour:red").unwrap_err().0.contains("colour:red"));
        assert!(Filter::parse("attempts>=x").unwrap_err().0.contains("not a whole number"));
        assert!(Filter::parse("age>1y").unwrap_err().0.contains("unknown unit"));
        assert!(Filter::parse("name:").unwrap_err().0.contains("missing"));
        assert!(Filter::parse(r#"err~"open"#).unwrap_err().0.contains("closing"));
    }

    #[test]
    fn applies_ages_back_from_now() {
        let now = Timestamp::from_millis(10_000_000);
        let mut p = ListParams::default();
        Filter::parse("age>1h age<2h").unwrap().apply(&mut p, now);
        assert_eq!(p.created_before, Some(now - Duration::from_secs(3600)));
        assert_eq!(p.created_after, Some(now - Duration::from_secs(7200)));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("m").is_err());
        assert_eq!(short_duration(Duration::from_secs(192)), "3m12s");
        assert_eq!(short_duration(Duration::from_secs(5 * 3600 + 180)), "5h03m");
        assert_eq!(short_duration(Duration::from_millis(850)), "850ms");
    }
}
