//! Arrow values as MySQL SQL literals, for the multi-row `INSERT`s that stage a load: the
//! column type each Arrow type becomes, the Arrow type its values are cast to first, and the
//! literal of one value (escaped for the session's `NO_BACKSLASH_ESCAPES` mode).

use std::fmt::Write as _;

use datafusion::arrow::array::*;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::*;
use datafusion::arrow::error::ArrowError;

use crate::connectors::relational::{display_strings, timestamp};

/// Why a value has no MySQL literal (the caller names the column). Permanent: the data is
/// what it is.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(super) enum LiteralError {
    /// An infinity or NaN: MySQL's floating-point columns have none.
    #[error("{0} cannot be stored in MySQL")]
    NotFinite(f64),
    #[error("{0:?} is not a decimal number")]
    NotADecimal(String),
    /// A date, time or timestamp (`what`) that chrono cannot represent.
    #[error("a {what} out of range")]
    OutOfRange { what: &'static str },
}

/// How values of a column are written as SQL literals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lit {
    Bool,
    Int,
    UInt,
    F32,
    F64,
    /// Exact decimal text, unquoted.
    Number,
    Text,
    Blob,
    Date,
    Time,
    Ts,
}

/// The MySQL column type for an Arrow type, and how its values are written.
pub(super) fn mysql_type_for(dt: &DataType) -> (String, Lit) {
    match dt {
        DataType::Boolean => ("BOOLEAN".into(), Lit::Bool),
        DataType::Int8 => ("TINYINT".into(), Lit::Int),
        DataType::Int16 => ("SMALLINT".into(), Lit::Int),
        DataType::Int32 => ("INT".into(), Lit::Int),
        DataType::Int64 => ("BIGINT".into(), Lit::Int),
        DataType::UInt8 => ("TINYINT UNSIGNED".into(), Lit::Int),
        DataType::UInt16 => ("SMALLINT UNSIGNED".into(), Lit::Int),
        DataType::UInt32 => ("INT UNSIGNED".into(), Lit::Int),
        DataType::UInt64 => ("BIGINT UNSIGNED".into(), Lit::UInt),
        DataType::Float16 | DataType::Float32 => ("FLOAT".into(), Lit::F32),
        DataType::Float64 => ("DOUBLE".into(), Lit::F64),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) if *p <= 65 && *s >= 0 && *s <= 30 => {
            (format!("DECIMAL({p},{s})"), Lit::Number)
        }
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_) => {
            ("LONGBLOB".into(), Lit::Blob)
        }
        DataType::Date32 | DataType::Date64 => ("DATE".into(), Lit::Date),
        DataType::Time32(_) | DataType::Time64(_) => ("TIME(6)".into(), Lit::Time),
        DataType::Timestamp(..) => ("DATETIME(6)".into(), Lit::Ts),
        _ => ("LONGTEXT".into(), Lit::Text),
    }
}

/// `array` as the Arrow type its literals are written from (anything without a cast to text
/// in Arrow's display form).
pub(super) fn normalize(array: &ArrayRef, lit: Lit) -> Result<ArrayRef, ArrowError> {
    let target = match lit {
        Lit::Bool => DataType::Boolean,
        Lit::Int => DataType::Int64,
        Lit::UInt => DataType::UInt64,
        Lit::F32 => DataType::Float32,
        Lit::F64 => DataType::Float64,
        Lit::Number | Lit::Text => DataType::Utf8,
        Lit::Blob => DataType::Binary,
        Lit::Date => DataType::Date32,
        Lit::Time => DataType::Time64(TimeUnit::Microsecond),
        Lit::Ts => timestamp(false),
    };
    if array.data_type() == &target {
        return Ok(array.clone());
    }
    // Timestamps with a zone are written as their UTC time.
    let source = match (lit, array.data_type()) {
        (Lit::Ts, DataType::Timestamp(unit, Some(_))) => cast(array, &DataType::Timestamp(*unit, None))?,
        _ => array.clone(),
    };
    match cast(&source, &target) {
        Ok(a) => Ok(a),
        Err(_) if target == DataType::Utf8 => display_strings(array),
        Err(e) => Err(e),
    }
}

