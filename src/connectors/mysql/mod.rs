//! MySQL and MariaDB (`relational_db` / `mysql`).
//!
//! Reads stream the result over the text protocol (rows arrive as the server sends them), in a
//! read-only transaction, and parse each value by the column's declared type (`SHOW COLUMNS`;
//! for a query, the description of the prepared query), so decimals stay exact. Cancelling
//! stops the read and kills the query on the server (`KILL QUERY`).
//!
//! Loads stage the rows with multi-row `INSERT`s inside one transaction; publishing inserts
//! the staged rows of `append` loads (each in a transaction that also records the load, so a
//! resumed publish never appends twice) and swaps in the staged tables of `replace` loads with
//! one `RENAME TABLE` statement.

use std::collections::HashMap;
use std::fmt::Write as _;

use async_trait::async_trait;
use datafusion::arrow::array::*;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::*;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::{StreamExt, TryStreamExt};
use sqlx::mysql::{MySqlRow, MySqlTypeInfo};
use sqlx::{
    AssertSqlSafe, Column, ColumnOrigin, Connection, Decode, Executor, MySql, MySqlConnection, Row,
    SqlSafeStr, Statement, TypeInfo, ValueRef,
};

use super::pools::{mysql_options, Pools};
use super::relational::{
    bare_query, display_strings, source_query_error, split_table, sql_error, stage_name, stream_from,
    timestamp, BatchBuilder, DbConn, Guarded,
};
use super::{
    ConnectorError, CursorFilter, IoContext, Load, Opened, RowsCallback, SinkConnector, SourceConnector,
};
use crate::domain::spec::{Source, SourceRead, WriteMode};
use crate::domain::store::DataStore;

/// Quotes an identifier per part with backticks: `shop.orders` becomes `` `shop`.`orders` ``.
pub fn quote_ident(name: &str) -> String {
    name.split('.').map(quote_part).collect::<Vec<_>>().join(".")
}

fn quote_part(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Where the bookkeeping of published appends lives (in the store's own database).
const MARKER_TABLE: &str = "_sluice_published";
/// One `INSERT` statement carries about this much SQL (well under `max_allowed_packet`).
const STATEMENT_BYTES: usize = 1 << 20;

type Conn = DbConn<MySql>;

fn connect(store: &DataStore, pools: &Pools) -> Result<Conn, ConnectorError> {
    Ok(DbConn {
        pool: pools.mysql(store)?,
        options: mysql_options(store)?,
        store: store.clone(),
    })
}

fn bytes_of(row: &MySqlRow, i: usize) -> Option<&[u8]> {
    let raw = row.try_get_raw(i).ok()?;
    if raw.is_null() {
        return None;
    }
    <&[u8] as Decode<MySql>>::decode(raw).ok()
}

fn text_of(row: &MySqlRow, i: usize) -> String {
    bytes_of(row, i)
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default()
}

/// `(name, declared type)` of each column, from `SHOW COLUMNS`.
async fn show_columns(conn: &mut MySqlConnection, table: &str) -> Result<Vec<(String, String)>, sqlx::Error> {
    let rows = sqlx::raw_sql(AssertSqlSafe(format!("SHOW COLUMNS FROM {}", quote_ident(table))))
        .fetch_all(&mut *conn)
        .await?;
    Ok(rows.iter().map(|r| (text_of(r, 0), text_of(r, 1))).collect())
}

async fn table_exists(conn: &mut MySqlConnection, table: &str) -> Result<bool, sqlx::Error> {
    let (schema, name) = split_table(table);
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) \
         AND TABLE_NAME = ?",
    )
    .bind(schema)
    .bind(name)
    .fetch_one(&mut *conn)
    .await?;
    Ok(n > 0)
}

/// The Arrow type of a declared MySQL column type, and how the read selects it; `None` for a
/// type Sluice cannot carry.
fn plan_column(name: &str, declared: &str) -> Option<(DataType, String)> {
    let d = declared.trim().to_ascii_lowercase();
    let col = format!("q.{}", quote_part(name));
    let base = d.split(['(', ' ']).next().unwrap_or("");
    let unsigned = d.contains("unsigned");
    let args = d
        .split_once('(')
        .and_then(|(_, r)| r.split_once(')'))
        .map(|(a, _)| a)
        .unwrap_or("");
    let native = |dt: DataType| Some((dt, col.clone()));
    match base {
        "tinyint" if args == "1" && !unsigned => native(DataType::Boolean),
        "bool" | "boolean" => native(DataType::Boolean),
        "tinyint" if unsigned => native(DataType::Int16),
        "tinyint" => native(DataType::Int8),
        "smallint" if unsigned => native(DataType::Int32),
        "smallint" => native(DataType::Int16),
        "mediumint" => native(DataType::Int32),
        "int" | "integer" if unsigned => native(DataType::Int64),
        "int" | "integer" => native(DataType::Int32),
        "bigint" if unsigned => native(DataType::Decimal128(20, 0)),
        "bigint" => native(DataType::Int64),
        "year" => native(DataType::Int16),
        "decimal" | "numeric" | "dec" | "fixed" => {
            let (p, s) = args.split_once(',').unwrap_or((args, "0"));
            match (p.trim().parse::<u8>(), s.trim().parse::<i8>()) {
                (Ok(p), Ok(s)) if (1..=38).contains(&p) && s >= 0 && s as u8 <= p => {
                    native(DataType::Decimal128(p, s))
                }
                _ => native(DataType::Utf8),
            }
        }
        "float" => native(DataType::Float32),
        "double" | "real" => native(DataType::Float64),
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "enum" | "set" | "json"
        | "uuid" | "inet4" | "inet6" => native(DataType::Utf8),
        "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => native(DataType::Binary),
        "bit" => Some((DataType::Int64, format!("CAST({col} AS UNSIGNED)"))),
        "date" => native(DataType::Date32),
        "time" => native(DataType::Time64(TimeUnit::Microsecond)),
        "datetime" => native(timestamp(false)),
        "timestamp" => native(timestamp(true)),
        _ => None,
    }
}

