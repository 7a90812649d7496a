//! What the database connectors share (PostgreSQL and MySQL all of it, SQLite the column
//! builders and table names): error classification (transient or not,
//! never a password in the text), the skeleton of a source's read (a task that sends batches,
//! stopped on the server when the reader goes away), typed Arrow column builders fed straight
//! from the wire (no per-value allocation), table names and staging names.

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use datafusion::arrow::array::*;
use datafusion::arrow::datatypes::{DataType, Date32Type, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;

use super::arrow_sql::{
    describe, micros_of_day, parse_date, parse_decimal_text, parse_timestamp, text_of, SqlValue,
};
use super::error::ErrorKind;
use super::{ConnectorError, CursorFilter, IoContext, Load, Opened, SourceConnector};
use crate::domain::names::did_you_mean_hint;
use crate::domain::spec::Source;
use crate::secrets::{redact, Secret};

/// PostgreSQL SQLSTATEs worth another attempt: serialization failure, deadlock, too many
/// connections, cannot connect now, admin shutdown, connection exceptions.
const PG_TRANSIENT: &[&str] = &["40001", "40P01", "53300", "57P03", "57P01", "57P02"];
/// MySQL error numbers worth another attempt: lock wait timeout, deadlock, too many
/// connections, server shutdown, server gone away, lost connection.
const MYSQL_TRANSIENT: &[u16] = &[1205, 1213, 1040, 1053, 2006, 2013, 1927];

/// A driver error as a connector error: the database's own message (with PostgreSQL's detail
/// and hint), classified, with any password or credential removed.
pub fn sql_error(context: &str, e: sqlx::Error, secret: Option<&Secret>) -> ConnectorError {
    let (text, transient) = match &e {
        sqlx::Error::Database(db) => {
            if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                let mut text = pg.message().to_string();
                if let Some(d) = pg.detail() {
                    text.push_str(&format!(" ({d})"));
                }
                if let Some(h) = pg.hint() {
                    text.push_str(&format!(" (hint: {h})"));
                }
                let code = pg.code();
                (text, PG_TRANSIENT.contains(&code) || code.starts_with("08"))
            } else if let Some(my) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
                (my.message().to_string(), MYSQL_TRANSIENT.contains(&my.number()))
            } else {
                (db.message().to_string(), false)
            }
        }
        sqlx::Error::Io(io) => (io.to_string(), true),
        sqlx::Error::PoolTimedOut => (
            "no free connection in the store's pool (all are busy)".to_string(),
            true,
        ),
        sqlx::Error::PoolClosed => ("the store's connection pool is closed".to_string(), true),
        sqlx::Error::Tls(t) => (format!("TLS: {t}"), false),
        sqlx::Error::Protocol(p) => (format!("protocol error: {p}"), true),
        other => (other.to_string(), false),
    };
    let secrets: Vec<&Secret> = secret.into_iter().collect();
    let kind = if transient {
        ErrorKind::Transient
    } else {
        ErrorKind::Permanent
    };
    ConnectorError::new(kind, redact(&format!("{context}: {text}"), &secrets)).caused_by(e)
}

/// The SQLSTATE of a statement refused because its transaction is read-only: PostgreSQL's
/// `cannot execute INSERT in a read-only transaction`, MySQL's error 1792.
const READ_ONLY_TRANSACTION: &str = "25006";

/// A failure of a source's read: a write that the read-only transaction refused says that
/// sources only read; anything else is the database's own message.
pub fn source_query_error(e: sqlx::Error, secret: Option<&Secret>) -> ConnectorError {
    let refused_write = matches!(
        &e,
        sqlx::Error::Database(db) if db.code().as_deref() == Some(READ_ONLY_TRANSACTION)
    );
    let context = if refused_write {
        "the query tried to write (sources are read in a read-only transaction)"
    } else {
        "query"
    };
    sql_error(context, e, secret)
}

/// `schema.table` as (schema, table); a name without a dot has no schema.
pub fn split_table(name: &str) -> (Option<&str>, &str) {
    match name.split_once('.') {
        Some((schema, table)) => (Some(schema), table),
        None => (None, name),
    }
}

/// The staging table of a load, in the target's schema: `_sluice_stage_<instance>_f12_0`.
pub fn stage_name(load: &Load) -> String {
    format!("_sluice_stage_{}", load.key)
}

/// The staging table's qualified name: same schema as the target.
pub fn stage_qualified(load: &Load) -> String {
    match split_table(&load.table) {
        (Some(schema), _) => format!("{schema}.{}", stage_name(load)),
        (None, _) => stage_name(load),
    }
}

