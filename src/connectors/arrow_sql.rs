//! Values between Arrow arrays and SQL databases: one cell of an Arrow array as a `SqlValue`
//! (for loads), and the text forms and parsers that reading values into Arrow columns needs
//! (the column builders themselves are `relational::Col`, one layer for every database).
//! Exact by construction: decimals travel as text, never through floats.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use datafusion::arrow::array::*;
use datafusion::arrow::datatypes::*;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

/// One database value.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// A decimal, as exact text (`-12.30`).
    Decimal(String),
    Text(String),
    Blob(Vec<u8>),
    Date(NaiveDate),
    Time(NaiveTime),
    Timestamp(NaiveDateTime),
    TimestampTz(DateTime<Utc>),
}

/// The value at `row` of `array`.
pub fn value_at(array: &ArrayRef, row: usize) -> SqlValue {
    if array.is_null(row) {
        return SqlValue::Null;
    }
    macro_rules! prim {
        ($t:ty, $variant:ident, $conv:expr) => {{
            let a = array
                .as_any()
                .downcast_ref::<$t>()
                .expect("array type matches its data type");
            SqlValue::$variant($conv(a.value(row)))
        }};
    }
    match array.data_type() {
        DataType::Boolean => prim!(BooleanArray, Bool, |v| v),
        DataType::Int8 => prim!(Int8Array, Int, i64::from),
        DataType::Int16 => prim!(Int16Array, Int, i64::from),
        DataType::Int32 => prim!(Int32Array, Int, i64::from),
        DataType::Int64 => prim!(Int64Array, Int, |v| v),
        DataType::UInt8 => prim!(UInt8Array, Int, i64::from),
        DataType::UInt16 => prim!(UInt16Array, Int, i64::from),
        DataType::UInt32 => prim!(UInt32Array, Int, i64::from),
        DataType::UInt64 => {
            let v = array.as_primitive::<UInt64Type>().value(row);
            i64::try_from(v)
                .map(SqlValue::Int)
                .unwrap_or_else(|_| SqlValue::Decimal(v.to_string()))
        }
        DataType::Float16 => SqlValue::Float(array.as_primitive::<Float16Type>().value(row).to_f64()),
        DataType::Float32 => prim!(Float32Array, Float, f64::from),
        DataType::Float64 => prim!(Float64Array, Float, |v| v),
        DataType::Utf8 => prim!(StringArray, Text, |v: &str| v.to_string()),
        DataType::LargeUtf8 => prim!(LargeStringArray, Text, |v: &str| v.to_string()),
        DataType::Utf8View => prim!(StringViewArray, Text, |v: &str| v.to_string()),
        DataType::Binary => prim!(BinaryArray, Blob, |v: &[u8]| v.to_vec()),
        DataType::LargeBinary => prim!(LargeBinaryArray, Blob, |v: &[u8]| v.to_vec()),
        DataType::BinaryView => prim!(BinaryViewArray, Blob, |v: &[u8]| v.to_vec()),
        DataType::FixedSizeBinary(_) => prim!(FixedSizeBinaryArray, Blob, |v: &[u8]| v.to_vec()),
        DataType::Decimal128(_, _) => {
            SqlValue::Decimal(array.as_primitive::<Decimal128Type>().value_as_string(row))
        }
        DataType::Decimal256(_, _) => {
            SqlValue::Decimal(array.as_primitive::<Decimal256Type>().value_as_string(row))
        }
        DataType::Date32 => array
            .as_primitive::<Date32Type>()
            .value_as_date(row)
            .map(SqlValue::Date)
            .unwrap_or(SqlValue::Null),
        DataType::Date64 => array
            .as_primitive::<Date64Type>()
            .value_as_date(row)
            .map(SqlValue::Date)
            .unwrap_or(SqlValue::Null),
        DataType::Time32(_) | DataType::Time64(_) => {
            let naive = match array.data_type() {
                DataType::Time32(TimeUnit::Second) => {
                    array.as_primitive::<Time32SecondType>().value_as_time(row)
                }
                DataType::Time32(_) => array.as_primitive::<Time32MillisecondType>().value_as_time(row),
                DataType::Time64(TimeUnit::Microsecond) => {
                    array.as_primitive::<Time64MicrosecondType>().value_as_time(row)
                }
                _ => array.as_primitive::<Time64NanosecondType>().value_as_time(row),
            };
            naive.map(SqlValue::Time).unwrap_or(SqlValue::Null)
        }
        DataType::Timestamp(unit, tz) => {
            let naive = match unit {
                TimeUnit::Second => array.as_primitive::<TimestampSecondType>().value_as_datetime(row),
                TimeUnit::Millisecond => array
                    .as_primitive::<TimestampMillisecondType>()
                    .value_as_datetime(row),
                TimeUnit::Microsecond => array
                    .as_primitive::<TimestampMicrosecondType>()
                    .value_as_datetime(row),
                TimeUnit::Nanosecond => array
                    .as_primitive::<TimestampNanosecondType>()
                    .value_as_datetime(row),
            };
            match (naive, tz) {
                (Some(n), Some(_)) => SqlValue::TimestampTz(n.and_utc()),
                (Some(n), None) => SqlValue::Timestamp(n),
                (None, _) => SqlValue::Null,
            }
        }
        DataType::Dictionary(_, _) => {
            let formatted = format_cell(array, row);
            SqlValue::Text(formatted)
        }
        _ => SqlValue::Text(format_cell(array, row)),
    }
}