/// A column type as a prepared statement's description gives it, spelled like a declared
/// type for `plan_column`. The description carries no precision for a computed decimal (it
/// becomes exact text) and tells text from binary strings by the column's collation.
fn described_type(ty: &MySqlTypeInfo) -> String {
    if <str as sqlx::Type<MySql>>::compatible(ty) {
        return "text".into();
    }
    if <[u8] as sqlx::Type<MySql>>::compatible(ty) {
        return "blob".into();
    }
    match ty.name() {
        // `SELECT NULL`: a column of no type, read as text.
        "NULL" => "text".into(),
        name => name.to_ascii_lowercase(),
    }
}

pub struct MysqlSource {
    conn: Conn,
}

impl MysqlSource {
    pub fn new(store: &DataStore, pools: &Pools) -> Result<Self, ConnectorError> {
        Ok(MysqlSource {
            conn: connect(store, pools)?,
        })
    }

    async fn describe(
        &self,
        conn: &mut MySqlConnection,
        source: &Source,
    ) -> Result<(Vec<(String, String)>, Option<u64>, String), ConnectorError> {
        match source.read() {
            SourceRead::Table(table) => {
                if !table_exists(conn, table)
                    .await
                    .map_err(self.conn.err("looking up the table"))?
                {
                    let known: Vec<String> = sqlx::query_scalar(
                        "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()",
                    )
                    .fetch_all(&mut *conn)
                    .await
                    .unwrap_or_default();
                    let hint = crate::domain::names::did_you_mean(table, known.iter().map(String::as_str))
                        .map(|s| format!(" (did you mean {s:?}?)"))
                        .unwrap_or_default();
                    return Err(ConnectorError::permanent(format!(
                        "table {table:?} does not exist in {}{hint}",
                        super::pools::describe(&self.conn.store)
                    )));
                }
                let cols = show_columns(conn, table)
                    .await
                    .map_err(self.conn.err("reading the table's columns"))?;
                let (schema, name) = split_table(table);
                let estimate: Option<u64> = sqlx::query_scalar(
                    "SELECT CAST(TABLE_ROWS AS SIGNED) FROM information_schema.TABLES \
                     WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ?",
                )
                .bind(schema)
                .bind(name)
                .fetch_optional(&mut *conn)
                .await
                .ok()
                .flatten()
                .flatten()
                .map(|n: i64| n.max(0) as u64);
                Ok((cols, estimate, format!("SELECT * FROM {}", quote_ident(table))))
            }
            SourceRead::Query(q) => {
                let q = bare_query(q).to_string();
                let secret = self.conn.store.password.as_ref();
                // The result's columns as MySQL describes the prepared query. Preparing runs
                // nothing, and a prepared statement is exactly one statement, so the query
                // cannot smuggle in a second one (`; COMMIT; DROP ...`). (A temporary table
                // made from the query would type it too, but MySQL evaluates parts of a query
                // while it creates one, and a read-only transaction refuses to.)
                let mut tx = conn
                    .begin_with("START TRANSACTION READ ONLY")
                    .await
                    .map_err(self.conn.err("starting a read-only transaction"))?;
                let described = (&mut *tx)
                    .prepare(AssertSqlSafe(q.clone()).into_sql_str())
                    .await
                    .map_err(|e| source_query_error(e, secret))?;
                // The driver keeps prepared statements with their description; a later read of
                // the same query must not get this one's (the tables may have changed since).
                tx.clear_cached_statements()
                    .await
                    .map_err(self.conn.err("describing the query"))?;
                // A column read straight from a table has that column's declared type.
                let mut tables: HashMap<String, Vec<(String, String)>> = HashMap::new();
                let mut cols = Vec::with_capacity(described.columns().len());
                for column in described.columns() {
                    let declared = match column.origin() {
                        ColumnOrigin::Table(origin) => {
                            if !tables.contains_key(&*origin.table) {
                                // A view or table the server names but SHOW COLUMNS cannot
                                // read: the description's type will do.
                                let found = show_columns(&mut tx, &origin.table).await.unwrap_or_default();
                                tables.insert(origin.table.to_string(), found);
                            }
                            tables[&*origin.table]
                                .iter()
                                .find(|(n, _)| n.eq_ignore_ascii_case(&origin.name))
                                .map(|(_, ty)| ty.clone())
                        }
                        _ => None,
                    };
                    let declared = declared.unwrap_or_else(|| described_type(column.type_info()));
                    cols.push((column.name().to_string(), declared));
                }
                tx.commit().await.map_err(self.conn.err("describing the query"))?;
                Ok((cols, None, q))
            }
            SourceRead::Path(_) => Err(ConnectorError::permanent(
                "a MySQL store is read by table or query",
            )),
        }
    }
}

