//! PostgreSQL (`relational_db` / `postgres`).
//!
//! Reads run `COPY (query) TO STDOUT (FORMAT binary)` in a read-only transaction and decode the
//! stream straight into Arrow builders, batch by batch, so memory stays flat however large the
//! table; column types come from the catalog (through a temporary view for queries), the
//! expected row count from the planner. Cancelling stops the read and cancels the query on the
//! server.
//!
//! Loads stage the rows with `COPY ... FROM STDIN (FORMAT binary, FREEZE)` into a staging
//! table created in the same transaction; publishing swaps (`replace`) or inserts (`append`)
//! every staged table of the flow in one transaction.

use async_trait::async_trait;
use datafusion::arrow::array::*;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;
use sqlx::{AssertSqlSafe, Connection, Postgres, Row};

use super::pools::{pg_options, Pools};
use super::relational::{
    bare_query, display_strings, pg_numeric_from_i128, pg_numeric_from_text, source_query_error, split_table,
    sql_error, stage_qualified, stream_from, timestamp, BatchBuilder, DbConn, Guarded, PG_EPOCH_DAYS,
    PG_EPOCH_MICROS,
};
use super::{
    ConnectorError, CursorFilter, IoContext, Load, Opened, RowsCallback, SinkConnector, SourceConnector,
};
use crate::domain::spec::{Source, SourceRead, WriteMode};
use crate::domain::store::DataStore;

