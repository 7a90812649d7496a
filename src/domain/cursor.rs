//! Incremental cursor sources: the mark a flow starts from and what it read, as
//! `output.cursors` shows them, and the values of a cursor column (integers, decimals, dates,
//! timestamps with or without a time zone), read from Arrow and written as JSON and as the text
//! a database casts back to the column's type.
//!
//! # The boundary
//!
//! A source reads the rows whose cursor is **at least** the mark (`after`), and skips those
//! rows at the mark that the previous run already read (their fingerprints are kept in the
//! mark, `boundary`). So a row committed with a cursor equal to the mark after the previous run
//! read that value is read by the next run, and no row is read twice. A row committed later
//! with a cursor *below* the mark is not read (a cursor must grow with commit order: a sequence
//! or a commit timestamp); a full refresh reads everything again.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate};
use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One file a `new_files` source read: a file whose path, size or modification time changed
/// is a new file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FileMark {
    /// Relative to the store's path.
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// The modification time, ISO 8601 UTC with nanoseconds.
    pub modified_utc: String,
}

/// What one flow read of one incremental source (`output.cursors.<source>`): a cursor
/// source's `column`, `after`, `through`, or a `new_files` source's `files`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(into = "Value")]
pub struct CursorEntry {
    /// The cursor column.
    #[serde(default)]
    pub column: String,
    /// The mark the flow started from (`null`: it read everything).
    #[serde(default)]
    pub after: Value,
    /// The largest cursor value read, the next flow's mark (the mark itself when nothing newer
    /// was read; `null` while the source has not been read).
    #[serde(default)]
    pub through: Value,
    /// Rows read.
    pub rows: u64,
    /// Rows skipped because their cursor was NULL.
    #[serde(default)]
    pub null_rows: u64,
    /// Fingerprints of the rows read whose cursor equals `through`: the next flow reads rows
    /// at its mark again and skips these.
    #[serde(default)]
    pub boundary: Vec<String>,
    /// A `new_files` source: the files this flow read (none while it has not read them).
    #[serde(default)]
    pub files: Option<Vec<FileMark>>,
}

impl From<CursorEntry> for Value {
    fn from(e: CursorEntry) -> Value {
        let mut m = serde_json::Map::new();
        if let Some(files) = e.files {
            m.insert("files".into(), serde_json::to_value(files).unwrap_or_default());
            m.insert("rows".into(), Value::from(e.rows));
            return Value::Object(m);
        }
        m.insert("column".into(), Value::from(e.column));
        m.insert("after".into(), e.after);
        m.insert("through".into(), e.through);
        m.insert("rows".into(), Value::from(e.rows));
        if e.null_rows > 0 {
            m.insert("null_rows".into(), Value::from(e.null_rows));
        }
        if !e.boundary.is_empty() {
            m.insert("boundary".into(), Value::from(e.boundary));
        }
        Value::Object(m)
    }
}

impl CursorEntry {
    /// The entry of a `new_files` source that read `files` (`rows` rows).
    pub fn of_files(files: Vec<FileMark>, rows: u64) -> Self {
        CursorEntry {
            column: String::new(),
            after: Value::Null,
            through: Value::Null,
            rows,
            null_rows: 0,
            boundary: Vec::new(),
            files: Some(files),
        }
    }

    /// The log line of a finished read (`None` before the source is read).
    pub fn describe(&self) -> Option<String> {
        if let Some(files) = &self.files {
            let plural = |n: usize| if n == 1 { "" } else { "s" };
            return Some(format!(
                "read {} row{} from {} new file{}{}",
                self.rows,
                if self.rows == 1 { "" } else { "s" },
                files.len(),
                plural(files.len()),
                if files.is_empty() {
                    " (no file is new: the source is empty)"
                } else {
                    ""
                }
            ));
        }
        if self.through.is_null() && self.rows == 0 && self.null_rows == 0 {
            return None;
        }
        let plural = |n: u64| if n == 1 { "" } else { "s" };
        let range = match &self.after {
            Value::Null => format!("all rows, {} through {}", self.column, self.through),
            after => format!(
                "{} from {after} (rows at it not read before) through {}",
                self.column, self.through
            ),
        };
        let mut line = format!("read {} row{} by cursor: {range}", self.rows, plural(self.rows));
        if self.null_rows > 0 {
            line.push_str(&format!(
                "; skipped {} row{} whose {} is NULL (a cursor source never reads them)",
                self.null_rows,
                plural(self.null_rows),
                self.column
            ));
        }
        Some(line)
    }
}

/// Where a cursor source starts: the previous completed flow's `through` and boundary; for a
/// `new_files` source, the files that completed flows of the input read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CursorStart {
    pub after: Value,
    pub boundary: BTreeSet<u64>,
    /// `Some` for a `new_files` source: the files read before (none after a full refresh).
    pub files: Option<BTreeSet<FileMark>>,
}