#[async_trait]
impl SourceConnector for MysqlSource {
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

/// The type a cursor's mark is cast to before it is compared with a column declared `declared`.
fn cursor_cast(declared: &str) -> Option<String> {
    let d = declared.trim().to_ascii_lowercase();
    let base = d.split(['(', ' ']).next().unwrap_or_default();
    Some(match base {
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" if d.contains("unsigned") => {
            "UNSIGNED".to_string()
        }
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" => "SIGNED".to_string(),
        "decimal" | "numeric" => d.replace("unsigned", "").trim().to_ascii_uppercase(),
        "date" => "DATE".to_string(),
        "datetime" | "timestamp" => "DATETIME(6)".to_string(),
        _ => return None,
    })
}

impl MysqlSource {
    async fn read(
        &self,
        source: &Source,
        filter: Option<&CursorFilter>,
        ctx: &IoContext,
    ) -> Result<Opened, ConnectorError> {
        let mut conn = Guarded::new(self.conn.acquire().await?);
        let id: u64 = sqlx::query_scalar("SELECT CONNECTION_ID()")
            .fetch_one(&mut *conn.conn)
            .await
            .map_err(self.conn.err("query"))?;
        let (declared, estimated_rows, inner) = self.describe(&mut conn.conn, source).await?;
        if declared.is_empty() {
            return Err(ConnectorError::permanent("the source has no columns"));
        }
        let mut fields = Vec::new();
        let mut exprs = Vec::new();
        for (name, ty) in &declared {
            let Some((dt, expr)) = plan_column(name, ty) else {
                return Err(ConnectorError::permanent(format!(
                    "column {name:?} has type {ty}, which Sluice cannot carry (convert it in a query, \
                     e.g. CAST({name} AS CHAR))"
                )));
            };
            fields.push(Field::new(name, dt, true));
            exprs.push(expr);
        }
        let plain = exprs
            .iter()
            .zip(&declared)
            .all(|(e, (n, _))| *e == format!("q.{}", quote_part(n)));
        let mut predicate = String::new();
        if let Some(f) = filter {
            let Some((name, ty)) = declared.iter().find(|(n, _)| n.eq_ignore_ascii_case(&f.column)) else {
                let names: Vec<&str> = declared.iter().map(|(n, _)| n.as_str()).collect();
                let hint = crate::domain::names::did_you_mean(&f.column, names.iter().copied())
                    .map(|s| format!(" (did you mean {s:?}?)"))
                    .unwrap_or_default();
                return Err(ConnectorError::permanent(format!(
                    "cursor column {:?}{hint} is not a column of source {} (its columns: {})",
                    f.column,
                    source.name,
                    names.join(", ")
                )));
            };
            if let Some(after) = f.after_text() {
                let cast = cursor_cast(ty).ok_or_else(|| {
                    ConnectorError::permanent(format!(
                        "cursor column {name:?} of source {} is {ty}: a cursor is an integer, decimal, date or timestamp column",
                        source.name
                    ))
                })?;
                // The mark, bound (never spliced) into a session variable the read compares
                // with; timestamps in the session's UTC.
                let after = after.trim_end_matches('Z').replacen('T', " ", 1);
                sqlx::query(AssertSqlSafe(format!(
                    "SET @sluice_cursor_after = CAST(? AS {cast})"
                )))
                .bind(after)
                .execute(&mut *conn.conn)
                .await
                .map_err(self.conn.err("setting the cursor's mark"))?;
                predicate = format!(" WHERE q.{} >= @sluice_cursor_after", quote_part(name));
            }
        }
        let sql = if plain && predicate.is_empty() {
            inner
        } else {
            format!("SELECT {} FROM (\n{inner}\n) AS q{predicate}", exprs.join(", "))
        };
        let mut builder = BatchBuilder::new(fields, ctx.batch_size);
        let schema = builder.schema.clone();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<RecordBatch, ConnectorError>>(2);
        let cancel = ctx.cancel.clone();
        let pool = self.conn.pool.clone();
        let secret = self.conn.store.password.clone();
        tokio::spawn(async move {
            let outcome = read_rows(&mut conn.conn, sql, &mut builder, &tx, &cancel, secret.as_ref()).await;
            match outcome {
                Ok(true) => conn.finished(),
                Ok(false) => {
                    // Stopped early: kill the query on the server; the connection is closed.
                    let _ = sqlx::raw_sql(AssertSqlSafe(format!("KILL QUERY {id}")))
                        .execute(&pool)
                        .await;
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                }
            }
        });
        let stream = stream_from(rx).map(|r| r.map_err(|e| DataFusionError::External(Box::new(e))));
        Ok(Opened {
            stream: Box::pin(RecordBatchStreamAdapter::new(schema, stream)),
            estimated_rows,
        })
    }
}