/// A pooled connection that is closed, not returned to the pool, unless the work on it
/// finished: a connection abandoned mid-COPY, mid-read or mid-transaction is never reused.
pub struct Guarded<DB: sqlx::Database> {
    pub conn: sqlx::pool::PoolConnection<DB>,
    pub done: bool,
}

impl<DB: sqlx::Database> Guarded<DB> {
    pub fn new(conn: sqlx::pool::PoolConnection<DB>) -> Self {
        Guarded { conn, done: false }
    }

    /// The work finished: the connection goes back to the pool.
    pub fn finished(&mut self) {
        self.done = true;
    }
}

impl<DB: sqlx::Database> Drop for Guarded<DB> {
    fn drop(&mut self) {
        if !self.done {
            self.conn.close_on_drop();
        }
    }
}

/// A pooled database store: its pool, how to connect directly, and the store (for messages
/// and the password to redact).
pub struct DbConn<DB: sqlx::Database> {
    pub pool: sqlx::Pool<DB>,
    pub options: <DB::Connection as sqlx::Connection>::Options,
    pub store: crate::domain::store::DataStore,
}

impl<DB: sqlx::Database> DbConn<DB> {
    pub async fn acquire(&self) -> Result<sqlx::pool::PoolConnection<DB>, ConnectorError> {
        super::pools::acquire(&self.pool, &self.options, &self.store).await
    }

    /// Turns a driver error into a connector error with `context`, the password redacted.
    pub fn err(&self, context: &str) -> impl Fn(sqlx::Error) -> ConnectorError + '_ {
        let context = context.to_string();
        move |e| sql_error(&context, e, self.store.password.as_ref())
    }
}

/// A database source: it reads with a cursor filter or without one in the same way, and is a
/// [`SourceConnector`] by that.
#[async_trait]
pub trait CursorSource: Send + Sync {
    /// The rows of `source`, those that pass `filter` when there is one.
    async fn read(
        &self,
        source: &Source,
        filter: Option<&CursorFilter>,
        ctx: &IoContext,
    ) -> Result<Opened, ConnectorError>;
}

#[async_trait]
impl<T: CursorSource> SourceConnector for T {
    async fn open(&self, source: &Source, ctx: &IoContext) -> Result<Opened, ConnectorError> {
        self.read(source, None, ctx).await
    }

    async fn open_filtered(
        &self,
        source: &Source,
        filter: &CursorFilter,
        ctx: &IoContext,
    ) -> Result<Opened, ConnectorError> {
        self.read(source, Some(filter), ctx).await
    }
}

/// Where a database source's reading task sends its batches.
pub type BatchSender = tokio::sync::mpsc::Sender<Result<RecordBatch, ConnectorError>>;

/// The skeleton every database source's read shares: `read`, given the sender, reads the rows
/// into it on a task of its own and gives the connection back with `Ok(true)` when it read
/// everything (the connection returns to the pool), `Ok(false)` when it stopped early because
/// of cancellation or because nobody reads any more (then `stop` cancels the query on the
/// server, and the connection is closed); an error is the stream's last item.
pub fn spawn_read<DB, R, S>(
    schema: SchemaRef,
    estimated_rows: Option<u64>,
    read: impl FnOnce(BatchSender) -> R,
    stop: S,
) -> Opened
where
    DB: sqlx::Database,
    R: Future<Output = (Guarded<DB>, Result<bool, ConnectorError>)> + Send + 'static,
    S: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let reading = read(tx.clone());
    tokio::spawn(async move {
        let (mut conn, outcome) = reading.await;
        match outcome {
            Ok(true) => conn.finished(),
            Ok(false) => stop.await,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
            }
        }
    });
    let stream = stream_from(rx).map(|r| r.map_err(|e| DataFusionError::External(Box::new(e))));
    Opened {
        stream: Box::pin(RecordBatchStreamAdapter::new(schema, stream)),
        estimated_rows,
    }
}

/// The error for a cursor column that is not among the source's columns (`names`).
pub fn unknown_cursor_column(filter: &CursorFilter, source: &Source, names: &[&str]) -> ConnectorError {
    let hint = did_you_mean_hint(&filter.column, names.iter().copied());
    ConnectorError::permanent(format!(
        "cursor column {:?}{hint} is not a column of source {} (its columns: {})",
        filter.column,
        source.name,
        names.join(", ")
    ))
}

/// A user's query, ready to be wrapped as a subquery: without trailing semicolons.
pub fn bare_query(q: &str) -> &str {
    q.trim().trim_end_matches(|c: char| c == ';' || c.is_whitespace())
}