fn format_cell(array: &ArrayRef, row: usize) -> String {
    let options = FormatOptions::default();
    ArrayFormatter::try_new(array.as_ref(), &options)
        .map(|f| f.value(row).to_string())
        .unwrap_or_default()
}

/// Text for values that go into a database as text.
pub fn timestamp_text(ts: &NaiveDateTime) -> String {
    ts.format("%Y-%m-%d %H:%M:%S%.f").to_string()
}

pub fn timestamp_tz_text(ts: &DateTime<Utc>) -> String {
    ts.format("%Y-%m-%d %H:%M:%S%.fZ").to_string()
}

/// Microseconds since midnight (Arrow's `Time64(Microsecond)`).
pub fn micros_of_day(t: NaiveTime) -> i64 {
    use chrono::Timelike;
    i64::from(t.num_seconds_from_midnight()) * 1_000_000 + i64::from(t.nanosecond() / 1000)
}

/// A value as a message names it (`text "abc"`, `a blob of 3 bytes`).
pub fn describe(v: &SqlValue) -> String {
    match v {
        SqlValue::Text(t) => format!("text {:?}", truncate(t)),
        SqlValue::Blob(b) => format!("a blob of {} bytes", b.len()),
        other => format!("{:?}", other).to_lowercase(),
    }
}

fn truncate(t: &str) -> String {
    if t.chars().count() > 40 {
        format!("{}…", t.chars().take(40).collect::<String>())
    } else {
        t.to_string()
    }
}

/// The text form of a value.
pub fn text_of(v: &SqlValue) -> String {
    match v {
        SqlValue::Null => String::new(),
        SqlValue::Bool(b) => b.to_string(),
        SqlValue::Int(i) => i.to_string(),
        SqlValue::Float(f) => f.to_string(),
        SqlValue::Decimal(t) | SqlValue::Text(t) => t.clone(),
        SqlValue::Blob(b) => String::from_utf8_lossy(b).into_owned(),
        SqlValue::Date(d) => d.format("%Y-%m-%d").to_string(),
        SqlValue::Time(t) => t.format("%H:%M:%S%.f").to_string(),
        SqlValue::Timestamp(t) => timestamp_text(t),
        SqlValue::TimestampTz(t) => timestamp_tz_text(t),
    }
}

pub fn parse_date(text: &str) -> Option<NaiveDate> {
    let t = text.trim();
    NaiveDate::parse_from_str(t, "%Y-%m-%d")
        .ok()
        .or_else(|| parse_timestamp(t).map(|ts| ts.date_naive()))
}

/// ISO-8601 timestamps with `T` or space, optional fraction, optional `Z` or offset (then
/// converted to UTC); a naive one is taken as UTC.
pub fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    let t = text.trim();
    if let Ok(ts) = DateTime::parse_from_rfc3339(t) {
        return Some(ts.with_timezone(&Utc));
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f%#z",
        "%Y-%m-%d %H:%M:%S%.f%:z",
        "%Y-%m-%dT%H:%M:%S%.f%#z",
    ] {
        if let Ok(ts) = DateTime::parse_from_str(t, fmt) {
            return Some(ts.with_timezone(&Utc));
        }
    }
    let t = t.trim_end_matches('Z');
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(ts) = NaiveDateTime::parse_from_str(t, fmt) {
            return Some(ts.and_utc());
        }
    }
    NaiveDate::parse_from_str(t, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc())
}

/// Exact decimal text to a scaled integer; rounds half away from zero beyond the scale.
pub fn parse_decimal_text(text: &str, precision: u8, scale: i8) -> Option<i128> {
    datafusion::arrow::compute::kernels::cast_utils::parse_decimal::<Decimal128Type>(
        text.trim(),
        precision,
        scale,
    )
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_in_common_forms_and_normalise_to_utc() {
        let a = parse_timestamp("2026-01-02 03:04:05").unwrap();
        let b = parse_timestamp("2026-01-02T05:04:05+02:00").unwrap();
        assert_eq!(a, b);
        assert_eq!(
            parse_timestamp("2026-01-02T03:04:05.250Z")
                .unwrap()
                .timestamp_subsec_millis(),
            250
        );
    }
}