/// Runs `sql` in a read-only transaction (sources only read: a query that tries to write,
/// through a function, `FOR UPDATE` or otherwise, is refused by MySQL) and streams its rows
/// into batches. `Ok(true)` when it read everything, `Ok(false)` when it stopped because of
/// cancellation or because nobody reads any more.
async fn read_rows(
    conn: &mut MySqlConnection,
    sql: String,
    builder: &mut BatchBuilder,
    tx: &tokio::sync::mpsc::Sender<Result<RecordBatch, ConnectorError>>,
    cancel: &tokio_util::sync::CancellationToken,
    secret: Option<&crate::secrets::Secret>,
) -> Result<bool, ConnectorError> {
    let mut read_only = tokio::select! {
        biased;
        _ = cancel.cancelled() => return Ok(false),
        t = conn.begin_with("START TRANSACTION READ ONLY") => {
            t.map_err(|e| sql_error("starting a read-only transaction", e, secret))?
        }
    };
    let complete = fetch_batches(&mut read_only, sql, builder, tx, cancel, secret).await?;
    if complete {
        read_only
            .commit()
            .await
            .map_err(|e| sql_error("ending the read-only transaction", e, secret))?;
    }
    Ok(complete)
}

/// Streams the rows of `sql` into batches; see `read_rows`.
async fn fetch_batches(
    conn: &mut MySqlConnection,
    sql: String,
    builder: &mut BatchBuilder,
    tx: &tokio::sync::mpsc::Sender<Result<RecordBatch, ConnectorError>>,
    cancel: &tokio_util::sync::CancellationToken,
    secret: Option<&crate::secrets::Secret>,
) -> Result<bool, ConnectorError> {
    // The text protocol runs every statement of a text, but `sql` is one: a table's `SELECT`,
    // or a query that MySQL prepared alone as one statement (see `describe`).
    let mut rows = sqlx::raw_sql(AssertSqlSafe(sql)).fetch(&mut *conn);
    loop {
        let next = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Ok(false),
            _ = tx.closed() => return Ok(false),
            r = rows.try_next() => r.map_err(|e| source_query_error(e, secret))?,
        };
        let Some(row) = next else { break };
        for i in 0..builder.cols.len() {
            match bytes_of(&row, i) {
                None => builder.cols[i].append_null(),
                Some(v) => {
                    if let Err(why) = builder.cols[i].append_mysql_text(v) {
                        return Err(builder.value_error(i, why));
                    }
                }
            }
        }
        builder.rows += 1;
        if builder.is_full() {
            let batch = builder.finish()?;
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Ok(false),
                r = tx.send(Ok(batch)) => if r.is_err() { return Ok(false) },
            }
        }
    }
    if builder.rows > 0 {
        let batch = builder.finish()?;
        if tx.send(Ok(batch)).await.is_err() {
            return Ok(false);
        }
    }
    Ok(true)
}

// ---- loads -----------------------------------------------------------------------------------

/// How values of a column are written as SQL literals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lit {
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
fn mysql_type_for(dt: &DataType) -> (String, Lit) {
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

fn normalize(array: &ArrayRef, lit: Lit) -> Result<ArrayRef, String> {
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
        (Lit::Ts, DataType::Timestamp(unit, Some(_))) => {
            cast(array, &DataType::Timestamp(*unit, None)).map_err(|e| e.to_string())?
        }
        _ => array.clone(),
    };
    match cast(&source, &target) {
        Ok(a) => Ok(a),
        Err(_) if target == DataType::Utf8 => display_strings(array),
        Err(e) => Err(e.to_string()),
    }
}

/// Writes the literal of `a[row]` (not null).
fn write_literal(
    out: &mut String,
    a: &ArrayRef,
    row: usize,
    lit: Lit,
    backslash_escapes: bool,
) -> Result<(), String> {
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
                return Err(format!("{v} cannot be stored in MySQL"));
            }
            let _ = write!(out, "{v:e}");
        }
        Lit::F64 => {
            let v = a.as_primitive::<Float64Type>().value(row);
            if !v.is_finite() {
                return Err(format!("{v} cannot be stored in MySQL"));
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
                return Err(format!("{t:?} is not a decimal number"));
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
                .ok_or("a date out of range")?;
            let _ = write!(out, "'{}'", d.format("%Y-%m-%d"));
        }
        Lit::Time => {
            let t = a
                .as_primitive::<Time64MicrosecondType>()
                .value_as_time(row)
                .ok_or("a time out of range")?;
            let _ = write!(out, "'{}'", t.format("%H:%M:%S%.6f"));
        }
        Lit::Ts => {
            let t = a
                .as_primitive::<TimestampMicrosecondType>()
                .value_as_datetime(row)
                .ok_or("a timestamp out of range")?;
            let _ = write!(out, "'{}'", t.format("%Y-%m-%d %H:%M:%S%.6f"));
        }
    }
    Ok(())
}