/// `array` as text in Arrow's display form (for types no cast to Utf8 exists for).
pub fn display_strings(array: &ArrayRef) -> Result<ArrayRef, ArrowError> {
    use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
    let options = FormatOptions::default();
    let f = ArrayFormatter::try_new(array.as_ref(), &options)?;
    let mut b = StringBuilder::with_capacity(array.len(), array.len() * 8);
    for i in 0..array.len() {
        if array.is_null(i) {
            b.append_null();
        } else {
            b.append_value(f.value(i).to_string());
        }
    }
    Ok(Arc::new(b.finish()))
}

/// What `rx` receives, as a stream (sources decode on a task of their own and send batches).
pub fn stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Microseconds between 1970-01-01 and 2000-01-01 (PostgreSQL's epoch).
pub const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Days between 1970-01-01 and 2000-01-01.
pub const PG_EPOCH_DAYS: i32 = 10_957;

/// Why one value cannot be carried between a database's wire form and an Arrow column, said
/// of the value (the caller names the column: [`BatchBuilder::value_error`]). Always permanent:
/// the data is what it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("text that is not UTF-8")]
    NotUtf8,
    /// A fixed-size binary value of the wrong size.
    #[error("expected {expected} bytes, got {got}")]
    Length { expected: usize, got: usize },
    /// `cannot read text "many" as an integer`: `value` described, `want` the type.
    #[error("cannot read {value} as {want}")]
    Unreadable { value: String, want: String },
    /// `"2024-13-01" is not a valid date`: `text` as the database sent it.
    #[error("{text:?} is not {want}")]
    NotA { text: String, want: &'static str },
    /// An infinite date or timestamp (`what`), which Arrow has no value for.
    #[error("an infinite {what} cannot be carried")]
    Infinite { what: &'static str },
    #[error("a truncated numeric")]
    TruncatedNumeric,
    #[error("NaN cannot be carried as a decimal")]
    NanNumeric,
    #[error("an infinite numeric cannot be carried as a decimal")]
    InfiniteNumeric,
    #[error("a value too large for decimal({precision},{scale})")]
    TooLarge { precision: u8, scale: i8 },
    #[error("a value with more than {scale} decimal places")]
    TooManyDecimalPlaces { scale: i8 },
}

/// One Arrow column under construction.
pub enum Col {
    Bool(BooleanBuilder),
    I8(Int8Builder),
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    Dec(Decimal128Builder, u8, i8),
    Text(StringBuilder),
    Bin(BinaryBuilder),
    Date(Date32Builder),
    Time(Time64MicrosecondBuilder),
    Ts(TimestampMicrosecondBuilder),
}

impl Col {
    /// A builder for one of the types the database connectors produce (exactly that type).
    pub fn new(dt: &DataType, cap: usize) -> Col {
        match dt {
            DataType::Boolean => Col::Bool(BooleanBuilder::with_capacity(cap)),
            DataType::Int8 => Col::I8(Int8Builder::with_capacity(cap)),
            DataType::Int16 => Col::I16(Int16Builder::with_capacity(cap)),
            DataType::Int32 => Col::I32(Int32Builder::with_capacity(cap)),
            DataType::Int64 => Col::I64(Int64Builder::with_capacity(cap)),
            DataType::Float32 => Col::F32(Float32Builder::with_capacity(cap)),
            DataType::Float64 => Col::F64(Float64Builder::with_capacity(cap)),
            DataType::Decimal128(p, s) => Col::Dec(
                Decimal128Builder::with_capacity(cap)
                    .with_precision_and_scale(*p, *s)
                    .unwrap_or_default(),
                *p,
                *s,
            ),
            DataType::Binary => Col::Bin(BinaryBuilder::with_capacity(cap, cap * 16)),
            DataType::Date32 => Col::Date(Date32Builder::with_capacity(cap)),
            DataType::Time64(_) => Col::Time(Time64MicrosecondBuilder::with_capacity(cap)),
            DataType::Timestamp(_, tz) => {
                Col::Ts(TimestampMicrosecondBuilder::with_capacity(cap).with_timezone_opt(tz.clone()))
            }
            _ => Col::Text(StringBuilder::with_capacity(cap, cap * 16)),
        }
    }

    pub fn append_null(&mut self) {
        match self {
            Col::Bool(b) => b.append_null(),
            Col::I8(b) => b.append_null(),
            Col::I16(b) => b.append_null(),
            Col::I32(b) => b.append_null(),
            Col::I64(b) => b.append_null(),
            Col::F32(b) => b.append_null(),
            Col::F64(b) => b.append_null(),
            Col::Dec(b, _, _) => b.append_null(),
            Col::Text(b) => b.append_null(),
            Col::Bin(b) => b.append_null(),
            Col::Date(b) => b.append_null(),
            Col::Time(b) => b.append_null(),
            Col::Ts(b) => b.append_null(),
        }
    }

    pub fn finish(&mut self) -> ArrayRef {
        match self {
            Col::Bool(b) => Arc::new(b.finish()),
            Col::I8(b) => Arc::new(b.finish()),
            Col::I16(b) => Arc::new(b.finish()),
            Col::I32(b) => Arc::new(b.finish()),
            Col::I64(b) => Arc::new(b.finish()),
            Col::F32(b) => Arc::new(b.finish()),
            Col::F64(b) => Arc::new(b.finish()),
            Col::Dec(b, _, _) => Arc::new(b.finish()),
            Col::Text(b) => Arc::new(b.finish()),
            Col::Bin(b) => Arc::new(b.finish()),
            Col::Date(b) => Arc::new(b.finish()),
            Col::Time(b) => Arc::new(b.finish()),
            Col::Ts(b) => Arc::new(b.finish()),
        }
    }

    /// The Arrow type this column builds.
    pub fn data_type(&self) -> DataType {
        match self {
            Col::Bool(_) => DataType::Boolean,
            Col::I8(_) => DataType::Int8,
            Col::I16(_) => DataType::Int16,
            Col::I32(_) => DataType::Int32,
            Col::I64(_) => DataType::Int64,
            Col::F32(_) => DataType::Float32,
            Col::F64(_) => DataType::Float64,
            Col::Dec(_, p, s) => DataType::Decimal128(*p, *s),
            Col::Text(_) => DataType::Utf8,
            Col::Bin(_) => DataType::Binary,
            Col::Date(_) => DataType::Date32,
            Col::Time(_) => DataType::Time64(TimeUnit::Microsecond),
            Col::Ts(b) => b.finish_cloned().data_type().clone(),
        }
    }

    /// Appends a value a loosely typed database (SQLite) gave, coercing what fits the column
    /// (an integer in a REAL column, ISO text in a DATE column); says why a value does not.
    pub fn append_sql_value(&mut self, value: SqlValue) -> Result<(), ValueError> {
        if value == SqlValue::Null {
            self.append_null();
            return Ok(());
        }
        let mismatch = |want: &str, v: &SqlValue| ValueError::Unreadable {
            value: describe(v),
            want: want.to_string(),
        };
        match (&mut *self, value) {
            (Col::Bool(b), SqlValue::Bool(v)) => b.append_value(v),
            (Col::Bool(b), SqlValue::Int(v)) if v == 0 || v == 1 => b.append_value(v == 1),
            (Col::Bool(b), SqlValue::Text(t)) => match t.to_ascii_lowercase().as_str() {
                "true" | "t" | "1" | "yes" => b.append_value(true),
                "false" | "f" | "0" | "no" => b.append_value(false),
                _ => return Err(mismatch("a boolean", &SqlValue::Text(t))),
            },
            (Col::I64(b), SqlValue::Int(v)) => b.append_value(v),
            (Col::I64(b), SqlValue::Bool(v)) => b.append_value(i64::from(v)),
            (Col::I64(b), SqlValue::Float(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
                b.append_value(f as i64)
            }
            (Col::I64(b), SqlValue::Text(t)) => match t.trim().parse::<i64>() {
                Ok(v) => b.append_value(v),
                Err(_) => return Err(mismatch("an integer", &SqlValue::Text(t))),
            },
            (Col::F64(b), SqlValue::Float(v)) => b.append_value(v),
            (Col::F64(b), SqlValue::Int(v)) => b.append_value(v as f64),
            (Col::F64(b), SqlValue::Decimal(t)) | (Col::F64(b), SqlValue::Text(t)) => {
                match t.trim().parse::<f64>() {
                    Ok(v) => b.append_value(v),
                    Err(_) => return Err(mismatch("a number", &SqlValue::Text(t))),
                }
            }
            (Col::Text(b), v) => b.append_value(text_of(&v)),
            (Col::Bin(b), SqlValue::Blob(v)) => b.append_value(&v),
            (Col::Bin(b), SqlValue::Text(t)) => b.append_value(t.as_bytes()),
            (Col::Date(b), SqlValue::Date(d)) => b.append_value(Date32Type::from_naive_date(d)),
            (Col::Date(b), SqlValue::Timestamp(t)) => b.append_value(Date32Type::from_naive_date(t.date())),
            (Col::Date(b), SqlValue::Text(t)) => match parse_date(&t) {
                Some(d) => b.append_value(Date32Type::from_naive_date(d)),
                None => return Err(mismatch("a date (YYYY-MM-DD)", &SqlValue::Text(t))),
            },
            (Col::Time(b), SqlValue::Time(t)) => b.append_value(micros_of_day(t)),
            (Col::Time(b), SqlValue::Text(t)) => match NaiveTime::parse_from_str(t.trim(), "%H:%M:%S%.f") {
                Ok(time) => b.append_value(micros_of_day(time)),
                Err(_) => return Err(mismatch("a time (HH:MM:SS)", &SqlValue::Text(t))),
            },
            (Col::Ts(b), SqlValue::Timestamp(t)) => b.append_value(t.and_utc().timestamp_micros()),
            (Col::Ts(b), SqlValue::TimestampTz(t)) => b.append_value(t.timestamp_micros()),
            (Col::Ts(b), SqlValue::Date(d)) => b.append_value(
                d.and_hms_opt(0, 0, 0)
                    .map(|t| t.and_utc().timestamp_micros())
                    .unwrap_or(0),
            ),
            (Col::Ts(b), SqlValue::Text(t)) => match parse_timestamp(&t) {
                Some(ts) => b.append_value(ts.timestamp_micros()),
                None => return Err(mismatch("a timestamp (YYYY-MM-DD HH:MM:SS)", &SqlValue::Text(t))),
            },
            (Col::Ts(b), SqlValue::Int(secs)) => b.append_value(secs.saturating_mul(1_000_000)),
            (
                Col::Dec(b, p, s),
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
            (col, v) => {
                let want = col.data_type();
                return Err(mismatch(&format!("{want}"), &v));
            }
        }
        Ok(())
    }

    /// Appends a value in PostgreSQL's binary format for the type this column was made for.
    pub fn append_pg_binary(&mut self, v: &[u8]) -> Result<(), ValueError> {
        fn arr<const N: usize>(v: &[u8]) -> Result<[u8; N], ValueError> {
            v.try_into().map_err(|_| ValueError::Length {
                expected: N,
                got: v.len(),
            })
        }
        match self {
            Col::Bool(b) => b.append_value(v.first().copied().unwrap_or(0) != 0),
            Col::I8(b) => b.append_value(i16::from_be_bytes(arr(v)?) as i8),
            Col::I16(b) => b.append_value(i16::from_be_bytes(arr(v)?)),
            Col::I32(b) => b.append_value(i32::from_be_bytes(arr(v)?)),
            Col::I64(b) => b.append_value(i64::from_be_bytes(arr(v)?)),
            Col::F32(b) => b.append_value(f32::from_be_bytes(arr(v)?)),
            Col::F64(b) => b.append_value(f64::from_be_bytes(arr(v)?)),
            Col::Dec(b, p, s) => b.append_value(pg_numeric_to_i128(v, *p, *s)?),
            Col::Text(b) => b.append_value(std::str::from_utf8(v).map_err(|_| ValueError::NotUtf8)?),
            Col::Bin(b) => b.append_value(v),
            Col::Date(b) => {
                let days = i32::from_be_bytes(arr(v)?);
                if days == i32::MAX || days == i32::MIN {
                    return Err(ValueError::Infinite { what: "date" });
                }
                b.append_value(days + PG_EPOCH_DAYS)
            }
            Col::Time(b) => b.append_value(i64::from_be_bytes(arr(v)?)),
            Col::Ts(b) => {
                let micros = i64::from_be_bytes(arr(v)?);
                if micros == i64::MAX || micros == i64::MIN {
                    return Err(ValueError::Infinite { what: "timestamp" });
                }
                b.append_value(micros + PG_EPOCH_MICROS)
            }
        }
        Ok(())
    }

    /// Appends a value in MySQL's text protocol form.
    pub fn append_mysql_text(&mut self, v: &[u8]) -> Result<(), ValueError> {
        let text = || std::str::from_utf8(v).map_err(|_| ValueError::NotUtf8);
        fn num<T: std::str::FromStr>(t: &str) -> Result<T, ValueError> {
            t.parse::<T>().map_err(|_| ValueError::Unreadable {
                value: format!("{t:?}"),
                want: "a number of this type".into(),
            })
        }
        let not_a = |t: &str, want| ValueError::NotA {
            text: t.to_string(),
            want,
        };
        match self {
            Col::Bool(b) => match v {
                b"0" => b.append_value(false),
                b"1" => b.append_value(true),
                _ => return Err(not_a(text()?, "a boolean (0 or 1)")),
            },
            Col::I8(b) => b.append_value(num(text()?)?),
            Col::I16(b) => b.append_value(num(text()?)?),
            Col::I32(b) => b.append_value(num(text()?)?),
            Col::I64(b) => b.append_value(num(text()?)?),
            Col::F32(b) => b.append_value(num(text()?)?),
            Col::F64(b) => b.append_value(num(text()?)?),
            Col::Dec(b, p, s) => {
                let t = text()?;
                b.append_value(
                    parse_decimal_text(t, *p, *s).ok_or_else(|| ValueError::Unreadable {
                        value: format!("{t:?}"),
                        want: format!("decimal({p},{s})"),
                    })?,
                )
            }
            Col::Text(b) => b.append_value(text()?),
            Col::Bin(b) => b.append_value(v),
            Col::Date(b) => {
                let t = text()?;
                let d = NaiveDate::parse_from_str(t, "%Y-%m-%d").map_err(|_| not_a(t, "a valid date"))?;
                b.append_value(Date32Type::from_naive_date(d))
            }
            Col::Time(b) => {
                let t = text()?;
                let time = NaiveTime::parse_from_str(t, "%H:%M:%S%.f")
                    .map_err(|_| not_a(t, "a time of day (00:00:00 to 23:59:59)"))?;
                b.append_value(micros_of_day(time))
            }
            Col::Ts(b) => {
                let t = text()?;
                let ts = NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f")
                    .map_err(|_| not_a(t, "a valid date and time"))?;
                b.append_value(ts.and_utc().timestamp_micros())
            }
        }
        Ok(())
    }
}

/// A PostgreSQL binary `numeric` as an integer scaled by `scale`, checked against `precision`.
pub fn pg_numeric_to_i128(v: &[u8], precision: u8, scale: i8) -> Result<i128, ValueError> {
    if v.len() < 8 {
        return Err(ValueError::TruncatedNumeric);
    }
    let ndigits = u16::from_be_bytes([v[0], v[1]]) as usize;
    let weight = i16::from_be_bytes([v[2], v[3]]) as i32;
    let sign = u16::from_be_bytes([v[4], v[5]]);
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Err(ValueError::NanNumeric),
        _ => return Err(ValueError::InfiniteNumeric),
    }
    if v.len() < 8 + 2 * ndigits {
        return Err(ValueError::TruncatedNumeric);
    }
    let overflow = || ValueError::TooLarge { precision, scale };
    let mut out: i128 = 0;
    for i in 0..ndigits {
        let d = u16::from_be_bytes([v[8 + 2 * i], v[9 + 2 * i]]) as i128;
        // This group's value is d × 10^(4·(weight − i)); scaled by 10^scale.
        let exp = 4 * (weight - i as i32) + scale as i32;
        if exp >= 0 {
            let f = 10i128.checked_pow(exp as u32).ok_or_else(overflow)?;
            out = d
                .checked_mul(f)
                .and_then(|x| out.checked_add(x))
                .ok_or_else(overflow)?;
        } else {
            // Below the scale: only zeros may be dropped.
            let drop = (-exp) as u32;
            let f = 10i128.pow(drop.min(4));
            if drop >= 4 && d != 0 || d % f != 0 {
                return Err(ValueError::TooManyDecimalPlaces { scale });
            }
            if drop < 4 {
                out = out.checked_add(d / f).ok_or_else(overflow)?;
            }
        }
    }
    if out >= 10i128.pow(precision as u32) {
        return Err(overflow());
    }
    Ok(if sign == 0x4000 { -out } else { out })
}

/// Exact decimal text (`-12.340`) in PostgreSQL's binary `numeric` format.
pub fn pg_numeric_from_text(text: &str, out: &mut Vec<u8>) -> Result<(), ValueError> {
    let t = text.trim();
    let (neg, t) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(ValueError::NotA {
            text: text.to_string(),
            want: "a decimal number",
        });
    }
    let dscale = frac.len() as u16;
    let int = int.trim_start_matches('0');
    // Pad the integer part on the left and the fraction on the right to groups of 4 digits.
    let int_pad = (4 - int.len() % 4) % 4;
    let frac_pad = (4 - frac.len() % 4) % 4;
    let mut digits: Vec<u8> = Vec::with_capacity(int.len() + frac.len() + 8);
    digits.extend(std::iter::repeat_n(b'0', int_pad));
    digits.extend_from_slice(int.as_bytes());
    let int_groups = digits.len() / 4;
    digits.extend_from_slice(frac.as_bytes());
    digits.extend(std::iter::repeat_n(b'0', frac_pad));
    let mut groups: Vec<u16> = digits
        .chunks(4)
        .map(|c| c.iter().fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0')))
        .collect();
    let mut weight = int_groups as i32 - 1;
    // Leading zero groups move the weight; trailing ones are dropped.
    let lead = groups.iter().take_while(|g| **g == 0).count();
    groups.drain(..lead);
    weight -= lead as i32;
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    let sign: u16 = if neg && !groups.is_empty() { 0x4000 } else { 0 };
    out.extend_from_slice(&(groups.len() as i16).to_be_bytes());
    out.extend_from_slice(&(weight as i16).to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&dscale.to_be_bytes());
    for g in groups {
        out.extend_from_slice(&g.to_be_bytes());
    }
    Ok(())
}

/// Appends the unscaled decimal `v` with `scale` (≥ 0) in PostgreSQL's binary `numeric` form,
/// without going through text; `false` (nothing appended) when it does not fit the fast path.
pub fn pg_numeric_from_i128(v: i128, scale: i8, out: &mut Vec<u8>) -> bool {
    if scale < 0 {
        return false;
    }
    let scale = scale as u32;
    // Pad the fraction to whole base-10000 digits.
    let pad = (4 - scale % 4) % 4;
    let Some(mut u) = v.unsigned_abs().checked_mul(10u128.pow(pad)) else {
        return false;
    };
    let frac_groups = ((scale + pad) / 4) as i32;
    // Base-10000 digits, least significant first (u128 holds at most 39 decimal digits).
    let mut groups = [0u16; 10];
    let mut n = 0;
    while u > u64::MAX as u128 {
        groups[n] = (u % 10_000) as u16;
        u /= 10_000;
        n += 1;
    }
    let mut small = u as u64;
    while small > 0 {
        groups[n] = (small % 10_000) as u16;
        small /= 10_000;
        n += 1;
    }
    let low = groups[..n].iter().take_while(|g| **g == 0).count();
    let (ndigits, weight) = if n == 0 {
        (0, 0)
    } else {
        (n - low, n as i32 - frac_groups - 1)
    };
    let sign: u16 = if v < 0 { 0x4000 } else { 0 };
    out.extend_from_slice(&(ndigits as i16).to_be_bytes());
    out.extend_from_slice(&(weight as i16).to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&(scale as u16).to_be_bytes());
    for g in groups[low..n].iter().rev() {
        out.extend_from_slice(&g.to_be_bytes());
    }
    true
}

/// Rows decoded into columns, emitted as record batches.
pub struct BatchBuilder {
    pub schema: SchemaRef,
    pub cols: Vec<Col>,
    pub rows: usize,
    capacity: usize,
}

impl BatchBuilder {
    pub fn new(fields: Vec<Field>, capacity: usize) -> Self {
        let cols = fields.iter().map(|f| Col::new(f.data_type(), capacity)).collect();
        BatchBuilder {
            schema: Arc::new(Schema::new(fields)),
            cols,
            rows: 0,
            capacity,
        }
    }

    pub fn is_full(&self) -> bool {
        self.rows >= self.capacity
    }

    /// Once the builder is full, sends its rows to `tx` as a batch. `Ok(false)`: the read
    /// stops, because it was cancelled or because nobody reads any more.
    pub async fn send_when_full(
        &mut self,
        tx: &BatchSender,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<bool, ConnectorError> {
        if !self.is_full() {
            return Ok(true);
        }
        let batch = self.finish()?;
        tokio::select! {
            biased;
            _ = cancel.cancelled() => Ok(false),
            r = tx.send(Ok(batch)) => Ok(r.is_ok()),
        }
    }

    /// Sends the rows left, if any, to `tx` as the read's last batch. `Ok(false)`: nobody
    /// reads any more.
    pub async fn send_rest(&mut self, tx: &BatchSender) -> Result<bool, ConnectorError> {
        if self.rows == 0 {
            return Ok(true);
        }
        let batch = self.finish()?;
        Ok(tx.send(Ok(batch)).await.is_ok())
    }

    pub fn finish(&mut self) -> Result<RecordBatch, ConnectorError> {
        let columns = self.cols.iter_mut().map(Col::finish).collect();
        self.rows = 0;
        RecordBatch::try_new(self.schema.clone(), columns)
            .map_err(|e| ConnectorError::permanent_from("building a batch", e))
    }

    /// The error for a value of column `i` that cannot be read.
    pub fn value_error(&self, i: usize, why: ValueError) -> ConnectorError {
        let field = self.schema.field(i);
        ConnectorError::permanent_from(format_args!("column {:?}", field.name()), why)
    }
}

/// `Timestamp(µs)` with or without UTC.
pub fn timestamp(utc: bool) -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, utc.then(|| "UTC".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_round_trip_exactly() {
        let mut b = Col::new(&DataType::Decimal128(12, 2), 4);
        b.append_sql_value(SqlValue::Text("12.30".into())).unwrap();
        b.append_sql_value(SqlValue::Float(12.3)).unwrap();
        b.append_sql_value(SqlValue::Int(7)).unwrap();
        b.append_sql_value(SqlValue::Null).unwrap();
        let arr = b.finish();
        let values: Vec<SqlValue> = (0..4)
            .map(|i| super::super::arrow_sql::value_at(&arr, i))
            .collect();
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
        let fields = vec![Field::new("qty", DataType::Int64, true)];
        let mut b = BatchBuilder::new(fields, 1);
        let why = b.cols[0]
            .append_sql_value(SqlValue::Text("many".into()))
            .unwrap_err();
        assert_eq!(
            b.value_error(0, why).message,
            "column \"qty\": cannot read text \"many\" as an integer"
        );
        let why = b.cols[0]
            .append_sql_value(SqlValue::Blob(vec![1, 2]))
            .unwrap_err();
        assert_eq!(why.to_string(), "cannot read a blob of 2 bytes as Int64");
    }

    fn round_trip(text: &str, p: u8, s: i8) -> i128 {
        let mut buf = Vec::new();
        pg_numeric_from_text(text, &mut buf).unwrap();
        pg_numeric_to_i128(&buf, p, s).unwrap()
    }

    #[test]
    fn numerics_round_trip_through_the_binary_format() {
        assert_eq!(round_trip("12345678901234.56", 16, 2), 1234567890123456);
        assert_eq!(round_trip("-0.01", 5, 2), -1);
        assert_eq!(round_trip("0", 5, 2), 0);
        assert_eq!(round_trip("10000", 10, 0), 10000);
        assert_eq!(round_trip("0.00012", 10, 5), 12);
        assert_eq!(
            round_trip("99999999999999999999999999999999999999", 38, 0),
            10i128.pow(38) - 1
        );
        assert_eq!(round_trip("-1.5", 4, 3), -1500);
    }

    #[test]
    fn decimals_encode_exactly_as_their_text_does() {
        let cases: &[(i128, i8)] = &[
            (0, 0),
            (0, 2),
            (125, 2),
            (-125, 2),
            (1, 4),
            (5, 5),
            (-1, 9),
            (10_000, 0),
            (1_000_000_000, 0),
            (123_456_789_012_345_678, 3),
            (10i128.pow(38) - 1, 0),
            (-(10i128.pow(38) - 1), 8),
            (10i128.pow(37), 36),
        ];
        for &(v, s) in cases {
            let text = datafusion::arrow::array::Decimal128Array::from(vec![v])
                .with_precision_and_scale(38, s)
                .unwrap()
                .value_as_string(0);
            let (mut fast, mut slow) = (Vec::new(), Vec::new());
            assert!(pg_numeric_from_i128(v, s, &mut fast), "{text}");
            pg_numeric_from_text(&text, &mut slow).unwrap();
            assert_eq!(fast, slow, "{text}");
            assert_eq!(pg_numeric_to_i128(&fast, 38, s).unwrap(), v, "{text}");
        }
        // 38 digits and a scale that pads past u128: the caller falls back to text.
        assert!(!pg_numeric_from_i128(10i128.pow(38) - 1, 3, &mut Vec::new()));
    }

    #[test]
    fn numerics_that_do_not_fit_are_errors() {
        let mut buf = Vec::new();
        pg_numeric_from_text("123.456", &mut buf).unwrap();
        assert!(pg_numeric_to_i128(&buf, 5, 2)
            .unwrap_err()
            .to_string()
            .contains("decimal places"));
        let mut buf = Vec::new();
        pg_numeric_from_text("123456", &mut buf).unwrap();
        assert!(pg_numeric_to_i128(&buf, 5, 0)
            .unwrap_err()
            .to_string()
            .contains("too large"));
        assert!(pg_numeric_from_text("1e5", &mut Vec::new()).is_err());
    }

    #[test]
    fn errors_never_quote_the_password() {
        let secret = Secret::new("hunter22".into());
        let e = sql_error(
            "connecting",
            sqlx::Error::Configuration("bad url postgres://u:hunter22@h/db".into()),
            Some(&secret),
        );
        assert!(!e.message.contains("hunter22"), "{}", e.message);
    }
}
