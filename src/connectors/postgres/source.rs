//! Reading a PostgreSQL source: its columns from the catalog (a temporary view types a
//! query), then `COPY (...) TO STDOUT (FORMAT binary)` in a read-only transaction, decoded into
//! batches on a task of its own while the reader consumes them.

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, TimeUnit};
use futures::StreamExt;
use sqlx::{AssertSqlSafe, Connection, Row};

use super::copy_codec::{decode_row, next_tuple, parse_header, Fields};
use super::{connect, quote_ident, quote_ident_part, Conn};
use crate::connectors::pools::{self, Pools};
use crate::connectors::relational::{
    bare_query, source_query_error, spawn_read, sql_error, timestamp, unknown_cursor_column, BatchBuilder,
    BatchSender, CursorSource, Guarded,
};
use crate::connectors::{ConnectorError, CursorFilter, IoContext, Opened};
use crate::domain::spec::{Source, SourceRead};
use crate::domain::store::DataStore;

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

pub(super) async fn relation_oid(
    conn: &mut sqlx::PgConnection,
    table: &str,
) -> Result<Option<i64>, sqlx::Error> {
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
                    let hint =
                        crate::domain::names::did_you_mean_hint(table, known.iter().map(String::as_str));
                    return Err(ConnectorError::permanent(format!(
                        "table {table:?} does not exist in {}{hint}",
                        pools::describe(&self.conn.store)
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

/// The setting that carries a cursor source's mark into its `COPY` (which takes no
/// parameters): set with a bound value, local to the read's transaction.
const CURSOR_SETTING: &str = "sluice.cursor_after";

#[async_trait]
impl CursorSource for PostgresSource {
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
                    return Err(unknown_cursor_column(f, source, &names));
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
        let builder = BatchBuilder::new(fields, ctx.batch_size);
        let schema = builder.schema.clone();
        let cancel = ctx.cancel.clone();
        let pool = self.conn.pool.clone();
        let secret = self.conn.store.password.clone();
        let read = |tx: BatchSender| async move {
            let mut builder = builder;
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
            (conn, outcome)
        };
        let cancel_on_server = async move {
            let _ = sqlx::query("SELECT pg_cancel_backend($1)")
                .bind(pid)
                .execute(&pool)
                .await;
        };
        Ok(spawn_read(schema, estimated_rows, read, cancel_on_server))
    }
}

/// Runs the COPY in a read-only transaction (sources only read: a query that tries to write,
/// through a function, `FOR UPDATE` or otherwise, is refused by PostgreSQL) and streams it
/// into batches. `Ok(true)` when it read everything, `Ok(false)` when it stopped because of
/// cancellation or because nobody reads any more.
async fn read_copy(
    conn: &mut sqlx::PgConnection,
    copy: &str,
    after: Option<&str>,
    builder: &mut BatchBuilder,
    tx: &BatchSender,
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
    tx: &BatchSender,
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
            let Some(end) = parse_header(&buf)? else {
                continue;
            };
            pos = end;
            header_done = true;
        }
        while let Some((next, is_row)) = next_tuple(&buf, pos, &mut fields)? {
            pos = next;
            if !is_row {
                ended = true;
                break;
            }
            decode_row(&buf, &fields, builder)?;
            if !builder.send_when_full(tx, cancel).await? {
                return Ok(false);
            }
        }
    }
    if !ended {
        return Err(ConnectorError::transient("the COPY stream ended early"));
    }
    builder.send_rest(tx).await
}