pub struct MysqlSink {
    conn: Conn,
}

impl MysqlSink {
    pub fn new(store: &DataStore, pools: &Pools) -> Result<Self, ConnectorError> {
        Ok(MysqlSink {
            conn: connect(store, pools)?,
        })
    }
}

/// The staging table of a load, and the name the old table takes while it is swapped out.
fn stage_of(load: &Load) -> String {
    qualified_like(&load.table, &stage_name(load))
}

/// The user-level lock (`GET_LOCK`) a staging writer holds on its session while it stages
/// `load`: a discard takes it first, so it drops the staging table only after every statement
/// of a cancelled writer has ended on the server — a `CREATE TABLE` still running there when
/// the writer's future was dropped would otherwise leave the table behind. (Lock names are at
/// most 64 characters and server-wide; the load key is unique per instance, flow and output.)
fn stage_lock(load: &Load) -> String {
    let mut name = format!("sluice_stage_{}", load.key);
    name.truncate(64);
    name
}

/// Takes `lock` on `conn`'s session, waiting up to `wait_s`; `Ok(false)` when it timed out.
async fn get_lock(conn: &mut MySqlConnection, lock: &str, wait_s: u32) -> Result<bool, sqlx::Error> {
    let got: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, ?)")
        .bind(lock)
        .bind(wait_s)
        .fetch_one(conn)
        .await?;
    Ok(got == Some(1))
}

async fn release_lock(conn: &mut MySqlConnection, lock: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DO RELEASE_LOCK(?)").bind(lock).execute(conn).await?;
    Ok(())
}

fn old_of(load: &Load) -> String {
    qualified_like(&load.table, &format!("_sluice_old_{}", load.key))
}

fn qualified_like(table: &str, name: &str) -> String {
    match split_table(table) {
        (Some(schema), _) => format!("{schema}.{name}"),
        (None, _) => name.to_string(),
    }
}

async fn database_exists(conn: &mut MySqlConnection, db: &str) -> Result<bool, sqlx::Error> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?")
        .bind(db)
        .fetch_one(&mut *conn)
        .await?;
    Ok(n > 0)
}

/// Creates the database `db` when it is missing. `CREATE DATABASE IF NOT EXISTS` is not safe
/// against itself: two at once (several outputs of a flow, or several flows, into one new
/// database) may both find it missing, and the second then fails to create it. A creation
/// that fails while the database now exists was such a race, and the database is there: that
/// is success.
async fn ensure_database(conn: &mut MySqlConnection, db: &str) -> Result<(), sqlx::Error> {
    if database_exists(conn, db).await? {
        return Ok(());
    }
    match exec(conn, format!("CREATE DATABASE IF NOT EXISTS {}", quote_part(db))).await {
        Ok(()) => Ok(()),
        Err(e) => match database_exists(conn, db).await {
            Ok(true) => Ok(()),
            _ => Err(e),
        },
    }
}

async fn exec(conn: &mut MySqlConnection, sql: String) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(AssertSqlSafe(sql))
        .execute(&mut *conn)
        .await
        .map(|_| ())
}

/// The type of a key column in a merge's staging table: MySQL cannot index a whole `LONGTEXT`
/// or `LONGBLOB`, so a text key holds up to 255 characters (a binary one 255 bytes).
fn key_type(ty: String) -> String {
    match ty.as_str() {
        "LONGTEXT" => "VARCHAR(255)".into(),
        "LONGBLOB" => "VARBINARY(255)".into(),
        _ => ty,
    }
}

/// The column lists of a table's unique indexes (its primary key among them; prefix and
/// expression indexes left out: they do not make whole values unique).
async fn unique_indexes(conn: &mut MySqlConnection, table: &str) -> Result<Vec<Vec<String>>, sqlx::Error> {
    let (schema, name) = split_table(table);
    let rows: Vec<(String, Option<String>, Option<i64>)> = sqlx::query_as(
        "SELECT CAST(INDEX_NAME AS CHAR), CAST(COLUMN_NAME AS CHAR), CAST(SUB_PART AS SIGNED) \
         FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) \
         AND TABLE_NAME = ? AND NON_UNIQUE = 0 ORDER BY INDEX_NAME, SEQ_IN_INDEX",
    )
    .bind(schema)
    .bind(name)
    .fetch_all(&mut *conn)
    .await?;
    let mut indexes: Vec<(String, Option<Vec<String>>)> = Vec::new();
    for (index, column, sub_part) in rows {
        if indexes.last().map(|(i, _)| i != &index).unwrap_or(true) {
            indexes.push((index.clone(), Some(Vec::new())));
        }
        if let Some((_, columns)) = indexes.last_mut() {
            match (column, sub_part, columns.as_mut()) {
                (Some(c), None, Some(list)) => list.push(c),
                _ => *columns = None,
            }
        }
    }
    Ok(indexes.into_iter().filter_map(|(_, c)| c).collect())
}

