//! Values between Arrow arrays and SQL databases: reading one cell of an Arrow array as a
//! `SqlValue` (for loads), and building Arrow columns from database values with the
//! coercions a database's loose typing needs (for reads). Exact by construction: decimals
//! travel as text, never through floats.

use std::sync::Arc;

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

/// Builds one Arrow column of a chosen type from database values, coercing what a loosely
/// typed database may hold (an integer in a REAL column, ISO text in a DATE column).
pub struct ColumnBuilder {
    name: String,
    inner: Inner,
}

enum Inner {
    Bool(BooleanBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Text(StringBuilder),
    Blob(BinaryBuilder),
    Date(Date32Builder),
    Time(Time64MicrosecondBuilder),
    Timestamp(TimestampMicrosecondBuilder),
    Decimal(Decimal128Builder, u8, i8),
}

impl ColumnBuilder {
    /// A builder for `data_type`, or the nearest type it can build (`Utf8` for anything else).
    pub fn new(name: &str, data_type: &DataType, capacity: usize) -> Self {
        let inner = match data_type {
            DataType::Boolean => Inner::Bool(BooleanBuilder::with_capacity(capacity)),
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32 => Inner::Int(Int64Builder::with_capacity(capacity)),
            DataType::Float16 | DataType::Float32 | DataType::Float64 => {
                Inner::Float(Float64Builder::with_capacity(capacity))
            }
            DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView
            | DataType::FixedSizeBinary(_) => {
                Inner::Blob(BinaryBuilder::with_capacity(capacity, capacity * 16))
            }
            DataType::Date32 | DataType::Date64 => Inner::Date(Date32Builder::with_capacity(capacity)),
            DataType::Time32(_) | DataType::Time64(_) => {
                Inner::Time(Time64MicrosecondBuilder::with_capacity(capacity))
            }
            DataType::Timestamp(_, tz) => Inner::Timestamp(
                TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone_opt(tz.clone()),
            ),
            DataType::Decimal128(p, s) => Inner::Decimal(
                Decimal128Builder::with_capacity(capacity)
                    .with_precision_and_scale(*p, *s)
                    .unwrap_or_default(),
                *p,
                *s,
            ),
            _ => Inner::Text(StringBuilder::with_capacity(capacity, capacity * 16)),
        };
        ColumnBuilder {
            name: name.to_string(),
            inner,
        }
    }

    /// The Arrow type this builder produces.
    pub fn data_type(&self) -> DataType {
        match &self.inner {
            Inner::Bool(_) => DataType::Boolean,
            Inner::Int(_) => DataType::Int64,
            Inner::Float(_) => DataType::Float64,
            Inner::Text(_) => DataType::Utf8,
            Inner::Blob(_) => DataType::Binary,
            Inner::Date(_) => DataType::Date32,
            Inner::Time(_) => DataType::Time64(TimeUnit::Microsecond),
            Inner::Timestamp(b) => b.finish_cloned().data_type().clone(),
            Inner::Decimal(_, p, s) => DataType::Decimal128(*p, *s),
        }
    }