/// Quotes an identifier per part: `sales.Orders` becomes `"sales"."Orders"`.
pub fn quote_ident(name: &str) -> String {
    name.split('.')
        .map(|p| format!("\"{}\"", p.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(".")
}

type Conn = DbConn<Postgres>;

fn connect(store: &DataStore, pools: &Pools) -> Result<Conn, ConnectorError> {
    Ok(DbConn {
        pool: pools.postgres(store)?,
        options: pg_options(store)?,
        store: store.clone(),
    })
}

/// One column of a relation, from the catalog.
#[derive(Debug, Clone)]
struct PgColumn {
    name: String,
    typname: String,
    category: String,
    typmod: i32,
}

impl PgColumn {
    /// The Arrow type and the expression that reads the column in the COPY: natively decoded
    /// types as they are, arrays as JSON text, anything else in PostgreSQL's text form.
    fn plan(&self) -> (DataType, String) {
        let col = format!("q.{}", quote_ident_part(&self.name));
        let native = |dt: DataType| (dt, col.clone());
        match self.typname.as_str() {
            "bool" => native(DataType::Boolean),
            "int2" => native(DataType::Int16),
            "int4" => native(DataType::Int32),
            "int8" => native(DataType::Int64),
            "float4" => native(DataType::Float32),
            "float8" => native(DataType::Float64),
            "numeric" => match numeric_typmod(self.typmod) {
                Some((p, s)) if p <= 38 && s >= 0 && s as i32 <= p as i32 => {
                    native(DataType::Decimal128(p, s))
                }
                // No declared precision, or more than Arrow's 38 digits: exact text.
                _ => (DataType::Utf8, format!("{col}::text")),
            },
            "text" | "varchar" | "bpchar" | "name" => native(DataType::Utf8),
            "bytea" => native(DataType::Binary),
            "date" => native(DataType::Date32),
            "time" => native(DataType::Time64(TimeUnit::Microsecond)),
            "timestamp" => native(timestamp(false)),
            "timestamptz" => native(timestamp(true)),
            _ if self.category == "A" => (DataType::Utf8, format!("to_json({col})::text")),
            // The type's own output function (as psql shows it): `inet` '::1', not '::1/128'.
            _ => (
                DataType::Utf8,
                format!("CASE WHEN {col} IS NULL THEN NULL ELSE format('%s', {col}) END"),
            ),
        }
    }
}

fn quote_ident_part(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `numeric(p,s)` from its type modifier.
fn numeric_typmod(typmod: i32) -> Option<(u8, i8)> {
    if typmod < 4 {
        return None;
    }
    let t = typmod - 4;
    let p = (t >> 16) & 0xffff;
    let s = ((t & 0x7ff) ^ 1024) - 1024; // an 11-bit signed scale (PostgreSQL 15+)
    (1..=1000)
        .contains(&p)
        .then(|| (p.min(255) as u8, s.clamp(-128, 127) as i8))
}

const COLUMNS_SQL: &str = "SELECT a.attname::text AS name, t.typname::text AS typname, \
     t.typcategory::text AS category, a.atttypmod AS typmod \
     FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
     WHERE a.attrelid = $1::bigint::oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum";

async fn columns_of(conn: &mut sqlx::PgConnection, oid: i64) -> Result<Vec<PgColumn>, sqlx::Error> {
    let rows = sqlx::query(COLUMNS_SQL).bind(oid).fetch_all(&mut *conn).await?;
    Ok(rows
        .iter()
        .map(|r| PgColumn {
            name: r.get("name"),
            typname: r.get("typname"),
            category: r.get("category"),
            typmod: r.get("typmod"),
        })
        .collect())
}

async fn relation_oid(conn: &mut sqlx::PgConnection, table: &str) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT to_regclass($1)::oid::bigint")
        .bind(quote_ident(table))
        .fetch_one(&mut *conn)
        .await
}

async fn known_tables(conn: &mut sqlx::PgConnection) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT CASE WHEN table_schema = current_schema() THEN table_name \
         ELSE table_schema || '.' || table_name END FROM information_schema.tables \
         WHERE table_schema NOT IN ('pg_catalog', 'information_schema')",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap_or_default()
}

pub struct PostgresSource {
    conn: Conn,
}

impl PostgresSource {
    pub fn new(store: &DataStore, pools: &Pools) -> Result<Self, ConnectorError> {
        Ok(PostgresSource {
            conn: connect(store, pools)?,
        })
    }

    /// The source's columns and expected row count, and the query that reads it.
    async fn describe(
        &self,
        conn: &mut sqlx::PgConnection,
        source: &Source,
    ) -> Result<(Vec<PgColumn>, Option<u64>, String), ConnectorError> {
        match source.read() {
            SourceRead::Table(table) => {
                let oid = relation_oid(conn, table)
                    .await
                    .map_err(self.conn.err("looking up the table"))?;
                let Some(oid) = oid else {
                    let known = known_tables(conn).await;
                    let hint = crate::domain::names::did_you_mean(table, known.iter().map(String::as_str))
                        .map(|s| format!(" (did you mean {s:?}?)"))
                        .unwrap_or_default();
                    return Err(ConnectorError::permanent(format!(
                        "table {table:?} does not exist in {}{hint}",
                        super::pools::describe(&self.conn.store)
                    )));
                };
                let cols = columns_of(conn, oid)
                    .await
                    .map_err(self.conn.err("reading the table's columns"))?;
                let estimate: Option<f32> =
                    sqlx::query_scalar("SELECT reltuples FROM pg_class WHERE oid = $1::bigint::oid")
                        .bind(oid)
                        .fetch_optional(&mut *conn)
                        .await
                        .map_err(self.conn.err("reading the table's size"))?;
                let estimate = estimate.filter(|r| *r >= 0.0).map(|r| r as u64);
                Ok((cols, estimate, format!("SELECT * FROM {}", quote_ident(table))))
            }
            SourceRead::Query(q) => {
                let q = bare_query(q).to_string();
                let secret = self.conn.store.password.as_ref();
                // The query's result columns, typed by PostgreSQL itself (with their type
                // modifiers, so `numeric(12,2)` stays exact): a temporary view, rolled back.
                // Creating a view does not run its query, and the view is sent as a prepared
                // statement, which PostgreSQL accepts only as exactly one statement: the query
                // cannot smuggle in a `COMMIT` or a second statement.
                let mut tx = conn
                    .begin()
                    .await
                    .map_err(self.conn.err("starting a transaction"))?;
                sqlx::query(AssertSqlSafe(format!(
                    "CREATE TEMPORARY VIEW _sluice_probe AS\n{q}\n"
                )))
                .persistent(false)
                .execute(&mut *tx)
                .await
                .map_err(|e| source_query_error(e, secret))?;
                let oid = relation_oid(&mut tx, "pg_temp._sluice_probe")
                    .await
                    .map_err(self.conn.err("describing the query"))?
                    .ok_or_else(|| ConnectorError::permanent("describing the query: the view vanished"))?;
                let cols = columns_of(&mut tx, oid)
                    .await
                    .map_err(self.conn.err("describing the query"))?;
                // Planning may evaluate the query's functions: from here on, read-only.
                sqlx::query("SET TRANSACTION READ ONLY")
                    .execute(&mut *tx)
                    .await
                    .map_err(self.conn.err("describing the query"))?;
                let plan: Option<serde_json::Value> =
                    sqlx::query_scalar(AssertSqlSafe(format!("EXPLAIN (FORMAT JSON)\n{q}\n")))
                        .persistent(false)
                        .fetch_one(&mut *tx)
                        .await
                        .ok();
                let estimate = plan
                    .as_ref()
                    .and_then(|p| p[0]["Plan"]["Plan Rows"].as_f64())
                    .map(|r| r.max(0.0) as u64);
                tx.rollback()
                    .await
                    .map_err(self.conn.err("describing the query"))?;
                Ok((cols, estimate, q))
            }
            SourceRead::Path(_) => Err(ConnectorError::permanent(
                "a PostgreSQL store is read by table or query",
            )),
        }
    }
}

#[async_trait]
impl SourceConnector for PostgresSource {
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

/// The setting that carries a cursor source's mark into its `COPY` (which takes no
/// parameters): set with a bound value, local to the read's transaction.
const CURSOR_SETTING: &str = "sluice.cursor_after";

impl PostgresSource {
    async fn read(
        &self,
        source: &Source,
        filter: Option<&CursorFilter>,
        ctx: &IoContext,
    ) -> Result<Opened, ConnectorError> {
        let mut conn = Guarded::new(self.conn.acquire().await?);
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut *conn.conn)
            .await
            .map_err(self.conn.err("query"))?;
        let (columns, estimated_rows, inner) = self.describe(&mut conn.conn, source).await?;
        if columns.is_empty() {
            return Err(ConnectorError::permanent("the source has no columns"));
        }
        let (fields, exprs): (Vec<Field>, Vec<String>) = columns
            .iter()
            .map(|c| {
                let (dt, expr) = c.plan();
                (Field::new(&c.name, dt, true), expr)
            })
            .unzip();
        let (predicate, after) = match filter {
            None => (String::new(), None),
            Some(f) => {
                let Some(column) = columns.iter().find(|c| c.name == f.column) else {
                    let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
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
                match f.after_text() {
                    // Every row, NULL cursors too: they are counted, then skipped.
                    None => (String::new(), None),
                    Some(text) => (
                        format!(
                            " WHERE q.{} >= current_setting('{CURSOR_SETTING}')::{}",
                            quote_ident_part(&column.name),
                            quote_ident_part(&column.typname)
                        ),
                        Some(text),
                    ),
                }
            }
        };
        let copy = format!(
            "COPY (SELECT {} FROM (\n{inner}\n) AS q{predicate}) TO STDOUT (FORMAT binary)",
            exprs.join(", ")
        );
        let mut builder = BatchBuilder::new(fields, ctx.batch_size);
        let schema = builder.schema.clone();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<RecordBatch, ConnectorError>>(2);
        let cancel = ctx.cancel.clone();
        let pool = self.conn.pool.clone();
        let secret = self.conn.store.password.clone();
        tokio::spawn(async move {
            let outcome = read_copy(
                &mut conn.conn,
                &copy,
                after.as_deref(),
                &mut builder,
                &tx,
                &cancel,
                secret.as_ref(),
            )
            .await;
            match outcome {
                Ok(true) => conn.finished(),
                Ok(false) => {
                    // Stopped early: cancel the query on the server, close the connection.
                    let _ = sqlx::query("SELECT pg_cancel_backend($1)")
                        .bind(pid)
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

const COPY_SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// Runs the COPY in a read-only transaction (sources only read: a query that tries to write,
/// through a function, `FOR UPDATE` or otherwise, is refused by PostgreSQL) and streams it
/// into batches. `Ok(true)` when it read everything, `Ok(false)` when it stopped because of
/// cancellation or because nobody reads any more.
async fn read_copy(
    conn: &mut sqlx::PgConnection,
    copy: &str,
    after: Option<&str>,
    builder: &mut BatchBuilder,
    tx: &tokio::sync::mpsc::Sender<Result<RecordBatch, ConnectorError>>,
    cancel: &tokio_util::sync::CancellationToken,
    secret: Option<&crate::secrets::Secret>,
) -> Result<bool, ConnectorError> {
    let mut read_only = tokio::select! {
        biased;
        _ = cancel.cancelled() => return Ok(false),
        t = conn.begin_with("BEGIN READ ONLY") => {
            t.map_err(|e| sql_error("starting a read-only transaction", e, secret))?
        }
    };
    if let Some(after) = after {
        sqlx::query("SELECT set_config($1, $2, true)")
            .bind(CURSOR_SETTING)
            .bind(after)
            .execute(&mut *read_only)
            .await
            .map_err(|e| sql_error("setting the cursor's mark", e, secret))?;
    }
    let complete = copy_batches(&mut read_only, copy, builder, tx, cancel, secret).await?;
    if complete {
        read_only
            .commit()
            .await
            .map_err(|e| sql_error("ending the read-only transaction", e, secret))?;
    }
    Ok(complete)
}

/// Streams the COPY `copy` into batches; see `read_copy`.
async fn copy_batches(
    conn: &mut sqlx::PgConnection,
    copy: &str,
    builder: &mut BatchBuilder,
    tx: &tokio::sync::mpsc::Sender<Result<RecordBatch, ConnectorError>>,
    cancel: &tokio_util::sync::CancellationToken,
    secret: Option<&crate::secrets::Secret>,
) -> Result<bool, ConnectorError> {
    // `copy` is sent as a simple query, which may hold several statements, but it is one: a
    // table's `SELECT`, or a query that PostgreSQL accepted inside one prepared statement (the
    // probe view, see `describe`). Such a query's `;`, if any, can only end it, and inside the
    // COPY's parentheses it is a syntax error, which PostgreSQL reports before it runs any of
    // the text.
    let mut stream = tokio::select! {
        biased;
        _ = cancel.cancelled() => return Ok(false),
        s = conn.copy_out_raw(copy) => s.map_err(|e| source_query_error(e, secret))?,
    };
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 16);
    let mut pos = 0usize;
    let mut header_done = false;
    let mut ended = false;
    let mut fields = Fields::new();
    loop {
        let chunk = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Ok(false),
            _ = tx.closed() => return Ok(false),
            c = stream.next() => c,
        };
        let Some(chunk) = chunk else { break };
        let chunk = chunk.map_err(|e| source_query_error(e, secret))?;
        if pos > 0 && pos == buf.len() {
            buf.clear();
            pos = 0;
        } else if pos > (1 << 20) {
            buf.drain(..pos);
            pos = 0;
        }
        buf.extend_from_slice(&chunk);
        if !header_done {
            if buf.len() < 19 {
                continue;
            }
            if &buf[..11] != COPY_SIGNATURE {
                return Err(ConnectorError::permanent("unexpected COPY data from the server"));
            }
            let ext = u32::from_be_bytes([buf[15], buf[16], buf[17], buf[18]]) as usize;
            if buf.len() < 19 + ext {
                continue;
            }
            pos = 19 + ext;
            header_done = true;
        }
        while let Some((next, is_row)) = next_tuple(&buf, pos, &mut fields)? {
            pos = next;
            if !is_row {
                ended = true;
                break;
            }
            decode_row(&buf, &fields, builder)?;
            if builder.is_full() {
                let batch = builder.finish()?;
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return Ok(false),
                    r = tx.send(Ok(batch)) => if r.is_err() { return Ok(false) },
                }
            }
        }
    }
    if !ended {
        return Err(ConnectorError::transient("the COPY stream ended early"));
    }
    if builder.rows > 0 {
        let batch = builder.finish()?;
        if tx.send(Ok(batch)).await.is_err() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Reads the tuple at `pos` into `fields` (ranges, `None` for NULL), if it is complete:
/// `Some((next, true))`, or `Some((next, false))` for the trailer.
fn next_tuple(
    buf: &[u8],
    mut pos: usize,
    fields: &mut Fields,
) -> Result<Option<(usize, bool)>, ConnectorError> {
    if buf.len() < pos + 2 {
        return Ok(None);
    }
    let n = i16::from_be_bytes([buf[pos], buf[pos + 1]]);
    pos += 2;
    if n == -1 {
        return Ok(Some((pos, false)));
    }
    fields.clear();
    for _ in 0..n {
        if buf.len() < pos + 4 {
            return Ok(None);
        }
        let len = i32::from_be_bytes([buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]]);
        pos += 4;
        if len < 0 {
            fields.push(None);
            continue;
        }
        let end = pos + len as usize;
        if buf.len() < end {
            return Ok(None);
        }
        fields.push(Some((pos, end)));
        pos = end;
    }
    Ok(Some((pos, true)))
}

type Fields = Vec<Option<(usize, usize)>>;

fn decode_row(
    buf: &[u8],
    fields: &[Option<(usize, usize)>],
    builder: &mut BatchBuilder,
) -> Result<(), ConnectorError> {
    if fields.len() != builder.cols.len() {
        return Err(ConnectorError::permanent(format!(
            "the server sent {} columns, expected {}",
            fields.len(),
            builder.cols.len()
        )));
    }
    for (i, f) in fields.iter().enumerate() {
        let col = &mut builder.cols[i];
        match f {
            None => col.append_null(),
            Some((a, b)) => {
                if let Err(why) = col.append_pg_binary(&buf[*a..*b]) {
                    return Err(builder.value_error(i, why));
                }
            }
        }
    }
    builder.rows += 1;
    Ok(())
}

// ---- loads -----------------------------------------------------------------------------------

/// How a column is written: its PostgreSQL type, and the Arrow type it is cast to first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    Bool,
    I16,
    I32,
    I64,
    F32,
    F64,
    Numeric,
    Text,
    Bytea,
    Date,
    Time,
    Ts,
}

/// The PostgreSQL column type for an Arrow type, and how values are sent.
pub fn pg_type_for(dt: &DataType) -> (String, Wire) {
    match dt {
        DataType::Boolean => ("boolean".into(), Wire::Bool),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => ("smallint".into(), Wire::I16),
        DataType::Int32 | DataType::UInt16 => ("integer".into(), Wire::I32),
        DataType::Int64 | DataType::UInt32 => ("bigint".into(), Wire::I64),
        DataType::UInt64 => ("numeric(20,0)".into(), Wire::Numeric),
        DataType::Float16 | DataType::Float32 => ("real".into(), Wire::F32),
        DataType::Float64 => ("double precision".into(), Wire::F64),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) if *s >= 0 => {
            (format!("numeric({p},{s})"), Wire::Numeric)
        }
        DataType::Decimal128(..) | DataType::Decimal256(..) => ("numeric".into(), Wire::Numeric),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_) => {
            ("bytea".into(), Wire::Bytea)
        }
        DataType::Date32 | DataType::Date64 => ("date".into(), Wire::Date),
        DataType::Time32(_) | DataType::Time64(_) => ("time".into(), Wire::Time),
        DataType::Timestamp(_, None) => ("timestamp".into(), Wire::Ts),
        DataType::Timestamp(_, Some(_)) => ("timestamptz".into(), Wire::Ts),
        _ => ("text".into(), Wire::Text),
    }
}

/// `array` as the Arrow type its wire form is encoded from. Decimals stay decimals (encoded
/// exactly from their integers), strings and bytes may stay views.
fn normalize(array: &ArrayRef, wire: Wire) -> Result<ArrayRef, String> {
    let target = match (wire, array.data_type()) {
        (Wire::Numeric, DataType::Decimal128(_, s)) if *s >= 0 => return Ok(array.clone()),
        (Wire::Text, DataType::Utf8View) | (Wire::Bytea, DataType::BinaryView) => return Ok(array.clone()),
        (Wire::Bool, _) => DataType::Boolean,
        (Wire::I16, _) => DataType::Int16,
        (Wire::I32, _) => DataType::Int32,
        (Wire::I64, _) => DataType::Int64,
        (Wire::F32, _) => DataType::Float32,
        (Wire::F64, _) => DataType::Float64,
        (Wire::Numeric | Wire::Text, _) => DataType::Utf8,
        (Wire::Bytea, _) => DataType::Binary,
        (Wire::Date, _) => DataType::Date32,
        (Wire::Time, _) => DataType::Time64(TimeUnit::Microsecond),
        (Wire::Ts, DataType::Timestamp(_, tz)) => DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
        (Wire::Ts, _) => timestamp(false),
    };
    if array.data_type() == &target {
        return Ok(array.clone());
    }
    match cast(array, &target) {
        Ok(a) => Ok(a),
        // Anything else is written in Arrow's display form.
        Err(_) if target == DataType::Utf8 => display_strings(array),
        Err(e) => Err(e.to_string()),
    }
}

/// A normalized column, downcast once per batch.
enum Typed<'a> {
    Bool(&'a BooleanArray),
    I16(&'a Int16Array),
    I32(&'a Int32Array),
    I64(&'a Int64Array),
    F32(&'a Float32Array),
    F64(&'a Float64Array),
    Decimal(&'a Decimal128Array, i8),
    /// Numeric values as decimal text.
    NumericText(&'a StringArray),
    Text(&'a StringArray),
    TextView(&'a StringViewArray),
    Bytea(&'a BinaryArray),
    ByteaView(&'a BinaryViewArray),
    Date(&'a Date32Array),
    Time(&'a Time64MicrosecondArray),
    Ts(&'a TimestampMicrosecondArray),
}

impl<'a> Typed<'a> {
    fn of(a: &'a ArrayRef, wire: Wire) -> Typed<'a> {
        match (wire, a.data_type()) {
            (Wire::Bool, _) => Typed::Bool(a.as_boolean()),
            (Wire::I16, _) => Typed::I16(a.as_primitive()),
            (Wire::I32, _) => Typed::I32(a.as_primitive()),
            (Wire::I64, _) => Typed::I64(a.as_primitive()),
            (Wire::F32, _) => Typed::F32(a.as_primitive()),
            (Wire::F64, _) => Typed::F64(a.as_primitive()),
            (Wire::Numeric, DataType::Decimal128(_, s)) => Typed::Decimal(a.as_primitive(), *s),
            (Wire::Numeric, _) => Typed::NumericText(a.as_string()),
            (Wire::Text, DataType::Utf8View) => Typed::TextView(a.as_string_view()),
            (Wire::Text, _) => Typed::Text(a.as_string()),
            (Wire::Bytea, DataType::BinaryView) => Typed::ByteaView(a.as_binary_view()),
            (Wire::Bytea, _) => Typed::Bytea(a.as_binary()),
            (Wire::Date, _) => Typed::Date(a.as_primitive()),
            (Wire::Time, _) => Typed::Time(a.as_primitive()),
            (Wire::Ts, _) => Typed::Ts(a.as_primitive()),
        }
    }

    /// Appends the value at `row` (not null) as a length-prefixed COPY field.
    fn encode(&self, row: usize, out: &mut Vec<u8>) -> Result<(), String> {
        fn field(out: &mut Vec<u8>, bytes: &[u8]) {
            out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
            out.extend_from_slice(bytes);
        }
        match self {
            Typed::Bool(a) => field(out, &[u8::from(a.value(row))]),
            Typed::I16(a) => field(out, &a.value(row).to_be_bytes()),
            Typed::I32(a) => field(out, &a.value(row).to_be_bytes()),
            Typed::I64(a) => field(out, &a.value(row).to_be_bytes()),
            Typed::F32(a) => field(out, &a.value(row).to_be_bytes()),
            Typed::F64(a) => field(out, &a.value(row).to_be_bytes()),
            Typed::Text(a) => field(out, a.value(row).as_bytes()),
            Typed::TextView(a) => field(out, a.value(row).as_bytes()),
            Typed::Bytea(a) => field(out, a.value(row)),
            Typed::ByteaView(a) => field(out, a.value(row)),
            Typed::Date(a) => field(out, &(a.value(row) - PG_EPOCH_DAYS).to_be_bytes()),
            Typed::Time(a) => field(out, &a.value(row).to_be_bytes()),
            Typed::Ts(a) => field(out, &(a.value(row) - PG_EPOCH_MICROS).to_be_bytes()),
            Typed::Decimal(a, scale) => numeric_field(out, |out| {
                if pg_numeric_from_i128(a.value(row), *scale, out) {
                    Ok(())
                } else {
                    pg_numeric_from_text(&a.value_as_string(row), out)
                }
            })?,
            Typed::NumericText(a) => numeric_field(out, |out| pg_numeric_from_text(a.value(row), out))?,
        }
        Ok(())
    }
}

/// Appends a `numeric` COPY field: its length prefix, filled in once `write` has written it.
fn numeric_field(
    out: &mut Vec<u8>,
    write: impl FnOnce(&mut Vec<u8>) -> Result<(), String>,
) -> Result<(), String> {
    let start = out.len();
    out.extend_from_slice(&0i32.to_be_bytes());
    write(out)?;
    let len = (out.len() - start - 4) as i32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Appends the batch's rows in COPY binary format.
fn encode_batch(batch: &RecordBatch, wires: &[Wire], out: &mut Vec<u8>) -> Result<(), ConnectorError> {
    let name = |i: usize| batch.schema().field(i).name().clone();
    let arrays: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .zip(wires)
        .enumerate()
        .map(|(i, (a, w))| {
            normalize(a, *w).map_err(|e| {
                ConnectorError::permanent(format!(
                    "column {:?}: cannot write {} values: {e}",
                    name(i),
                    a.data_type()
                ))
            })
        })
        .collect::<Result<_, _>>()?;
    let columns: Vec<Typed> = arrays.iter().zip(wires).map(|(a, w)| Typed::of(a, *w)).collect();
    let ncols = (columns.len() as i16).to_be_bytes();
    let mut nulls = Vec::with_capacity(arrays.len());
    for a in &arrays {
        nulls.push(a.logical_nulls());
    }
    for row in 0..batch.num_rows() {
        out.extend_from_slice(&ncols);
        for (i, col) in columns.iter().enumerate() {
            if nulls[i].as_ref().is_some_and(|n| n.is_null(row)) {
                out.extend_from_slice(&(-1i32).to_be_bytes());
                continue;
            }
            col.encode(row, out)
                .map_err(|e| ConnectorError::permanent(format!("column {:?}: {e}", name(i))))?;
        }
    }
    Ok(())
}

pub struct PostgresSink {
    conn: Conn,
}

impl PostgresSink {
    pub fn new(store: &DataStore, pools: &Pools) -> Result<Self, ConnectorError> {
        Ok(PostgresSink {
            conn: connect(store, pools)?,
        })
    }
}

async fn schema_exists(conn: &mut sqlx::PgConnection, schema: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
        .bind(schema)
        .fetch_one(&mut *conn)
        .await
}

/// Creates the schema of `table` when it has one and it is missing, in a statement of its own
/// before the load's transaction: loads into one new schema (several outputs of a flow, or
/// several flows) then do not wait for each other's rows. `CREATE SCHEMA IF NOT EXISTS` is
/// not safe against itself: when two run at once, the second fails on pg_namespace's unique
/// index once the first commits. A creation that fails while the schema now exists was such
/// a race, and the schema is there: that is success.
async fn ensure_schema(conn: &mut sqlx::PgConnection, table: &str) -> Result<(), sqlx::Error> {
    let (Some(schema), _) = split_table(table) else {
        return Ok(());
    };
    if schema_exists(conn, schema).await? {
        return Ok(());
    }
    let created = sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE SCHEMA IF NOT EXISTS {}",
        quote_ident_part(schema)
    )))
    .execute(&mut *conn)
    .await;
    match created {
        Ok(_) => Ok(()),
        Err(e) => match schema_exists(conn, schema).await {
            Ok(true) => Ok(()),
            _ => Err(e),
        },
    }
}

/// Columns and their declared types (`format_type`) of an existing table.
async fn declared_columns(
    conn: &mut sqlx::PgConnection,
    table: &str,
) -> Result<Option<Vec<(String, String)>>, sqlx::Error> {
    let Some(oid) = relation_oid(conn, table).await? else {
        return Ok(None);
    };
    let rows = sqlx::query(
        "SELECT attname::text AS name, format_type(atttypid, atttypmod) AS ty FROM pg_attribute \
         WHERE attrelid = $1::bigint::oid AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
    )
    .bind(oid)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Some(rows.iter().map(|r| (r.get("name"), r.get("ty"))).collect()))
}

/// The column lists of a table's unique indexes (its primary key among them; partial and
/// expression indexes left out: `ON CONFLICT (columns)` does not use them).
async fn unique_indexes(conn: &mut sqlx::PgConnection, table: &str) -> Result<Vec<Vec<String>>, sqlx::Error> {
    let Some(oid) = relation_oid(conn, table).await? else {
        return Ok(Vec::new());
    };
    sqlx::query_scalar(
        "SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_index i \
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) \
         WHERE i.indrelid = $1::bigint::oid AND i.indisunique AND i.indpred IS NULL \
         AND i.indexprs IS NULL GROUP BY i.indexrelid",
    )
    .bind(oid)
    .fetch_all(&mut *conn)
    .await
}

/// Publishes one staged `merge` load inside the publish transaction. A new target is the
/// staged table, renamed, with a primary key on the key; into an existing one the rows are
/// upserted (`INSERT ... ON CONFLICT` when a unique index covers the key, else an `UPDATE ...
/// FROM` then an `INSERT ... WHERE NOT EXISTS`), each value cast to the target column's type
/// as an append does. Returns a note for the log when there is something to say.
async fn merge_staged(
    tx: &mut sqlx::PgConnection,
    load: &Load,
    staged: &[(String, String)],
    existing: Option<Vec<(String, String)>>,
) -> Result<Option<String>, sqlx::Error> {
    let stage = quote_ident(&stage_qualified(load));
    let target = quote_ident(&load.table);
    let (_, bare) = split_table(&load.table);
    let keys: Vec<String> = load.unique_key.iter().map(|k| quote_ident_part(k)).collect();
    let Some(existing) = existing else {
        sqlx::raw_sql(AssertSqlSafe(format!(
            "ALTER TABLE {stage} RENAME TO {}; ALTER TABLE {target} ADD PRIMARY KEY ({})",
            quote_ident_part(bare),
            keys.join(", ")
        )))
        .execute(&mut *tx)
        .await?;
        return Ok(Some(super::merge::created_note(load, "a primary key")));
    };
    let staged_names: Vec<String> = staged.iter().map(|(n, _)| n.clone()).collect();
    let type_of = |name: &str| {
        existing
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, ty)| ty.clone())
            .unwrap_or_else(|| "text".into())
    };
    let names: Vec<String> = staged_names.iter().map(|n| quote_ident_part(n)).collect();
    let select: Vec<String> = staged_names
        .iter()
        .map(|n| format!("s.{}::{}", quote_ident_part(n), type_of(n)))
        .collect();
    let updates = super::merge::non_key(&staged_names, &load.unique_key, false);
    let indexes = unique_indexes(tx, &load.table).await?;
    let (sql, note) = if super::merge::has_key_index(&indexes, &load.unique_key, false) {
        let action = if updates.is_empty() {
            "NOTHING".to_string()
        } else {
            let set: Vec<String> = updates
                .iter()
                .map(|c| format!("{0} = EXCLUDED.{0}", quote_ident_part(c)))
                .collect();
            format!("UPDATE SET {}", set.join(", "))
        };
        let sql = format!(
            "INSERT INTO {target} ({}) SELECT {} FROM {stage} AS s ON CONFLICT ({}) DO {action}",
            names.join(", "),
            select.join(", "),
            keys.join(", ")
        );
        (sql, None)
    } else {
        let matches: Vec<String> = load
            .unique_key
            .iter()
            .map(|k| format!("t.{0} = s.{0}::{1}", quote_ident_part(k), type_of(k)))
            .collect();
        let matches = matches.join(" AND ");
        let mut sql = String::new();
        if !updates.is_empty() {
            let set: Vec<String> = updates
                .iter()
                .map(|c| format!("{0} = s.{0}::{1}", quote_ident_part(c), type_of(c)))
                .collect();
            sql.push_str(&format!(
                "UPDATE {target} AS t SET {} FROM {stage} AS s WHERE {matches}; ",
                set.join(", ")
            ));
        }
        sql.push_str(&format!(
            "INSERT INTO {target} ({}) SELECT {} FROM {stage} AS s \
             WHERE NOT EXISTS (SELECT 1 FROM {target} AS t WHERE {matches})",
            names.join(", "),
            select.join(", ")
        ));
        (sql, Some(super::merge::no_index_note(load)))
    };
    sqlx::raw_sql(AssertSqlSafe(format!("{sql}; DROP TABLE {stage}")))
        .execute(&mut *tx)
        .await?;
    Ok(note)
}

#[async_trait]
impl SinkConnector for PostgresSink {
    async fn stage(
        &self,
        load: &Load,
        mut input: SendableRecordBatchStream,
        _ctx: &IoContext,
        on_rows: RowsCallback,
    ) -> Result<u64, ConnectorError> {
        let schema = input.schema();
        let (defs, wires): (Vec<String>, Vec<Wire>) = schema
            .fields()
            .iter()
            .map(|f| {
                let (ty, wire) = pg_type_for(f.data_type());
                (format!("{} {ty}", quote_ident_part(f.name())), wire)
            })
            .unzip();
        let columns: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| quote_ident_part(f.name()))
            .collect();
        let stage = quote_ident(&stage_qualified(load));
        let mut guarded = Guarded::new(self.conn.acquire().await?);
        ensure_schema(&mut guarded.conn, &load.table)
            .await
            .map_err(self.conn.err("creating the target's schema"))?;
        let mut tx = guarded
            .conn
            .begin()
            .await
            .map_err(self.conn.err("starting a transaction"))?;
        sqlx::raw_sql(AssertSqlSafe(format!(
            "DROP TABLE IF EXISTS {stage}; CREATE TABLE {stage} ({})",
            defs.join(", ")
        )))
        .execute(&mut *tx)
        .await
        .map_err(self.conn.err("creating the staging table"))?;
        let mut copy = tx
            .copy_in_raw(&format!(
                "COPY {stage} ({}) FROM STDIN (FORMAT binary, FREEZE)",
                columns.join(", ")
            ))
            .await
            .map_err(self.conn.err("starting the load"))?;
        let mut buf: Vec<u8> = Vec::with_capacity(2 << 20);
        buf.extend_from_slice(COPY_SIGNATURE);
        buf.extend_from_slice(&0i32.to_be_bytes());
        buf.extend_from_slice(&0i32.to_be_bytes());
        let mut total = 0u64;
        while let Some(batch) = input.next().await {
            let batch =
                batch.map_err(|e| super::error::to_connector_error(e, "reading rows to write"))?;
            encode_batch(&batch, &wires, &mut buf)?;
            if buf.len() >= 1 << 20 {
                // The buffer is reused: one allocation for the whole load.
                copy.send(buf.as_slice())
                    .await
                    .map_err(self.conn.err("loading rows"))?;
                buf.clear();
            }
            total += batch.num_rows() as u64;
            on_rows(total, None);
        }
        buf.extend_from_slice(&(-1i16).to_be_bytes());
        copy.send(buf).await.map_err(self.conn.err("loading rows"))?;
        copy.finish().await.map_err(self.conn.err("loading rows"))?;
        tx.commit()
            .await
            .map_err(self.conn.err("committing the staged rows"))?;
        guarded.done = true;
        Ok(total)
    }

    async fn publish(&self, loads: &[Load]) -> Result<Vec<String>, ConnectorError> {
        let mut notes = Vec::new();
        let mut guarded = Guarded::new(self.conn.acquire().await?);
        let mut tx = guarded
            .conn
            .begin()
            .await
            .map_err(self.conn.err("starting a transaction"))?;
        for load in loads {
            let stage_q = stage_qualified(load);
            let Some(staged) = declared_columns(&mut tx, &stage_q)
                .await
                .map_err(self.conn.err("finding the staged rows"))?
            else {
                continue; // published already
            };
            let stage = quote_ident(&stage_q);
            let target = quote_ident(&load.table);
            let (_, bare) = split_table(&load.table);
            let existing = declared_columns(&mut tx, &load.table)
                .await
                .map_err(self.conn.err(&format!("reading {}", load.table)))?;
            match existing {
                _ if load.mode == WriteMode::Merge => {
                    if let Some(existing) = &existing {
                        let names =
                            |c: &[(String, String)]| c.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
                        super::merge::check_columns(load, &names(&staged), &names(existing), false)?;
                    }
                    let note = merge_staged(&mut tx, load, &staged, existing)
                        .await
                        .map_err(self.conn.err(&format!("merging into {}", load.table)))?;
                    notes.extend(note);
                }
                Some(existing) if load.mode == WriteMode::Append => {
                    let mut select = Vec::new();
                    let mut names = Vec::new();
                    let mut missing = Vec::new();
                    for (name, _) in &staged {
                        match existing.iter().find(|(n, _)| n == name) {
                            Some((_, ty)) => {
                                names.push(quote_ident_part(name));
                                select.push(format!("{}::{ty}", quote_ident_part(name)));
                            }
                            None => missing.push(name.as_str()),
                        }
                    }
                    if !missing.is_empty() {
                        return Err(ConnectorError::permanent(format!(
                            "cannot append to {}: it has no column(s) {}",
                            load.table,
                            missing.join(", ")
                        )));
                    }
                    sqlx::raw_sql(AssertSqlSafe(format!(
                        "INSERT INTO {target} ({}) SELECT {} FROM {stage}; DROP TABLE {stage}",
                        names.join(", "),
                        select.join(", ")
                    )))
                    .execute(&mut *tx)
                    .await
                    .map_err(self.conn.err(&format!("appending to {}", load.table)))?;
                }
                existing => {
                    let drop = if existing.is_some() {
                        format!("DROP TABLE {target}; ")
                    } else {
                        String::new()
                    };
                    sqlx::raw_sql(AssertSqlSafe(format!(
                        "{drop}ALTER TABLE {stage} RENAME TO {}",
                        quote_ident_part(bare)
                    )))
                    .execute(&mut *tx)
                    .await
                    .map_err(self.conn.err(&format!("swapping in {}", load.table)))?;
                }
            }
        }
        tx.commit()
            .await
            .map_err(self.conn.err("committing the publish"))?;
        guarded.done = true;
        Ok(notes)
    }

    async fn discard(&self, loads: &[Load]) -> Result<(), ConnectorError> {
        if loads.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.acquire().await?;
        let drops: Vec<String> = loads
            .iter()
            .map(|l| format!("DROP TABLE IF EXISTS {}", quote_ident(&stage_qualified(l))))
            .collect();
        sqlx::raw_sql(AssertSqlSafe(drops.join("; ")))
            .execute(&mut *conn)
            .await
            .map_err(self.conn.err("dropping staging tables"))?;
        Ok(())
    }
}

/// Connects and asks the server's version.
pub async fn check(store: &DataStore, pools: &Pools) -> Result<String, ConnectorError> {
    let conn = connect(store, pools)?;
    let mut c = conn.acquire().await?;
    sqlx::query_scalar::<_, String>("SHOW server_version")
        .fetch_one(&mut *c)
        .await
        .map_err(conn.err("asking the server's version"))
}