/// The statement that merges a staged table into an existing target, and a note for the log.
/// `ON DUPLICATE KEY UPDATE` only when the key's index is the table's one unique index: with
/// others, a row could collide on one of those and update the wrong row.
fn merge_sql(
    load: &Load,
    staged: &[String],
    target: &str,
    stage: &str,
    indexes: &[Vec<String>],
) -> (String, Option<String>) {
    let cols = staged
        .iter()
        .map(|c| quote_part(c))
        .collect::<Vec<_>>()
        .join(", ");
    let updates = super::merge::non_key(staged, &load.unique_key, true);
    let keyed = super::merge::has_key_index(indexes, &load.unique_key, true);
    if keyed && indexes.len() == 1 {
        let set: Vec<String> = if updates.is_empty() {
            load.unique_key
                .iter()
                .take(1)
                .map(|k| format!("{0} = VALUES({0})", quote_part(k)))
                .collect()
        } else {
            updates
                .iter()
                .map(|c| format!("{0} = VALUES({0})", quote_part(c)))
                .collect()
        };
        let sql = format!(
            "INSERT INTO {target} ({cols}) SELECT {cols} FROM {stage} AS s ON DUPLICATE KEY UPDATE {}",
            set.join(", ")
        );
        return (sql, None);
    }
    let matches: Vec<String> = load
        .unique_key
        .iter()
        .map(|k| format!("t.{0} = s.{0}", quote_part(k)))
        .collect();
    let matches = matches.join(" AND ");
    let mut sql = String::new();
    if !updates.is_empty() {
        let set: Vec<String> = updates
            .iter()
            .map(|c| format!("t.{0} = s.{0}", quote_part(c)))
            .collect();
        sql.push_str(&format!(
            "UPDATE {target} AS t JOIN {stage} AS s ON {matches} SET {}; ",
            set.join(", ")
        ));
    }
    let select: Vec<String> = staged.iter().map(|c| format!("s.{}", quote_part(c))).collect();
    sql.push_str(&format!(
        "INSERT INTO {target} ({cols}) SELECT {} FROM {stage} AS s \
         WHERE NOT EXISTS (SELECT 1 FROM {target} AS t WHERE {matches})",
        select.join(", ")
    ));
    let note = if keyed {
        format!(
            "merge into {}: besides its key ({}) it has other unique indexes, so matching rows \
             were updated and the others inserted, in one transaction",
            load.table,
            load.unique_key.join(", ")
        )
    } else {
        super::merge::no_index_note(load)
    };
    (sql, Some(note))
}

