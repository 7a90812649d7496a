//! Output contracts: an output may declare its columns (`name`, `type`, `nullable`); the
//! result must have exactly those columns, of those types, before anything is staged. Types
//! are named as docs/types.md names them (SQL names). Pure: the engine compares the result's
//! schema here and guards `nullable: false` columns while it stages.

use datafusion::arrow::datatypes::{DataType, Schema, TimeUnit};

use super::names::did_you_mean_hint;
use super::spec::ColumnContract;

/// The type names a contract accepts, for messages and the documentation.
pub const CONTRACT_TYPES: &str = "smallint, integer, bigint, real, double, decimal(p,s), text, boolean, date, time, \
     timestamp, timestamptz, bytea (and the synonyms int, int2, int4, int8, float4, float8, numeric(p,s), varchar, \
     string, bool, double precision, binary)";

const SIMPLE_NAMES: &[&str] = &[
    "tinyint",
    "smallint",
    "int2",
    "integer",
    "int",
    "int4",
    "bigint",
    "int8",
    "real",
    "float4",
    "double",
    "double precision",
    "float8",
    "float",
    "text",
    "varchar",
    "string",
    "boolean",
    "bool",
    "date",
    "time",
    "timestamp",
    "timestamptz",
    "bytea",
    "binary",
    "blob",
];

/// The Arrow type a contract's type name stands for.
pub fn parse_contract_type(text: &str) -> Result<DataType, String> {
    let t = text.trim().to_ascii_lowercase();
    let t = t.split_whitespace().collect::<Vec<_>>().join(" ");
    let simple = match t.as_str() {
        "tinyint" => Some(DataType::Int8),
        "smallint" | "int2" => Some(DataType::Int16),
        "integer" | "int" | "int4" => Some(DataType::Int32),
        "bigint" | "int8" => Some(DataType::Int64),
        "real" | "float4" => Some(DataType::Float32),
        "double" | "double precision" | "float8" | "float" => Some(DataType::Float64),
        "text" | "varchar" | "string" => Some(DataType::Utf8),
        "boolean" | "bool" => Some(DataType::Boolean),
        "date" => Some(DataType::Date32),
        "time" => Some(DataType::Time64(TimeUnit::Microsecond)),
        "timestamp" => Some(DataType::Timestamp(TimeUnit::Microsecond, None)),
        "timestamptz" => Some(DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))),
        "bytea" | "binary" | "blob" => Some(DataType::Binary),
        _ => None,
    };
    if let Some(dt) = simple {
        return Ok(dt);
    }
    let decimal = t
        .strip_prefix("decimal")
        .or_else(|| t.strip_prefix("numeric"))
        .and_then(|rest| rest.trim().strip_prefix('('))
        .and_then(|rest| rest.strip_suffix(')'))
        .map(|args| {
            let (p, s) = args.split_once(',').unwrap_or((args, "0"));
            (p.trim().parse::<u8>().ok(), s.trim().parse::<i8>().ok())
        });
    match decimal {
        Some((Some(p), Some(s))) if (1..=38).contains(&p) && s >= 0 && (s as u8) <= p => {
            Ok(DataType::Decimal128(p, s))
        }
        Some(_) => Err(format!(
            "type {text:?}: decimal(p,s) takes a precision of 1 to 38 and a scale of 0 to the precision"
        )),
        None => {
            let hint = did_you_mean_hint(&t, SIMPLE_NAMES.iter().copied());
            Err(format!("unknown type {text:?}{hint}: use {CONTRACT_TYPES}"))
        }
    }
}

/// A result column's type as a contract would name it (`bigint`, `decimal(12,2)`), or Arrow's
/// name when no contract name fits.
pub fn type_name(dt: &DataType) -> String {
    match dt {
        DataType::Int8 => "tinyint".into(),
        DataType::Int16 => "smallint".into(),
        DataType::Int32 => "integer".into(),
        DataType::Int64 => "bigint".into(),
        DataType::Float32 => "real".into(),
        DataType::Float64 => "double".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Time64(_) | DataType::Time32(_) => "time".into(),
        DataType::Timestamp(_, None) => "timestamp".into(),
        DataType::Timestamp(_, Some(_)) => "timestamptz".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "bytea".into(),
        DataType::Decimal128(p, s) => format!("decimal({p},{s})"),
        other => other.to_string(),
    }
}

/// Whether a result column of type `got` fulfils a declared `expected` type: the same type,
/// any text, binary or date representation for text, binary or date, timestamps of any
/// precision with (or without) a time zone alike.
fn fits(expected: &DataType, got: &DataType) -> bool {
    type_name(expected) == type_name(got)
}

/// Every difference between the declared columns and a result's schema, in the declared
/// order, then the unexpected columns: `column amount_cents: expected bigint, got double`,
/// `missing column order_ts`, `unexpected column note`.
pub fn differences(columns: &[ColumnContract], schema: &Schema) -> Vec<String> {
    let mut out = Vec::new();
    for c in columns {
        match schema.fields().iter().find(|f| f.name() == &c.name) {
            None => out.push(format!("missing column {}", c.name)),
            Some(field) => {
                if let Ok(expected) = parse_contract_type(&c.column_type) {
                    if !fits(&expected, field.data_type()) {
                        out.push(format!(
                            "column {}: expected {}, got {}",
                            c.name,
                            c.column_type.trim(),
                            type_name(field.data_type())
                        ));
                    }
                }
            }
        }
    }
    for field in schema.fields() {
        if !columns.iter().any(|c| &c.name == field.name()) {
            out.push(format!("unexpected column {}", field.name()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::Field;

    fn col(name: &str, ty: &str) -> ColumnContract {
        ColumnContract {
            name: name.into(),
            column_type: ty.into(),
            nullable: true,
        }
    }

    #[test]
    fn names_every_difference() {
        let schema = Schema::new(vec![
            Field::new("order_id", DataType::Int64, true),
            Field::new("amount_cents", DataType::Float64, true),
            Field::new("amount", DataType::Decimal128(12, 2), true),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Nanosecond, Some("+00:00".into())),
                true,
            ),
            Field::new("note", DataType::Utf8View, true),
        ]);
        let declared = vec![
            col("order_id", "BIGINT"),
            col("amount_cents", "bigint"),
            col("amount", "numeric(12, 2)"),
            col("ts", "timestamptz"),
            col("order_ts", "timestamp"),
        ];
        assert_eq!(
            differences(&declared, &schema),
            [
                "column amount_cents: expected bigint, got double",
                "missing column order_ts",
                "unexpected column note"
            ]
        );
    }

    #[test]
    fn type_names() {
        assert_eq!(parse_contract_type("integer").unwrap(), DataType::Int32);
        assert_eq!(
            parse_contract_type("Double Precision").unwrap(),
            DataType::Float64
        );
        assert!(parse_contract_type("decimal(40,2)")
            .unwrap_err()
            .contains("precision of 1 to 38"));
        let e = parse_contract_type("bigintt").unwrap_err();
        assert!(e.contains("did you mean \"bigint\""), "{e}");
        for name in SIMPLE_NAMES {
            assert!(parse_contract_type(name).is_ok(), "{name}");
        }
    }
}