impl CursorStart {
    /// The start that follows `previous` (what the latest completed flow read).
    pub fn after(previous: &CursorEntry) -> Self {
        if previous.through.is_null() {
            return CursorStart {
                after: previous.after.clone(),
                boundary: BTreeSet::new(),
                files: None,
            };
        }
        CursorStart {
            after: previous.through.clone(),
            boundary: previous
                .boundary
                .iter()
                .filter_map(|h| u64::from_str_radix(h, 16).ok())
                .collect(),
            files: None,
        }
    }

    /// The entry a flow starting here shows before it reads.
    pub fn entry(&self, column: &str) -> CursorEntry {
        if self.files.is_some() {
            return CursorEntry::of_files(Vec::new(), 0);
        }
        CursorEntry {
            column: column.to_string(),
            after: self.after.clone(),
            through: Value::Null,
            rows: 0,
            null_rows: 0,
            boundary: Vec::new(),
            files: None,
        }
    }
}

/// The cursors of a flow, by source name.
pub type Cursors = BTreeMap<String, CursorEntry>;

/// One value of a cursor column, comparable with the others of its column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CursorValue {
    Int(i128),
    /// An unscaled decimal (all of a column's values have its scale).
    Decimal(i128, i8),
    /// Days since 1970-01-01.
    Date(i32),
    /// Microseconds since 1970-01-01; `true` for an instant (a column with a time zone).
    Timestamp(i64, bool),
}

/// Whether a column of type `dt` can be a cursor.
pub fn cursor_type_ok(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Decimal128(..)
            | DataType::Date32
            | DataType::Timestamp(..)
    )
}

/// The value of row `row` of `array` (`None` for NULL or a type that is no cursor).
pub fn value_at(array: &ArrayRef, row: usize) -> Option<CursorValue> {
    if array.is_null(row) {
        return None;
    }
    let micros = |v: i64, unit: &TimeUnit| match unit {
        TimeUnit::Second => v.saturating_mul(1_000_000),
        TimeUnit::Millisecond => v.saturating_mul(1_000),
        TimeUnit::Microsecond => v,
        TimeUnit::Nanosecond => v.div_euclid(1_000),
    };
    Some(match array.data_type() {
        DataType::Int8 => CursorValue::Int(array.as_primitive::<Int8Type>().value(row).into()),
        DataType::Int16 => CursorValue::Int(array.as_primitive::<Int16Type>().value(row).into()),
        DataType::Int32 => CursorValue::Int(array.as_primitive::<Int32Type>().value(row).into()),
        DataType::Int64 => CursorValue::Int(array.as_primitive::<Int64Type>().value(row).into()),
        DataType::UInt8 => CursorValue::Int(array.as_primitive::<UInt8Type>().value(row).into()),
        DataType::UInt16 => CursorValue::Int(array.as_primitive::<UInt16Type>().value(row).into()),
        DataType::UInt32 => CursorValue::Int(array.as_primitive::<UInt32Type>().value(row).into()),
        DataType::UInt64 => CursorValue::Int(array.as_primitive::<UInt64Type>().value(row).into()),
        DataType::Decimal128(_, s) => {
            CursorValue::Decimal(array.as_primitive::<Decimal128Type>().value(row), *s)
        }
        DataType::Date32 => CursorValue::Date(array.as_primitive::<Date32Type>().value(row)),
        DataType::Timestamp(unit, tz) => {
            let v = match unit {
                TimeUnit::Second => array.as_primitive::<TimestampSecondType>().value(row),
                TimeUnit::Millisecond => array.as_primitive::<TimestampMillisecondType>().value(row),
                TimeUnit::Microsecond => array.as_primitive::<TimestampMicrosecondType>().value(row),
                TimeUnit::Nanosecond => array.as_primitive::<TimestampNanosecondType>().value(row),
            };
            CursorValue::Timestamp(micros(v, unit), tz.is_some())
        }
        _ => return None,
    })
}

impl CursorValue {
    /// As `output.cursors` shows it: integers as numbers, the rest as text (decimals exact,
    /// dates `2026-11-30`, timestamps ISO 8601, `Z` for an instant).
    pub fn to_json(self) -> Value {
        match self {
            CursorValue::Int(v) => match i64::try_from(v) {
                Ok(v) => Value::from(v),
                Err(_) => Value::from(v.to_string()),
            },
            other => Value::from(other.to_text()),
        }
    }

    /// The text a database casts to the column's type.
    pub fn to_text(self) -> String {
        match self {
            CursorValue::Int(v) => v.to_string(),
            CursorValue::Decimal(v, s) => decimal_text(v, s),
            CursorValue::Date(days) => NaiveDate::from_num_days_from_ce_opt(days + 719_163)
                .map(|d| d.format("%Y-%m-%d").to_string())
                .unwrap_or_default(),
            CursorValue::Timestamp(micros, instant) => {
                let text = DateTime::from_timestamp_micros(micros)
                    .map(|t| t.naive_utc().format("%Y-%m-%dT%H:%M:%S%.6f").to_string())
                    .unwrap_or_default();
                if instant {
                    format!("{text}Z")
                } else {
                    text
                }
            }
        }
    }