#[async_trait]
impl SinkConnector for MysqlSink {
    async fn stage(
        &self,
        load: &Load,
        mut input: SendableRecordBatchStream,
        _ctx: &IoContext,
        on_rows: RowsCallback,
    ) -> Result<u64, ConnectorError> {
        let schema = input.schema();
        let is_key = |name: &str| {
            load.mode == WriteMode::Merge && load.unique_key.iter().any(|k| k.eq_ignore_ascii_case(name))
        };
        let (mut defs, lits): (Vec<String>, Vec<Lit>) = schema
            .fields()
            .iter()
            .map(|f| {
                let (ty, lit) = mysql_type_for(f.data_type());
                let ty = if is_key(f.name()) { key_type(ty) } else { ty };
                (format!("{} {ty}", quote_part(f.name())), lit)
            })
            .unzip();
        if load.mode == WriteMode::Merge && !load.unique_key.is_empty() {
            // A merge's table gets its primary key here: renamed into place when the target
            // does not exist yet, it is the target's.
            let keys: Vec<String> = load.unique_key.iter().map(|k| quote_part(k)).collect();
            defs.push(format!("PRIMARY KEY ({})", keys.join(", ")));
        }
        let columns: Vec<String> = schema.fields().iter().map(|f| quote_part(f.name())).collect();
        let stage = quote_ident(&stage_of(load));
        let mut guarded = Guarded::new(self.conn.acquire().await?);
        let conn = &mut *guarded.conn;
        let mode: String = sqlx::query_scalar("SELECT @@SESSION.sql_mode")
            .fetch_one(&mut *conn)
            .await
            .map_err(self.conn.err("reading the session's SQL mode"))?;
        let backslash_escapes = !mode.to_ascii_uppercase().contains("NO_BACKSLASH_ESCAPES");
        // Held until the rows are committed (or the session ends): see `stage_lock`.
        let lock = stage_lock(load);
        if !get_lock(conn, &lock, 30)
            .await
            .map_err(self.conn.err("locking the staging table"))?
        {
            return Err(ConnectorError::transient(format!(
                "the staging table of {} is still held by an earlier writer after 30 s",
                load.table
            )));
        }
        if let (Some(db), _) = split_table(&load.table) {
            ensure_database(conn, db)
                .await
                .map_err(self.conn.err("creating the target's database"))?;
        }
        exec(
            conn,
            format!(
                "DROP TABLE IF EXISTS {stage}; CREATE TABLE {stage} ({}) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
                defs.join(", ")
            ),
        )
        .await
        .map_err(self.conn.err("creating the staging table"))?;
        let mut tx = conn
            .begin()
            .await
            .map_err(self.conn.err("starting a transaction"))?;
        let head = format!("INSERT INTO {stage} ({}) VALUES ", columns.join(", "));
        let mut sql = String::with_capacity(STATEMENT_BYTES + 4096);
        let mut total = 0u64;
        while let Some(batch) = input.next().await {
            let batch =
                batch.map_err(|e| super::error::to_connector_error(e, "reading rows to write"))?;
            let arrays: Vec<ArrayRef> = batch
                .columns()
                .iter()
                .zip(&lits)
                .enumerate()
                .map(|(i, (a, l))| {
                    normalize(a, *l).map_err(|e| {
                        ConnectorError::permanent(format!("column {:?}: {e}", schema.field(i).name()))
                    })
                })
                .collect::<Result<_, _>>()?;
            for row in 0..batch.num_rows() {
                sql.push_str(if sql.is_empty() { &head } else { "," });
                sql.push('(');
                for (i, (a, l)) in arrays.iter().zip(&lits).enumerate() {
                    if i > 0 {
                        sql.push(',');
                    }
                    if a.is_null(row) {
                        sql.push_str("NULL");
                    } else {
                        write_literal(&mut sql, a, row, *l, backslash_escapes).map_err(|e| {
                            ConnectorError::permanent(format!("column {:?}: {e}", schema.field(i).name()))
                        })?;
                    }
                }
                sql.push(')');
                if sql.len() >= STATEMENT_BYTES {
                    exec(&mut tx, std::mem::take(&mut sql))
                        .await
                        .map_err(self.conn.err("loading rows"))?;
                    sql.reserve(STATEMENT_BYTES + 4096);
                }
            }
            total += batch.num_rows() as u64;
            on_rows(total, None);
        }
        if !sql.is_empty() {
            exec(&mut tx, sql).await.map_err(self.conn.err("loading rows"))?;
        }
        tx.commit()
            .await
            .map_err(self.conn.err("committing the staged rows"))?;
        release_lock(conn, &lock)
            .await
            .map_err(self.conn.err("unlocking the staging table"))?;
        guarded.done = true;
        Ok(total)
    }

