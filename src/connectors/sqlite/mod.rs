//! SQLite databases (`relational_db` / `sqlite`): read a table or a query (one statement, on a
//! read-only connection) as Arrow batches, write a table atomically (staged and swapped inside
//! one transaction).
//!
//! `source` reads (types from declarations, else from the values' storage classes), `sink`
//! stages and publishes; this module holds the errors, identifiers and type mapping both use.

mod sink;
mod source;

use std::time::Duration;

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use sqlx::sqlite::SqliteConnection;
use sqlx::{AssertSqlSafe, Row};

pub use self::sink::SqliteSink;
pub use self::source::SqliteSource;
use super::error::ErrorKind;
use super::relational::split_table;
use super::ConnectorError;

pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// SQLite's primary result codes for a database another connection holds (`SQLITE_BUSY`,
/// `SQLITE_LOCKED`): worth another attempt. Extended codes carry the primary one in their low
/// byte.
const SQLITE_BUSY: i64 = 5;
const SQLITE_LOCKED: i64 = 6;

/// SQLite's result code of a database error, primary (the low byte of an extended code).
fn primary_code(e: &sqlx::Error) -> Option<i64> {
    match e {
        sqlx::Error::Database(db) => db.code().and_then(|c| c.parse::<i64>().ok()).map(|c| c & 0xff),
        _ => None,
    }
}

/// A driver error as a connector error: SQLite's own message, transient when the database
/// was busy or locked (by its result code).
pub(super) fn db_error(context: &str, e: sqlx::Error) -> ConnectorError {
    let text = match &e {
        sqlx::Error::Database(db) => db.message().to_string(),
        other => other.to_string(),
    };
    let kind = match primary_code(&e) {
        Some(SQLITE_BUSY | SQLITE_LOCKED) => ErrorKind::Transient,
        _ => ErrorKind::Permanent,
    };
    ConnectorError::new(kind, format!("{context}: {text}")).caused_by(e)
}

/// A failure of a source's query: a write that the read-only connection refused
/// (`SQLITE_READONLY` and its extended codes) says that sources only read.
pub(super) fn source_query_error(e: sqlx::Error) -> ConnectorError {
    const SQLITE_READONLY: i64 = 8;
    let refused_write = primary_code(&e) == Some(SQLITE_READONLY);
    let context = if refused_write {
        "the query tried to write (sources are read on a read-only connection)"
    } else {
        "query"
    };
    db_error(context, e)
}

/// Quotes an identifier for SQLite (`main.t` becomes `"main"."t"`).
pub fn quote_ident(name: &str) -> String {
    name.split('.')
        .map(|p| format!("\"{}\"", p.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(".")
}

/// The Arrow type for a declared SQLite column type, `None` when it says nothing (an
/// expression column), following SQLite's affinity rules plus the conventional names.
pub fn arrow_type_for_decl(decl: &str) -> Option<DataType> {
    let d = decl.trim().to_ascii_uppercase();
    if d.is_empty() || d == "NULL" {
        return None;
    }
    if let Some(args) = d
        .strip_prefix("DECIMAL_TEXT")
        .or_else(|| d.strip_prefix("DECIMAL"))
        .or_else(|| d.strip_prefix("NUMERIC"))
        .and_then(|r| r.trim().strip_prefix('('))
        .and_then(|r| r.strip_suffix(')'))
    {
        let (p, s) = args.split_once(',').unwrap_or((args, "0"));
        if let (Ok(p), Ok(s)) = (p.trim().parse::<u8>(), s.trim().parse::<i8>()) {
            if (1..=38).contains(&p) && s >= 0 && (s as u8) <= p {
                return Some(DataType::Decimal128(p, s));
            }
        }
    }
    Some(match d.as_str() {
        "BOOLEAN" | "BOOL" => DataType::Boolean,
        "DATE" => DataType::Date32,
        "DATETIME" | "TIMESTAMP" => DataType::Timestamp(TimeUnit::Microsecond, None),
        "TIMESTAMPTZ" | "TIMESTAMP WITH TIME ZONE" => {
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        }
        "TIME" => DataType::Time64(TimeUnit::Microsecond),
        _ if d.contains("INT") => DataType::Int64,
        _ if d.contains("CHAR") || d.contains("CLOB") || d.contains("TEXT") || d == "JSON" || d == "UUID" => {
            DataType::Utf8
        }
        _ if d.contains("BLOB") => DataType::Binary,
        _ if d.contains("REAL") || d.contains("FLOA") || d.contains("DOUB") => DataType::Float64,
        // NUMERIC / DECIMAL without a scale: a float is the honest reading of SQLite's storage.
        _ => DataType::Float64,
    })
}

/// The declared SQLite type for an Arrow type (decimals keep precision and scale; the reader
/// maps them back).
pub fn decl_for_arrow_type(dt: &DataType) -> String {
    match dt {
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => "INTEGER".into(),
        DataType::Float16 | DataType::Float32 | DataType::Float64 => "REAL".into(),
        // SQLite keeps only 15 significant digits of a NUMERIC value it converts; wider
        // decimals get TEXT affinity (the name contains TEXT) and stay exact.
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) if *p > 15 => {
            format!("DECIMAL_TEXT({p},{s})")
        }
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => format!("DECIMAL({p},{s})"),
        DataType::Date32 | DataType::Date64 => "DATE".into(),
        DataType::Time32(_) | DataType::Time64(_) => "TIME".into(),
        DataType::Timestamp(_, None) => "TIMESTAMP".into(),
        DataType::Timestamp(_, Some(_)) => "TIMESTAMPTZ".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_) => {
            "BLOB".into()
        }
        _ => "TEXT".into(),
    }
}

/// Quotes one identifier (dots and all) for SQLite.
pub(super) fn quote_ident_part(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The declared types of a table's columns, by `PRAGMA table_info`.
pub(super) async fn declared_types(
    conn: &mut SqliteConnection,
    table: &str,
) -> Result<Vec<(String, String)>, ConnectorError> {
    let (schema, name) = split_table(table);
    let pragma = match schema {
        Some(s) => format!("PRAGMA {}.table_info({})", quote_ident(s), quote_ident(name)),
        None => format!("PRAGMA table_info({})", quote_ident(name)),
    };
    let rows = sqlx::query(AssertSqlSafe(pragma))
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| db_error("reading the table's columns", e))?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<String, _>("name"), r.get::<String, _>("type")))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_types_map_by_affinity() {
        assert_eq!(arrow_type_for_decl("INTEGER"), Some(DataType::Int64));
        assert_eq!(arrow_type_for_decl("varchar(20)"), Some(DataType::Utf8));
        assert_eq!(
            arrow_type_for_decl("DECIMAL(10,2)"),
            Some(DataType::Decimal128(10, 2))
        );
        assert_eq!(arrow_type_for_decl("double precision"), Some(DataType::Float64));
        assert_eq!(arrow_type_for_decl(""), None);
        for dt in [
            DataType::Int64,
            DataType::Utf8,
            DataType::Decimal128(12, 3),
            DataType::Decimal128(20, 0),
            DataType::Date32,
            DataType::Boolean,
            DataType::Float64,
            DataType::Binary,
        ] {
            assert_eq!(arrow_type_for_decl(&decl_for_arrow_type(&dt)), Some(dt));
        }
    }

    #[test]
    fn identifiers_are_quoted_per_part() {
        assert_eq!(quote_ident("main.t"), "\"main\".\"t\"");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
    }
}