    /// The value `json` (as `to_json` wrote it) in a column of type `dt`.
    pub fn from_json(json: &Value, dt: &DataType) -> Result<Self, String> {
        let text = match json {
            Value::Number(n) => n.to_string(),
            Value::String(s) => s.clone(),
            other => return Err(format!("the mark {other} is not a cursor value")),
        };
        let bad = |what: &str| format!("the mark {json} is not {what}");
        match dt {
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64 => text.parse().map(CursorValue::Int).map_err(|_| bad("an integer")),
            DataType::Decimal128(_, s) => parse_decimal(&text, *s)
                .map(|v| CursorValue::Decimal(v, *s))
                .ok_or_else(|| bad("a decimal")),
            DataType::Date32 => NaiveDate::parse_from_str(&text, "%Y-%m-%d")
                .map(|d| CursorValue::Date(d.num_days_from_ce() - 719_163))
                .map_err(|_| bad("a date")),
            DataType::Timestamp(_, tz) => {
                let trimmed = text.trim_end_matches('Z');
                chrono::NaiveDateTime::parse_from_str(trimmed, "%Y-%m-%dT%H:%M:%S%.f")
                    .map(|t| CursorValue::Timestamp(t.and_utc().timestamp_micros(), tz.is_some()))
                    .map_err(|_| bad("a timestamp"))
            }
            other => Err(format!("a {other} column cannot be a cursor")),
        }
    }
}

use chrono::Datelike;

fn decimal_text(v: i128, scale: i8) -> String {
    if scale <= 0 {
        return (v * 10i128.pow(scale.unsigned_abs() as u32)).to_string();
    }
    let sign = if v < 0 { "-" } else { "" };
    let digits = v.unsigned_abs().to_string();
    let scale = scale as usize;
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    format!("{sign}{int}.{frac}")
}

fn parse_decimal(text: &str, scale: i8) -> Option<i128> {
    let (neg, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let scale = scale.max(0) as usize;
    if frac.len() > scale || (int.is_empty() && frac.is_empty()) {
        return None;
    }
    let digits = format!("{int}{frac:0<scale$}");
    let v: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    Some(if neg { -v } else { v })
}

/// A stable 64-bit fingerprint (FNV-1a) of a row's bytes: the same in every process.
pub fn fingerprint(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Date32Array, Decimal128Array, Int64Array, TimestampMicrosecondArray};
    use std::sync::Arc;

    #[test]
    fn values_round_trip_through_json() {
        let cases: Vec<(ArrayRef, Value)> = vec![
            (Arc::new(Int64Array::from(vec![42])), json_of("42")),
            (
                Arc::new(
                    Decimal128Array::from(vec![-1205])
                        .with_precision_and_scale(10, 2)
                        .unwrap(),
                ),
                Value::from("-12.05"),
            ),
            (
                Arc::new(Date32Array::from(vec![20_422])),
                Value::from("2025-11-30"),
            ),
            (
                Arc::new(TimestampMicrosecondArray::from(vec![1_764_496_800_123_456]).with_timezone("UTC")),
                Value::from("2025-11-30T10:00:00.123456Z"),
            ),
            (
                Arc::new(TimestampMicrosecondArray::from(vec![1_764_496_800_000_000])),
                Value::from("2025-11-30T10:00:00.000000"),
            ),
        ];
        for (array, json) in cases {
            let v = value_at(&array, 0).unwrap();
            assert_eq!(v.to_json(), json, "{:?}", array.data_type());
            assert_eq!(CursorValue::from_json(&json, array.data_type()).unwrap(), v);
        }
        assert!(CursorValue::from_json(&Value::from("x"), &DataType::Int64).is_err());
        assert_eq!(decimal_text(5, 3), "0.005");
    }

    fn json_of(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn the_next_start_is_the_previous_through_with_its_boundary() {
        let previous = CursorEntry {
            column: "id".into(),
            after: Value::from(3),
            through: Value::from(9),
            rows: 4,
            null_rows: 0,
            boundary: vec![format!("{:016x}", 77u64)],
            files: None,
        };
        let start = CursorStart::after(&previous);
        assert_eq!(start.after, Value::from(9));
        assert_eq!(start.boundary, [77u64].into_iter().collect());
        let unread = CursorEntry {
            through: Value::Null,
            ..previous
        };
        assert_eq!(CursorStart::after(&unread).after, Value::from(3));
    }

    #[test]
    fn a_files_entry_shows_its_files_and_rows_only_and_reads_back() {
        let mark = FileMark {
            path: "events/a.csv".into(),
            size: 12,
            modified_utc: "2026-12-01T10:00:00.000000000Z".into(),
        };
        let entry = CursorEntry::of_files(vec![mark.clone()], 3);
        let json = serde_json::to_value(&entry).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"files": [{"path": "events/a.csv", "size": 12,
                "modified_utc": "2026-12-01T10:00:00.000000000Z"}], "rows": 3})
        );
        let back: CursorEntry = serde_json::from_value(json).unwrap();
        assert_eq!(back, entry);
        let cursor = CursorStart::default().entry("id");
        let json = serde_json::to_value(&cursor).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"column": "id", "after": null, "through": null, "rows": 0})
        );
        assert_eq!(serde_json::from_value::<CursorEntry>(json).unwrap(), cursor);
    }
}
