//! SQLite databases (`relational_db` / `sqlite`): read a table or a query (one statement, on a
//! read-only connection) as Arrow batches, write a table atomically (staged and swapped inside
//! one transaction).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::{StreamExt, TryStreamExt};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteRow, SqliteValueRef};
// Identifiers in these statements are quoted by `quote_ident`; values are bound. Write
// transactions begin IMMEDIATE: a deferred one that reads first cannot wait for the write lock
// and fails at once with "database is locked" when another flow is writing.
use sqlx::{AssertSqlSafe, Column, ConnectOptions, Connection, Decode, Row, TypeInfo, ValueRef};

use super::arrow_sql::{value_at, SqlValue};
use super::error::ErrorKind;
use super::relational::{split_table, stream_from, BatchBuilder};
use super::{
    store_path, ConnectorError, CursorFilter, IoContext, Load, Opened, RowsCallback, SinkConnector,
    SourceConnector,
};
use crate::domain::spec::{Source, SourceRead, WriteMode};
use crate::domain::store::DataStore;

const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

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
fn db_error(context: &str, e: sqlx::Error) -> ConnectorError {
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
fn source_query_error(e: sqlx::Error) -> ConnectorError {
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

/// Reads one cell as a `SqlValue`, by the value's own storage class.
fn read_cell(row: &SqliteRow, i: usize) -> Result<SqlValue, String> {
    let raw: SqliteValueRef<'_> = row.try_get_raw(i).map_err(|e| e.to_string())?;
    if raw.is_null() {
        return Ok(SqlValue::Null);
    }
    let class = raw.type_info().name().to_string();
    let decoded = match class.as_str() {
        "INTEGER" | "BOOLEAN" => <i64 as Decode<sqlx::Sqlite>>::decode(raw).map(SqlValue::Int),
        "REAL" => <f64 as Decode<sqlx::Sqlite>>::decode(raw).map(SqlValue::Float),
        "BLOB" => <Vec<u8> as Decode<sqlx::Sqlite>>::decode(raw).map(SqlValue::Blob),
        _ => <String as Decode<sqlx::Sqlite>>::decode(raw).map(SqlValue::Text),
    };
    decoded.map_err(|e| e.to_string())
}

fn class_type(v: &SqlValue) -> Option<DataType> {
    match v {
        SqlValue::Null => None,
        SqlValue::Int(_) => Some(DataType::Int64),
        SqlValue::Float(_) => Some(DataType::Float64),
        SqlValue::Blob(_) => Some(DataType::Binary),
        _ => Some(DataType::Utf8),
    }
}

pub struct SqliteSource {
    path: PathBuf,
}

impl SqliteSource {
    pub fn new(store: &DataStore) -> Result<Self, ConnectorError> {
        Ok(SqliteSource {
            path: store_path(store)?,
        })
    }

    async fn connect(&self) -> Result<SqliteConnection, ConnectorError> {
        if !self.path.is_file() {
            return Err(ConnectorError::permanent(format!(
                "SQLite database {} does not exist",
                self.path.display()
            )));
        }
        SqliteConnectOptions::new()
            .filename(&self.path)
            .read_only(true)
            .busy_timeout(BUSY_TIMEOUT)
            .connect()
            .await
            .map_err(|e| db_error(&format!("opening {}", self.path.display()), e))
    }
}

/// The declared types of a table's columns, by `PRAGMA table_info`.
async fn declared_types(
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

async fn table_names(conn: &mut SqliteConnection) -> Vec<String> {
    sqlx::query_scalar::<_, String>(
        "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%'",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap_or_default()
}

#[async_trait]
impl SourceConnector for SqliteSource {
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

impl SqliteSource {
    async fn read(
        &self,
        source: &Source,
        filter: Option<&CursorFilter>,
        ctx: &IoContext,
    ) -> Result<Opened, ConnectorError> {
        let mut conn = self.connect().await?;
        let (sql, declared, estimated_rows) = match source.read() {
            SourceRead::Table(table) => {
                let declared = declared_types(&mut conn, table).await?;
                if declared.is_empty() {
                    let known = table_names(&mut conn).await;
                    let hint =
                        crate::domain::names::did_you_mean_hint(table, known.iter().map(String::as_str));
                    return Err(ConnectorError::permanent(format!(
                        "table {table:?} does not exist in {}{hint}",
                        self.path.display()
                    )));
                }
                let count: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
                    "SELECT count(*) FROM {}",
                    quote_ident(table)
                )))
                .fetch_one(&mut conn)
                .await
                .ok();
                (
                    format!("SELECT * FROM {}", quote_ident(table)),
                    Some(declared),
                    count.map(|c| c.max(0) as u64),
                )
            }
            SourceRead::Query(q) => (read_query(q)?, None, None),
            SourceRead::Path(_) => {
                return Err(ConnectorError::permanent(
                    "a SQLite store is read by table or query",
                ))
            }
        };
        // A cursor source compares in SQLite: integers as numbers, the rest as the text Sluice
        // writes (ISO 8601 dates and times, exact decimals), bound as a parameter.
        let (sql, after) = match filter.map(|f| (f, &f.after)) {
            None | Some((_, serde_json::Value::Null)) => (sql, None),
            Some((f, after)) => (
                format!(
                    "SELECT * FROM (\n{sql}\n) AS q WHERE q.{} >= ?",
                    quote_ident(&f.column)
                ),
                Some(after.clone()),
            ),
        };
        let batch_size = ctx.batch_size;
        let cancel = ctx.cancel.clone();
        let (schema_tx, schema_rx) = tokio::sync::oneshot::channel::<Result<SchemaRef, ConnectorError>>();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<RecordBatch, ConnectorError>>(2);
        // The reader owns the connection; it stops when the receiver is dropped or on cancel.
        tokio::spawn(async move {
            let mut query = sqlx::query(AssertSqlSafe(sql));
            query = match after {
                None => query,
                Some(serde_json::Value::Number(n)) if n.is_i64() => query.bind(n.as_i64()),
                Some(serde_json::Value::Number(n)) => query.bind(n.as_f64()),
                Some(serde_json::Value::String(text)) => {
                    query.bind(text.replacen('T', " ", 1).trim_end_matches('Z').to_string())
                }
                Some(other) => query.bind(other.to_string()),
            };
            let mut rows = query.fetch(&mut conn);
            let mut chunk: Vec<SqliteRow> = Vec::with_capacity(batch_size);
            let mut schema_tx = Some(schema_tx);
            let mut builder: Option<BatchBuilder> = None;
            loop {
                let next = tokio::select! {
                    _ = cancel.cancelled() => return,
                    next = rows.try_next() => next,
                };
                let row = match next {
                    Ok(row) => row,
                    Err(e) => {
                        let err = source_query_error(e);
                        match schema_tx.take() {
                            Some(stx) => {
                                let _ = stx.send(Err(err));
                            }
                            None => {
                                let _ = tx.send(Err(err)).await;
                            }
                        }
                        return;
                    }
                };
                let done = row.is_none();
                if let Some(row) = row {
                    chunk.push(row);
                }
                if chunk.len() < batch_size && !done {
                    continue;
                }
                if builder.is_none() {
                    let schema = infer_schema(&chunk, declared.as_deref());
                    if let Some(stx) = schema_tx.take() {
                        let _ = stx.send(Ok(schema.clone()));
                    }
                    let fields = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
                    builder = Some(BatchBuilder::new(fields, batch_size));
                }
                let Some(b) = builder.as_mut() else {
                    return;
                };
                if !chunk.is_empty() {
                    let batch = to_batch(&chunk, b);
                    chunk.clear();
                    if tx.send(batch).await.is_err() {
                        return;
                    }
                }
                if done {
                    return;
                }
            }
        });
        let schema = schema_rx.await.map_err(|_| {
            ConnectorError::permanent("the SQLite reader stopped before it produced a schema")
        })??;
        let stream = stream_from(rx).map(|r| r.map_err(|e| DataFusionError::External(Box::new(e))));
        Ok(Opened {
            stream: Box::pin(RecordBatchStreamAdapter::new(schema, stream)),
            estimated_rows,
        })
    }
}

/// The statement that reads a source query. The database is open read-only, but a read-only
/// connection still runs `VACUUM INTO '<file>'` (which writes a file), and sqlx runs every
/// statement of a text, the second after a `;` too. So the query must be one statement, and a
/// query: it starts with SELECT, WITH or VALUES (a WITH that ends in a DELETE is refused by
/// the read-only connection). Not wrapped as a subquery, so its columns keep their names even
/// when two are named alike (SQLite renames a subquery's `id, id` to `id, id:1`).
fn read_query(query: &str) -> Result<String, ConnectorError> {
    let refuse = |why: String| ConnectorError::permanent(format!("query: {why}"));
    let statement = one_statement(query).map_err(refuse)?;
    let b = statement.as_bytes();
    let start = skip_space_and_comments(b, 0);
    let word: String = b[start..]
        .iter()
        .take_while(|c| is_id_char(**c))
        .map(|c| char::from(*c).to_ascii_uppercase())
        .collect();
    if !matches!(word.as_str(), "SELECT" | "WITH" | "VALUES") {
        return Err(refuse(format!(
            "a source query reads: it is a SELECT, WITH or VALUES query, not {}",
            if word.is_empty() { "empty" } else { &word }
        )));
    }
    Ok(statement.to_string())
}

/// SQLite's whitespace (`sqlite3Isspace`).
fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// A byte of an identifier or keyword (SQLite's `IdChar`).
fn is_id_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

/// The index of the first byte at or after `i` that is not whitespace or inside a comment:
/// `--` to the end of the line, `/* */` to its end or the end of the text.
fn skip_space_and_comments(b: &[u8], mut i: usize) -> usize {
    while i < b.len() {
        if is_space(b[i]) {
            i += 1;
        } else if b[i] == b'-' && b.get(i + 1) == Some(&b'-') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                i += 1;
            }
            i = (i + 2).min(b.len());
        } else {
            break;
        }
    }
    i
}