    async fn publish(&self, loads: &[Load]) -> Result<Vec<String>, ConnectorError> {
        let mut notes = Vec::new();
        let mut guarded = Guarded::new(self.conn.acquire().await?);
        let conn = &mut *guarded.conn;
        let marker = quote_part(MARKER_TABLE);
        exec(
            conn,
            format!(
                "CREATE TABLE IF NOT EXISTS {marker} (load_key VARCHAR(100) PRIMARY KEY, \
                 published_utc DATETIME(6) NOT NULL) ENGINE=InnoDB"
            ),
        )
        .await
        .map_err(self.conn.err("creating the publish log"))?;
        let mut renames: Vec<String> = Vec::new();
        let mut olds: Vec<String> = Vec::new();
        for load in loads {
            let stage_q = stage_of(load);
            // A table swapped out by an earlier, interrupted publish.
            exec(
                conn,
                format!("DROP TABLE IF EXISTS {}", quote_ident(&old_of(load))),
            )
            .await
            .map_err(self.conn.err("dropping an old table"))?;
            if !table_exists(conn, &stage_q)
                .await
                .map_err(self.conn.err("finding the staged rows"))?
            {
                continue; // published already
            }
            let stage = quote_ident(&stage_q);
            let target = quote_ident(&load.table);
            let exists = table_exists(conn, &load.table)
                .await
                .map_err(self.conn.err(&format!("reading {}", load.table)))?;
            let into_existing = matches!(load.mode, WriteMode::Append | WriteMode::Merge) && exists;
            if into_existing {
                let have: Vec<String> = show_columns(conn, &load.table)
                    .await
                    .map_err(self.conn.err(&format!("reading {}", load.table)))?
                    .into_iter()
                    .map(|(n, _)| n)
                    .collect();
                let staged: Vec<String> = show_columns(conn, &stage_q)
                    .await
                    .map_err(self.conn.err("reading the staged rows"))?
                    .into_iter()
                    .map(|(n, _)| n)
                    .collect();
                super::merge::check_columns(load, &staged, &have, true)?;
                let cols = staged
                    .iter()
                    .map(|c| quote_part(c))
                    .collect::<Vec<_>>()
                    .join(", ");
                let write = if load.mode == WriteMode::Merge {
                    let indexes = unique_indexes(conn, &load.table)
                        .await
                        .map_err(self.conn.err(&format!("reading the indexes of {}", load.table)))?;
                    let (sql, note) = merge_sql(load, &staged, &target, &stage, &indexes);
                    notes.extend(note);
                    sql
                } else {
                    format!("INSERT INTO {target} ({cols}) SELECT {cols} FROM {stage}")
                };
                let mut tx = conn
                    .begin()
                    .await
                    .map_err(self.conn.err("starting a transaction"))?;
                let done: Option<i32> = sqlx::query_scalar(AssertSqlSafe(format!(
                    "SELECT 1 FROM {marker} WHERE load_key = ? FOR UPDATE"
                )))
                .bind(&load.key)
                .fetch_optional(&mut *tx)
                .await
                .map_err(self.conn.err("reading the publish log"))?;
                if done.is_none() {
                    exec(&mut tx, write)
                        .await
                        .map_err(self.conn.err(&format!("writing into {}", load.table)))?;
                    sqlx::query(AssertSqlSafe(format!(
                        "INSERT INTO {marker} (load_key, published_utc) VALUES (?, UTC_TIMESTAMP(6))"
                    )))
                    .bind(&load.key)
                    .execute(&mut *tx)
                    .await
                    .map_err(self.conn.err("writing the publish log"))?;
                }
                tx.commit()
                    .await
                    .map_err(self.conn.err("committing the append"))?;
                exec(conn, format!("DROP TABLE {stage}"))
                    .await
                    .map_err(self.conn.err("dropping the staging table"))?;
                sqlx::query(AssertSqlSafe(format!("DELETE FROM {marker} WHERE load_key = ?")))
                    .bind(&load.key)
                    .execute(&mut *conn)
                    .await
                    .map_err(self.conn.err("writing the publish log"))?;
            } else if exists {
                let old = quote_ident(&old_of(load));
                renames.push(format!("{target} TO {old}"));
                renames.push(format!("{stage} TO {target}"));
                olds.push(old);
            } else {
                if load.mode == WriteMode::Merge {
                    notes.push(super::merge::created_note(load, "a primary key"));
                }
                renames.push(format!("{stage} TO {target}"));
            }
        }
        if !renames.is_empty() {
            // One statement: readers see every old table or every new one.
            exec(conn, format!("RENAME TABLE {}", renames.join(", ")))
                .await
                .map_err(self.conn.err("swapping in the new tables"))?;
        }
        for old in olds {
            exec(conn, format!("DROP TABLE IF EXISTS {old}"))
                .await
                .map_err(self.conn.err("dropping an old table"))?;
        }
        guarded.done = true;
        Ok(notes)
    }

    async fn discard(&self, loads: &[Load]) -> Result<(), ConnectorError> {
        if loads.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.acquire().await?;
        for load in loads {
            // After the writer's last statement (it holds the lock while staging); past the
            // wait the table is dropped anyway.
            let lock = stage_lock(load);
            let locked = get_lock(&mut conn, &lock, 30)
                .await
                .map_err(self.conn.err("locking the staging table"))?;
            if !locked {
                tracing::warn!(table = %load.table, "a staging writer still holds its lock after 30 s; dropping its table anyway");
            }
            exec(
                &mut conn,
                format!(
                    "DROP TABLE IF EXISTS {}, {}",
                    quote_ident(&stage_of(load)),
                    quote_ident(&old_of(load))
                ),
            )
            .await
            .map_err(self.conn.err("dropping staging tables"))?;
            if locked {
                release_lock(&mut conn, &lock)
                    .await
                    .map_err(self.conn.err("unlocking the staging table"))?;
            }
        }
        Ok(())
    }
}

/// Connects and asks the server's version.
pub async fn check(store: &DataStore, pools: &Pools) -> Result<String, ConnectorError> {
    let conn = connect(store, pools)?;
    let mut c = conn.acquire().await?;
    sqlx::query_scalar::<_, String>("SELECT VERSION()")
        .fetch_one(&mut *c)
        .await
        .map_err(conn.err("asking the server's version"))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn declared_types_map_to_arrow() {
        let t = |d: &str| plan_column("c", d).map(|(dt, _)| dt);
        assert_eq!(t("tinyint(1)"), Some(DataType::Boolean));
        assert_eq!(t("tinyint(4)"), Some(DataType::Int8));
        assert_eq!(t("int(10) unsigned"), Some(DataType::Int64));
        assert_eq!(t("bigint(20) unsigned"), Some(DataType::Decimal128(20, 0)));
        assert_eq!(t("decimal(12,2)"), Some(DataType::Decimal128(12, 2)));
        assert_eq!(t("decimal(65,2)"), Some(DataType::Utf8));
        assert_eq!(t("enum('a','b')"), Some(DataType::Utf8));
        assert_eq!(t("datetime(6)"), Some(timestamp(false)));
        assert_eq!(t("timestamp"), Some(timestamp(true)));
        assert_eq!(t("geometry"), None);
    }

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
}
