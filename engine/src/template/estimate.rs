//! Estimates of what a filter or method would make, taken before the
//! builtin runs: `join`, `replace`, `indent`, `batch`, `slice`, `format`,
//! `sum`, `string` and `pprint` can make far more than they are given, so
//! [`super::bounds`] asks here first and refuses what would pass the limit.

use minijinja::value::{Value, ValueKind};
use minijinja::Error as JinjaError;

use super::budget::{bounded_text, exceeded, Budget, MAX_ITEMS};

/// Bytes of `items` printed and joined with `joiner`, refused past the limit.
pub(super) fn joined_len(
    b: &Budget,
    items: &Value,
    joiner: usize,
    what: &str,
) -> Result<(), JinjaError> {
    let too_big = || exceeded(format!("the string {what} would make"), b.limit, "bytes");
    let mut total = 0usize;
    let iter: Box<dyn Iterator<Item = Value>> = match items.as_str() {
        // Joining a string joins its characters.
        Some(s) => Box::new(
            s.chars()
                .map(|c| Value::from(c.to_string()))
                .collect::<Vec<_>>()
                .into_iter(),
        ),
        None => match items.try_iter() {
            Ok(it) => Box::new(it),
            Err(_) => return Ok(()),
        },
    };
    for (i, item) in iter.enumerate() {
        if i >= MAX_ITEMS {
            return Err(exceeded(
                format!("the items {what} joins"),
                MAX_ITEMS,
                "items",
            ));
        }
        b.visit()?;
        let sep = if i > 0 { joiner } else { 0 };
        let room = b.limit.saturating_sub(total);
        let len = b.display_len(&item, room).ok_or_else(too_big)?;
        total = total.saturating_add(len).saturating_add(sep);
        if total > b.limit {
            return Err(too_big());
        }
    }
    Ok(())
}

/// Bytes `s.replace(old, new)` makes (at most `count` replacements).
pub(super) fn replaced_len(s: &str, old: &str, new: &str, count: Option<usize>) -> usize {
    let hits = if old.is_empty() {
        s.chars().count() + 1
    } else {
        s.matches(old).count()
    };
    let hits = count.map_or(hits, |c| hits.min(c));
    s.len()
        .saturating_sub(hits.saturating_mul(old.len()))
        .saturating_add(hits.saturating_mul(new.len()))
}

/// An upper bound on what a printf- or `str.format`-style format string
/// makes: its own text, its arguments printed, and every number in it taken
/// as a field width.
pub(super) fn formatted_len(b: &Budget, fmt: &str, args: &[Value]) -> Result<usize, JinjaError> {
    let too_big = || exceeded("the string a format makes", b.limit, "bytes");
    let mut total = fmt.len();
    for digits in fmt.split(|c: char| !c.is_ascii_digit()) {
        if !digits.is_empty() {
            let width = digits.parse::<usize>().map_err(|_| too_big())?;
            total = total.saturating_add(width);
        }
    }
    for a in args {
        let len = b.display_len(a, b.limit).ok_or_else(too_big)?;
        total = total.saturating_add(len);
    }
    if total > b.limit {
        return Err(too_big());
    }
    Ok(total)
}

/// The integer a keyword argument or the positional argument `at` gives.
pub(super) fn int_arg(args: &[Value], at: usize, keyword: &str) -> Option<usize> {
    if let Some(kw) = args.last().filter(|v| v.kind() == ValueKind::Map) {
        if let Ok(v) = kw.get_attr(keyword) {
            if let Some(n) = v.as_usize() {
                return Some(n);
            }
        }
    }
    args.get(at).and_then(Value::as_usize)
}

/// What a builtin filter would make, estimated before it runs.
pub(super) fn precheck_filter(b: &Budget, name: &str, args: &[Value]) -> Result<(), JinjaError> {
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    match name {
        "join" => {
            let joiner = arg(1).as_str().map_or(0, str::len);
            joined_len(b, &arg(0), joiner, "join")
        }
        "replace" => {
            let (s, old, new) = (arg(0), arg(1), arg(2));
            let (Some(s), Some(old), Some(new)) = (s.as_str(), old.as_str(), new.as_str()) else {
                return Ok(());
            };
            let len = replaced_len(s, old, new, arg(3).as_usize());
            if len > b.limit {
                return Err(exceeded(
                    format!("the string replace would make ({len} bytes)"),
                    b.limit,
                    "bytes",
                ));
            }
            Ok(())
        }
        "indent" => {
            let s = arg(0);
            let lines = s.as_str().map_or(0, |s| s.matches('\n').count() + 1);
            let width = int_arg(args, 1, "width").unwrap_or(4);
            let len = lines
                .saturating_mul(width)
                .saturating_add(s.as_str().map_or(0, str::len));
            if len > b.limit {
                return Err(exceeded(
                    format!("the string indent would make ({lines} lines, {width} wide)"),
                    b.limit,
                    "bytes",
                ));
            }
            Ok(())
        }
        "batch" | "slice" => {
            let count = arg(1).as_usize().unwrap_or(0);
            if count > MAX_ITEMS {
                return Err(exceeded(
                    format!("the lists {name}({count}) would make"),
                    MAX_ITEMS,
                    "items",
                ));
            }
            Ok(())
        }
        "format" => {
            let fmt = arg(0);
            formatted_len(b, fmt.as_str().unwrap_or(""), args.get(1..).unwrap_or(&[])).map(|_| ())
        }
        "sum" => {
            // Summing strings concatenates them.
            if arg(0)
                .try_iter()
                .is_ok_and(|mut it| it.any(|v| v.kind() == ValueKind::String))
            {
                joined_len(b, &arg(0), 0, "sum")?;
            }
            Ok(())
        }
        "string" => bounded_text(b, &arg(0), false, "string").map(|_| ()),
        "pprint" => bounded_text(b, &arg(0), true, "pprint").map(|_| ()),
        _ => Ok(()),
    }
}