/// `sql` without a trailing `;` (and what follows it: comments, spaces), or why it is not one
/// statement. Scans `sql` by the rules of SQLite's own tokenizer (`tokenize.c`) for what may
/// hide a `;`: quoted strings and identifiers (a quote doubled inside), `[...]` identifiers,
/// `--` and `/* */` comments. Bind parameters are refused: a source binds none, and SQLite's
/// Tcl-style variables (`$a(...)`) are tokens that may hold anything, a `;` too.
fn one_statement(sql: &str) -> Result<&str, String> {
    let b = sql.as_bytes();
    let mut end: Option<usize> = None;
    let mut i = 0;
    loop {
        i = skip_space_and_comments(b, i);
        let Some(&c) = b.get(i) else { break };
        if c == b';' {
            end.get_or_insert(i);
            i += 1;
            continue;
        }
        if end.is_some() {
            return Err(
                "it is more than one statement; a source query is exactly one read-only statement".into(),
            );
        }
        match c {
            b'\'' | b'"' | b'`' => {
                i += 1;
                while i < b.len() {
                    if b[i] == c {
                        if b.get(i + 1) != Some(&c) {
                            break;
                        }
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'[' => {
                while i < b.len() && b[i] != b']' {
                    i += 1;
                }
                i += 1;
            }
            b'?' | b'$' | b'@' | b':' | b'#' => {
                let token: String = sql[i..]
                    .chars()
                    .take_while(|ch| !ch.is_whitespace())
                    .take(20)
                    .collect();
                return Err(format!(
                    "it has a parameter ({token}); a source query binds none: write the value in the query"
                ));
            }
            0 => return Err("it contains a NUL character".into()),
            c if is_id_char(c) => {
                while i < b.len() && is_id_char(b[i]) {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    Ok(match end {
        Some(at) => &sql[..at],
        None => sql,
    })
}

/// Column types from declarations when there are any, else from the first chunk's values.
fn infer_schema(chunk: &[SqliteRow], declared: Option<&[(String, String)]>) -> SchemaRef {
    let fields: Vec<Field> = match declared {
        Some(decl) => decl
            .iter()
            .enumerate()
            .map(|(i, (name, ty))| {
                let dt = arrow_type_for_decl(ty).unwrap_or_else(|| value_type(chunk, i));
                Field::new(name, dt, true)
            })
            .collect(),
        None => match chunk.first() {
            Some(first) => first
                .columns()
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let decl = c.type_info().name().to_string();
                    let dt = match arrow_type_for_decl(&decl) {
                        // sqlx reports NUMERIC for expression columns it cannot type.
                        Some(_) if decl == "NUMERIC" => value_type(chunk, i),
                        Some(dt) => dt,
                        None => value_type(chunk, i),
                    };
                    Field::new(c.name(), dt, true)
                })
                .collect(),
            None => vec![],
        },
    };
    Arc::new(Schema::new(fields))
}

/// The type of a column's values in `chunk`: the widest storage class seen (integers widen to
/// floats, anything mixed with text is text).
fn value_type(chunk: &[SqliteRow], i: usize) -> DataType {
    let mut seen: Option<DataType> = None;
    for row in chunk {
        let Some(t) = read_cell(row, i).ok().as_ref().and_then(class_type) else {
            continue;
        };
        seen = Some(match (seen, t) {
            (None, t) => t,
            (Some(a), b) if a == b => a,
            (Some(DataType::Int64), DataType::Float64) | (Some(DataType::Float64), DataType::Int64) => {
                DataType::Float64
            }
            _ => DataType::Utf8,
        });
    }
    seen.unwrap_or(DataType::Utf8)
}

/// The rows of `chunk` as one batch.
fn to_batch(chunk: &[SqliteRow], builder: &mut BatchBuilder) -> Result<RecordBatch, ConnectorError> {
    for row in chunk {
        for i in 0..builder.cols.len() {
            let v = read_cell(row, i).map_err(ConnectorError::permanent)?;
            if let Err(why) = builder.cols[i].append_sql_value(v) {
                return Err(builder.value_error(i, why));
            }
        }
        builder.rows += 1;
    }
    builder.finish()
}

pub struct SqliteSink {
    path: PathBuf,
}

impl SqliteSink {
    pub fn new(store: &DataStore) -> Result<Self, ConnectorError> {
        Ok(SqliteSink {
            path: store_path(store)?,
        })
    }
}

/// Binds one value for SQLite: text for decimals, dates and times (SQLite has no such types).
fn bind<'q>(
    q: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    v: SqlValue,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    match v {
        SqlValue::Null => q.bind(None::<i64>),
        SqlValue::Bool(b) => q.bind(b),
        SqlValue::Int(i) => q.bind(i),
        SqlValue::Float(f) => q.bind(f),
        SqlValue::Blob(b) => q.bind(b),
        other => q.bind(super::arrow_sql::text_of(&other)),
    }
}

/// The staging table of a load: in the same database, never read by anyone else.
fn stage_table(load: &Load) -> String {
    format!("_sluice_stage_{}", load.key)
}

fn column_defs(schema: &SchemaRef) -> Vec<String> {
    schema
        .fields()
        .iter()
        .map(|f| format!("{} {}", quote_ident(f.name()), decl_for_arrow_type(f.data_type())))
        .collect()
}

impl SqliteSink {
    async fn connect(&self) -> Result<SqliteConnection, ConnectorError> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| ConnectorError::permanent(format!("{}: {e}", dir.display())))?;
        }
        SqliteConnectOptions::new()
            .filename(&self.path)
            .create_if_missing(true)
            .busy_timeout(BUSY_TIMEOUT)
            .connect()
            .await
            .map_err(|e| db_error(&format!("opening {}", self.path.display()), e))
    }
}

async fn table_exists(conn: &mut SqliteConnection, table: &str) -> Result<bool, ConnectorError> {
    Ok(!declared_types(conn, table).await?.is_empty())
}

/// The column lists of a table's unique indexes (its primary key among them; partial and
/// expression indexes left out: `ON CONFLICT` cannot use them).
async fn unique_indexes(
    conn: &mut SqliteConnection,
    table: &str,
) -> Result<Vec<Vec<String>>, ConnectorError> {
    let (schema, name) = split_table(table);
    let prefix = schema.map(|s| format!("{}.", quote_ident(s))).unwrap_or_default();
    let err = |e| db_error("reading the table's indexes", e);
    let mut indexes = Vec::new();
    let columns = sqlx::query(AssertSqlSafe(format!(
        "PRAGMA {prefix}table_info({})",
        quote_ident(name)
    )))
    .fetch_all(&mut *conn)
    .await
    .map_err(err)?;
    let mut pk: Vec<(i64, String)> = columns
        .iter()
        .map(|r| (r.get::<i64, _>("pk"), r.get::<String, _>("name")))
        .filter(|(pk, _)| *pk > 0)
        .collect();
    pk.sort();
    if !pk.is_empty() {
        indexes.push(pk.into_iter().map(|(_, n)| n).collect());
    }
    let list = sqlx::query(AssertSqlSafe(format!(
        "PRAGMA {prefix}index_list({})",
        quote_ident(name)
    )))
    .fetch_all(&mut *conn)
    .await
    .map_err(err)?;
    for index in list {
        if index.get::<i64, _>("unique") != 1 || index.get::<i64, _>("partial") != 0 {
            continue;
        }
        let index_name: String = index.get("name");
        let info = sqlx::query(AssertSqlSafe(format!(
            "PRAGMA {prefix}index_info({})",
            quote_ident(&index_name)
        )))
        .fetch_all(&mut *conn)
        .await
        .map_err(err)?;
        let names: Option<Vec<String>> = info.iter().map(|r| r.get::<Option<String>, _>("name")).collect();
        if let Some(names) = names {
            indexes.push(names);
        }
    }
    Ok(indexes)
}

/// Publishes one staged `merge` load inside the publish transaction: a new target is the staged
/// table with a unique index on the key; an existing one gets the rows upserted (`ON
/// CONFLICT` when a unique index covers the key, else update-then-insert).
async fn merge_staged(
    tx: &mut SqliteConnection,
    load: &Load,
    existing: Vec<(String, String)>,
    notes: &mut Vec<String>,
) -> Result<(), ConnectorError> {
    let stage_name = stage_table(load);
    let stage = quote_ident(&stage_name);
    let target = quote_ident(&load.table);
    let (schema, bare) = split_table(&load.table);
    let keys: Vec<String> = load.unique_key.iter().map(|k| quote_ident_part(k)).collect();
    if existing.is_empty() {
        let index = match schema {
            Some(s) => format!(
                "{}.{}",
                quote_ident(s),
                quote_ident_part(&format!("{bare}_unique_key"))
            ),
            None => quote_ident_part(&format!("{bare}_unique_key")),
        };
        let sql = format!(
            "DROP TABLE IF EXISTS {target}; ALTER TABLE {stage} RENAME TO {}; \
             CREATE UNIQUE INDEX {index} ON {} ({})",
            quote_ident_part(bare),
            quote_ident_part(bare),
            keys.join(", ")
        );
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error(&format!("creating {}", load.table), e))?;
        notes.push(super::merge::created_note(load, "a unique index"));
        return Ok(());
    }
    let staged: Vec<String> = declared_types(tx, &stage_name)
        .await?
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let have: Vec<String> = existing.into_iter().map(|(n, _)| n).collect();
    super::merge::check_columns(load, &staged, &have, true)?;
    let cols: Vec<String> = staged.iter().map(|c| quote_ident_part(c)).collect();
    let cols = cols.join(", ");
    let updates = super::merge::non_key(&staged, &load.unique_key, true);
    let matches: Vec<String> = keys.iter().map(|k| format!("t.{k} = s.{k}")).collect();
    let matches = matches.join(" AND ");
    let indexes = unique_indexes(tx, &load.table).await?;
    let sql = if super::merge::has_key_index(&indexes, &load.unique_key, true) {
        let action = if updates.is_empty() {
            "NOTHING".to_string()
        } else {
            let set: Vec<String> = updates
                .iter()
                .map(|c| format!("{0} = excluded.{0}", quote_ident_part(c)))
                .collect();
            format!("UPDATE SET {}", set.join(", "))
        };
        // `WHERE true` keeps SQLite from reading ON CONFLICT as part of a join.
        format!(
            "INSERT INTO {target} ({cols}) SELECT {cols} FROM {stage} WHERE true \
             ON CONFLICT ({}) DO {action}",
            keys.join(", ")
        )
    } else {
        notes.push(super::merge::no_index_note(load));
        let mut sql = String::new();
        if !updates.is_empty() {
            let set: Vec<String> = updates
                .iter()
                .map(|c| format!("{0} = s.{0}", quote_ident_part(c)))
                .collect();
            sql.push_str(&format!(
                "UPDATE {target} AS t SET {} FROM {stage} AS s WHERE {matches}; ",
                set.join(", ")
            ));
        }
        let select: Vec<String> = staged
            .iter()
            .map(|c| format!("s.{}", quote_ident_part(c)))
            .collect();
        sql.push_str(&format!(
            "INSERT INTO {target} ({cols}) SELECT {} FROM {stage} AS s \
             WHERE NOT EXISTS (SELECT 1 FROM {target} AS t WHERE {matches})",
            select.join(", ")
        ));
        sql
    };
    sqlx::raw_sql(AssertSqlSafe(format!("{sql}; DROP TABLE {stage}")))
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(&format!("merging into {}", load.table), e))?;
    Ok(())
}