/// Writes the literal of `a[row]` (not null).
pub(super) fn write_literal(
    out: &mut String,
    a: &ArrayRef,
    row: usize,
    lit: Lit,
    backslash_escapes: bool,
) -> Result<(), LiteralError> {
    match lit {
        Lit::Bool => out.push(if a.as_boolean().value(row) { '1' } else { '0' }),
        Lit::Int => {
            let _ = write!(out, "{}", a.as_primitive::<Int64Type>().value(row));
        }
        Lit::UInt => {
            let _ = write!(out, "{}", a.as_primitive::<UInt64Type>().value(row));
        }
        Lit::F32 => {
            let v = a.as_primitive::<Float32Type>().value(row);
            if !v.is_finite() {
                return Err(LiteralError::NotFinite(f64::from(v)));
            }
            let _ = write!(out, "{v:e}");
        }
        Lit::F64 => {
            let v = a.as_primitive::<Float64Type>().value(row);
            if !v.is_finite() {
                return Err(LiteralError::NotFinite(v));
            }
            let _ = write!(out, "{v:e}");
        }
        Lit::Number => {
            let t = a.as_string::<i32>().value(row);
            if t.is_empty()
                || !t
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-' || b == b'+')
            {
                return Err(LiteralError::NotADecimal(t.to_string()));
            }
            out.push_str(t);
        }
        Lit::Text => {
            let t = a.as_string::<i32>().value(row);
            out.push('\'');
            for c in t.chars() {
                match c {
                    '\'' => out.push_str("''"),
                    '\\' if backslash_escapes => out.push_str("\\\\"),
                    '\0' if backslash_escapes => out.push_str("\\0"),
                    c => out.push(c),
                }
            }
            out.push('\'');
        }
        Lit::Blob => {
            let b = a.as_binary::<i32>().value(row);
            if b.is_empty() {
                out.push_str("''");
            } else {
                out.push_str("X'");
                for byte in b {
                    let _ = write!(out, "{byte:02X}");
                }
                out.push('\'');
            }
        }
        Lit::Date => {
            let d = a
                .as_primitive::<Date32Type>()
                .value_as_date(row)
                .ok_or(LiteralError::OutOfRange { what: "date" })?;
            let _ = write!(out, "'{}'", d.format("%Y-%m-%d"));
        }
        Lit::Time => {
            let t = a
                .as_primitive::<Time64MicrosecondType>()
                .value_as_time(row)
                .ok_or(LiteralError::OutOfRange { what: "time" })?;
            let _ = write!(out, "'{}'", t.format("%H:%M:%S%.6f"));
        }
        Lit::Ts => {
            let t = a
                .as_primitive::<TimestampMicrosecondType>()
                .value_as_datetime(row)
                .ok_or(LiteralError::OutOfRange { what: "timestamp" })?;
            let _ = write!(out, "'{}'", t.format("%Y-%m-%d %H:%M:%S%.6f"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn literals_are_escaped_for_the_session_mode() {
        let a: ArrayRef = Arc::new(StringArray::from(vec!["it's a \\ path"]));
        let mut s = String::new();
        write_literal(&mut s, &a, 0, Lit::Text, true).unwrap();
        assert_eq!(s, "'it''s a \\\\ path'");
        let mut s = String::new();
        write_literal(&mut s, &a, 0, Lit::Text, false).unwrap();
        assert_eq!(s, "'it''s a \\ path'");
    }

    #[test]
    fn values_without_a_literal_say_why() {
        let a: ArrayRef = Arc::new(Float64Array::from(vec![f64::NEG_INFINITY]));
        let e = write_literal(&mut String::new(), &a, 0, Lit::F64, true).unwrap_err();
        assert_eq!(e.to_string(), "-inf cannot be stored in MySQL");
        let a: ArrayRef = Arc::new(Float32Array::from(vec![f32::NAN]));
        let e = write_literal(&mut String::new(), &a, 0, Lit::F32, true).unwrap_err();
        assert_eq!(e.to_string(), "NaN cannot be stored in MySQL");
        let a: ArrayRef = Arc::new(StringArray::from(vec!["1e5"]));
        let e = write_literal(&mut String::new(), &a, 0, Lit::Number, true).unwrap_err();
        assert_eq!(e.to_string(), "\"1e5\" is not a decimal number");
    }
}