    /// Appends `value`, or says why it does not fit (naming the column).
    pub fn append(&mut self, value: SqlValue) -> Result<(), String> {
        let mismatch = |what: &str, v: &SqlValue| {
            format!("column {:?}: cannot read {} as {what}", self.name, describe(v))
        };
        match (&mut self.inner, value) {
            (Inner::Bool(b), SqlValue::Null) => b.append_null(),
            (Inner::Int(b), SqlValue::Null) => b.append_null(),
            (Inner::Float(b), SqlValue::Null) => b.append_null(),
            (Inner::Text(b), SqlValue::Null) => b.append_null(),
            (Inner::Blob(b), SqlValue::Null) => b.append_null(),
            (Inner::Date(b), SqlValue::Null) => b.append_null(),
            (Inner::Time(b), SqlValue::Null) => b.append_null(),
            (Inner::Timestamp(b), SqlValue::Null) => b.append_null(),
            (Inner::Decimal(b, _, _), SqlValue::Null) => b.append_null(),

            (Inner::Bool(b), SqlValue::Bool(v)) => b.append_value(v),
            (Inner::Bool(b), SqlValue::Int(v)) if v == 0 || v == 1 => b.append_value(v == 1),
            (Inner::Bool(b), SqlValue::Text(t)) => match t.to_ascii_lowercase().as_str() {
                "true" | "t" | "1" | "yes" => b.append_value(true),
                "false" | "f" | "0" | "no" => b.append_value(false),
                _ => return Err(mismatch("a boolean", &SqlValue::Text(t))),
            },
            (Inner::Int(b), SqlValue::Int(v)) => b.append_value(v),
            (Inner::Int(b), SqlValue::Bool(v)) => b.append_value(i64::from(v)),
            (Inner::Int(b), SqlValue::Float(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
                b.append_value(f as i64)
            }
            (Inner::Int(b), SqlValue::Text(t)) => match t.trim().parse::<i64>() {
                Ok(v) => b.append_value(v),
                Err(_) => return Err(mismatch("an integer", &SqlValue::Text(t))),
            },
            (Inner::Float(b), SqlValue::Float(v)) => b.append_value(v),
            (Inner::Float(b), SqlValue::Int(v)) => b.append_value(v as f64),
            (Inner::Float(b), SqlValue::Decimal(t)) | (Inner::Float(b), SqlValue::Text(t)) => {
                match t.trim().parse::<f64>() {
                    Ok(v) => b.append_value(v),
                    Err(_) => return Err(mismatch("a number", &SqlValue::Text(t))),
                }
            }
            (Inner::Text(b), v) => b.append_value(text_of(&v)),
            (Inner::Blob(b), SqlValue::Blob(v)) => b.append_value(&v),
            (Inner::Blob(b), SqlValue::Text(t)) => b.append_value(t.as_bytes()),
            (Inner::Date(b), SqlValue::Date(d)) => b.append_value(Date32Type::from_naive_date(d)),
            (Inner::Date(b), SqlValue::Timestamp(t)) => b.append_value(Date32Type::from_naive_date(t.date())),
            (Inner::Date(b), SqlValue::Text(t)) => match parse_date(&t) {
                Some(d) => b.append_value(Date32Type::from_naive_date(d)),
                None => return Err(mismatch("a date (YYYY-MM-DD)", &SqlValue::Text(t))),
            },
            (Inner::Time(b), SqlValue::Time(t)) => b.append_value(micros_of_day(t)),
            (Inner::Time(b), SqlValue::Text(t)) => match NaiveTime::parse_from_str(t.trim(), "%H:%M:%S%.f") {
                Ok(time) => b.append_value(micros_of_day(time)),
                Err(_) => return Err(mismatch("a time (HH:MM:SS)", &SqlValue::Text(t))),
            },
            (Inner::Timestamp(b), SqlValue::Timestamp(t)) => b.append_value(t.and_utc().timestamp_micros()),
            (Inner::Timestamp(b), SqlValue::TimestampTz(t)) => b.append_value(t.timestamp_micros()),
            (Inner::Timestamp(b), SqlValue::Date(d)) => b.append_value(
                d.and_hms_opt(0, 0, 0)
                    .map(|t| t.and_utc().timestamp_micros())
                    .unwrap_or(0),
            ),
            (Inner::Timestamp(b), SqlValue::Text(t)) => match parse_timestamp(&t) {
                Some(ts) => b.append_value(ts.timestamp_micros()),
                None => return Err(mismatch("a timestamp (YYYY-MM-DD HH:MM:SS)", &SqlValue::Text(t))),
            },
            (Inner::Timestamp(b), SqlValue::Int(secs)) => b.append_value(secs.saturating_mul(1_000_000)),
            (
                Inner::Decimal(b, p, s),
                v @ (SqlValue::Decimal(_) | SqlValue::Text(_) | SqlValue::Int(_) | SqlValue::Float(_)),
            ) => {
                let text = match &v {
                    // A float read from a NUMERIC column: its shortest round-trip text, then
                    // rounded to the scale by the exact decimal parser.
                    SqlValue::Float(f) => format!("{f}"),
                    other => text_of(other),
                };
                match parse_decimal_text(&text, *p, *s) {
                    Some(d) => b.append_value(d),
                    None => return Err(mismatch(&format!("decimal({p},{s})"), &v)),
                }
            }
            (_, v) => {
                let want = self.data_type();
                return Err(mismatch(&format!("{want}"), &v));
            }
        }
        Ok(())
    }

    pub fn finish(&mut self) -> ArrayRef {
        match &mut self.inner {
            Inner::Bool(b) => Arc::new(b.finish()),
            Inner::Int(b) => Arc::new(b.finish()),
            Inner::Float(b) => Arc::new(b.finish()),
            Inner::Text(b) => Arc::new(b.finish()),
            Inner::Blob(b) => Arc::new(b.finish()),
            Inner::Date(b) => Arc::new(b.finish()),
            Inner::Time(b) => Arc::new(b.finish()),
            Inner::Timestamp(b) => Arc::new(b.finish()),
            Inner::Decimal(b, _, _) => Arc::new(b.finish()),
        }
    }
}

/// Microseconds since midnight (Arrow's `Time64(Microsecond)`).
pub fn micros_of_day(t: NaiveTime) -> i64 {
    use chrono::Timelike;
    i64::from(t.num_seconds_from_midnight()) * 1_000_000 + i64::from(t.nanosecond() / 1000)
}

fn describe(v: &SqlValue) -> String {
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
    fn decimals_round_trip_exactly() {
        let mut b = ColumnBuilder::new("amount", &DataType::Decimal128(12, 2), 4);
        b.append(SqlValue::Text("12.30".into())).unwrap();
        b.append(SqlValue::Float(12.3)).unwrap();
        b.append(SqlValue::Int(7)).unwrap();
        b.append(SqlValue::Null).unwrap();
        let arr = b.finish();
        let values: Vec<SqlValue> = (0..4).map(|i| value_at(&arr, i)).collect();
        assert_eq!(
            values,
            [
                SqlValue::Decimal("12.30".into()),
                SqlValue::Decimal("12.30".into()),
                SqlValue::Decimal("7.00".into()),
                SqlValue::Null
            ]
        );
    }

    #[test]
    fn mismatches_name_the_column() {
        let mut b = ColumnBuilder::new("qty", &DataType::Int64, 1);
        let err = b.append(SqlValue::Text("many".into())).unwrap_err();
        assert_eq!(err, "column \"qty\": cannot read text \"many\" as an integer");
    }

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