/// Quotes one identifier (dots and all) for SQLite.
fn quote_ident_part(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[async_trait]
impl SinkConnector for SqliteSink {
    /// Loads the rows into the load's staging table, created fresh, in one transaction.
    async fn stage(
        &self,
        load: &Load,
        mut input: SendableRecordBatchStream,
        _ctx: &IoContext,
        on_rows: RowsCallback,
    ) -> Result<u64, ConnectorError> {
        let mut conn = self.connect().await?;
        let schema = input.schema();
        let stage = quote_ident(&stage_table(load));
        // A failure or cancellation (the future dropped) rolls everything back.
        let mut tx = conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| db_error("starting a transaction", e))?;
        sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS {stage}")))
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error("dropping an earlier staging table", e))?;
        sqlx::query(AssertSqlSafe(format!(
            "CREATE TABLE {stage} ({})",
            column_defs(&schema).join(", ")
        )))
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error("creating the staging table", e))?;
        let columns: Vec<String> = schema.fields().iter().map(|f| quote_ident(f.name())).collect();
        let ncols = columns.len().max(1);
        let rows_per_insert = (30_000 / ncols).clamp(1, 500);
        let mut total = 0u64;
        while let Some(batch) = input.next().await {
            let batch = batch.map_err(|e| super::error::to_connector_error(e, "reading rows to write"))?;
            let arrays = batch.columns();
            let mut start = 0;
            while start < batch.num_rows() {
                let end = (start + rows_per_insert).min(batch.num_rows());
                let row_sql = format!("({})", vec!["?"; ncols].join(", "));
                let sql = format!(
                    "INSERT INTO {stage} ({}) VALUES {}",
                    columns.join(", "),
                    vec![row_sql; end - start].join(", ")
                );
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for r in start..end {
                    for a in arrays {
                        q = bind(q, value_at(a, r));
                    }
                }
                q.execute(&mut *tx)
                    .await
                    .map_err(|e| db_error("inserting rows", e))?;
                start = end;
            }
            total += batch.num_rows() as u64;
            on_rows(total, None);
        }
        tx.commit()
            .await
            .map_err(|e| db_error("committing the staged rows", e))?;
        Ok(total)
    }

    /// Swaps in (`replace`), inserts (`append`) or upserts (`merge`) every staged table in one
    /// transaction.
    async fn publish(&self, loads: &[Load]) -> Result<Vec<String>, ConnectorError> {
        let mut notes = Vec::new();
        let mut conn = self.connect().await?;
        let mut tx = conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| db_error("starting a transaction", e))?;
        for load in loads {
            let stage_name = stage_table(load);
            if !table_exists(&mut tx, &stage_name).await? {
                continue; // published already
            }
            let stage = quote_ident(&stage_name);
            let target = quote_ident(&load.table);
            let (_, bare) = split_table(&load.table);
            let existing = declared_types(&mut tx, &load.table).await?;
            if load.mode == WriteMode::Merge {
                merge_staged(&mut tx, load, existing, &mut notes).await?;
            } else if load.mode == WriteMode::Append && !existing.is_empty() {
                let staged = declared_types(&mut tx, &stage_name).await?;
                let have: Vec<&str> = existing.iter().map(|(n, _)| n.as_str()).collect();
                let missing: Vec<&str> = staged
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .filter(|n| !have.contains(n))
                    .collect();
                if !missing.is_empty() {
                    return Err(ConnectorError::permanent(format!(
                        "cannot append to {}: it has no column(s) {}",
                        load.table,
                        missing.join(", ")
                    )));
                }
                let cols: Vec<String> = staged.iter().map(|(n, _)| quote_ident(n)).collect();
                let cols = cols.join(", ");
                sqlx::query(AssertSqlSafe(format!(
                    "INSERT INTO {target} ({cols}) SELECT {cols} FROM {stage}"
                )))
                .execute(&mut *tx)
                .await
                .map_err(|e| db_error(&format!("appending to {}", load.table), e))?;
                sqlx::query(AssertSqlSafe(format!("DROP TABLE {stage}")))
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| db_error("dropping the staging table", e))?;
            } else {
                sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS {target}")))
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| db_error(&format!("dropping the old {}", load.table), e))?;
                sqlx::query(AssertSqlSafe(format!(
                    "ALTER TABLE {stage} RENAME TO {}",
                    quote_ident(bare)
                )))
                .execute(&mut *tx)
                .await
                .map_err(|e| db_error(&format!("swapping in {}", load.table), e))?;
            }
        }
        tx.commit()
            .await
            .map_err(|e| db_error("committing the publish", e))?;
        Ok(notes)
    }

    async fn discard(&self, loads: &[Load]) -> Result<(), ConnectorError> {
        if !self.path.exists() {
            return Ok(());
        }
        let mut conn = self.connect().await?;
        for load in loads {
            sqlx::query(AssertSqlSafe(format!(
                "DROP TABLE IF EXISTS {}",
                quote_ident(&stage_table(load))
            )))
            .execute(&mut conn)
            .await
            .map_err(|e| db_error("dropping a staging table", e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_query_is_one_statement() {
        for (sql, statement) in [
            ("SELECT 1", "SELECT 1"),
            ("SELECT 1;", "SELECT 1"),
            ("SELECT 1 ; ; -- done\n /* really */ ", "SELECT 1 "),
            (
                "SELECT ';' AS \"a;b\", `c;d`, [e;f] FROM t",
                "SELECT ';' AS \"a;b\", `c;d`, [e;f] FROM t",
            ),
            ("SELECT 'it''s; fine' -- ; no\n", "SELECT 'it''s; fine' -- ; no\n"),
            (
                "SELECT x'00', a$b FROM t /* ; */",
                "SELECT x'00', a$b FROM t /* ; */",
            ),
        ] {
            assert_eq!(one_statement(sql), Ok(statement), "{sql}");
        }
        for (sql, why) in [
            ("SELECT 1; DROP TABLE t", "more than one statement"),
            ("SELECT 1; COMMIT; DROP TABLE t", "more than one statement"),
            ("SELECT 1;VACUUM INTO '/tmp/x'", "more than one statement"),
            ("SELECT 'a''' ; DROP TABLE t", "more than one statement"),
            ("SELECT 1 -- x\n; DROP TABLE t", "more than one statement"),
            ("SELECT $a(;) FROM t", "parameter"),
            ("SELECT * FROM t WHERE id = ?", "parameter"),
            ("SELECT :x, @y, #z", "parameter"),
            ("SELECT 1\0; DROP TABLE t", "NUL"),
        ] {
            let got = one_statement(sql);
            assert!(got.as_ref().is_err_and(|e| e.contains(why)), "{sql}: {got:?}");
        }
    }

    /// Differential: SQLite itself, on a writable database, runs the second statement (an
    /// INSERT that shows) of exactly the texts that `one_statement` refuses.
    #[tokio::test]
    async fn one_statement_agrees_with_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = SqliteConnectOptions::new()
            .filename(dir.path().join("d.db"))
            .create_if_missing(true)
            .connect()
            .await
            .unwrap();
        sqlx::query("CREATE TABLE log (n INTEGER)")
            .execute(&mut conn)
            .await
            .unwrap();
        let insert = "INSERT INTO log VALUES (1)";
        // (text, whether SQLite runs its INSERT)
        let cases = [
            (format!("SELECT 1 /* x */; {insert}"), true),
            (format!("SELECT '/*'; {insert} --*/"), true),
            (format!("SELECT 1 AS \"--\"; {insert}"), true),
            (format!("SELECT 1 AS [\"]; {insert}"), true),
            (format!("SELECT x'' AS a, 'b''' AS c; {insert}"), true),
            (format!("SELECT 1 AS `a``b`; {insert}"), true),
            (format!("SELECT 1-/**/-1; {insert}"), true),
            (format!("SELECT 1 AS ab$c; {insert}"), true),
            (format!("SELECT 1e-5; {insert}"), true),
            (format!("SELECT 'a'';' AS x;{insert}"), true),
            (format!("SELECT 1 -- c\r; {insert}"), false),
            (format!("SELECT 1 /*/; {insert} */"), false),
            (format!("SELECT 1 /* unterminated ; {insert}"), false),
            (format!("SELECT ';{insert}' AS x"), false),
            ("SELECT 1; -- a comment".to_string(), false),
        ];
        for (sql, runs_two) in cases {
            let count = "SELECT count(*) FROM log";
            let before: i64 = sqlx::query_scalar(count).fetch_one(&mut conn).await.unwrap();
            let _ = sqlx::query(AssertSqlSafe(sql.clone())).execute(&mut conn).await;
            let after: i64 = sqlx::query_scalar(count).fetch_one(&mut conn).await.unwrap();
            assert_eq!(after > before, runs_two, "SQLite on {sql:?}");
            assert_eq!(one_statement(&sql).is_err(), runs_two, "one_statement({sql:?})");
        }
    }

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
